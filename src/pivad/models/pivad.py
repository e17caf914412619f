"""π-VAD: a WSVAD student with Poly-modal Inductors and a frozen teacher of the same backbone (CVPR 2025, Section 4).

The student is a backbone (:mod:`pivad.models.backbone`: UR-DMU, PEL4VAD, RTFM) with a PI
(:class:`pivad.models.inductor.PI`) plugged in at each of its hook points named by ``inductor.position``
(``early``/``late``/``both`` map to each backbone's pair; UR-DMU: the embedding output, D = hidden_dim,
and the classifier-head input, D = 2·hidden_dim); each PI's F_M* replaces the feature it read. The
teacher is a frozen copy of a trained backbone of the same kind (:meth:`PIVAD.set_teacher`): always in
eval mode, never given gradients, read only for L_distill. Inference needs RGB only (student + PMG +
CMI, :meth:`PIVAD.student_only`).

Train mode returns :class:`PIVADOutput`: the student's own outputs and, per PI, what its losses read
(:class:`PITrace`). The losses are computed outside the model, by
:func:`pivad.losses.inductor.inductor_terms` and :func:`pivad.losses.inductor.pivad_loss`.

Axes: b videos, n crops, B batch (videos x crops), T snippets, D width, d_j modality width.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from pivad.models.backbone import resolve_points
from pivad.models.inductor import PI
from pivad.models.urdmu import URDMU


@dataclass
class PITrace:
    """What one PI's losses read (train mode): F*, F_M*, PMG's ê_j and their targets, CMI's z_j, the teacher."""

    feature: torch.Tensor  # F* (B, T, D) the student's feature the PI read
    out: torch.Tensor  # F_M* (B, T, D)
    pseudo: dict[str, torch.Tensor]  # ê_j (B, T, d_j); empty without PMG
    target: dict[str, torch.Tensor] | None  # e_j in the space PMG predicts (B, T, d_j); None without modalities
    aligned: dict[str, torch.Tensor]  # z_j (B, T, D)
    teacher: torch.Tensor | None  # the teacher's feature at this hook point (B, T, D); None without L_distill


@dataclass
class PIVADOutput:
    student: Any  # the backbone's train output; None when phase="first" skipped the student's head
    traces: dict[str, PITrace] = field(default_factory=dict)  # hook point -> what its PI's losses read
    rgb: torch.Tensor | None = None  # the RGB input (B, T, D_rgb), for the repeated-snippet mask of L_align
    settings: Any = None  # the InductorConfig the losses take tau, form and detach switches from
    checkpoint: bool = False  # recompute the loss terms in backward (train.activation_checkpointing)
    distill_points: tuple[str, ...] | None = None  # hook points L_distill pulls at (loss.distill_at); None: every PI's
    teacher_scores: torch.Tensor | None = None  # (B, T) the frozen teacher's snippet scores (loss.distill_gate "mil", step 2)
    student_scores: torch.Tensor | None = None  # (B, T) the student's, eval mode like the teacher's, no grad (same gate)


def _expand_batch(mods: dict[str, torch.Tensor] | None, batch: int) -> dict[str, torch.Tensor] | None:
    """Per-video modality features ``[b,T,d]`` repeated over crops to the student's batch ``b·n``."""
    if mods is None:
        return None
    out = {}
    for name, m in mods.items():
        if m.shape[0] != batch:
            if m.dim() != 3 or batch % m.shape[0]:
                raise ValueError(f"modality '{name}': batch {m.shape[0]} does not divide the feature batch {batch}")
            m = m.repeat_interleave(batch // m.shape[0], dim=0)  # crops of a video are consecutive
        out[name] = m
    return out


def _check_modalities(mods: dict[str, torch.Tensor] | None, widths: dict[str, int], x: torch.Tensor) -> None:
    if mods is None:
        raise ValueError(f"modality features are needed here: {sorted(widths)}")
    t = x.shape[-2]
    for name, d in widths.items():
        if name not in mods:
            raise ValueError(f"modality '{name}' is missing (given: {sorted(mods)})")
        m = mods[name]
        if m.dim() != 3 or m.shape[1] != t or m.shape[2] != d:
            raise ValueError(f"modality '{name}': expected [B,{t},{d}], got {list(m.shape)}")


def distill_points(backbone, distill_at: str, inductor_points: tuple[str, ...]) -> tuple[str, ...]:
    """The hook points L_distill pulls at: ``all`` (every PI's), a placement or hook points joined by ``+``,
    each one a PI's (``loss.distill_at``)."""
    if distill_at == "all":
        return inductor_points
    points = resolve_points(backbone, distill_at)
    stray = [p for p in points if p not in inductor_points]
    if stray:
        raise ValueError(f"loss.distill_at: {', '.join(stray)} has no PI (inductor.position: {'+'.join(inductor_points)})")
    return points


def build_inductors(backbone, inductor_cfg, widths: dict[str, int]) -> nn.ModuleDict:
    """One PI per hook point of ``inductor_cfg.position`` on ``backbone``, as wide as the feature it reads."""
    points = resolve_points(backbone, inductor_cfg.position)
    for p in points:
        if backbone.hook_points[p] % inductor_cfg.cmi_heads:
            raise ValueError(f"inductor.cmi_heads: the width {backbone.hook_points[p]} of {backbone.name}'s hook "
                             f"point '{p}' is not divisible by {inductor_cfg.cmi_heads} heads")
    return nn.ModuleDict(
        {
            p: PI(
                backbone.hook_points[p],
                widths,
                latent_dim=inductor_cfg.latent_dim,
                depth=inductor_cfg.cmi_depth,
                heads=inductor_cfg.cmi_heads,
                mlp_ratio=inductor_cfg.cmi_mlp_ratio,
                dropout=inductor_cfg.cmi_dropout,
                source=inductor_cfg.modality_source,
                residual=inductor_cfg.cmi_residual,
                standardize=inductor_cfg.pmg_standardize,
                detach_pseudo=inductor_cfg.pmg_detach,
                pmg_input=inductor_cfg.pmg_input,
                rgb_dim=backbone.input_dim,
            )
            for p in points
        }
    )


EVAL_MAX_SNIPPETS = 16_384  # crops x snippets per inductor pass in eval (crops chunked above it)


def _flat(x: torch.Tensor) -> torch.Tensor:
    """RGB input ``[b,n,T,D]`` or ``[B,T,D]`` as the student's batch ``[B,T,D]`` (crops consecutive)."""
    return x.reshape(-1, x.shape[-2], x.shape[-1])


def _eval_scores(student: nn.Module, inductors: nn.ModuleDict, x: torch.Tensor, mods) -> torch.Tensor:
    """Eval-mode scores ``[b,T]`` of the student with its PIs plugged in (no control flow on T)."""

    rgb = _flat(x)

    def hook(pi: PI):
        return lambda f: pi(f, _expand_batch(mods, f.shape[0]), rgb).out

    return student(x, hooks={point: hook(pi) for point, pi in inductors.items()})


def _chunked_eval_scores(student: nn.Module, inductors: nn.ModuleDict, x: torch.Tensor, max_snippets: int) -> torch.Tensor:
    """:func:`_eval_scores` (RGB only) over chunks of at most ``max_snippets`` crop-snippets.

    Crops are independent until the crop mean, so the chunks' crop means weighted by their sizes give
    the one-pass scores (to float rounding; tests/test_memory.py). The inductors' activations of a long
    many-crop video then never exist for all crops at once: the 5 x D-wide aligned embeddings and their
    concatenation of one 10-crop, 6,749-snippet video alone are 2.8 GB in float32.
    """
    T = x.shape[-2]
    if x.dim() == 3:  # (B, T, D): every row its own video
        per = max(1, max_snippets // T)
        return torch.cat([_eval_scores(student, inductors, x[i : i + per], None) for i in range(0, x.shape[0], per)])
    b, n = x.shape[:2]  # (b, n, T, D)
    per = max(1, max_snippets // (b * T))
    total = None
    for i in range(0, n, per):
        part = x[:, i : i + per]  # (b, c, T, D)
        scores = _eval_scores(student, inductors, part, None) * (part.shape[1] / n)  # (b, T) weighted crop mean
        total = scores if total is None else total + scores
    return total


class PIVADInference(nn.Module):
    """The RGB-only inference model: student + PIs; no teacher, no losses. ``forward(x) -> [b,T]``.

    Built by :meth:`PIVAD.student_only` (sharing the weights) or :meth:`from_config`. Its state dict
    holds ``student.*`` and ``inductors.*``. Use it in eval mode. With ``modality_source: real`` it needs
    ``modalities={name: [b,T,d_j]}`` as well (studies only).
    """

    def __init__(self, student: nn.Module, inductors: nn.ModuleDict, widths: dict[str, int], source: str):
        super().__init__()
        self.student = student
        self.inductors = inductors
        self.widths = dict(widths)
        self.source = source
        self.max_snippets = EVAL_MAX_SNIPPETS  # crops x snippets per pass; 0: all crops in one pass

    @classmethod
    def from_config(cls, model_cfg, inductor_cfg, modalities, backbone: Callable[[], nn.Module] | None = None
                    ) -> PIVADInference:
        """``backbone`` builds the student (default: UR-DMU of ``model_cfg``)."""
        widths = {m.name: m.dim for m in modalities}
        student = backbone() if backbone is not None else URDMU(model_cfg)
        return cls(student, build_inductors(student, inductor_cfg, widths), widths, inductor_cfg.modality_source)

    def forward(self, x: torch.Tensor, modalities: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        if self.source == "real":
            _check_modalities(modalities, self.widths, x)
            return _eval_scores(self.student, self.inductors, x, modalities)
        exporting = torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()  # a traced graph has no Python loop
        if self.max_snippets and not exporting and x.dim() in (3, 4) and x[..., 0].numel() > self.max_snippets:
            return _chunked_eval_scores(self.student, self.inductors, x, self.max_snippets)
        return _eval_scores(self.student, self.inductors, x, None)


class PIVAD(nn.Module):
    """π-VAD. ``PIVAD(model_cfg, inductor_cfg, loss_cfg, modalities, backbone=None)``; ``backbone`` builds a
    fresh student or teacher (default: UR-DMU of ``model_cfg``). Call :meth:`set_teacher` before training.

    Train: ``model(x [B,T,D], modalities={name: [B,T,d_j]}, phase="first"|"second")`` -> :class:`PIVADOutput`.
    Eval: ``model(x [b,n,T,D] | [B,T,D]) -> [b,T]`` (RGB only; ``modalities`` too with source ``real``).
    """

    def __init__(self, model_cfg, inductor_cfg, loss_cfg, modalities, backbone: Callable[[], nn.Module] | None = None):
        super().__init__()
        self.widths = {m.name: m.dim for m in modalities}
        self.inductor_cfg = copy.deepcopy(inductor_cfg)
        self.loss_cfg = copy.deepcopy(loss_cfg)
        if inductor_cfg.position == "none":
            raise ValueError("inductor.position 'none' is the plain backbone: build its own kind instead")
        if inductor_cfg.infonce_form not in ("paper", "standard"):
            raise ValueError(f"inductor.infonce_form must be paper or standard, got {inductor_cfg.infonce_form!r}")
        build = backbone if backbone is not None else (lambda: URDMU(model_cfg))
        self.student = build()
        self.inductors = build_inductors(self.student, inductor_cfg, self.widths)
        self.distill_points = distill_points(self.student, getattr(loss_cfg, "distill_at", "all"), tuple(self.inductors))
        # The teacher slot always exists so that checkpoints of the full model load without special cases.
        self.teacher = build()
        self.teacher.requires_grad_(False)
        self.teacher.eval()
        self.register_buffer("has_teacher", torch.zeros((), dtype=torch.bool))
        self.checkpoint_blocks = False  # recompute the PI losses (L_PMG, L_align, L_distill) in backward (pivad.models.checkpointing)

    @property
    def source(self) -> str:
        return self.inductor_cfg.modality_source

    # ------------------------------------------------------------------------------------- teacher

    def set_teacher(self, teacher: nn.Module) -> None:
        """Freeze a deep copy of a trained backbone as the teacher (the student's kind and widths)."""
        if type(teacher) is not type(self.student):
            raise TypeError(f"the teacher must be a {type(self.student).__name__}, got {type(teacher).__name__}")
        own = (self.student.input_dim, self.student.hook_points)
        theirs = (teacher.input_dim, teacher.hook_points)
        if theirs != own:
            raise ValueError(f"teacher widths (input {theirs[0]}, hook points {theirs[1]}) differ from the "
                             f"student's (input {own[0]}, hook points {own[1]})")
        ref = next(self.student.parameters())
        frozen = copy.deepcopy(teacher).to(device=ref.device, dtype=ref.dtype)
        frozen.requires_grad_(False)
        self.teacher = frozen.eval()
        self.has_teacher.fill_(True)

    def train(self, mode: bool = True) -> PIVAD:
        super().train(mode)
        self.teacher.eval()  # the teacher never trains: no dropout, no sampling
        return self

    # ------------------------------------------------------------------------------------- forward

    def forward(
        self,
        x: torch.Tensor,
        modalities: dict[str, torch.Tensor] | None = None,
        phase: str = "second",
    ) -> torch.Tensor | PIVADOutput:
        if not self.training:
            return self.student_only()(x, modalities)
        if phase not in ("first", "second"):
            raise ValueError(f"phase must be 'first' or 'second', got {phase!r}")
        if x.dim() != 3:
            raise ValueError(f"π-VAD train mode expects [B,T,D] features, got shape {list(x.shape)}")
        needs_real = self.source == "real" or self.loss_cfg.use_pmg
        if needs_real:
            _check_modalities(modalities, self.widths, x)
            for name in self.widths:
                if modalities[name].shape[0] != x.shape[0]:
                    got = modalities[name].shape[0]
                    raise ValueError(f"modality '{name}': batch {got}, features batch {x.shape[0]}")
        teach, teacher_scores, student_scores = None, None, None
        if self.loss_cfg.use_distill:
            if not bool(self.has_teacher):
                raise RuntimeError("π-VAD needs a teacher for L_distill: call set_teacher(backbone) first")
            with torch.no_grad():
                teach = self.teacher.hook_features(x, list(self.distill_points))  # point -> (B, T, D)
                if phase == "second" and getattr(self.loss_cfg, "distill_gate", "none") == "mil":
                    teacher_scores = self.teacher(x)  # (B, T): eval mode, each row a one-crop video
                    student_scores = self._clean_scores(x, modalities)  # (B, T): the same footing

        traces: dict[str, PITrace] = {}
        hooks = {point: self._train_hook(point, pi, modalities, teach, traces, x) for point, pi in self.inductors.items()}
        points = list(self.inductors)
        if phase == "first" and len(points) == 1 and points[0] in getattr(self.student, "exact_prefix", ()):
            # L_first needs nothing after the only PI: compute the student up to its hook point (exact).
            hooks[points[0]](self.student.hook_features(x, points)[points[0]])
            student = None
        else:
            student = self.student(x, hooks=hooks)
        return PIVADOutput(student=student, traces=traces, rgb=x, settings=self.inductor_cfg,
                           checkpoint=self.checkpoint_blocks, distill_points=self.distill_points,
                           teacher_scores=teacher_scores, student_scores=student_scores)

    def _clean_scores(self, x: torch.Tensor, modalities) -> torch.Tensor:
        """The student's eval-mode scores ``[B,T]`` (no dropout or sampling, like the teacher's), then back
        to train mode; eval mode draws no random numbers, so training's random stream is unchanged."""
        mods = modalities if self.source == "real" else None
        self.student.eval()
        self.inductors.eval()
        try:
            return _eval_scores(self.student, self.inductors, x, mods)
        finally:
            self.student.train()
            self.inductors.train()

    def set_modality_stats(self, stats: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Training-set mean and std ``[d_j]`` of each modality, for ``inductor.pmg_standardize``."""
        for pi in self.inductors.values():
            pi.set_modality_stats(stats)

    def _train_hook(self, point: str, pi: PI, mods, teach, traces: dict, x: torch.Tensor):
        def hook(f: torch.Tensor) -> torch.Tensor:
            res = pi(f, mods, x)  # F* (B, T, D) -> F_M* (B, T, D)
            target = pi.normalise(mods) if mods is not None and pi.pmg is not None else None
            traces[point] = PITrace(f, res.out, res.pseudo, target, res.aligned,
                                    None if teach is None else teach.get(point))
            return res.out

        return hook

    # ------------------------------------------------------------------------------------ inference

    def student_only(self) -> PIVADInference:
        """The RGB-only inference model (student + PIs, sharing this model's weights; no teacher)."""
        return PIVADInference(self.student, self.inductors, self.widths, self.source)

    @torch.no_grad()
    def modality_activations(
        self, x: torch.Tensor, modalities: dict[str, torch.Tensor] | None = None
    ) -> dict[str, torch.Tensor]:
        """Per-modality activation curves ``{name: [b,T]}`` (paper Figure 4, row 3), crop-averaged.

        Read in the first CMI block of the last PI in forward order (UR-DMU: the late one if any); see
        :meth:`pivad.models.cmi.CMI.modality_activations` for the definition. Runs in eval mode.
        """
        pos = list(self.inductors)[-1]
        pi = self.inductors[pos]
        if self.source == "real":
            _check_modalities(modalities, self.widths, x)
        b, n = (x.shape[0], x.shape[1]) if x.dim() == 4 else (x.shape[0], 1)
        store: dict[str, torch.Tensor] = {}
        rgb = _flat(x)

        def capture(f: torch.Tensor) -> torch.Tensor:
            mods = pi.inputs(f, _expand_batch(modalities, f.shape[0]), rgb)
            store.update(pi.cmi.modality_activations(f, mods))
            return pi.cmi(f, mods)[0]

        def plain(p: PI):
            return lambda f: p(f, _expand_batch(modalities, f.shape[0]), rgb).out

        hooks = {k: (capture if k == pos else plain(p)) for k, p in self.inductors.items()}
        was_training = self.training
        self.eval()
        try:
            self.student(x, hooks=hooks)
        finally:
            self.train(was_training)
        return {name: a.reshape(b, n, -1).mean(1) for name, a in store.items()}  # name -> (b, T)
