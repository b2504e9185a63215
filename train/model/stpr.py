"""The StPR model: adapted frozen CLIP tower, one expert per task, TD-MoE router,
and the text classifier (docs/method.md, "Frame features" to "Routing between experts").

Holds only what inference needs; the text tower stays with the learner, which
encodes class names once per task. The class-indexed tensors (text embeddings,
anchors, prototypes, class -> expert) grow as tasks arrive and are saved whole.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from .backbone import AdaptedVisionTower
from .expert import TemporalExpert
from .router import combine, routing_weights
from .text import cosine_logits


class StPRModel(nn.Module):
    def __init__(
        self,
        visual: nn.Module,
        num_frames: int,
        *,
        adapter_bottleneck: int = 64,
        adapter_scale: float = 0.1,
        adapter_dropout: float = 0.1,
        expert_layers: int = 3,
        expert_heads: int = 2,
        expert_mlp_ratio: float = 4.0,
        logit_scale: float = 100.0,
    ) -> None:
        super().__init__()
        self.backbone = AdaptedVisionTower(visual, adapter_bottleneck, adapter_scale, adapter_dropout)
        self.dim = self.backbone.out_dim
        self.num_frames = num_frames
        self.expert_kwargs = dict(layers=expert_layers, heads=expert_heads, mlp_ratio=expert_mlp_ratio)
        self.experts = nn.ModuleList()
        self.logit_scale = logit_scale
        D = self.dim
        # Class-indexed state, in the order classes were learned (global class ids).
        self.register_buffer("text_embeddings", torch.zeros(0, D))  # (C, D) unit
        self.register_buffer("class_to_expert", torch.zeros(0, dtype=torch.long))  # (C,)
        self.register_buffer("td_raw_anchors", torch.zeros(0, D))  # (C, D) td-raw anchors mu_c (the paper's)
        self.register_buffer("td_anchors", torch.zeros(0, D))  # (C, D) calibrated td: centred class means
        self.register_buffer("td_center", torch.zeros(0, D))  # (K, D) each expert's mean residual
        self.register_buffer("td_var", torch.zeros(0, D))  # (K, D) its within-class spread per channel
        self.register_buffer("td_score_mean", torch.zeros(0))  # (K,) own-task score mean
        self.register_buffer("td_score_std", torch.zeros(0))  # (K,) own-task score spread
        self.register_buffer("proto_clip", torch.zeros(0, D))  # (C, D) frozen-CLIP frame-mean prototypes
        self.register_buffer("proto_adapter", torch.zeros(0, D))  # (C, D) adapted frame-mean prototypes

    @property
    def num_experts(self) -> int:
        return len(self.experts)

    @property
    def num_classes(self) -> int:
        return self.text_embeddings.shape[0]

    def add_task(self, text_embeddings: torch.Tensor, init_from_previous: bool = True) -> int:
        """Append a task's classes and a new expert; returns the expert's index."""
        k = self.num_experts
        if init_from_previous and k > 0:
            expert = copy.deepcopy(self.experts[-1])  # warm start (model.expert_init, docs/method.md)
        else:
            expert = TemporalExpert(self.dim, self.num_frames, **self.expert_kwargs)
        self.experts.append(expert.to(self.text_embeddings.device))
        c = text_embeddings.shape[0]
        dev = self.text_embeddings.device
        self.text_embeddings = torch.cat([self.text_embeddings, text_embeddings.to(dev, torch.float32)])
        self.class_to_expert = torch.cat([self.class_to_expert, torch.full((c,), k, dtype=torch.long, device=dev)])
        pad = torch.zeros(c, self.dim, device=dev)
        # Anchors of a task exist only after its end_task; zeros until then.
        self.td_raw_anchors = torch.cat([self.td_raw_anchors, pad])
        self.td_anchors = torch.cat([self.td_anchors, pad])
        self.td_center = torch.cat([self.td_center, torch.zeros(1, self.dim, device=dev)])
        self.td_var = torch.cat([self.td_var, torch.ones(1, self.dim, device=dev)])
        self.td_score_mean = torch.cat([self.td_score_mean, torch.zeros(1, device=dev)])
        self.td_score_std = torch.cat([self.td_score_std, torch.ones(1, device=dev)])
        self.proto_clip = torch.cat([self.proto_clip, pad])
        self.proto_adapter = torch.cat([self.proto_adapter, pad])
        return k

    def frame_features(self, frames: torch.Tensor, adapters: nn.ModuleList | bool = True) -> torch.Tensor:
        """`(B, T, 3, H, W)` clips -> `(B, T, D)` frame features (the backbone is per frame)."""
        B, T = frames.shape[:2]
        return self.backbone(frames.flatten(0, 1), adapters=adapters).view(B, T, -1)

    def expert_outputs(self, feats: torch.Tensor) -> torch.Tensor:
        """`(B, T, D)` -> `(B, K, D)`, one output per expert."""
        return torch.stack([e(feats) for e in self.experts], dim=1)

    def forward(
        self, frames: torch.Tensor, routing: str = "td", tau: float = 0.1, task_ids: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Task-agnostic inference over every class seen so far (Eq. 12 + sec. 3)."""
        feats = self.frame_features(frames)  # (B, T, D)
        return self.classify_features(feats, routing, tau, task_ids, frames=frames)

    def classify_features(
        self,
        feats: torch.Tensor,
        routing: str = "td",
        tau: float = 0.1,
        task_ids: torch.Tensor | None = None,
        frames: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        fbar = feats.mean(dim=1)  # (B, D) Eq. 8
        z = self.expert_outputs(feats)  # (B, K, D)
        anchors, query = None, None
        calibration = None
        if routing == "td":
            anchors, calibration = self.td_anchors, self.td_calibration()
        elif routing == "td-raw":
            anchors = self.td_raw_anchors
        elif routing == "adapter":
            anchors, query = self.proto_adapter, fbar
        elif routing == "clip":
            if frames is None:
                raise ValueError("routing 'clip' needs the frames to run frozen CLIP")
            anchors, query = self.proto_clip, self.frame_features(frames, adapters=False).mean(1)
        w = routing_weights(
            routing, fbar=fbar, z=z, class_to_expert=self.class_to_expert, tau=tau,
            anchors=anchors, query=query, task_ids=task_ids, calibration=calibration,
        )  # (B, K)
        v = combine(fbar, z, w)  # (B, D)
        return {
            "logits": cosine_logits(v, self.text_embeddings, self.logit_scale),  # (B, C)
            "spatial_logits": cosine_logits(fbar, self.text_embeddings, self.logit_scale),
            "weights": w,
            "v": v,
            "fbar": fbar,
            "z": z,
        }

    def td_calibration(self) -> dict[str, torch.Tensor]:
        """The calibrated td router's per-expert statistics (see router.routing_weights)."""
        return {"center": self.td_center, "var": self.td_var, "score_mean": self.td_score_mean,
                "score_std": self.td_score_std}
