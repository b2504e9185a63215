"""TD-MoE routing (docs/method.md, "Routing between experts"; Eqs. 8-12) and the Table 4 variants.

Pure tensor functions. The NumPy twin, `stpr.runtime.model.router`, defines the shared
functions in the same order with the same keyword-only signatures: `td_distance_scores`,
`expert_scores`, `routing_scores`, `routing_weights`, `weights_from_scores`, `combine`.
`tests/test_numpy_router.py` holds the two together (scores before the softmax, weights
and logits) to 1e-5. Training only: `td_class_means` (the anchors, built at `end_task`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from stpr.runtime.contract import ROUTING_MODES


def _owned(class_to_expert: torch.Tensor, num_experts: int, device: torch.device) -> torch.Tensor:
    """`(1, K, C)` mask: class c belongs to expert e (each expert scores only its own classes)."""
    return class_to_expert.to(device).view(1, 1, -1) == torch.arange(num_experts, device=device).view(1, -1, 1)


def td_distance_scores(d: torch.Tensor, *, means: torch.Tensor, class_to_expert: torch.Tensor,
                       var: torch.Tensor) -> torch.Tensor:
    """`s_e = -min_{c in C_e} mean_j (d_ej - m_cj)^2 / var_ej`: how typical each expert finds
    its centred residual, in units of its own within-class spread (a diagonal Mahalanobis
    distance, so a channel that varies a lot within a class counts less).

    d: `(B, K, D)` centred residuals; means: `(C, D)`; var: `(K, D)`. Returns `(B, K)`.
    Expanded as `d^2/v - 2 d m / v + m^2 / v` so no `(B, K, C, D)` tensor is formed.
    """
    K, D = var.shape
    inv = 1.0 / var  # (K, D)
    quad = (d * d * inv).sum(-1, keepdim=True)  # (B, K, 1)
    cross = torch.einsum("bkd,cd->bkc", d * inv, means)  # (B, K, C)
    msq = inv @ (means * means).T  # (K, C)
    dist = (quad - 2 * cross + msq) / D  # (B, K, C)
    return -dist.masked_fill(~_owned(class_to_expert, K, d.device), float("inf")).amin(dim=-1)


def expert_scores(query: torch.Tensor, *, anchors: torch.Tensor, class_to_expert: torch.Tensor,
                  num_experts: int) -> torch.Tensor:
    """`s_e = max_{c in C_e} cos(query_e, anchor_c)` (Eq. 11).

    query: `(B, K, D)` one vector per expert (td: `d_e = z_e - fbar`) or `(B, D)` shared
    by all experts (clip/adapter routing). anchors: `(C, D)`; class_to_expert: `(C,)`.
    Returns `(B, K)`.
    """
    if query.dim() == 2:
        query = query.unsqueeze(1).expand(-1, num_experts, -1)
    sim = F.normalize(query, dim=-1) @ F.normalize(anchors, dim=-1).T  # (B, K, C)
    return sim.masked_fill(~_owned(class_to_expert, num_experts, sim.device), float("-inf")).amax(dim=-1)  # (B, K)


def routing_scores(
    mode: str,
    *,
    fbar: torch.Tensor,
    z: torch.Tensor,
    class_to_expert: torch.Tensor,
    anchors: torch.Tensor | None = None,
    query: torch.Tensor | None = None,
    calibration: dict[str, torch.Tensor] | None = None,
) -> torch.Tensor | None:
    """Per-expert scores `(B, K)` before the softmax; None for avg and oracle, which score nothing.

    fbar: `(B, D)` adapted frame mean; z: `(B, K, D)` expert outputs. `anchors` are the
    td anchors (td, td-raw) or class prototypes (clip/adapter); `query` is what the
    prototypes are compared with (clip: frozen-CLIP frame mean, adapter: fbar, the default).
    `calibration` (td only): per-expert `center (K, D)`, `var (K, D)`, `score_mean (K,)`,
    `score_std (K,)`. td is the calibrated router: the residual centred by each expert's
    mean, scored against its class means by `td_distance_scores`, standardised by the
    expert's own-task score mean and spread. td-raw is the paper's form (Eq. 11): raw
    residual, cosine.
    """
    K = z.shape[1]
    if mode in ("avg", "oracle"):
        return None
    if mode not in ROUTING_MODES:
        raise ValueError(f"unknown routing {mode!r}; valid: {', '.join(ROUTING_MODES)}")
    if anchors is None:
        raise ValueError(f"routing {mode!r} needs anchors; none were built yet (finish a task first)")
    if mode == "td":
        if calibration is None:
            raise ValueError("routing 'td' needs the per-expert calibration built at end_task")
        d = z - fbar.unsqueeze(1) - calibration["center"].to(z)  # (B, K, D) centred Eq. 10
        raw = td_distance_scores(d, means=anchors.to(z), class_to_expert=class_to_expert,
                                 var=calibration["var"].to(z))  # (B, K)
        return (raw - calibration["score_mean"].to(z)) / calibration["score_std"].to(z)
    if mode == "td-raw":
        return expert_scores(z - fbar.unsqueeze(1), anchors=anchors, class_to_expert=class_to_expert,
                             num_experts=K)  # Eq. 10-11
    if mode == "clip" and query is None:
        raise ValueError("routing 'clip' needs its query features (the frozen-CLIP frame mean)")
    return expert_scores(fbar if query is None else query, anchors=anchors, class_to_expert=class_to_expert,
                         num_experts=K)


def routing_weights(
    mode: str,
    *,
    fbar: torch.Tensor,
    z: torch.Tensor,
    class_to_expert: torch.Tensor,
    tau: float,
    anchors: torch.Tensor | None = None,
    query: torch.Tensor | None = None,
    calibration: dict[str, torch.Tensor] | None = None,
    task_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Weights `w (B, K)` over experts for one of `ROUTING_MODES`: `softmax(routing_scores / tau)`
    (tau in the scores' units: for td, each expert's own-task score spread), equal for avg,
    the true task for oracle (`task_ids`; an upper bound for analysis only, never a result)."""
    if mode == "oracle":
        if task_ids is None:
            raise ValueError("routing 'oracle' needs the true task ids")
        return F.one_hot(task_ids.to(z.device), z.shape[1]).to(z.dtype)
    scores = routing_scores(mode, fbar=fbar, z=z, class_to_expert=class_to_expert, anchors=anchors, query=query,
                            calibration=calibration)
    return weights_from_scores(scores, z=z, tau=tau)


def weights_from_scores(scores: torch.Tensor | None, *, z: torch.Tensor, tau: float) -> torch.Tensor:
    """`softmax(scores / tau)`; equal weights where nothing was scored (avg)."""
    if scores is None:
        B, K, _ = z.shape
        return z.new_full((B, K), 1.0 / K)
    return torch.softmax(scores / tau, dim=-1)


def combine(fbar: torch.Tensor, z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """`v = fbar + sum_e w_e z_e` (Eq. 12): `(B, D), (B, K, D), (B, K) -> (B, D)`."""
    return fbar + torch.einsum("bk,bkd->bd", w, z)


# ---- training only -------------------------------------------------------------------
def td_class_means(class_sums: torch.Tensor, class_counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One expert's calibrated td anchors from per-class sums of its residuals over its
    own task's videos (sums, so DDP ranks can add theirs first).

    class_sums: `(C, D)` sums of `d = z - fbar`; class_counts: `(C,)` videos per class.
    Returns `center (D,)`, the residual's input-independent part (its mean over the
    task), and `means (C, D)`, the class means of the centred residual `d - center`.
    """
    center = class_sums.sum(0) / class_counts.sum().clamp_min(1)  # (D,)
    means = class_sums / class_counts.clamp_min(1).unsqueeze(1) - center  # (C, D)
    return center, means
