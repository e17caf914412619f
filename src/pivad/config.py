"""Typed configuration: dataclasses, YAML files, ``--section.key value`` overrides.

A run's configuration is one :class:`Config`. YAML files set values section by section; command-line
overrides (``--train.lr 3e-4``) are applied on top. Unknown keys and values of the wrong type are
rejected with a :class:`~pivad.errors.ConfigError` naming the key. The resolved config is saved beside
every run (:func:`save_config`).
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pivad.errors import ConfigError
from pivad.io import atomic_write_text


@dataclass
class ModalityConfig:
    name: str = ""  # modality name; also the folder under data.modality_root
    dim: int = 0  # per-snippet feature width d_j


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
    name: str = "demo"  # dataset name, used in run paths: ucf_crime | xd_violence | msad | demo | <own>
    root: str = ""  # folder that relative list entries are resolved against ("" = the list file's folder, then its parent; docs/data.md)
    train_list: str = ""  # list file of training feature files (one per line)
    test_list: str = ""  # list file of test feature files
    annotation: str = ""  # temporal annotation file of the test videos
    annotation_format: str = "ucf"  # ucf | xd | msad
    gt: str = ""  # optional precomputed frame-level ground truth .npy (else built from the annotation)
    layout: str = "per_crop"  # per_crop: one [T,D] file per crop; per_video: one [T,C,D] or [T,D] file per video
    num_crops: int = 10  # crops per video (UCF-Crime 10, XD-Violence 5); per_crop lists are checked against it, 0 = any
    feature_dim: int = 1024  # RGB feature width (I3D: 1024)
    num_segments: int = 200  # training videos are resampled to this many snippets
    label_rule: str = "ucf"  # how the video label comes from its name: ucf ("Normal" in name) | xd ("_label_A") | msad ("normal") | regex:<pattern> (normal iff it matches); docs/data.md
    classes: list[str] = field(default_factory=list)  # anomaly class names (for class-wise AUC); [] = from names
    modality_root: str = ""  # modality store root: <modality_root>/<modality>/<video>.npy
    modalities: list[ModalityConfig] = field(default_factory=default_modalities)
    t_align: str = "strict"  # modality T vs RGB T: strict (error) | resample (nearest index: row floor((i+1/2)*Tm/T))
    batch_normal: int = 64  # normal crop files per training step
    batch_abnormal: int = 64  # abnormal crop files per training step
    num_workers: int = 0  # loader worker processes (0: load in the main process; features are cached)
    storage: str = "memory"  # memory: every set read once into RAM (UCF-Crime train: 13 GB) | mmap: files memory-mapped, crops read and resampled per batch (docs/data.md)
    cache_dtype: str = "none"  # none: read the feature files themselves | float16: read float16 copies written once (half the disk and page cache; not bit-exact)
    cache_dir: str = ""  # where float16 copies go ("" = <feature folder>/.pivad_cache/float16/; else <cache_dir>/<hash of the folder>/float16/)
    val_fraction: float = 0.1  # training videos held out for honest model selection (video-level)


@dataclass
class URDMUConfig:
    input_dim: int = 1024  # I3D feature width
    hidden_dim: int = 512  # embedding / transformer width
    depth: int = 2  # transformer layers
    heads: int = 4  # attention heads
    dim_head: int = 128  # width per head
    mlp_dim: int = 512  # feed-forward width
    dropout: float = 0.5  # dropout in the transformer
    a_nums: int = 60  # abnormal memory slots
    n_nums: int = 60  # normal memory slots
    head_dim: int = 128  # hidden width of the classifier head
    backbone: str = "urdmu"  # the WSVAD model that is teacher, baseline and π-VAD student: urdmu | pel4vad (docs/backbones.md); the other keys of this section are UR-DMU's


@dataclass
class PEL4VADConfig:
    hidden_dim: int = 128  # TCA query/key/value width (official hid_dim)
    out_dim: int = 300  # width of the causal classifier's input (official out_dim)
    heads: int = 1  # TCA heads (official head_num)
    window: int = 9  # TCA local attention window in snippets (official win_size)
    gamma: float = 0.6  # initial weight of the learnt distance prior exp(-|w d² - b|) (official gamma)
    bias: float = 0.2  # initial bias b of the distance prior (official bias)
    norm: bool = True  # power + L2 normalisation of TCA's attention output (official norm)
    causal_steps: int = 9  # kernel of the causal classifier, in snippets (official t_step)
    temp: float = 0.09  # initial temperature of the prompt logits (logit scale log(1/temp))
    lamda: float = 1.0  # weight of the prompt-enhanced loss beside the MIL BCE
    dropout: float = 0.1  # dropout after the two 1x1 convolutions
    smooth: str = "slide"  # test-time score smoothing: none | fixed (block means) | slide (forward moving mean)
    kappa: int = 7  # smoothing window in snippets
    prompts: str = ""  # class-prompt features .npy [C, input_dim/2], row 0 the normal class ("" = the built-in binary prompts; docs/backbones.md)


@dataclass
class InductorConfig:
    position: str = "both"  # where PI modules sit in the student: early | late | both | none, or hook points of model.backbone joined by + (docs/backbones.md)
    latent_dim: int = 384  # PMG latent width L (defaults sized to paper Table 5: docs/inductor.md)
    cmi_depth: int = 6  # transformer blocks in the CMI fusion stack
    cmi_heads: int = 8  # attention heads in CMI blocks
    cmi_mlp_ratio: float = 2.0  # feed-forward width / D in CMI blocks
    cmi_dropout: float = 0.1  # dropout in CMI blocks
    tau: float = 0.1  # InfoNCE temperature
    infonce_form: str = "paper"  # paper: positive left out of the denominator | standard
    modality_source: str = "pseudo"  # pseudo: PMG outputs feed CMI | real: given modality features feed CMI
    cmi_residual: str = "every"  # where F* joins the CMI stream: every (before each of the K blocks) | between (the paper's wording: K - 1 times)
    align_detach: bool = False  # stop the gradient of L_align into F* (only PMG and the projections move)
    align_mask_repeats: bool = False  # leave snippets that are exact copies of the positive (resampling repeats) out of the negatives
    pmg_detach: bool = False  # CMI reads the pseudo-modalities without passing gradient back into PMG (PMG then learns from L_PMG alone)
    pmg_input: str = "feature"  # what PMG reads: feature (the student's F*, the paper) | rgb (the student's RGB input; docs/inductor.md)
    pmg_standardize: bool = False  # PMG targets (and real modalities fed to CMI) standardised per dimension with training-set statistics


@dataclass
class LossConfig:
    lambda_align: float = 0.1  # λ1 in L_second
    lambda_distill: float = 1.0  # λ2 in L_second
    use_pmg: bool = True  # L_PMG on (paper Table 3 ablations)
    use_align: bool = True  # L_align on
    use_distill: bool = True  # L_distill on


@dataclass
class TrainConfig:
    model: str = "pivad"  # what to train: urdmu (teacher/baseline only) | pivad (teacher, then student)
    teacher_ckpt: str = ""  # load the teacher from this checkpoint (own or official UR-DMU state dict)
    student_init: str = "random"  # π-VAD student before step 1: random (the paper) | teacher (a copy of the teacher's weights)
    student_clean: bool = False  # π-VAD's student trains without dropout and reparameterisation noise, like the teacher's distillation target (eval-mode features); the paper is silent
    teacher_steps: int = 3000  # UR-DMU teacher iterations when it is trained here
    warmup_steps: int = 300  # π-VAD step 1 (L_first) iterations
    steps: int = 3000  # π-VAD step 2 (L_second) iterations
    lr: float = 1e-4  # Adam learning rate
    inductor_lr: float = 0.0  # Adam learning rate of the PIs (PMG + CMI) in π-VAD's steps 1 and 2 (0: train.lr)
    pmg_lr: float = 0.0  # Adam learning rate of the PMGs alone (0: the PIs' rate)
    weight_decay: float = 5e-5  # Adam weight decay
    seed: int = 2022  # random seed
    deterministic: bool = False  # torch deterministic algorithms
    eval_every: int = 100  # evaluate (and select) every this many steps
    selection: str = "val"  # val: held-out training videos, video-level AUC | test: the field's test-set pick
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int = 0  # torch intra-op threads (0: torch default)
    precision: str = "fp32"  # fp32 | bf16: the forward pass under bfloat16 autocast (CPU and CUDA); weights, optimiser and losses stay float32, evaluation runs in float32
    activation_checkpointing: bool = False  # recompute UR-DMU's and CMI's transformer blocks in backward: less memory, more compute; float32 results unchanged
    micro_batch: int = 0  # crops per forward/backward pass (even): a step's batch runs as micro-batches of normal/abnormal pairs with gradients accumulated, the same step in less memory (0: the whole batch at once)
    out_dir: str = "results"  # runs go to <out_dir>/<model>/<dataset>/v<N>/
    log_every: int = 10  # JSONL log interval in steps


@dataclass
class EvalConfig:
    metric: str = "auc"  # headline metric: auc (UCF-Crime, MSAD) | ap (XD-Violence)
    ap_form: str = "trapezoid"  # trapezoid (the field's auc(recall, precision)) | step (sklearn average precision)
    threshold: float = 0.5  # anomaly threshold on frame scores (stored in checkpoints, used by detect)
    batch_crops: int = 10  # crops scored together in evaluation


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: URDMUConfig = field(default_factory=URDMUConfig)
    pel4vad: PEL4VADConfig = field(default_factory=PEL4VADConfig)
    inductor: InductorConfig = field(default_factory=InductorConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


# --------------------------------------------------------------------------------------------- coercion


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; convert only where lossless (int -> float)."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}': expected a mapping, got {type(value).__name__}")
        return _build(tp, value, key)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}': expected a list, got {type(value).__name__}")
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config key '{key}': expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"config key '{key}': expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"config key '{key}': expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"config key '{key}': expected a string, got {value!r}")
    raise ConfigError(f"config key '{key}': unsupported type {_type_name(tp)}")  # pragma: no cover


def _build(cls: type, values: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            raise ConfigError(f"unknown config key '{full}' (known: {', '.join(sorted(names))})")
        kwargs[key] = _coerce(value, hints[key], full)
    return cls(**kwargs)


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
    """Build a validated :class:`Config` from a nested dict (missing keys take defaults)."""
    if not isinstance(values, dict):
        raise ConfigError(f"config: expected a mapping at the top level, got {type(values).__name__}")
    cfg = _build(Config, values)
    if cfg.data.num_crops < 0:
        raise ConfigError(f"config key 'data.num_crops': must be >= 0 (0: any number), got {cfg.data.num_crops}")
    return cfg


# ------------------------------------------------------------------------------------------ overrides


def parse_value(text: str) -> Any:
    """Parse a command-line value with YAML rules (``3e-4`` -> float, ``true`` -> bool, ``[a, b]`` -> list)."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    # YAML 1.1 reads "1e-4" (no dot) as a string; accept it as a number.
    if isinstance(value, str):
        try:
            return float(value) if any(c in value for c in ".eE") else int(value)
        except ValueError:
            return value
    return value


def overrides_to_dict(overrides: list[str]) -> dict:
    """``["--train.lr", "3e-4", "--data.name=ucf"]`` -> ``{"train": {"lr": 3e-4}, "data": {"name": "ucf"}}``."""
    out: dict = {}
    items = list(overrides)
    i = 0
    while i < len(items):
        token = items[i]
        if not token.startswith("--"):
            raise ConfigError(f"config override '{token}': expected --section.key value")
        key = token[2:]
        if "=" in key:
            key, raw = key.split("=", 1)
            i += 1
        else:
            if i + 1 >= len(items):
                raise ConfigError(f"config override '--{key}': missing value")
            raw = items[i + 1]
            i += 2
        if "." not in key:
            raise ConfigError(f"config override '--{key}': expected --section.key")
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = parse_value(raw)
    return out


# -------------------------------------------------------------------------------------------- files


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (plain YAML silently keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key '{key}' (line {key_node.start_mark.line + 1})", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc.strerror or exc})") from None
    try:
        values = yaml.load(text, Loader=_UniqueKeyLoader) or {}  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        problem, mark = getattr(exc, "problem", None), getattr(exc, "problem_mark", None)
        if problem and mark is not None and "(line " not in problem:
            problem = f"{problem} (line {mark.line + 1})"
        raise ConfigError(f"{path}: not valid YAML ({problem or str(exc).splitlines()[0]})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    return values


def load_config(path: str | Path | None = None, overrides: list[str] | dict | None = None) -> Config:
    """Defaults <- YAML file <- overrides, validated."""
    values: dict = {}
    if path:
        try:
            values = read_yaml(path)
            from_dict(values)  # validate the file on its own so errors name it
        except ConfigError as exc:
            msg = str(exc)
            raise ConfigError(msg if msg.startswith(str(path)) else f"{path}: {msg}") from None
    if overrides:
        extra = overrides if isinstance(overrides, dict) else overrides_to_dict(overrides)
        values = merge_dict(values, extra)
    return from_dict(values)


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML (atomically)."""
    atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))
