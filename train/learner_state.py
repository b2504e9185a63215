"""What a checkpoint's `learner` entry holds: the model as it stood after a task (adapters,
experts, text rows, routing anchors and calibration, prototypes), the FSSD weights and the
analytic head, and how a fresh learner is rebuilt from it."""
from __future__ import annotations

import copy
from typing import TYPE_CHECKING

from .analytic_fit import AnalyticHead

if TYPE_CHECKING:
    from .learner import StPRLearner

# The model's buffers a checkpoint stores as tensors (on the CPU) and a restore puts back.
MODEL_BUFFERS = ("text_embeddings", "class_to_expert", "td_raw_anchors", "td_anchors", "td_center", "td_var",
                 "td_score_mean", "td_score_std", "proto_clip", "proto_adapter")


def learner_state(learner: "StPRLearner") -> dict:
    """The learner after its last finished task, as a checkpoint stores it."""
    m = learner.model
    return {
        "adapters": m.backbone.adapters.state_dict(),
        "experts": [e.state_dict() for e in m.experts],
        **{name: getattr(m, name).cpu() for name in MODEL_BUFFERS},
        "fssd": learner.fssd.state_dict(),
        "task": learner.task,
        "head": None if learner.head is None else learner.head.state_dict(),
        "head_adapters": None if learner.head_adapters is None else learner.head_adapters.state_dict(),
    }


def load_learner_state(learner: "StPRLearner", state: dict) -> None:
    """Rebuild the model as it stood after task `state['task']`."""
    m = learner.model
    c2e = state["class_to_expert"]
    for k in range(len(state["experts"])):
        m.add_task(state["text_embeddings"][c2e == k], init_from_previous=False)
    m.backbone.adapters.load_state_dict(state["adapters"])
    for expert, sd in zip(m.experts, state["experts"]):
        expert.load_state_dict(sd)
    dev = m.text_embeddings.device
    if "anchors" in state:  # checkpoints before td_raw_anchors had its name
        state = {**state, "td_raw_anchors": state["anchors"]}
    for name in MODEL_BUFFERS:
        setattr(m, name, state[name].to(dev))
    learner.fssd.load_state_dict(state["fssd"])
    learner.task = int(state["task"])
    if state.get("head") is not None:
        learner.head = AnalyticHead.from_state(state["head"])
    if state.get("head_adapters") is not None:
        learner.head_adapters = copy.deepcopy(m.backbone.adapters).eval().requires_grad_(False)
        learner.head_adapters.load_state_dict(state["head_adapters"])
