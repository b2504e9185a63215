"""The symmetric supervised contrastive loss between videos and class texts (Eqs. 13-15)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def contrastive_loss(
    v: torch.Tensor, text: torch.Tensor, labels: torch.Tensor, logit_scale: float, eps: float = 1e-8
) -> torch.Tensor:
    """`(L_v2t + L_t2v) / 2` with `S = logit_scale * cos(v_i, t_j)` and positives `M_ij`.

    v: `(N, D)` videos; text: `(C, D)` candidate class texts; labels: `(N,)` indices
    into `text`. v2t averages over videos; t2v averages over the texts that have at
    least one positive in the batch (a text with none carries no signal).
    """
    M = F.one_hot(labels, text.shape[0]).to(v.dtype)  # (N, C)
    return contrastive_loss_masked(v, text, M, logit_scale, eps)


def contrastive_loss_masked(
    v: torch.Tensor, text: torch.Tensor, M: torch.Tensor, logit_scale: float | torch.Tensor, eps: float = 1e-8
) -> torch.Tensor:
    """The same loss with any positives mask `M (N, C)` (several texts may fit one video,
    as when pretraining on captions that name only some attributes)."""
    S = logit_scale * F.normalize(v, dim=-1) @ F.normalize(text, dim=-1).T  # (N, C)
    M = M.to(S.dtype)
    v2t = -(M * F.log_softmax(S, dim=1)).sum(1) / (M.sum(1) + eps)  # (N,)
    t2v_per_text = -(M * F.log_softmax(S, dim=0)).sum(0) / (M.sum(0) + eps)  # (C,)
    has_positive = M.sum(0) > 0
    t2v = t2v_per_text[has_positive].mean()
    return (v2t.mean() + t2v) / 2
