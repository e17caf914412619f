"""UR-DMU's training objective (the paper's L_MIL), as the official ``AD_Loss`` computes it.

``total = BCE(topk_mean(scores), label)
        + 0.1 * (BCE(topk_mean(A_att), 1) + BCE(topk_mean(1 - N_Aatt), 1) + BCE(N_att, 1) + BCE(A_Natt, 0))
        + 0.1 * triplet + 0.001 * kl + 0.0001 * distance``

with top-k over time, ``k = T // 16 + 1``. Part names are the official ones (``N_Aatt`` is the loss on
``1 - N_Aatt``), plus ``distance``, which enters the total but is missing from the official dict.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pivad.models.urdmu import URDMUOutput, time_topk, topk_mean


def mil_loss(out: URDMUOutput, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``(total, parts)`` for train-mode outputs and video labels ``[B]`` (normal half first, 1 = abnormal)."""
    labels = labels.to(out.scores.dtype)
    k = time_topk(out.scores.shape[1])
    att_loss = F.binary_cross_entropy(topk_mean(out.scores, k), labels)
    a_loss = F.binary_cross_entropy(*_towards(topk_mean(out.A_att, k), 1.0))
    n_aatt_loss = F.binary_cross_entropy(*_towards(topk_mean(1 - out.N_Aatt, k), 1.0))
    n_loss = F.binary_cross_entropy(*_towards(out.N_att, 1.0))
    a_nloss = F.binary_cross_entropy(*_towards(out.A_Natt, 0.0))
    total = (
        att_loss
        + 0.1 * (a_loss + n_aatt_loss + n_loss + a_nloss)
        + 0.1 * out.triplet
        + 0.001 * out.kl
        + 0.0001 * out.distance
    )
    parts = {
        "total_loss": total,
        "att_loss": att_loss,
        "N_Aatt": n_aatt_loss,
        "A_loss": a_loss,
        "N_loss": n_loss,
        "A_Nloss": a_nloss,
        "triplet": out.triplet,
        "kl_loss": out.kl,
        "distance": out.distance,
    }
    return total, parts


def _towards(x: torch.Tensor, target: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, constant target of x's shape)`` for a BCE call."""
    return x, torch.full_like(x, target)
