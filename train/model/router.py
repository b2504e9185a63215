"""TD-MoE routing (METHOD.md sec. 4, Eqs. 8-12) and the Table 4 variants.

Pure tensor functions; the NumPy twin in `stpr.runtime` must agree with these.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

ROUTING_MODES = ("td", "avg", "clip", "adapter", "oracle")


def expert_scores(query: torch.Tensor, anchors: torch.Tensor, class_to_expert: torch.Tensor, num_experts: int) -> torch.Tensor:
    """`s_e = max_{c in C_e} cos(query_e, anchor_c)` (Eq. 11).

    query: `(B, K, D)` one vector per expert (td: `d_e = z_e - fbar`) or `(B, D)` shared
    by all experts (clip/adapter routing). anchors: `(C, D)`; class_to_expert: `(C,)`.
    Returns `(B, K)`.
    """
    if query.dim() == 2:
        query = query.unsqueeze(1).expand(-1, num_experts, -1)
    sim = F.normalize(query, dim=-1) @ F.normalize(anchors, dim=-1).T  # (B, K, C)
    owner = class_to_expert.to(sim.device).view(1, 1, -1) == torch.arange(num_experts, device=sim.device).view(1, -1, 1)
    return sim.masked_fill(~owner, float("-inf")).amax(dim=-1)  # (B, K)


def routing_weights(
    mode: str,
    *,
    fbar: torch.Tensor,
    z: torch.Tensor,
    class_to_expert: torch.Tensor,
    tau: float,
    anchors: torch.Tensor | None = None,
    query: torch.Tensor | None = None,
    task_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Weights `w (B, K)` over experts for one of `ROUTING_MODES`.

    fbar: `(B, D)` adapted frame mean; z: `(B, K, D)` expert outputs. `anchors` are the
    td anchors (td) or class prototypes (clip/adapter); `query` is what the prototypes
    are compared with (clip: frozen-CLIP frame mean, adapter: fbar).
    """
    B, K, _ = z.shape
    if mode == "avg":
        return z.new_full((B, K), 1.0 / K)
    if mode == "oracle":  # an upper bound for analysis only, never a reported result
        if task_ids is None:
            raise ValueError("routing 'oracle' needs the true task ids")
        return F.one_hot(task_ids.to(z.device), K).to(z.dtype)
    if anchors is None:
        raise ValueError(f"routing {mode!r} needs anchors; none were built yet (finish a task first)")
    if mode == "td":
        scores = expert_scores(z - fbar.unsqueeze(1), anchors, class_to_expert, K)  # Eq. 10-11
    elif mode in ("clip", "adapter"):
        if query is None:
            raise ValueError(f"routing {mode!r} needs its query features")
        scores = expert_scores(query, anchors, class_to_expert, K)
    else:
        raise ValueError(f"unknown routing {mode!r}; valid: {', '.join(ROUTING_MODES)}")
    return torch.softmax(scores / tau, dim=-1)


def combine(fbar: torch.Tensor, z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """`v = fbar + sum_e w_e z_e` (Eq. 12): `(B, D), (B, K, D), (B, K) -> (B, D)`."""
    return fbar + torch.einsum("bk,bkd->bd", w, z)
