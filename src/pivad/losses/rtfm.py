"""RTFM's training objective, as the official ``train.py`` and ``Model.forward`` compute it.

The batch holds ``n`` normal videos, then ``n`` abnormal ones (``b = 2n``). Per video, the ``k``
snippets of largest crop-mean feature magnitude are selected, the magnitudes first multiplied by a
dropout mask of ones (p = 0.7: the kept snippets count 1/0.3, the dropped ones 0). Then

``total = BCE(mean of the k scores, label) + alpha * mean_{crop, video}((|m - |a|| + |n|)^2)
        + lambda_smooth * Σ (s_{i+1} - s_i)^2 + lambda_sparse * |s|_2``

where ``a`` / ``n`` are the mean of a crop's k selected features of an abnormal / normal video
(pairs taken in order), and ``s`` is the abnormal half's crop-mean scores, flattened over videos.
Official constants: k = 3, m = 100, alpha = 1e-4, lambda_smooth = 8e-4, lambda_sparse = 8e-3.

QUIRKS kept for parity (they change the numbers):

- the magnitude term is ``(|m - |a|| + |n|)^2``, not the paper's hinge ``max(0, m - |a| + |n|)``:
  abnormal magnitudes above the margin are pushed back down;
- sparsity is the L2 norm of all abnormal scores (``torch.norm`` of the flat vector), not an L1 mean;
- smoothness runs over the flattened scores, so it also pairs the last snippet of one video with the
  first of the next;
- the selection's dropout masks are drawn abnormal half first, after the model's own dropouts.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pivad.config import RTFMConfig
from pivad.models.rtfm import RTFMOutput


@dataclass
class RTFMSelection:
    """Top-k by feature magnitude, per half of the batch (the official forward's first four outputs)."""

    score_abnormal: torch.Tensor  # (n,) mean score of each abnormal video's k selected snippets
    score_normal: torch.Tensor  # (n,)
    feat_abnormal: torch.Tensor  # (n_crops * n, k, F) selected features, crop-major as the official
    feat_normal: torch.Tensor  # (n_crops * n, k, F)


def select_topk(out: RTFMOutput, k: int = 3, drop: float = 0.7) -> RTFMSelection:
    """The official top-k selection on a train-mode output (normal half first). ``drop`` is the
    dropout on the magnitudes before ranking (0: rank the magnitudes themselves)."""
    b = out.scores.shape[0]
    if b % 2:
        raise ValueError(f"RTFM training expects an even batch (normal half first), got {b} videos")
    half = b // 2
    scores_n, scores_a = out.scores.split(half)  # (n, T)
    mag_n, mag_a = out.magnitudes.split(half)  # (n, T)
    feat_n, feat_a = out.features.split(half)  # (n, n_crops, T, F)
    k = min(k, mag_n.shape[1])  # the official crashes on videos shorter than k
    sel = []
    for mag in (mag_a, mag_n):  # QUIRK: official draws the abnormal mask first
        keep = F.dropout(torch.ones_like(mag), drop, True) if drop > 0 else torch.ones_like(mag)
        sel.append(torch.topk(mag * keep, k, dim=1)[1])  # (n, k)
    idx_a, idx_n = sel
    return RTFMSelection(
        score_abnormal=torch.gather(scores_a, 1, idx_a).mean(1),
        score_normal=torch.gather(scores_n, 1, idx_n).mean(1),
        feat_abnormal=_gather_crops(feat_a, idx_a),
        feat_normal=_gather_crops(feat_n, idx_n),
    )


def _gather_crops(feat: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Rows ``idx`` ``[n, k]`` of every crop of ``feat`` ``[n, c, T, F]`` -> ``[c * n, k, F]`` (crop-major)."""
    n, c, _, D = feat.shape
    index = idx[:, None, :, None].expand(n, c, idx.shape[1], D)  # (n, c, k, F)
    return torch.gather(feat, 2, index).transpose(0, 1).reshape(c * n, idx.shape[1], D)


def rtfm_loss(
    out: RTFMOutput,
    labels: torch.Tensor | None = None,
    cfg: RTFMConfig | None = None,
    selection: RTFMSelection | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``(total, parts)`` for a train-mode output (normal half first). ``labels`` ``[b]`` are the video
    labels (default: 0 for the normal half, 1 for the abnormal half, as the official loaders give);
    ``selection`` a :func:`select_topk` already drawn (default: drawn here with ``cfg.topk``, ``cfg.dropout``).
    Parts: ``loss_cls`` (BCE), ``loss_rtfm`` (magnitude term before alpha), ``loss_smooth`` and
    ``loss_sparse`` (weighted, as the official logs them), ``total_loss``."""
    cfg = cfg or RTFMConfig()
    sel = selection if selection is not None else select_topk(out, cfg.topk, cfg.dropout)
    with _autocast_off(out.scores.device):  # BCE refuses autocast; the terms are float32 in a bf16 run
        return _loss_terms(out, sel, labels, cfg)


def _loss_terms(
    out: RTFMOutput, sel: RTFMSelection, labels: torch.Tensor | None, cfg: RTFMConfig
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    half = out.scores.shape[0] // 2
    if labels is None:
        labels = torch.cat([out.scores.new_zeros(half), out.scores.new_ones(half)])
    score = torch.cat([sel.score_normal, sel.score_abnormal]).float()  # (b,)
    loss_cls = F.binary_cross_entropy(score, labels.to(score))
    mag_a = sel.feat_abnormal.float().mean(1).norm(p=2, dim=-1)  # (n_crops * n,)
    mag_n = sel.feat_normal.float().mean(1).norm(p=2, dim=-1)
    loss_rtfm = ((cfg.margin - mag_a).abs() + mag_n).pow(2).mean()
    s = out.scores[half:].float().reshape(-1)  # (n * T,) abnormal scores, videos concatenated
    # QUIRK: the last score is compared with itself; neighbours across videos are compared too
    loss_smooth = cfg.lambda_smooth * (s[1:] - s[:-1]).pow(2).sum()
    loss_sparse = cfg.lambda_sparse * s.norm(p=2)
    total = loss_cls + cfg.alpha * loss_rtfm + loss_smooth + loss_sparse
    parts = {
        "total_loss": total,
        "loss_cls": loss_cls,
        "loss_rtfm": loss_rtfm,
        "loss_smooth": loss_smooth,
        "loss_sparse": loss_sparse,
    }
    return total, parts


def _autocast_off(device: torch.device) -> contextlib.AbstractContextManager:
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()
