"""PEL4VAD's training objective (Pu et al., TIP 2024), as the official ``train_func`` computes it.

``total = BCE(video score, label) + lamda * KL(prompt logits || label-similarity targets)``:

- video score: the top-1 snippet score of a normal video, the mean of the top ``len // 16 + 1`` of an
  anomalous one, over its first ``len`` snippets (rows before the zero padding);
- prompt-enhanced term: each video's feature pooled with anomaly weights ``exp(10 s) - 1`` (L1-normalised
  over time) is paired with its class prompt, and an anomalous video's feature pooled with normal weights
  ``exp(10 (1 - s)) - 1`` with the normal prompt; cosine logits (scaled by ``exp(logit_scale)``) between
  pooled features and the rows' prompts are pulled by a KL divergence (batch mean) towards
  ``softmax(10 · same-class)`` over the rows.

The official loss reads per-video class indices (row 0 of the prompts is the normal class). pivad's
loaders carry video labels only: without ``classes`` an anomalous video is paired with the mean of the
anomaly prompts (docs/backbones.md). The rows are grouped (all foreground rows, then the background
rows) rather than interleaved per video; the loss does not depend on their order.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pivad.models.pel4vad import PEL4VADOutput


def mil_bce(scores: torch.Tensor, labels: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Official ``CLAS2``: BCE of top-k mean video scores (k = 1 normal, ``len // 16 + 1`` anomalous)."""
    B, T = scores.shape
    lengths = lengths.clamp(1, T)
    k = torch.where(labels > 0, lengths // 16 + 1, torch.ones_like(lengths))  # (B,)
    valid = torch.arange(T, device=scores.device) < lengths.unsqueeze(1)  # (B, T)
    ranked = scores.masked_fill(~valid, float("-inf")).sort(dim=1, descending=True).values  # (B, T)
    take = torch.arange(T, device=scores.device) < k.unsqueeze(1)  # (B, T)
    video = ranked.masked_fill(~take, 0.0).sum(1) / k  # (B,)
    return F.binary_cross_entropy(video, labels.to(video.dtype))


def prompt_loss(out: PEL4VADOutput, classes: torch.Tensor, prompts: torch.Tensor) -> torch.Tensor:
    """Official ``get_cas`` + ``create_logits`` + ``KLV_loss``. ``classes`` ``[B]`` long, 0 = normal;
    ``prompts`` ``[C, D]`` indexed by class."""
    s = out.scores.float()  # (B, T)
    feat = out.video_feat.float()  # (B, T, D)
    abn = F.normalize(torch.expm1(10 * s), p=1, dim=1)  # (B, T) anomaly pooling weights
    nor = F.normalize(torch.expm1(10 * (1 - s)), p=1, dim=1)  # (B, T) normal pooling weights
    abn_feat = torch.einsum("bt,btd->bd", abn, feat)  # (B, D)
    nor_feat = torch.einsum("bt,btd->bd", nor, feat)
    anomalous = classes != 0
    rows = torch.cat([abn_feat, nor_feat[anomalous]])  # (N, D) foreground rows, then background rows
    row_classes = torch.cat([classes, classes.new_zeros(int(anomalous.sum()))])  # (N,)
    tokens = prompts.float()[row_classes]  # (N, D)
    logits = out.logit_scale.float().exp() * F.normalize(rows, dim=-1, eps=0.0) @ F.normalize(tokens, dim=-1, eps=0.0).t()
    same = (row_classes.unsqueeze(1) == row_classes.unsqueeze(0)).float()  # (N, N)
    target = torch.softmax(10 * same, dim=1)
    return F.kl_div(torch.log_softmax(logits, dim=1), target, reduction="batchmean")


def pel4vad_loss(out: PEL4VADOutput, labels: torch.Tensor, lamda: float = 1.0,
                 classes: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``(total, parts)``; ``classes`` ``[B]`` (0 = normal) indexes ``out.prompts`` as the official loss
    does; without it the video label picks the normal prompt or the mean anomaly prompt."""
    labels = labels.float()
    bce = mil_bce(out.scores.float(), labels, out.lengths)
    if classes is None:
        prompts = torch.stack([out.prompts[0], out.prompts[1:].mean(0)])  # (2, D) normal, mean anomaly
        classes = (labels > 0).long()
    else:
        prompts = out.prompts
    kl = prompt_loss(out, classes.long(), prompts)
    total = bce + lamda * kl
    return total, {"total_loss": total, "mil_bce": bce, "prompt_kl": kl}
