"""The Poly-modal Inductor's losses (π-VAD, CVPR 2025, Sections 4.2–4.4) as pure functions.

- :func:`pmg_loss` — eq. 1, reconstruction of the real modality embeddings by PMG.
- :func:`infonce` — eq. 2, snippet-level bi-directional InfoNCE between F* and one aligned modality.
- :func:`align_loss` — eq. 3, the sum of :func:`infonce` over modalities.
- :func:`distill_loss` — eq. 4, F_M* against the frozen teacher's feature at the same point.
- :func:`inductor_terms` — those three per PI from what π-VAD's train forward returns.
- :func:`pivad_loss` — eqs. 5 and 6, the two training steps, with the Table 3 switches.

Axis letters: B batch (crops), T snippets, D feature width.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from pivad.models.checkpointing import run_block

if TYPE_CHECKING:  # pragma: no cover
    from pivad.config import LossConfig

INFONCE_FORMS = ("paper", "standard")
INFONCE_DIRECTIONS = ("both", "rgb_to_modality", "modality_to_rgb")
PHASES = ("first", "second")


def pmg_loss(pseudo: dict[str, torch.Tensor], real: dict[str, torch.Tensor], checkpoint: bool = False) -> torch.Tensor:
    """Σ_j mean over batch, snippets and dims of (ê_j − e_j)² (eq. 1 averaged over snippets), in float32.

    ``checkpoint=True`` recomputes each term in backward, so no float32 copy of a bfloat16 ê_j is kept."""
    if not pseudo:
        raise ValueError("pmg_loss: no modalities given")
    total = None
    for name, pred in pseudo.items():
        if name not in real:
            raise ValueError(f"pmg_loss: real features of modality '{name}' are missing")
        target = real[name]
        if target.shape != pred.shape:
            raise ValueError(
                f"pmg_loss: modality '{name}' expected shape {list(pred.shape)}, got {list(target.shape)}"
            )
        term = run_block(_mse_fp32, pred, target, enabled=checkpoint)
        total = term if total is None else total + term
    return total


def _mse_fp32(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(pred.float(), target.float())  # .float(): a no-op on float32 tensors


def similarity_logits(rgb: torch.Tensor, modality: torch.Tensor, tau: float) -> torch.Tensor:
    """Cosine similarity over temperature, per video: ``S[b,i,k] = sim(F*_i, z_k) / τ`` (B, T, T)."""
    a = F.normalize(rgb.float(), dim=-1, eps=1e-8)  # (B, T, D) float32 (bf16 training casts here)
    z = F.normalize(modality.float(), dim=-1, eps=1e-8)  # (B, T, D)
    return torch.einsum("bid,bkd->bik", a, z) / tau  # (B, T, T)


def _one_direction(logits: torch.Tensor, form: str, exclude: torch.Tensor | None = None) -> torch.Tensor:
    """−mean_i log( exp(S_ii) / Σ_k exp(S_ik) ), the sum over k ≠ i in the paper form. (B, T, T) -> ().

    ``exclude`` (B, T, T) bool leaves the marked k out of row i's negatives (never the positive itself);
    a row left with an empty denominator contributes 0.
    """
    t = logits.shape[-1]
    positive = torch.diagonal(logits, dim1=-2, dim2=-1)  # (B, T)
    eye = torch.eye(t, dtype=torch.bool, device=logits.device)
    drop = eye if form == "paper" else None  # the paper leaves the positive out of the denominator
    if exclude is not None:
        extra = exclude & ~eye
        drop = extra if drop is None else drop | extra
    if drop is not None:
        logits = logits.masked_fill(drop, float("-inf"))
    denominator = torch.logsumexp(logits, dim=-1)  # (B, T)
    if exclude is None:
        return (denominator - positive).mean()
    valid = torch.isfinite(denominator)
    return torch.where(valid, denominator - positive, torch.zeros_like(positive)).mean()


def repeated_snippets(x: torch.Tensor) -> torch.Tensor:
    """(B, T, T) bool: snippets i and k of a video are copies of one another (runs of identical rows).

    Resampling a video of T < N snippets to N repeats rows next to each other; such copies are the
    same snippet, not negatives. ``x`` is the RGB input ``[B,T,D]``.
    """
    same_next = (x[:, 1:] == x[:, :-1]).all(dim=-1)  # (B, T-1)
    run = torch.cat([x.new_zeros(x.shape[0], 1, dtype=torch.long), (~same_next).long().cumsum(-1)], dim=1)  # (B, T)
    return run.unsqueeze(2) == run.unsqueeze(1)  # (B, T, T)


def infonce(
    rgb: torch.Tensor,
    modality: torch.Tensor,
    tau: float = 0.1,
    form: str = "paper",
    direction: str = "both",
    exclude: torch.Tensor | None = None,
) -> torch.Tensor:
    """Snippet-level InfoNCE within each video (eq. 2), averaged over videos and snippets.

    ``rgb`` F* and ``modality`` (the aligned embedding of one modality) are ``[B,T,D]``. Snippet i of
    both is the positive pair; the other snippets of the same video are the negatives.
    ``form="paper"`` leaves the positive out of the denominator (Σ_{k≠i}, as eq. 2 is written; the
    loss can then go below zero); ``form="standard"`` keeps it (cross-entropy over the T candidates).
    ``direction``: ``rgb_to_modality`` (rows: an RGB snippet against all modality snippets),
    ``modality_to_rgb`` (the transpose), or ``both`` (their mean, the paper's bi-directional loss).
    ``exclude`` (B, T, T) bool, symmetric: pairs that are not negatives (:func:`repeated_snippets`).

    With T = 1 there are no negatives: the paper form's denominator is empty, so the loss is defined
    as 0 there (the standard form is exactly 0 at T = 1 anyway). The result stays in the graph.
    """
    if form not in INFONCE_FORMS:
        raise ValueError(f"infonce: form must be one of {INFONCE_FORMS}, got {form!r}")
    if direction not in INFONCE_DIRECTIONS:
        raise ValueError(f"infonce: direction must be one of {INFONCE_DIRECTIONS}, got {direction!r}")
    if rgb.shape != modality.shape or rgb.dim() != 3:
        raise ValueError(
            f"infonce: expected two [B,T,D] tensors of one shape, got {list(rgb.shape)} and {list(modality.shape)}"
        )
    logits = similarity_logits(rgb, modality, tau)  # (B, T, T)
    if logits.shape[-1] == 1 and form == "paper":
        return logits.sum() * 0.0  # no negatives: defined as 0 (kept in the graph, no NaN)
    if direction == "rgb_to_modality":
        return _one_direction(logits, form, exclude)
    if direction == "modality_to_rgb":
        return _one_direction(logits.transpose(-2, -1), form, exclude)
    return 0.5 * (_one_direction(logits, form, exclude) + _one_direction(logits.transpose(-2, -1), form, exclude))


def align_loss(
    rgb: torch.Tensor,
    aligned: dict[str, torch.Tensor],
    tau: float = 0.1,
    form: str = "paper",
    exclude: torch.Tensor | None = None,
    checkpoint: bool = False,
) -> torch.Tensor:
    """L_align = Σ_j InfoNCE(F*, z_j) over modalities j (eq. 3), both directions.

    ``checkpoint=True`` keeps only F* and z_j for backward and recomputes each term's ``(B, T, T)``
    similarities there (``train.activation_checkpointing``; the same values)."""
    if not aligned:
        raise ValueError("align_loss: no modalities given")
    total = None
    for z in aligned.values():
        term = run_block(partial(infonce, tau=tau, form=form, direction="both", exclude=exclude), rgb, z,
                         enabled=checkpoint)
        total = term if total is None else total + term
    return total


def distill_loss(student: torch.Tensor, teacher: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over batch, snippets and dims of (F_M* − F_teach)² (eq. 4), in float32; the teacher is a constant.
    ``weights`` ``[B]`` (0/1 from :func:`distill_gate`) scale each video's mean before the batch mean."""
    if student.shape != teacher.shape:
        raise ValueError(
            f"distill_loss: student feature {list(student.shape)} and teacher feature {list(teacher.shape)} differ"
        )
    if weights is None:
        return F.mse_loss(student.float(), teacher.detach().float())
    err = (student.float() - teacher.detach().float()).pow(2).flatten(1).mean(1)  # (B,)
    return (err * weights.detach().float()).mean()


def distill_gate(student_scores: torch.Tensor, teacher_scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``[B]`` 1.0 where the student's video-level MIL loss (BCE of the top-k mean snippet score, k = T//16+1,
    UR-DMU's) is above the teacher's, 0.0 where the student already beats the teacher on that video
    (``loss.distill_gate: mil``); no gradient."""
    from pivad.models.urdmu import time_topk, topk_mean

    if student_scores.shape != teacher_scores.shape:
        raise ValueError(f"distill_gate: student scores {list(student_scores.shape)} and teacher scores "
                         f"{list(teacher_scores.shape)} differ")
    k = time_topk(student_scores.shape[1])
    y = labels.float()
    eps = 1e-6
    with torch.no_grad():
        s = topk_mean(student_scores.float(), k).clamp(eps, 1 - eps)  # (B,)
        t = topk_mean(teacher_scores.float(), k).clamp(eps, 1 - eps)
        bce_s = F.binary_cross_entropy(s, y, reduction="none")
        bce_t = F.binary_cross_entropy(t, y, reduction="none")
        return (bce_s > bce_t).float()


def inductor_terms(out, loss_cfg: LossConfig, distill_weights: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """L_PMG, L_align and L_distill of a :class:`pivad.models.pivad.PIVADOutput`, summed over PIs and
    modalities (``pmg``, ``align``, ``distill``), and per hook point (``"<point>/<loss>"``), in float32.
    L_distill is taken at ``out.distill_points`` (every PI when None), each video weighted by
    ``distill_weights`` ``[B]`` when given."""
    cfg = out.settings
    ckpt = out.checkpoint  # recompute the loss terms in backward: keep only their inputs
    repeats = repeated_snippets(out.rgb) if cfg.align_mask_repeats and loss_cfg.use_align else None
    aux: dict[str, torch.Tensor] = {}
    for point, tr in out.traces.items():
        if loss_cfg.use_pmg and tr.pseudo:
            if tr.target is None:
                raise ValueError("inductor_terms: L_PMG needs the real modality features")
            aux[f"{point}/pmg"] = pmg_loss(tr.pseudo, tr.target, checkpoint=ckpt)
        if loss_cfg.use_align:
            anchor = tr.feature.detach() if cfg.align_detach else tr.feature
            aux[f"{point}/align"] = align_loss(anchor, tr.aligned, tau=cfg.tau, form=cfg.infonce_form,
                                               exclude=repeats, checkpoint=ckpt)
        points = getattr(out, "distill_points", None)
        if loss_cfg.use_distill and (points is None or point in points):
            if tr.teacher is None:
                raise ValueError("inductor_terms: L_distill needs the teacher's features (loss.use_distill)")
            aux[f"{point}/distill"] = run_block(distill_loss, tr.out, tr.teacher, distill_weights, enabled=ckpt)
    for name in ("pmg", "align", "distill"):
        terms = [v for k, v in aux.items() if k.endswith(f"/{name}")]
        if terms:
            aux[name] = torch.stack(terms).sum()
    if loss_cfg.use_pmg and "pmg" not in aux:
        aux["pmg"] = out.rgb.new_zeros((), dtype=torch.float32)  # modality_source "real": there is no PMG to train
    return aux


def pivad_loss(out, labels: torch.Tensor, loss_cfg: LossConfig, phase: str, cfg=None
               ) -> tuple[torch.Tensor, dict[str, float]]:
    """π-VAD's objective for one training step.

    ``phase="first"``: L_first = L_PMG + L_align + L_distill (eq. 5).
    ``phase="second"``: L_second = L_MIL + λ1·L_align + λ2·L_distill + L_PMG (eq. 6), with L_MIL the
    student backbone's own loss (:func:`pivad.losses.backbone.backbone_loss`; ``cfg``, the run's Config,
    gives its settings).
    ``loss_cfg.use_pmg/use_align/use_distill`` drop a term (paper Table 3). ``out`` is a
    :class:`pivad.models.PIVADOutput` (its terms from :func:`inductor_terms`), or any object whose
    ``aux`` holds precomputed ``pmg``, ``align`` and ``distill`` tensors. Returns the total and every
    part as a float for logging.
    """
    if phase not in PHASES:
        raise ValueError(f"pivad_loss: phase must be one of {PHASES}, got {phase!r}")
    gate = None
    if phase == "second" and loss_cfg.use_distill and getattr(loss_cfg, "distill_gate", "none") == "mil" \
            and hasattr(out, "traces"):
        if out.teacher_scores is None or out.student_scores is None:
            raise ValueError("pivad_loss: loss.distill_gate 'mil' needs the student's and the teacher's scores")
        gate = distill_gate(out.student_scores, out.teacher_scores, labels)  # (B,)
    aux = inductor_terms(out, loss_cfg, gate) if hasattr(out, "traces") else out.aux
    weights = {
        "pmg": 1.0,
        "align": 1.0 if phase == "first" else loss_cfg.lambda_align,
        "distill": 1.0 if phase == "first" else loss_cfg.lambda_distill,
    }
    switches = {"pmg": loss_cfg.use_pmg, "align": loss_cfg.use_align, "distill": loss_cfg.use_distill}
    total = None
    parts: dict[str, float] = {}
    for name, weight in weights.items():
        if not switches[name]:
            continue
        if name not in aux:
            raise ValueError(f"pivad_loss: loss.use_{name} is on but the model output has no '{name}' term")
        term = aux[name]
        parts[name] = float(term.detach())
        total = weight * term if total is None else total + weight * term
    if phase == "second":
        from pivad.losses.backbone import backbone_loss

        if out.student is None:
            raise ValueError("pivad_loss: phase 'second' needs the student's outputs (run the model with "
                             "phase='second')")
        mil, mil_parts = backbone_loss(out.student, labels, cfg)
        parts["mil"] = float(mil.detach())
        for key, value in mil_parts.items():
            parts[f"mil/{key}"] = float(value.detach()) if torch.is_tensor(value) else float(value)
        total = mil if total is None else total + mil
    if total is None:
        raise ValueError("pivad_loss: every term of L_first is switched off (loss.use_pmg/use_align/use_distill)")
    if gate is not None:
        parts["distill_gate"] = float(gate.mean())  # share of videos still pulled towards the teacher
    for key, value in aux.items():
        if "/" in key:  # per-position / per-modality details, logged only
            parts[key] = float(value.detach())
    parts["total"] = float(total.detach())
    return total, parts
