"""Model size: parameters per module and multiply-accumulates (MACs) for one crop.

Counting rule. MACs are those of one eval forward of one crop ``[1, T, input_dim]`` (T = 200 by
default, paper Table 5): every matrix product and convolution (Linear and Conv1d layers, the attention
products QKᵀ and AV, i.e. the T² terms, UR-DMU's distance-kernel product and memory reads); elementwise
work, softmax, normalisation and biases are not counted.

- UR-DMU (student, teacher, baseline) is counted from its official layer list
  (:func:`urdmu_layer_macs`). ``pivad``'s UR-DMU folds products of its weights and executes fewer;
  Table 5 describes the architecture, not one implementation's shortcuts. The executed count is
  printed beside it.
- The inductors are counted by :class:`torch.utils.flop_counter.FlopCounterMode` (FLOPs / 2) over
  the inference view's forward, models on the ``meta`` device (nothing computed or allocated; fused
  attention decomposes into countable products). A warm-up call precedes the counted one, so weights
  a model caches between eval calls are not per-crop work. The PIs run inside the student's hooks;
  each is counted once, under its own row.

Parameters are counted per module; "reached at eval" counts the parameters an eval forward reaches
(found with autograd: those that receive a gradient), e.g. UR-DMU's ``encoder_var`` serves only the
train-mode reparameterisation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

# paper Table 5 (π-VAD, CVPR 2025): "GFLOPs" read as multiply-accumulates for one crop of 200 snippets
PAPER_TABLE5 = {"urdmu": (6.16e6, 1.54e9), "pivad": (82.81e6, 19.88e9)}
OFFICIAL_URDMU_PARAMS = 6_492_929  # measured on the official code (shared/docs/reference.md)
# the official PEL4VAD XModel of its ucf / xd configs, measured (its log prints 1.2091M for ucf)
OFFICIAL_PEL4VAD_PARAMS = {"ucf": 1_209_149, "xd": 1_207_349}
# the official RTFM Model at its 2048-d input and at 1024-d (the width made a setting), measured (docs/rtfm.md)
OFFICIAL_RTFM_PARAMS = {"2048-d": 24_718_849, "1024-d": 12_658_177}
LABELS = {"urdmu": "UR-DMU", "pel4vad": "PEL4VAD", "rtfm": "RTFM"}  # model.backbone -> its name in the table


@dataclass
class SizeRow:
    name: str
    params: int
    macs: int | None
    level: int = 0  # indentation in the table


@dataclass
class SizeReport:
    snippets: int
    inference: list[SizeRow] = field(default_factory=list)  # what student_only() runs
    training_only: list[SizeRow] = field(default_factory=list)
    urdmu: SizeRow | None = None  # the plain UR-DMU of cfg.model
    urdmu_eval_params: int = 0
    pivad_total: SizeRow | None = None
    pivad_eval_params: int = 0
    urdmu_executed_macs: int = 0  # what this implementation runs (FlopCounterMode)
    pivad_executed_macs: int = 0
    notes: list[str] = field(default_factory=list)
    backbone: str = "urdmu"  # model.backbone; other backbones are counted by FlopCounterMode, no Table 5 rows


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def count_macs(fn, *args, **kwargs) -> dict[str, int]:
    """MACs of ``fn(*args, **kwargs)`` per module name (``"Global"`` is the total).

    One warm-up call runs first, outside the counter: weights a model derives from its parameters
    and caches between eval calls (UR-DMU folds products of its weights) are not per-crop work.
    """
    with torch.no_grad():
        fn(*args, **kwargs)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn(*args, **kwargs)
    return {name: sum(ops.values()) // 2 for name, ops in counter.get_flop_counts().items()}


def eval_reached_params(module: nn.Module, *args, **kwargs) -> int:
    """Parameters an eval forward reaches (those that get a gradient from the output's sum)."""
    params = [p for p in module.parameters()]
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(True)
        p.grad = None
    try:
        module(*args, **kwargs).sum().backward()
        return sum(p.numel() for p in params if p.grad is not None)
    finally:
        for p, flag in zip(params, flags):
            p.grad = None
            p.requires_grad_(flag)


def _sum_children(macs: dict[str, int], container: str, children) -> int:
    """MACs of a ModuleList/ModuleDict (never called itself): the sum over its children."""
    return sum(macs.get(f"{container}.{child}", 0) for child in children)


def _pi_rows(prefix: str, pos: str, pi: nn.Module, macs: dict[str, int]) -> list[SizeRow]:
    base = f"{prefix}.inductors.{pos}"
    dim = pi.cmi.fuse.out_features
    rows = [SizeRow(f"{pos} PI (D={dim})", count_params(pi), macs.get(base, 0), 1)]
    if pi.pmg is not None:
        rows.append(SizeRow("PMG (encoder + per-modality view and decoder)", count_params(pi.pmg),
                            macs.get(f"{base}.pmg", 0), 2))
    rows.append(SizeRow("CMI projections (one per modality)", count_params(pi.cmi.proj),
                        _sum_children(macs, f"{base}.cmi.proj", pi.cmi.proj.keys()), 2))
    rows.append(SizeRow("CMI fusion Linear", count_params(pi.cmi.fuse), macs.get(f"{base}.cmi.fuse", 0), 2))
    rows.append(SizeRow(f"CMI transformer blocks x{len(pi.cmi.blocks)}", count_params(pi.cmi.blocks),
                        _sum_children(macs, f"{base}.cmi.blocks", range(len(pi.cmi.blocks))), 2))
    return rows


def urdmu_layer_macs(cfg, snippets: int, head: bool = True) -> int:
    """MACs of the official UR-DMU eval forward for one crop, layer by layer (``head=False``: ``features()``)."""
    T, H, D = snippets, cfg.hidden_dim, cfg.input_dim
    inner = cfg.heads * cfg.dim_head
    layer = (T * H * 4 * inner  # to_qkv: q, k, v, t
             + 2 * T * T * inner  # softmax branch: QKᵀ and AV
             + T * T * inner  # fixed distance branch A2·t
             + T * 2 * inner * H  # to_out
             + 2 * T * H * cfg.mlp_dim)  # feed-forward
    memories = 2 * T * (cfg.a_nums + cfg.n_nums) * H  # similarities and read-outs of both memories
    macs = 3 * D * H * T + cfg.depth * layer + memories + 2 * T * H * H  # + encoder_mu on both read-outs
    if head:
        macs += T * (2 * H * cfg.head_dim + cfg.head_dim)  # classifier head
    return macs


def size_report(cfg, snippets: int = 200) -> SizeReport:
    """Parameters and MACs of UR-DMU and (unless ``inductor.position`` is none) π-VAD for one crop."""
    from pivad.models.factory import backbone_builder
    from pivad.models.pivad import PIVAD

    backbone = getattr(cfg.model, "backbone", "urdmu")
    build = backbone_builder(cfg)
    report = SizeReport(snippets=snippets, backbone=backbone)
    meta = torch.device("meta")
    with meta:
        x = torch.zeros(1, snippets, cfg.model.input_dim)
        urdmu = build().eval()
    executed = count_macs(urdmu, x)["Global"]
    label = LABELS.get(backbone, type(urdmu).__name__)
    backbone_macs = urdmu_layer_macs(cfg.model, snippets) if backbone == "urdmu" else executed
    report.urdmu = SizeRow(label, count_params(urdmu), backbone_macs)
    report.urdmu_executed_macs = executed
    report.urdmu_eval_params = eval_reached_params(urdmu, x[:, :8])
    if cfg.inductor.position == "none":
        return report

    with meta:
        model = PIVAD(cfg.model, cfg.inductor, cfg.loss, cfg.data.modalities, backbone=build).eval()
        mods = {m.name: torch.zeros(1, snippets, m.dim) for m in cfg.data.modalities}
    infer = model.student_only().eval()
    kwargs = {"modalities": mods} if model.source == "real" else {}
    macs = count_macs(infer, x, **kwargs)
    name = type(infer).__name__
    pi_macs = sum(macs.get(f"{name}.inductors.{pos}", 0) for pos in model.inductors)
    rows = [SizeRow(f"student {label} (without its PIs)", count_params(infer.student), backbone_macs, 1)]
    for pos, pi in model.inductors.items():
        rows += _pi_rows(name, pos, pi, macs)
    report.inference = rows
    report.pivad_total = SizeRow("π-VAD inference total", count_params(infer), rows[0].macs + pi_macs)
    report.pivad_executed_macs = macs["Global"]
    detached = {pos: pi.detach_pseudo for pos, pi in infer.inductors.items()}
    try:  # inductor.pmg_detach stops gradients, not values: PMG is on the eval path either way
        for pi in infer.inductors.values():
            pi.detach_pseudo = False
        report.pivad_eval_params = eval_reached_params(
            infer, x[:, :8], **({"modalities": {k: v[:, :8] for k, v in mods.items()}} if kwargs else {})
        )
    finally:
        for pos, pi in infer.inductors.items():
            pi.detach_pseudo = detached[pos]
    teacher_macs = urdmu_layer_macs(cfg.model, snippets, head=False) if backbone == "urdmu" else None
    report.training_only = [SizeRow(f"teacher {label} (frozen; hook_features() per step)",
                                    count_params(model.teacher), teacher_macs, 1)]
    if model.source == "real":
        report.notes.append("modality_source real: inference also needs the modality backbones' features "
                            "(not counted; paper Table 5: 2,406.5 M / 2,561.4 G)")
    return report


def _fmt_row(row: SizeRow, width: int = 54) -> str:
    name = "  " * row.level + row.name
    macs = f"{row.macs / 1e9:9.3f} G" if row.macs is not None else " " * 11
    return f"{name:<{width}} {row.params:>13,} {macs}"


def _rel(ours: float, paper: float) -> str:
    return f"{(ours / paper - 1) * 100:+.1f}%"


def _backbone_footer(report: SizeReport) -> list[str]:
    """Reference lines for a backbone other than UR-DMU (paper Table 5 describes UR-DMU only)."""
    u = report.urdmu
    lines = []
    if report.backbone == "pel4vad":
        ref = ", ".join(f"{k} {v:,}" for k, v in OFFICIAL_PEL4VAD_PARAMS.items())
        same = "equal" if u.params in OFFICIAL_PEL4VAD_PARAMS.values() else "differs: other widths"
        lines.append(f"official PEL4VAD code, measured: {ref} params; this config's PEL4VAD: {u.params:,} ({same})")
    if report.backbone == "rtfm":
        ref = ", ".join(f"{k} {v:,}" for k, v in OFFICIAL_RTFM_PARAMS.items())
        same = "equal" if u.params in OFFICIAL_RTFM_PARAMS.values() else "differs: other widths"
        lines.append(f"official RTFM code, measured: {ref} params; this config's RTFM: {u.params:,} ({same})")
    lines.append(f"MACs: every matmul and convolution of one eval forward of one crop, by torch FlopCounterMode / 2 "
                 f"(the paper's Table 5 counts UR-DMU only)")
    return lines


def format_report(report: SizeReport) -> str:
    """The table ``pivad info`` prints."""
    t = report.snippets
    lines = [f"{'module':<54} {'params':>13} {f'MACs@T={t}':>11}"]
    lines.append("-" * len(lines[0]))
    u = report.urdmu
    lines.append(_fmt_row(u))
    lines.append(f"  (parameters reached at eval: {report.urdmu_eval_params:,})")
    if report.pivad_total is not None:
        lines.append("π-VAD inference path (student_only: student + PIs)")
        lines += [_fmt_row(r) for r in report.inference]
        lines.append(_fmt_row(report.pivad_total))
        lines.append(f"  (parameters reached at eval: {report.pivad_eval_params:,})")
        lines.append("π-VAD training only (not in the inference model)")
        lines += [_fmt_row(r) for r in report.training_only]
        lines += report.notes
    lines.append("")
    if report.backbone != "urdmu":
        return "\n".join(lines + _backbone_footer(report))
    up, um = PAPER_TABLE5["urdmu"]
    lines.append(f"paper Table 5: UR-DMU {up / 1e6:.2f} M / {um / 1e9:.2f} G;  π-VAD "
                 f"{PAPER_TABLE5['pivad'][0] / 1e6:.2f} M / {PAPER_TABLE5['pivad'][1] / 1e9:.2f} G")
    lines.append(f"this config:   UR-DMU {u.params / 1e6:.2f} M ({_rel(u.params, up)}) / "
                 f"{u.macs / 1e9:.2f} G ({_rel(u.macs, um)})")
    if report.pivad_total is not None:
        p = report.pivad_total
        pp, pm = PAPER_TABLE5["pivad"]
        lines.append(f"               π-VAD  {p.params / 1e6:.2f} M ({_rel(p.params, pp)}) / "
                     f"{p.macs / 1e9:.2f} G ({_rel(p.macs, pm)})")
    same = "equal" if u.params == OFFICIAL_URDMU_PARAMS else "differs: other widths"
    lines.append(f"official UR-DMU code, measured: {OFFICIAL_URDMU_PARAMS:,} params (paper says 6.16 M); "
                 f"this config's UR-DMU: {u.params:,} ({same})")
    executed = f"UR-DMU {report.urdmu_executed_macs / 1e9:.3f} G"
    if report.pivad_total is not None:
        executed += f", π-VAD {report.pivad_executed_macs / 1e9:.3f} G"
    lines.append("MACs: every matmul and convolution of one eval forward of one crop; UR-DMU by its official layer")
    lines.append(f"list, the PIs by torch FlopCounterMode / 2. Executed by this implementation: {executed}")
    return "\n".join(lines)
