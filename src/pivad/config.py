"""Typed configuration: dataclasses, YAML files, ``--section.key value`` overrides.

A run's configuration is one :class:`Config`. YAML files set values section by section; command-line
overrides (``--train.lr 3e-4``) are applied on top. Each field declares the values it allows beside its
default (:func:`setting`); :func:`from_dict` (behind YAML files, overrides and the configs stored in
checkpoints) checks types and those values, so unknown keys, wrong types and values out of range are
one :class:`~pivad.errors.ConfigError` naming the key. The resolved config is saved beside every run
(:func:`save_config`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import re
import stat
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pivad.errors import ConfigError
from pivad.io import atomic_write_text

# ----------------------------------------------------------------------------------- allowed values

# Caps on values that size an allocation: far above anything in use, low enough that a typo (an extra
# few zeros, a width of 1e7) is refused here instead of as a terabyte allocation at step 1.
MAX_WIDTH = 65_536  # feature, model and latent widths, memory slots: I3D is 1024; one 65,536² layer is 17 GB
MAX_SEGMENTS = 4_096  # data.num_segments: a step holds batch x segments x feature_dim floats, attention is
# quadratic in it; 20x the papers' 200 (a resampled video, not its length: evaluation reads whole videos)
MAX_BATCH = 4_096  # crops per step, micro-batch or evaluation pass (the papers use 64 + 64 and 10)
MAX_DEPTH = 64  # transformer blocks
MAX_HEADS = 256  # attention heads
MAX_CROPS = 1_024  # crops per video (UCF-Crime 10, XD-Violence 5)
MAX_STEPS = 10**9  # training steps per phase
MAX_PROCS = 1_024  # threads, loader workers
MAX_SEED = 2**32 - 1  # numpy's seed range (torch accepts more)
MAX_CONFIG_BYTES = 1 << 20  # a config file is a few kB; larger is not one


def check_seed(seed: int, flag: str) -> None:
    """ConfigError unless ``seed`` (a command's ``--seed``) is in the range ``train.seed`` allows."""
    if not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"{flag} {seed}: must be in 0..{MAX_SEED}")


class Check:
    """The values one config field allows: :meth:`problem` says what is wrong with a (well-typed) value,
    :attr:`allowed` says what is allowed (``docs/config.md``)."""

    allowed = ""

    def problem(self, value: Any) -> str | None:  # pragma: no cover - every subclass overrides it
        raise NotImplementedError


@dataclass(frozen=True)
class Range(Check):
    """A finite number in ``[lo, hi]``; ``lo_open`` / ``hi_open`` exclude the bound, None leaves it open."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    even: bool = False  # integers only: 0 or a multiple of 2

    @property
    def allowed(self) -> str:
        if self.lo is not None and self.hi is not None:
            text = f"{'(' if self.lo_open else '['}{_num(self.lo)}, {_num(self.hi)}{')' if self.hi_open else ']'}"
        elif self.lo is not None:
            text = f"{'>' if self.lo_open else '>='} {_num(self.lo)}"
        elif self.hi is not None:
            text = f"{'<' if self.hi_open else '<='} {_num(self.hi)}"
        else:
            text = "finite"
        return f"{text}, even" if self.even else text

    def problem(self, value: Any) -> str | None:
        if isinstance(value, float) and not math.isfinite(value):
            return f"must be a finite number, got {value}"
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return f"must be {'>' if self.lo_open else '>='} {_num(self.lo)}, got {_show(value)}"
        if self.hi is not None and (value >= self.hi if self.hi_open else value > self.hi):
            return f"must be {'<' if self.hi_open else '<='} {_num(self.hi)}, got {_show(value)}"
        if self.even and value % 2:
            return f"must be even, got {value}"
        return None


def _num(x: float) -> str:
    if isinstance(x, int) and x >= 10**6 and str(x).rstrip("0") == "1":
        return f"1e{len(str(x)) - 1}"
    return f"{x:g}" if isinstance(x, float) else str(x)


class OneOf(Check):
    """One of a few words."""

    def __init__(self, *choices: str) -> None:
        self.choices = choices
        self.allowed = " | ".join(choices)

    def problem(self, value: Any) -> str | None:
        if value not in self.choices:
            return f"expected one of {', '.join(self.choices)}, got {_show(value)}"
        return None


class PathText(Check):
    """A file or folder path ("" allowed where the meaning says so): no NUL character."""

    allowed = "a path"

    def problem(self, value: Any) -> str | None:
        return "a path cannot hold a NUL character" if "\0" in value else None


class Name(Check):
    """One path component (it names a folder): not empty, no separator, not ``.`` or ``..``."""

    allowed = "a folder name"

    def problem(self, value: Any) -> str | None:
        if not value or value in (".", "..") or any(c in value for c in "/\\\0"):
            return f"expected a plain folder name (not empty, no '/', not '.' or '..'), got {_show(value)}"
        return None


class Device(Check):
    """A torch device this trainer handles."""

    allowed = "auto | cpu | cuda | cuda:N"
    _PATTERN = re.compile(r"auto|cpu|cuda(:\d{1,4})?")

    def problem(self, value: Any) -> str | None:
        if not self._PATTERN.fullmatch(value):
            return f"expected auto, cpu, cuda or cuda:N, got {_show(value)}"
        return None


class LabelRule(Check):
    """``ucf``, ``xd``, ``msad``, ``folder`` or ``regex:<pattern>`` with a pattern that compiles."""

    allowed = "ucf | xd | msad | folder | regex:PATTERN"

    def problem(self, value: Any) -> str | None:
        if value in ("ucf", "xd", "msad", "folder"):
            return None
        if not value.startswith("regex:"):
            return f"expected ucf, xd, msad, folder or regex:<pattern>, got {_show(value)}"
        try:
            re.compile(value[len("regex:"):])
        except (re.error, RecursionError, OverflowError, ValueError) as exc:
            return f"invalid regular expression ({_one_line(str(exc))})"
        return None


class Position(Check):
    """``early``, ``late``, ``both``, ``none``, or hook-point names joined by ``+`` (the backbone checks the names)."""

    allowed = "early | late | both | none | POINT[+POINT...]"
    _PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}(\+[A-Za-z_][A-Za-z0-9_]{0,63}){0,15}")

    def problem(self, value: Any) -> str | None:
        if value in ("early", "late", "both", "none") or self._PATTERN.fullmatch(value):
            return None
        return f"expected early, late, both, none or hook points joined by '+', got {_show(value)}"


BACKBONES = ("urdmu", "pel4vad", "rtfm")  # model.backbone (pivad.models.factory builds each)
WIDTH = Range(1, MAX_WIDTH)
COUNT = Range(0, MAX_STEPS)  # steps
EVERY = Range(1, MAX_STEPS)  # an interval in steps
PROCS = Range(0, MAX_PROCS)
BATCH = Range(1, MAX_BATCH)
FRACTION = Range(0.0, 1.0, hi_open=True)  # dropout, held-out share
POSITIVE = Range(0.0, lo_open=True)  # a temperature
NONNEGATIVE = Range(0.0)  # a weight, a decay, "0: the default"
PATH = PathText()


def setting(default: Any = dataclasses.MISSING, check: Check | None = None) -> Any:
    """A config field with its default (none: the key is required) and the values it allows (``check``,
    enforced by :func:`check_config`)."""
    return field(default=default, metadata={"check": check} if check else {})


# ------------------------------------------------------------------------------------------ sections


@dataclass
class ModalityConfig:
    name: str = setting(check=Name())  # modality name; also the folder under data.modality_root
    dim: int = setting(check=WIDTH)  # per-snippet feature width d_j


def default_modalities() -> list[ModalityConfig]:
    """The paper's five modalities with the widths of the demo dataset."""
    return [
        ModalityConfig("pose", 64),
        ModalityConfig("depth", 64),
        ModalityConfig("panoptic", 64),
        ModalityConfig("flow", 64),
        ModalityConfig("text", 64),
    ]


@dataclass
class DataConfig:
    name: str = setting("demo", Name())  # dataset name, used in run paths: ucf_crime | xd_violence | msad | demo | <own>
    root: str = setting("", PATH)  # folder that relative list entries are resolved against ("" = the list file's folder, then its parent; docs/data.md)
    train_list: str = setting("", PATH)  # list file of training feature files (one per line)
    test_list: str = setting("", PATH)  # list file of test feature files
    annotation: str = setting("", PATH)  # temporal annotation file of the test videos
    annotation_format: str = setting("ucf", OneOf("ucf", "xd", "msad"))  # ucf | xd | msad
    gt: str = setting("", PATH)  # optional precomputed frame-level ground truth .npy (else built from the annotation)
    layout: str = setting("per_crop", OneOf("per_crop", "per_video"))  # per_crop: one [T,D] file per crop; per_video: one [T,C,D] or [T,D] file per video
    num_crops: int = setting(10, Range(0, MAX_CROPS))  # crops per video (UCF-Crime 10, XD-Violence 5); per_crop lists are checked against it, 0 = any
    feature_dim: int = setting(1024, WIDTH)  # RGB feature width (I3D: 1024)
    num_segments: int = setting(200, Range(1, MAX_SEGMENTS))  # training videos are resampled to this many snippets
    label_rule: str = setting("ucf", LabelRule())  # how the video label comes from its name: ucf ("Normal" in name) | xd ("_label_A") | msad ("normal") | folder (normal/ or <Class>/ above the file) | regex:<pattern> (normal iff it matches); docs/data.md
    classes: list[str] = field(default_factory=list)  # anomaly class names (for class-wise AUC); [] = from names
    modality_root: str = setting("", PATH)  # modality store root: <modality_root>/<modality>/<video>.npy
    modalities: list[ModalityConfig] = field(default_factory=default_modalities)
    t_align: str = setting("strict", OneOf("strict", "resample"))  # modality T vs RGB T: strict (error) | resample (nearest index: row floor((i+1/2)*Tm/T))
    batch_normal: int = setting(64, BATCH)  # normal crop files per training step
    batch_abnormal: int = setting(64, BATCH)  # abnormal crop files per training step
    num_workers: int = setting(0, PROCS)  # loader worker processes (0: load in the main process; features are cached)
    storage: str = setting("memory", OneOf("memory", "mmap"))  # memory: every set read once into RAM (UCF-Crime train: 13 GB) | mmap: files memory-mapped, crops read and resampled per batch (docs/data.md)
    cache_dtype: str = setting("none", OneOf("none", "float16"))  # none: read the feature files themselves | float16: read float16 copies written once (half the disk and page cache; not bit-exact)
    cache_dir: str = setting("", PATH)  # where float16 copies go ("" = <feature folder>/.pivad_cache/float16/; else <cache_dir>/<hash of the folder>/float16/)
    val_fraction: float = setting(0.1, FRACTION)  # training videos held out for honest model selection (video-level)


@dataclass
class URDMUConfig:
    input_dim: int = setting(1024, WIDTH)  # I3D feature width
    hidden_dim: int = setting(512, WIDTH)  # embedding / transformer width
    depth: int = setting(2, Range(0, MAX_DEPTH))  # transformer layers
    heads: int = setting(4, Range(1, MAX_HEADS))  # attention heads
    dim_head: int = setting(128, WIDTH)  # width per head
    mlp_dim: int = setting(512, WIDTH)  # feed-forward width
    dropout: float = setting(0.5, FRACTION)  # dropout in the transformer
    a_nums: int = setting(60, WIDTH)  # abnormal memory slots
    n_nums: int = setting(60, WIDTH)  # normal memory slots
    head_dim: int = setting(128, WIDTH)  # hidden width of the classifier head
    backbone: str = setting("urdmu", OneOf(*BACKBONES))  # the WSVAD model that is teacher, baseline and π-VAD student: urdmu | pel4vad | rtfm (docs/backbones.md); the other keys of this section are UR-DMU's


@dataclass
class PEL4VADConfig:
    hidden_dim: int = setting(128, WIDTH)  # TCA query/key/value width (official hid_dim)
    out_dim: int = setting(300, WIDTH)  # width of the causal classifier's input (official out_dim)
    heads: int = setting(1, Range(1, MAX_HEADS))  # TCA heads (official head_num)
    window: int = setting(9, Range(1, MAX_SEGMENTS))  # TCA local attention window in snippets (official win_size)
    gamma: float = setting(0.6, Range())  # initial weight of the learnt distance prior exp(-|w d² - b|) (official gamma)
    bias: float = setting(0.2, Range())  # initial bias b of the distance prior (official bias)
    norm: bool = True  # power + L2 normalisation of TCA's attention output (official norm)
    causal_steps: int = setting(9, Range(1, MAX_SEGMENTS))  # kernel of the causal classifier, in snippets (official t_step)
    temp: float = setting(0.09, POSITIVE)  # initial temperature of the prompt logits (logit scale log(1/temp))
    lamda: float = setting(1.0, NONNEGATIVE)  # weight of the prompt-enhanced loss beside the MIL BCE
    dropout: float = setting(0.1, FRACTION)  # dropout after the two 1x1 convolutions
    smooth: str = setting("slide", OneOf("none", "fixed", "slide"))  # test-time score smoothing: none | fixed (block means) | slide (forward moving mean)
    kappa: int = setting(7, Range(1, MAX_SEGMENTS))  # smoothing window in snippets
    prompts: str = setting("", PATH)  # class-prompt features .npy [C, input_dim/2], row 0 the normal class ("" = the built-in binary prompts; docs/backbones.md)


@dataclass
class RTFMConfig:
    feature_dim: int = setting(0, Range(0, MAX_WIDTH))  # input width F (0: model.input_dim; else it must equal it): 2048 official (I3D-ResNet50), 1024 for pivad's I3D
    branch_dim: int = setting(512, WIDTH)  # width of each dilated branch, of the 1x1 reduction and of the non-local block
    dilations: list[int] = field(default_factory=lambda: [1, 2, 4])  # one k=3 temporal conv per dilation (each 1..4096)
    fc1_dim: int = setting(512, WIDTH)  # classifier widths F -> fc1_dim -> fc2_dim -> 1
    fc2_dim: int = setting(128, WIDTH)  # second classifier width (official 128)
    dropout: float = setting(0.7, FRACTION)  # after the MTN, fc1 and fc2, and on the magnitudes before the top-k selection
    topk: int = setting(3, Range(1, MAX_SEGMENTS))  # snippets selected per video by feature magnitude (official: num_segments // 10, 32 segments)
    margin: float = setting(100.0, NONNEGATIVE)  # feature-magnitude margin m
    alpha: float = setting(1e-4, NONNEGATIVE)  # weight of the magnitude loss
    lambda_smooth: float = setting(8e-4, NONNEGATIVE)  # temporal smoothness of the abnormal scores
    lambda_sparse: float = setting(8e-3, NONNEGATIVE)  # sparsity of the abnormal scores


@dataclass
class InductorConfig:
    position: str = setting("both", Position())  # where PI modules sit in the student: early | late | both | none, or hook points of model.backbone joined by + (docs/backbones.md)
    latent_dim: int = setting(384, WIDTH)  # PMG latent width L (defaults sized to paper Table 5: docs/inductor.md)
    cmi_depth: int = setting(6, Range(1, MAX_DEPTH))  # transformer blocks in the CMI fusion stack
    cmi_heads: int = setting(8, Range(1, MAX_HEADS))  # attention heads in CMI blocks (they divide the PI's width: on UR-DMU model.hidden_dim early, twice it late)
    cmi_mlp_ratio: float = setting(2.0, Range(0.0, 64.0, lo_open=True))  # feed-forward width / D in CMI blocks
    cmi_dropout: float = setting(0.1, FRACTION)  # dropout in CMI blocks
    tau: float = setting(0.1, POSITIVE)  # InfoNCE temperature
    infonce_form: str = setting("paper", OneOf("paper", "standard"))  # paper: positive left out of the denominator | standard
    modality_source: str = setting("pseudo", OneOf("pseudo", "real"))  # pseudo: PMG outputs feed CMI | real: given modality features feed CMI
    cmi_residual: str = setting("every", OneOf("every", "between"))  # where F* joins the CMI stream: every (before each of the K blocks) | between (the paper's wording: K - 1 times)
    align_detach: bool = False  # stop the gradient of L_align into F* (only PMG and the projections move)
    align_mask_repeats: bool = False  # leave snippets that are exact copies of the positive (resampling repeats) out of the negatives
    pmg_detach: bool = False  # CMI reads the pseudo-modalities without passing gradient back into PMG (PMG then learns from L_PMG alone)
    pmg_input: str = setting("feature", OneOf("feature", "rgb"))  # what PMG reads: feature (the student's F*, the paper) | rgb (the student's RGB input; docs/inductor.md)
    pmg_standardize: bool = False  # PMG targets (and real modalities fed to CMI) standardised per dimension with training-set statistics


@dataclass
class LossConfig:
    lambda_align: float = setting(0.1, NONNEGATIVE)  # λ1 in L_second
    lambda_distill: float = setting(1.0, NONNEGATIVE)  # λ2 in L_second
    use_pmg: bool = True  # L_PMG on (paper Table 3 ablations)
    use_align: bool = True  # L_align on
    use_distill: bool = True  # L_distill on
    distill_at: str = "all"  # where L_distill pulls: all (every PI) | a placement (early, late) or hook points joined by + (a subset of inductor.position's)
    distill_gate: str = setting("none", OneOf("none", "mil"))  # none (the paper) | mil: in step 2, a video's L_distill counts only while the student's video-level MIL loss on it (BCE of the top-k mean score) is above the frozen teacher's


@dataclass
class TrainConfig:
    model: str = setting("pivad", OneOf(*BACKBONES, "pivad"))  # what to train: the backbone alone (urdmu | pel4vad | rtfm: teacher/baseline only; it must be model.backbone) | pivad (teacher, then student)
    teacher_ckpt: str = setting("", PATH)  # load the teacher from this checkpoint (own, or an official state dict of model.backbone)
    student_init: str = setting("random", OneOf("random", "teacher"))  # π-VAD student before step 1: random (the paper) | teacher (a copy of the teacher's weights)
    student_clean: bool = False  # π-VAD's student trains without dropout and reparameterisation noise, like the teacher's distillation target (eval-mode features); the paper is silent
    teacher_steps: int = setting(3000, COUNT)  # UR-DMU teacher iterations when it is trained here
    warmup_steps: int = setting(300, COUNT)  # π-VAD step 1 (L_first) iterations
    steps: int = setting(3000, COUNT)  # π-VAD step 2 (L_second) iterations
    lr: float = setting(1e-4, NONNEGATIVE)  # Adam learning rate (0: the weights stay as they are)
    inductor_lr: float = setting(0.0, NONNEGATIVE)  # Adam learning rate of the PIs (PMG + CMI) in π-VAD's steps 1 and 2 (0: train.lr)
    pmg_lr: float = setting(0.0, NONNEGATIVE)  # Adam learning rate of the PMGs alone (0: the PIs' rate)
    weight_decay: float = setting(5e-5, NONNEGATIVE)  # Adam weight decay
    seed: int = setting(2022, Range(0, MAX_SEED))  # random seed
    deterministic: bool = False  # torch deterministic algorithms
    eval_every: int = setting(100, EVERY)  # evaluate (and select) every this many steps
    selection: str = setting("val", OneOf("val", "test"))  # val: held-out training videos, video-level AUC | test: the field's test-set pick
    device: str = setting("auto", Device())  # auto | cpu | cuda | cuda:N
    threads: int = setting(0, PROCS)  # torch intra-op threads (0: torch default)
    precision: str = setting("fp32", OneOf("fp32", "bf16"))  # fp32 | bf16: the forward pass under bfloat16 autocast (CPU and CUDA); weights, optimiser and losses stay float32, evaluation runs in float32
    activation_checkpointing: bool = False  # recompute UR-DMU's and CMI's transformer blocks in backward: less memory, more compute; float32 results unchanged
    micro_batch: int = setting(0, Range(0, MAX_BATCH, even=True))  # crops per forward/backward pass (even): a step's batch runs as micro-batches of normal/abnormal pairs with gradients accumulated, the same step in less memory (0: the whole batch at once)
    out_dir: str = setting("results", PATH)  # runs go to <out_dir>/<model>/<dataset>/v<N>/
    log_every: int = setting(10, EVERY)  # JSONL log interval in steps


@dataclass
class EvalConfig:
    metric: str = setting("auc", OneOf("auc", "ap"))  # headline metric: auc (UCF-Crime, MSAD) | ap (XD-Violence)
    ap_form: str = setting("trapezoid", OneOf("trapezoid", "step"))  # trapezoid (the field's auc(recall, precision)) | step (sklearn average precision)
    threshold: float = setting(0.5, Range(0.0, 1.0))  # anomaly threshold on frame scores (stored in checkpoints, used by detect)
    batch_crops: int = setting(10, BATCH)  # crops scored together in evaluation


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: URDMUConfig = field(default_factory=URDMUConfig)
    pel4vad: PEL4VADConfig = field(default_factory=PEL4VADConfig)
    rtfm: RTFMConfig = field(default_factory=RTFMConfig)
    inductor: InductorConfig = field(default_factory=InductorConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


# ------------------------------------------------------------------------------------------- checks


class _KeyProblem(ConfigError):
    """A problem with one key, raised with the key relative to its section; :func:`_coerce` prefixes the
    section's name as the error travels up, so the message names the full dotted key."""

    def __init__(self, key: str, problem: str, *, unknown: bool = False) -> None:
        self.key, self.problem, self.unknown = key, problem, unknown
        super().__init__(f"unknown config key '{key}' ({problem})" if unknown else f"config key '{key}': {problem}")

    def under(self, prefix: str) -> _KeyProblem:
        return _KeyProblem(f"{prefix}.{self.key}", self.problem, unknown=self.unknown)


def _one_line(text: str, limit: int = 60) -> str:
    """``text`` for a one-line message: control characters escaped, cut at ``limit`` characters."""
    text = text.encode("unicode_escape").decode("ascii") if not text.isprintable() else text
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _show(value: Any, limit: int = 60) -> str:
    """``repr`` of a value for a one-line message, cut at ``limit`` characters."""
    try:
        return _one_line(repr(value), limit)
    except ValueError:  # an integer past Python's digit limit
        return f"<{type(value).__name__}>"


def _key_text(key: Any) -> str:
    """A mapping key or an override as it can appear in a one-line message."""
    return _one_line(str(key))


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; convert only where lossless (int -> float)."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise _KeyProblem(key, f"expected a mapping, got {type(value).__name__}")
        try:
            return _build(tp, value)
        except _KeyProblem as exc:
            raise exc.under(key) from None
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise _KeyProblem(key, f"expected a list, got {type(value).__name__}")
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _KeyProblem(key, f"expected true/false, got {_show(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _KeyProblem(key, f"expected an integer, got {_show(value)}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                return float(value)
            except OverflowError:
                raise _KeyProblem(key, f"number out of range, got {_show(value)}") from None
        raise _KeyProblem(key, f"expected a number, got {_show(value)}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise _KeyProblem(key, f"expected a string, got {_show(value)}")
    raise _KeyProblem(key, f"unsupported type {getattr(tp, '__name__', tp)}")  # pragma: no cover


def _build(cls: type, values: dict) -> Any:
    """``cls`` from a mapping: unknown and missing keys refused, every value type-checked."""
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            raise _KeyProblem(_key_text(key), f"known: {', '.join(fields)}", unknown=True)
        kwargs[key] = _coerce(value, hints[key], key)
    for name, f in fields.items():
        if name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise _KeyProblem(name, "missing (required)")
    return cls(**kwargs)


def _check_fields(obj: Any, prefix: str) -> None:
    """Every field of the dataclass ``obj`` (nested ones included) against its type and its :class:`Check`."""
    for f in dataclasses.fields(obj):
        key = f"{prefix}.{f.name}" if prefix else f.name
        value = _coerce(getattr(obj, f.name), _hints(type(obj))[f.name], key)
        if dataclasses.is_dataclass(value):
            _check_fields(value, key)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if dataclasses.is_dataclass(item):
                    _check_fields(item, f"{key}[{i}]")
        check = f.metadata.get("check")
        problem = check.problem(value) if check else None
        if problem:
            raise _KeyProblem(key, problem)


def _check_together(cfg: Config) -> None:
    """Values that are only wrong in combination."""
    names = [m.name for m in cfg.data.modalities]
    twice = next((n for i, n in enumerate(names) if n in names[:i]), None)
    if twice is not None:
        raise _KeyProblem("data.modalities", f"modality {twice!r} is listed twice")
    backbone, trained = cfg.model.backbone, cfg.train.model
    if trained not in ("pivad", backbone):
        raise _KeyProblem("train.model", f"{trained} trains {trained} alone, but model.backbone is {backbone!r} "
                          f"(train.model: {backbone} or pivad)")
    if backbone == "rtfm":
        _check_rtfm(cfg)
    ind = cfg.inductor
    if trained != "pivad" or ind.position == "none":
        return
    widths = hook_points(cfg)
    points = PLACEMENTS[backbone].get(ind.position) or tuple(ind.position.split("+"))
    unknown = [p for p in points if p not in widths]
    if unknown or len(set(points)) != len(points):
        raise _KeyProblem("inductor.position", f"{ind.position!r} is not a placement or hook point of {backbone} "
                          f"(known: {', '.join(dict.fromkeys(['early', 'late', 'both', 'none', *widths]))})")
    distill = cfg.loss.distill_at
    if distill != "all":
        chosen = PLACEMENTS[backbone].get(distill) or tuple(distill.split("+"))
        if not chosen or any(p not in points for p in chosen) or len(set(chosen)) != len(chosen):
            raise _KeyProblem("loss.distill_at", f"{distill!r} is not 'all' or a placement or hook points of "
                              f"{backbone} among inductor.position's ({'+'.join(points)})")
    for p in points:
        if widths[p] % ind.cmi_heads:
            raise _KeyProblem("inductor.cmi_heads", f"the width {widths[p]} of {backbone}'s hook point {p!r} is not "
                              f"divisible by {ind.cmi_heads} heads")


def _check_rtfm(cfg: Config) -> None:
    r = cfg.rtfm
    bad = next((d for d in r.dilations if not 1 <= d <= MAX_SEGMENTS), None)
    if not r.dilations or bad is not None:
        raise _KeyProblem("rtfm.dilations", f"expected one or more dilations in [1, {MAX_SEGMENTS}], got {_show(r.dilations)}")
    if r.feature_dim not in (0, cfg.model.input_dim):
        raise _KeyProblem("rtfm.feature_dim", f"{r.feature_dim} differs from model.input_dim {cfg.model.input_dim} "
                          "(0: model.input_dim)")
    if cfg.data.batch_normal != cfg.data.batch_abnormal:  # RTFM's loss pairs the two halves of a batch
        raise _KeyProblem("data.batch_abnormal", f"RTFM pairs normal and abnormal videos: expected "
                          f"data.batch_normal's {cfg.data.batch_normal}, got {cfg.data.batch_abnormal}")


def hook_points(cfg: Config) -> dict[str, int]:
    """``model.backbone``'s hook points and their widths, in forward order: the models' own ``hook_points``
    (tests/test_backbone_interface.py keeps the two equal), so a config is checked before any model is built."""
    if cfg.model.backbone == "pel4vad":
        d = cfg.model.input_dim
        return {"context": d, "embed": d // 2, "head": cfg.pel4vad.out_dim}
    if cfg.model.backbone == "rtfm":
        return {"mtn": cfg.model.input_dim, "fc1": cfg.rtfm.fc1_dim, "fc2": cfg.rtfm.fc2_dim}
    h = cfg.model.hidden_dim
    return {"early": h, "late": 2 * h}


# early / late / both on each backbone (the models' ``placements``, kept equal by the same test)
PLACEMENTS = {
    "urdmu": {"early": ("early",), "late": ("late",), "both": ("early", "late")},
    "pel4vad": {"early": ("embed",), "late": ("head",), "both": ("embed", "head")},
    "rtfm": {"early": ("mtn",), "late": ("fc1",), "both": ("mtn", "fc1")},
}


def check_config(cfg: Config) -> Config:
    """Raise a :class:`ConfigError` naming the first key whose value is not allowed (types, the ranges and
    choices each field declares, and combinations); returns ``cfg``. :func:`from_dict` calls it, so
    YAML files, overrides and checkpoint configs all pass here; call it again after changing fields."""
    _check_fields(cfg, "")
    _check_together(cfg)
    return cfg


def merge_dict(base: dict, update: dict) -> dict:
    """Recursive dict merge; mappings merge key by key, everything else replaces."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_dict(out[key], value)
        else:
            out[key] = value
    return out


def to_dict(cfg: Any) -> dict:
    """Plain nested dict of a config (lists of dataclasses included)."""
    return dataclasses.asdict(cfg)


def from_dict(values: dict) -> Config:
    """Build a checked :class:`Config` from a nested dict (missing keys take defaults)."""
    if not isinstance(values, dict):
        raise ConfigError(f"config: expected a mapping at the top level, got {type(values).__name__}")
    return check_config(_build(Config, values))


# ------------------------------------------------------------------------------------------ overrides


def parse_value(text: str) -> Any:
    """Parse a command-line value as a config file's value (``3e-4`` -> float, ``true`` -> bool, ``[a, b]`` ->
    list, ``"'1e-4'"`` -> str); text that is not YAML stays text."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except (yaml.YAMLError, ValueError, RecursionError):  # ValueError: a date such as 2021-02-30
        return text


def overrides_to_dict(overrides: list[str]) -> dict:
    """``["--train.lr", "3e-4", "--data.name=ucf"]`` -> ``{"train": {"lr": 3e-4}, "data": {"name": "ucf"}}``."""
    out: dict = {}
    items = list(overrides)
    i = 0
    while i < len(items):
        token = items[i]
        if not token.startswith("--"):
            raise ConfigError(f"config override '{_key_text(token)}': expected --section.key value")
        key = token[2:]
        if "=" in key:
            key, raw = key.split("=", 1)
            i += 1
        else:
            if i + 1 >= len(items):
                raise ConfigError(f"config override '--{_key_text(key)}': missing value")
            raw = items[i + 1]
            i += 2
        if "." not in key:
            raise ConfigError(f"config override '--{_key_text(key)}': expected --section.key")
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"config override '--{_key_text(key)}': '{_key_text(part)}' is a value, not a "
                                  "section")
        node[parts[-1]] = parse_value(raw)
    return out


# -------------------------------------------------------------------------------------------- files


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (plain YAML silently keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key '{_key_text(key)}' (line {key_node.start_mark.line + 1})",
                        key_node.start_mark)
                seen.add(key)
            except TypeError:  # an unhashable key: the base class says so
                break
        return super().construct_mapping(node, deep=deep)


class _Dumper(yaml.SafeDumper):
    """SafeDumper that quotes the strings :class:`_UniqueKeyLoader` would read as something else."""


# YAML 1.1 reads "1e-4" (no dot) as a string; read it as a number, as YAML 1.2 and the command line do
# (and quote a string that looks like one when saving, so that it reads back as a string).
for _cls in (_UniqueKeyLoader, _Dumper):
    _cls.add_implicit_resolver("tag:yaml.org,2002:float",
                               re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))


def _read_config_text(path: Path) -> str:
    """The text of a config file: a regular file of at most MAX_CONFIG_BYTES, UTF-8 (a FIFO, a device or a
    folder is refused before it is read, so that nothing blocks on it)."""
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):
            kind = "a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file"
            raise ConfigError(f"{path}: cannot read config file ({kind})")
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):  # replaced since the stat
                raise ConfigError(f"{path}: cannot read config file (not a regular file)")
            data = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc.strerror or exc})") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: not a config file (larger than {MAX_CONFIG_BYTES // 1024} KiB)")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"{path}: not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line})") from None


def read_yaml(path: str | Path) -> dict:
    """The top-level mapping of a YAML config file; :class:`ConfigError` naming the file otherwise."""
    path = Path(path)
    text = _read_config_text(path)
    try:
        values = yaml.load(text, Loader=_UniqueKeyLoader) or {}  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        problem, mark = getattr(exc, "problem", None), getattr(exc, "problem_mark", None)
        if problem and mark is not None and "(line " not in problem:
            problem = f"{problem} (line {mark.line + 1})"
        detail = problem or next(iter(str(exc).splitlines()), type(exc).__name__)
        raise ConfigError(f"{path}: not valid YAML ({_one_line(detail, 160)})") from None
    except (ValueError, RecursionError) as exc:  # a date such as 2021-02-30; nesting past the stack
        raise ConfigError(f"{path}: not valid YAML ({_one_line(str(exc) or type(exc).__name__, 160)})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    return values


def load_config(path: str | Path | None = None, overrides: list[str] | dict | None = None) -> Config:
    """Defaults <- YAML file <- overrides, checked (:func:`check_config`)."""
    values: dict = {}
    if path:
        try:
            values = read_yaml(path)
            from_dict(values)  # check the file on its own so errors name it
        except ConfigError as exc:
            msg = str(exc)
            raise ConfigError(msg if msg.startswith(str(path)) else f"{path}: {msg}") from None
    if overrides:
        extra = overrides if isinstance(overrides, dict) else overrides_to_dict(overrides)
        values = merge_dict(values, extra)
    return from_dict(values)


def config_yaml(cfg: Config) -> str:
    """The config as YAML text that :func:`load_config` reads back to the same config."""
    return yaml.dump(to_dict(cfg), Dumper=_Dumper, sort_keys=False)


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML (atomically)."""
    atomic_write_text(path, config_yaml(cfg))
