"""π-VAD: a UR-DMU student with Poly-modal Inductors and a frozen UR-DMU teacher (CVPR 2025, Section 4).

The student is :class:`pivad.models.URDMU` with a PI (:class:`pivad.models.inductor.PI`) plugged in
through its hooks at the ``early`` point (embedding output, D = hidden_dim) and/or the ``late`` point
(classifier-head input, D = 2·hidden_dim); each PI's F_M* replaces the feature it read. The teacher is a
frozen copy of a trained UR-DMU (:meth:`PIVAD.set_teacher`): always in eval mode, never given gradients,
read only for L_distill. Inference needs RGB only (student + PMG + CMI, :meth:`PIVAD.student_only`).

Train mode returns :class:`PIVADOutput` with the student's UR-DMU outputs and the auxiliary losses
(``aux["pmg"|"align"|"distill"]``, summed over PI positions and modalities, plus per-position and
per-modality detail under ``"<position>/<loss>[/<modality>]"``); :func:`pivad.losses.inductor.pivad_loss`
combines them.

Axes: b videos, n crops, B batch (videos x crops), T snippets, D width, d_j modality width.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn

from pivad.losses.inductor import align_loss, distill_loss, pmg_loss, repeated_snippets
from pivad.models.checkpointing import run_block
from pivad.models.inductor import PI
from pivad.models.urdmu import URDMU, URDMUOutput, fp32_losses

POSITIONS = ("early", "late")
PLACEMENTS = {"early": ("early",), "late": ("late",), "both": ("early", "late")}


@dataclass
class PIVADOutput:
    student: URDMUOutput | None  # None when phase="first" skipped the student's head (early PI only)
    aux: dict[str, torch.Tensor] = field(default_factory=dict)  # pmg / align / distill (+ details)


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


def build_inductors(model_cfg, inductor_cfg, widths: dict[str, int]) -> nn.ModuleDict:
    """One PI per position of ``inductor_cfg.position`` (early: D = hidden_dim, late: D = 2·hidden_dim)."""
    if inductor_cfg.position not in PLACEMENTS:
        raise ValueError(f"inductor.position must be one of {sorted(PLACEMENTS)}, got {inductor_cfg.position!r}")
    dims = {"early": model_cfg.hidden_dim, "late": 2 * model_cfg.hidden_dim}
    return nn.ModuleDict(
        {
            pos: PI(
                dims[pos],
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
                rgb_dim=model_cfg.input_dim,
            )
            for pos in PLACEMENTS[inductor_cfg.position]
        }
    )


EVAL_MAX_SNIPPETS = 16_384  # crops x snippets per inductor pass in eval (crops chunked above it)


def _flat(x: torch.Tensor) -> torch.Tensor:
    """RGB input ``[b,n,T,D]`` or ``[B,T,D]`` as the student's batch ``[B,T,D]`` (crops consecutive)."""
    return x.reshape(-1, x.shape[-2], x.shape[-1])


def _eval_scores(student: URDMU, inductors: nn.ModuleDict, x: torch.Tensor, mods) -> torch.Tensor:
    """Eval-mode scores ``[b,T]`` of the student with its PIs plugged in (no control flow on T)."""

    rgb = _flat(x)

    def hook(pi: PI):
        return lambda f: pi(f, _expand_batch(mods, f.shape[0]), rgb).out

    hooks = {pos: hook(pi) for pos, pi in inductors.items()}
    return student(x, early=hooks.get("early"), late=hooks.get("late"))


def _chunked_eval_scores(student: URDMU, inductors: nn.ModuleDict, x: torch.Tensor, max_snippets: int) -> torch.Tensor:
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

    def __init__(self, student: URDMU, inductors: nn.ModuleDict, widths: dict[str, int], source: str):
        super().__init__()
        self.student = student
        self.inductors = inductors
        self.widths = dict(widths)
        self.source = source
        self.max_snippets = EVAL_MAX_SNIPPETS  # crops x snippets per pass; 0: all crops in one pass

    @classmethod
    def from_config(cls, model_cfg, inductor_cfg, modalities) -> PIVADInference:
        widths = {m.name: m.dim for m in modalities}
        return cls(URDMU(model_cfg), build_inductors(model_cfg, inductor_cfg, widths), widths,
                   inductor_cfg.modality_source)

    def forward(self, x: torch.Tensor, modalities: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        if self.source == "real":
            _check_modalities(modalities, self.widths, x)
            return _eval_scores(self.student, self.inductors, x, modalities)
        exporting = torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()  # a traced graph has no Python loop
        if self.max_snippets and not exporting and x.dim() in (3, 4) and x[..., 0].numel() > self.max_snippets:
            return _chunked_eval_scores(self.student, self.inductors, x, self.max_snippets)
        return _eval_scores(self.student, self.inductors, x, None)


class PIVAD(nn.Module):
    """π-VAD. ``PIVAD(model_cfg, inductor_cfg, loss_cfg, modalities)``; call :meth:`set_teacher` before training.

    Train: ``model(x [B,T,D], modalities={name: [B,T,d_j]}, phase="first"|"second")`` -> :class:`PIVADOutput`.
    Eval: ``model(x [b,n,T,D] | [B,T,D]) -> [b,T]`` (RGB only; ``modalities`` too with source ``real``).
    """

    def __init__(self, model_cfg, inductor_cfg, loss_cfg, modalities):
        super().__init__()
        self.widths = {m.name: m.dim for m in modalities}
        self.inductor_cfg = copy.deepcopy(inductor_cfg)
        self.loss_cfg = copy.deepcopy(loss_cfg)
        if inductor_cfg.position == "none":
            raise ValueError("inductor.position 'none' is plain UR-DMU: build kind 'urdmu' instead")
        if inductor_cfg.infonce_form not in ("paper", "standard"):
            raise ValueError(f"inductor.infonce_form must be paper or standard, got {inductor_cfg.infonce_form!r}")
        self.student = URDMU(model_cfg)
        self.inductors = build_inductors(model_cfg, inductor_cfg, self.widths)
        # The teacher slot always exists so that checkpoints of the full model load without special cases.
        self.teacher = URDMU(model_cfg)
        self.teacher.requires_grad_(False)
        self.teacher.eval()
        self.register_buffer("has_teacher", torch.zeros((), dtype=torch.bool))
        self.checkpoint_blocks = False  # recompute the PI losses (L_PMG, L_align, L_distill) in backward (pivad.models.checkpointing)

    @property
    def source(self) -> str:
        return self.inductor_cfg.modality_source

    # ------------------------------------------------------------------------------------- teacher

    def set_teacher(self, teacher: URDMU) -> None:
        """Freeze a deep copy of a trained UR-DMU as the teacher (same widths as the student)."""
        if not isinstance(teacher, URDMU):
            raise TypeError(f"the teacher must be a URDMU, got {type(teacher).__name__}")
        own = self.student.cfg
        if (teacher.cfg.input_dim, teacher.cfg.hidden_dim) != (own.input_dim, own.hidden_dim):
            raise ValueError(
                f"teacher widths (input {teacher.cfg.input_dim}, hidden {teacher.cfg.hidden_dim}) differ from the "
                f"student's (input {own.input_dim}, hidden {own.hidden_dim})"
            )
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
        teach = None
        if self.loss_cfg.use_distill:
            if not bool(self.has_teacher):
                raise RuntimeError("π-VAD needs a teacher for L_distill: call set_teacher(urdmu) first")
            with torch.no_grad():
                if "late" in self.inductors:
                    teach = self.teacher.features(x)  # {"early": (B, T, H), "late": (B, T, 2H)}
                else:  # an early PI only needs the teacher's embedding
                    teach = {"early": self.teacher.embed_features(x)}  # (B, T, H)

        aux: dict[str, torch.Tensor] = {}
        repeats = repeated_snippets(x) if self.inductor_cfg.align_mask_repeats and self.loss_cfg.use_align else None
        hooks = {pos: self._train_hook(pos, pi, modalities, teach, aux, repeats, x)
                 for pos, pi in self.inductors.items()}
        if phase == "first" and "late" not in self.inductors:
            # L_first needs nothing after the early PI: skip the transformer, memories and head (exact).
            hooks["early"](self.student.embed_features(x))
            student = None
        else:
            student = self.student(x, early=hooks.get("early"), late=hooks.get("late"))
        for name in ("pmg", "align", "distill"):
            terms = [v for k, v in aux.items() if k.endswith(f"/{name}")]
            if terms:
                aux[name] = torch.stack(terms).sum()
        if self.loss_cfg.use_pmg and "pmg" not in aux:
            aux["pmg"] = x.new_zeros(())  # modality_source "real": there is no PMG to train
        return PIVADOutput(student=student, aux=aux)

    def set_modality_stats(self, stats: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Training-set mean and std ``[d_j]`` of each modality, for ``inductor.pmg_standardize``."""
        for pi in self.inductors.values():
            pi.set_modality_stats(stats)

    def _train_hook(self, pos: str, pi: PI, mods, teach, aux: dict, repeats: torch.Tensor | None,
                    x: torch.Tensor):
        cfg, loss = self.inductor_cfg, self.loss_cfg

        def hook(f: torch.Tensor) -> torch.Tensor:
            res = pi(f, mods, x)  # F* (B, T, D) -> F_M* (B, T, D)
            ckpt = self.checkpoint_blocks  # recompute the loss terms in backward: keep only their inputs
            with fp32_losses(f):  # float32 losses under bf16 autocast (the losses cast their inputs up)
                if loss.use_pmg and pi.pmg is not None:
                    aux[f"{pos}/pmg"] = pmg_loss(res.pseudo, pi.normalise(mods), checkpoint=ckpt)
                if loss.use_align:
                    anchor = f.detach() if cfg.align_detach else f
                    aux[f"{pos}/align"] = align_loss(anchor, res.aligned, tau=cfg.tau, form=cfg.infonce_form,
                                                     exclude=repeats, checkpoint=ckpt)
                if loss.use_distill:
                    aux[f"{pos}/distill"] = run_block(distill_loss, res.out, teach[pos], enabled=ckpt)
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

        Read in the first CMI block of the late PI (the early one when there is no late PI); see
        :meth:`pivad.models.cmi.CMI.modality_activations` for the definition. Runs in eval mode.
        """
        pos = "late" if "late" in self.inductors else "early"
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
            self.student(x, early=hooks.get("early"), late=hooks.get("late"))
        finally:
            self.train(was_training)
        return {name: a.reshape(b, n, -1).mean(1) for name, a in store.items()}  # name -> (b, T)
