"""A small, deterministic, weakly-labelled dataset in the real on-disk layout (the demo's and the tests').

Layout written under ``out``::

    rgb/<Class>/<video>__<c>.npy        [T, D] float32, one file per crop (UR-DMU's per-crop layout)
    modalities/<mod>/<video>.npy        [T, d_j] float32 (pose, depth, panoptic, flow, text)
    lists/train.list, lists/test.list   paths relative to ``out``; crops consecutive, abnormal first
    annotations.txt                     UCF form: Class/Video.mp4 <n_frames> <Class> s1 e1 s2 e2
    gt.npy                              flat uint8 frame ground truth of test.list (16 frames/snippet)
    meta.json                           seed, preset, spec, sizes, generator version (written last)

The generative process is in :mod:`pivad.data.synth_signal` and ``docs/synthetic.md``. The dataset
is written into a temporary sibling folder that is renamed into place when complete, so a folder
with ``meta.json`` is always a finished dataset; a finished one with the same settings is reused.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pivad.data.synth_files import first_foreign
from pivad.data.synth_signal import (
    DEFAULT_DISTRACTORS,
    DEFAULT_EVENT_FRACTION,
    DEFAULT_SENSITIVITY,
    MODALITY_NONLINEARITY,
    SNIPPET,
    SignalSpec,
    VideoPlan,
    build_world,
    generate_video,
)
from pivad.errors import ConfigError, DataError
from pivad.io import atomic_save_npy, atomic_write_json, atomic_write_text
from pivad.outputs import check_free_space, check_output_dir

GENERATOR = "pivad.data.synth"
GENERATOR_VERSION = 6  # bump whenever the same seed and spec would give different bytes
TRAIN_NORMAL_FOLDER = "Training_Normal_Videos_Anomaly"
TEST_NORMAL_FOLDER = "Testing_Normal_Videos_Anomaly"
MIN_SNIPPETS = 8
FAMILIES = (1, 2)  # 1: version 6 (this module's process); 2: pivad.data.synth_family2
GT_RULE = "16 frames per snippet, T from the feature files; frames s..e inclusive are abnormal"


@dataclass
class DatasetSpec:
    """Sizes of a synthetic dataset; ``signal`` holds the generative process's knobs."""

    n_train_abnormal: int = 80
    n_train_normal: int = 80
    n_test_abnormal: int = 25
    n_test_normal: int = 25
    t_min: int = 32  # snippets per video, drawn uniformly in [t_min, t_max]
    t_max: int = 160
    num_crops: int = 2
    signal: SignalSpec = field(default_factory=SignalSpec)


PRESETS: dict[str, dict[str, Any]] = {
    # README demo: teacher + π-VAD train in minutes on 2 cores (about 160 MB on disk)
    "demo": {},
    # fast tests: a handful of short videos, small modality widths
    "tiny": {
        "n_train_abnormal": 5,
        "n_train_normal": 5,
        "n_test_abnormal": 3,
        "n_test_normal": 3,
        "t_min": 16,
        "t_max": 40,
        "modality_dims": {"pose": 8, "depth": 12, "panoptic": 16, "flow": 8, "text": 16},
    },
}

DESCRIPTION = (
    "Per snippet: latent scene (per video), normal activity (Markov chain), nuisance (camera/lighting "
    "AR(1), per-video gain) and events; abnormal videos have 1-2 contiguous events of their class, and "
    "any video may have 'distractor' events (normal look-alikes, one per class). RGB = pooled ReLU of a "
    "random linear mix of the latents plus noise; the anomaly is weak there (mostly its distractor's "
    "direction, small amplitude, nuisance leaking into the event subspace). Modalities = noisy "
    "nonlinear read-outs of the same latents without the lighting nuisance, where each class appears "
    "strongly in the modalities sensitive to it (see 'sensitivity'). Crops perturb the same content."
)


# ------------------------------------------------------------------------------------------------ spec


def make_spec(preset: str = "demo", **overrides: Any) -> DatasetSpec:
    """The spec of a preset with keyword overrides (dataset sizes or :class:`SignalSpec` fields)."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown synthetic preset '{preset}' (known: {', '.join(PRESETS)})")
    values = {**PRESETS[preset], **overrides}
    top = {f.name for f in dataclasses.fields(DatasetSpec)} - {"signal"}
    sig = {f.name for f in dataclasses.fields(SignalSpec)}
    unknown = sorted(set(values) - top - sig)
    if unknown:
        raise ConfigError(f"unknown synthetic dataset option(s): {', '.join(unknown)}")
    signal = SignalSpec(**{k: v for k, v in values.items() if k in sig})
    spec = DatasetSpec(**{k: v for k, v in values.items() if k in top}, signal=signal)
    _check_spec(spec)
    return spec


def _check_spec(spec: DatasetSpec) -> None:
    if spec.t_min < MIN_SNIPPETS or spec.t_max < spec.t_min:
        raise ConfigError(f"synthetic dataset: need {MIN_SNIPPETS} <= t_min <= t_max, got {spec.t_min}, {spec.t_max}")
    counts = (spec.n_train_abnormal, spec.n_train_normal, spec.n_test_abnormal, spec.n_test_normal)
    if min(counts) < 1 or spec.num_crops < 1:
        raise ConfigError("synthetic dataset: every split needs at least one normal and one abnormal video")
    unknown = [c for c in spec.signal.classes if c not in DEFAULT_EVENT_FRACTION]
    if unknown:
        raise ConfigError(f"synthetic dataset: no event model for class(es) {', '.join(unknown)}")
    if any(d < 1 for d in spec.signal.modality_dims.values()) or spec.signal.feature_dim < 1:
        raise ConfigError("synthetic dataset: feature and modality widths must be positive")


# ------------------------------------------------------------------------------------------------ plan


def _place_events(rng: np.random.Generator, n_frames: int, lengths: list[int]) -> list[tuple[int, int]]:
    """Non-overlapping events, one per equal share of the video, frames s..e inclusive."""
    share = n_frames // len(lengths)
    events = []
    for i, length in enumerate(lengths):
        length = min(length, share - SNIPPET)
        lo = i * share
        start = lo + int(rng.integers(0, share - length + 1))
        events.append((start, start + length - 1))
    return events


def _class_counts(n: int, classes: list[str]) -> list[int]:
    return [n // len(classes) + (1 if i < n % len(classes) else 0) for i in range(len(classes))]


def dataset_plan(spec: DatasetSpec, seed: int) -> list[VideoPlan]:
    """Every video of the dataset (train then test, each abnormal-first, classes in order)."""
    rng = np.random.default_rng([seed, 2])
    classes = spec.signal.classes
    preferred = build_world(spec.signal, seed).preferred_scene
    plans: list[VideoPlan] = []
    numbers = {c: 0 for c in classes}
    normal_number = 0
    for split, n_abn, n_nor in (
        ("train", spec.n_train_abnormal, spec.n_train_normal),
        ("test", spec.n_test_abnormal, spec.n_test_normal),
    ):
        entries = [(c, 1) for c, k in zip(classes, _class_counts(n_abn, classes)) for _ in range(k)]
        entries += [("Normal", 0)] * n_nor
        for cls, label in entries:
            n = int(rng.integers(spec.t_min, spec.t_max + 1))
            n_frames = n * SNIPPET
            if label:
                numbers[cls] += 1
                name = f"{cls}{numbers[cls]:03d}_x264"
                c = classes.index(cls)
                biased = rng.random() < spec.signal.scene_bias
                scene = int(preferred[c]) if biased else int(rng.integers(spec.signal.n_scenes))
                k = 2 if rng.random() < spec.signal.two_event_prob else 1
                lo, hi = DEFAULT_EVENT_FRACTION[cls]
                scale = 0.6 if k == 2 else 1.0
                lengths = [max(2 * SNIPPET, int(rng.uniform(lo, hi) * scale * n_frames)) for _ in range(k)]
                events = _place_events(rng, n_frames, lengths)
            else:
                normal_number += 1
                name = f"Normal_Videos_{normal_number:03d}_x264"
                scene = int(rng.integers(spec.signal.n_scenes))
                events = []
            distractors = []
            if rng.random() < spec.signal.distractor_prob:
                for _ in range(1 + int(rng.random() < 0.3)):
                    kind = int(rng.integers(len(classes)))
                    length = max(2 * SNIPPET, int(rng.uniform(0.06, 0.3) * n_frames))
                    length = min(length, n_frames - SNIPPET)
                    start = int(rng.integers(0, n_frames - length + 1))
                    distractors.append((kind, start, start + length - 1))
            plans.append(VideoPlan(len(plans), name, split, cls, label, n, scene, events, distractors))
    return plans


# ---------------------------------------------------------------------------------------------- layout


def class_folder(plan: VideoPlan) -> str:
    if plan.label:
        return plan.cls
    return TRAIN_NORMAL_FOLDER if plan.split == "train" else TEST_NORMAL_FOLDER


def crop_path(plan: VideoPlan, crop: int) -> str:
    return f"rgb/{class_folder(plan)}/{plan.name}__{crop}.npy"


def frame_gt(plan: VideoPlan) -> np.ndarray:
    """uint8 [16 T]: frames s..e inclusive of each event are 1."""
    gt = np.zeros(plan.n_snippets * SNIPPET, dtype=np.uint8)
    for s, e in plan.events:
        gt[s : e + 1] = 1
    return gt


def annotation_line(plan: VideoPlan) -> str:
    """UCF form: every event's ``s e`` pair, padded with ``-1 -1`` to at least two pairs."""
    bounds = [b for ev in plan.events for b in ev]
    bounds += [-1] * max(0, 4 - len(bounds))
    cls = plan.cls if plan.label else "Normal"
    return f"{class_folder(plan)}/{plan.name}.mp4 {plan.n_snippets * SNIPPET} {cls} " + " ".join(map(str, bounds))


def _fingerprint(spec: Any, seed: int, preset: str, family: int = 1) -> dict[str, Any]:
    """What identifies a dataset (version 6's record has no ``family`` key: its bytes stay as they were)."""
    if family == 1:
        return {"generator": GENERATOR, "version": GENERATOR_VERSION, "seed": seed, "preset": preset,
                "spec": dataclasses.asdict(spec)}
    from pivad.data import synth_family2 as fam

    return {"generator": GENERATOR, "family": fam.FAMILY, "version": fam.VERSION, "seed": seed, "preset": preset,
            "spec": dataclasses.asdict(spec)}


def _meta(spec: DatasetSpec, seed: int, preset: str, plans: list[VideoPlan]) -> dict[str, Any]:
    sig = spec.signal
    return {
        **_fingerprint(spec, seed, preset),
        "feature_dim": sig.feature_dim,
        "num_crops": spec.num_crops,
        "snippet_frames": SNIPPET,
        "modalities": [{"name": k, "dim": v} for k, v in sig.modality_dims.items()],
        "classes": list(sig.classes),
        "distractors": dict(zip(sig.classes, DEFAULT_DISTRACTORS)),
        "sensitivity": {k: dict(zip(sig.classes, v)) for k, v in DEFAULT_SENSITIVITY.items() if k in sig.modality_dims},
        "modality_nonlinearity": {k: MODALITY_NONLINEARITY.get(k, "tanh") for k in sig.modality_dims},
        **_sizes(plans),
        "gt_rule": GT_RULE,
        "label_rule": "ucf",
        "description": DESCRIPTION,
    }


def _write_all(tmp: Path, spec: DatasetSpec, seed: int, preset: str, plans: list[VideoPlan]) -> None:
    world = build_world(spec.signal, seed)
    _write_files(tmp, plans, spec.num_crops, lambda p: generate_video(spec.signal, world, p, seed, spec.num_crops),
                 _meta(spec, seed, preset, plans))


def _write_family2(tmp: Path, spec: Any, seed: int, preset: str, plans: list[VideoPlan]) -> None:
    from pivad.data import synth_family2 as fam

    world = fam.build_world(spec, seed)
    meta = {**_fingerprint(spec, seed, preset, 2), "snippet_frames": SNIPPET, **fam.meta_fields(spec, plans),
            **_sizes(plans), "gt_rule": GT_RULE, "label_rule": "ucf"}
    _write_files(tmp, plans, spec.num_crops, lambda p: fam.generate_video(spec, world, p, seed), meta)


def _sizes(plans: list[VideoPlan]) -> dict[str, Any]:
    test = [p for p in plans if p.split == "test"]
    abn_share = [sum(e - s + 1 for s, e in p.events) / (p.n_snippets * SNIPPET) for p in plans if p.label]
    return {
        "sizes": {
            split: {
                "abnormal": sum(1 for p in plans if p.split == split and p.label),
                "normal": sum(1 for p in plans if p.split == split and not p.label),
                "snippets": sum(p.n_snippets for p in plans if p.split == split),
            }
            for split in ("train", "test")
        },
        "test_frames": sum(p.n_snippets * SNIPPET for p in test),
        "test_abnormal_frames": int(sum(frame_gt(p).sum() for p in test)),
        "abnormal_share_mean": round(float(np.mean(abn_share)), 4),
    }


def estimated_bytes(spec: Any, plans: list[VideoPlan]) -> int:
    """Bytes the dataset takes on disk: float32 crop and modality rows, the ground truth, a 4 kB block per file
    (either family: v6 keeps its widths in ``spec.signal``, family 2 on the spec itself)."""
    widths = getattr(spec, "signal", spec)
    row = 4 * (spec.num_crops * widths.feature_dim + sum(widths.modality_dims.values()))
    files = len(plans) * (spec.num_crops + len(widths.modality_dims))
    test_frames = sum(p.n_snippets * SNIPPET for p in plans if p.split == "test")
    return sum(p.n_snippets for p in plans) * row + test_frames + 4096 * files + 64 * 1024


def _write_files(tmp: Path, plans: list[VideoPlan], num_crops: int, generate, meta: dict[str, Any]) -> None:
    """Every video's crop and modality files (``generate(plan) -> (rgb [C,T,D], {mod: [T,d]})``), the lists,
    annotations and frame ground truth, then ``meta`` (last: it marks the folder finished)."""
    from tqdm import tqdm

    lists: dict[str, list[str]] = {"train": [], "test": []}
    for plan in tqdm(plans, desc="synthetic videos", unit="video", file=sys.stderr, disable=None):
        rgb, mods = generate(plan)
        for c in range(num_crops):
            rel = crop_path(plan, c)
            atomic_save_npy(tmp / rel, rgb[c])
            lists[plan.split].append(rel)
        for name, arr in mods.items():
            atomic_save_npy(tmp / "modalities" / name / f"{plan.name}.npy", arr)
    test = [p for p in plans if p.split == "test"]
    for split, lines in lists.items():
        atomic_write_text(tmp / "lists" / f"{split}.list", "\n".join(lines) + "\n")
    atomic_write_text(tmp / "annotations.txt", "\n".join(annotation_line(p) for p in test) + "\n")
    atomic_save_npy(tmp / "gt.npy", np.concatenate([frame_gt(p) for p in test]))
    atomic_write_json(tmp / "meta.json", meta)  # last: marks it finished


def _read_meta(path: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def family_spec(family: int, preset: str = "demo", **overrides: Any) -> Any:
    """The spec of ``preset`` in generator family 1 (version 6) or 2, with overrides."""
    if family == 1:
        return make_spec(preset, **overrides)
    if family == 2:
        from pivad.data import synth_family2

        return synth_family2.make_spec(preset, **overrides)
    raise ConfigError(f"unknown synthetic family {family} (known: {', '.join(map(str, FAMILIES))})")


def family_plan(family: int, spec: Any, seed: int) -> list[VideoPlan]:
    """Every video of a dataset of that family (train then test)."""
    if family == 2:
        from pivad.data import synth_family2

        return synth_family2.dataset_plan(spec, seed)
    return dataset_plan(spec, seed)


def plans_of(meta: dict[str, Any]) -> list[VideoPlan]:
    """The plans of a finished dataset of a shipped preset, from its ``meta.json`` (for the benchmarks)."""
    family = int(meta.get("family", 1))
    if family == 2:  # its spec is flat: rebuild it with the dataset's own overrides
        from pivad.data import synth_family2

        return synth_family2.dataset_plan(synth_family2.Family2Spec(**meta["spec"]), int(meta["seed"]))
    return family_plan(family, family_spec(family, meta["preset"]), int(meta["seed"]))


def synthesize(
    out_dir: str | Path, *, seed: int = 0, preset: str = "demo", force: bool = False, family: int = 1,
    **overrides: Any,
) -> tuple[Path, bool]:
    """Write (or reuse) a synthetic dataset of generator ``family``; returns ``(out_dir, created)``.

    A finished dataset with the same settings is reused (``force`` rewrites it); one written by this
    generator with other settings is replaced; any other non-empty folder is refused.
    """
    from pivad.config import check_seed

    check_seed(seed, "--seed")
    spec = family_spec(family, preset, **overrides)
    out = Path(out_dir)
    want = _fingerprint(spec, seed, preset, family)
    meta_path = out / "meta.json"
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder")
    check_output_dir(out)  # a folder this process can write in (or create), before anything else
    if out.is_dir():
        meta = _read_meta(meta_path) if meta_path.exists() else None
        if meta is None:
            if any(out.iterdir()):
                raise DataError(
                    f"{out}: exists and is not a finished synthetic dataset (no readable meta.json); "
                    "remove it or choose another --out"
                )
        elif meta.get("generator") != GENERATOR:
            raise DataError(f"{meta_path}: not written by {GENERATOR}; remove the folder or choose another --out")
        elif {k: meta.get(k) for k in {*want, "family"}} == {"family": None, **want} and not force:
            return out, False
        elif (foreign := first_foreign(out, meta)) is not None:  # replacing would lose the user's files
            raise DataError(
                f"{out}: holds {foreign.relative_to(out)}, which the generator did not write; "
                "move it out or choose another --out (nothing was replaced)"
            )
        elif not force:  # our own output made with other settings: a stale cache, replaced
            print(
                f"pivad: {out} holds a synthetic dataset with other settings (seed {meta.get('seed')}, "
                f"preset {meta.get('preset')}, version {meta.get('version')}); replacing it",
                file=sys.stderr,
            )
    plans = family_plan(family, spec, seed)
    check_free_space(out, estimated_bytes(spec, plans), f"the synthetic dataset ({len(plans)} videos)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.synth-", dir=out.parent))
    try:
        (_write_all if family == 1 else _write_family2)(tmp, spec, seed, preset, plans)
        os.chmod(tmp, 0o755)  # mkdtemp makes it private
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old / "data")
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out, True


def write_synthetic_dataset(
    out_dir: str | Path, *, seed: int = 0, preset: str = "demo", force: bool = False, family: int = 1,
    **overrides: Any,
) -> Path:
    """Write the synthetic dataset ``preset`` of generator ``family`` under ``out_dir`` (reused when
    already finished).

    ``overrides`` change :class:`DatasetSpec` sizes or :class:`SignalSpec` fields (family 1; e.g.
    ``feature_dim=64`` for fast tests), or :class:`~pivad.data.synth_family2.Family2Spec` fields
    (family 2). Same seed and settings give byte-identical files.
    """
    return synthesize(out_dir, seed=seed, preset=preset, force=force, family=family, **overrides)[0]


# ------------------------------------------------------------------------------------------------- CLI


def add_synth_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``pivad data synth``."""
    parser.add_argument("--out", required=True, help="folder to write the dataset into")
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed: same bytes)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="demo", help="dataset size")
    parser.add_argument("--family", type=int, choices=FAMILIES, default=1,
                        help="generator family: 1 = version 6 (the demo's), 2 = the second benchmark family "
                             "(docs/synthetic.md)")
    parser.add_argument("--force", action="store_true", help="rewrite the dataset even if a finished one is there")


def run_synth(args: argparse.Namespace) -> int:
    family = getattr(args, "family", 1)
    out, created = synthesize(args.out, seed=args.seed, preset=args.preset, force=args.force, family=family)
    meta = _read_meta(out / "meta.json") or {}
    sizes = meta.get("sizes", {})
    counts = ", ".join(
        f"{split} {s.get('abnormal', 0)}+{s.get('normal', 0)} videos" for split, s in sizes.items()
    )
    state = "written" if created else "already there (reused; --force rewrites it)"
    which = f"family {family}, seed {args.seed}" if family != 1 else f"seed {args.seed}"
    print(f"synthetic dataset '{args.preset}' ({which}) {state}: {out} ({counts})")
    return 0
