"""``pivad demo [--out DIR]``: the whole pipeline on the built-in synthetic dataset.

Generates the synthetic dataset (cached in ``<out>/demo_data``), trains the UR-DMU teacher and π-VAD
per ``configs/demo.yaml``, evaluates both on the synthetic test set and prints the table
(AUC, AUC_A, AP, AP_A) with the plots' paths. Runs land in ``<out>/results/pivad/demo/v<N>``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from pivad.cli import add_config_arguments
from pivad.data.synth import PRESETS

# shipped as package data (src/pivad/configs links to the repo's configs/), so an installed pivad has it
REPO_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--out", default=".", metavar="DIR", help="working folder (data in DIR/demo_data, runs in DIR/results)")
    parser.add_argument("--preset", default="demo", choices=sorted(PRESETS), help="synthetic dataset preset")
    parser.add_argument("--data-seed", type=int, default=0, help="synthetic dataset seed")
    parser.add_argument("--family", type=int, default=1, choices=(1, 2),
                        help="synthetic generator family: 1 = version 6, 2 = the second benchmark family")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def demo_config(config: str | None, overrides: list[str], data_dir: Path, out: Path):
    """The demo Config: the YAML file (and a backbone overlay, :func:`demo_values`), its data paths pointed at
    the generated dataset, then overrides."""
    from pivad.config import from_dict, load_config, merge_dict, overrides_to_dict
    from pivad.errors import ConfigError

    path = Path(config) if config else REPO_CONFIG
    if not path.is_file():
        raise ConfigError(f"{path}: demo config not found (pass -c configs/demo.yaml)")
    load_config(path)  # validate the file on its own so errors name it
    values = demo_values(config, overrides)
    meta = json.loads((data_dir / "meta.json").read_text())
    data = {
        "name": "demo",
        "root": str(data_dir),
        "train_list": str(data_dir / "lists" / "train.list"),
        "test_list": str(data_dir / "lists" / "test.list"),
        "annotation": str(data_dir / "annotations.txt"),
        "annotation_format": "ucf",
        "gt": str(data_dir / "gt.npy") if (data_dir / "gt.npy").is_file() else "",
        "modality_root": str(data_dir / "modalities"),
        "modalities": meta["modalities"],
        "num_crops": int(meta["num_crops"]),
        "feature_dim": int(meta["feature_dim"]),
        "label_rule": meta.get("label_rule", "ucf"),
    }
    values = merge_dict(values, {"data": data, "train": {"out_dir": str(out / "results")}})
    values = merge_dict(values, overrides_to_dict(overrides))
    return _fit_batches(from_dict(values), meta)


def backbone_overlay(config: str | None, overrides: list[str]) -> Path | None:
    """``configs/demo_<backbone>.yaml`` when the packaged demo config (no ``-c``) runs another backbone
    (``--model.backbone pel4vad``): that backbone's demo-sized settings, laid over demo.yaml."""
    from pivad.config import overrides_to_dict, read_yaml

    if config:
        return None
    backbone = (overrides_to_dict(overrides).get("model") or {}).get("backbone") or \
        (read_yaml(REPO_CONFIG).get("model") or {}).get("backbone") or "urdmu"
    path = REPO_CONFIG.with_name(f"demo_{backbone}.yaml")
    return path if isinstance(backbone, str) and backbone != "urdmu" and path.is_file() else None


def demo_values(config: str | None, overrides: list[str]) -> dict:
    """The demo's config values before its data paths are set: the YAML file (default: configs/demo.yaml),
    the backbone's overlay (:func:`backbone_overlay`) over it, without the overrides."""
    from pivad.config import merge_dict, read_yaml

    values = read_yaml(Path(config) if config else REPO_CONFIG)
    overlay = backbone_overlay(config, overrides)
    if overlay is not None:
        values = merge_dict(values, read_yaml(overlay))
    return values


def _fit_batches(cfg, meta: dict):
    """Batches no larger than the training crops of each label (a small preset has fewer than the demo
    config's 16), so that every preset ``--help`` offers runs; said on stderr when it changes them."""
    sizes = meta.get("sizes", {}).get("train", {})
    for label, key in (("normal", "batch_normal"), ("abnormal", "batch_abnormal")):
        n = int(sizes.get(label, 0))
        held = 0 if cfg.data.val_fraction <= 0 else min(max(round(cfg.data.val_fraction * n), 1), n - 1)
        entries = (n - held) * int(meta.get("num_crops", 1))
        if 0 < entries < getattr(cfg.data, key):
            print(f"pivad: data.{key} {getattr(cfg.data, key)} -> {entries}: the dataset has {entries} "
                  f"{label} training crops", file=sys.stderr)
            setattr(cfg.data, key, entries)
    return cfg


def run(args: argparse.Namespace) -> int:
    from pivad.data.synth import write_synthetic_dataset
    from pivad.engine.report import evaluate_run, render_table
    from pivad.engine.preflight import check_run_inputs
    from pivad.engine.runs import finish_run, new_run_dir
    from pivad.engine.trainer import train

    from pivad.outputs import check_output_dir

    from pivad.config import check_seed

    check_seed(args.data_seed, "--data-seed")
    t0 = time.time()
    out = check_output_dir(args.out)
    family = getattr(args, "family", 1)
    data_dir = out / ("demo_data" if args.preset == "demo" else f"demo_data_{args.preset}")
    if family != 1:
        data_dir = data_dir.with_name(f"{data_dir.name}_family{family}")
    print(f"[1/3] synthetic dataset ({args.preset}, family {family}): {data_dir}", file=sys.stderr)
    write_synthetic_dataset(data_dir, seed=args.data_seed, preset=args.preset, family=family)
    cfg = demo_config(args.config, args.overrides, data_dir, out)
    overlay = backbone_overlay(args.config, args.overrides)
    if overlay is not None:
        print(f"      config: {REPO_CONFIG.name} with {overlay.name} over it ({cfg.model.backbone}'s demo sizes)",
              file=sys.stderr)
    check_run_inputs(cfg)
    run_dir = new_run_dir(cfg.train.out_dir, cfg.train.model, cfg.data.name, link=False)
    print(f"[2/3] training the {cfg.model.backbone} teacher and π-VAD: {run_dir}", file=sys.stderr)
    try:
        result = train(cfg, run_dir, progress=not args.no_progress)
    finally:
        finish_run(run_dir, created=True)
    if result.interrupted:
        print(f"pivad: stopped; continue with: pivad train --resume {run_dir}", file=sys.stderr)
        return 130
    print("[3/3] evaluating on the synthetic test set", file=sys.stderr)
    report = evaluate_run(run_dir, progress=not args.no_progress, print_table=False)
    print(render_table(report))
    print(f"\nrun: {run_dir}\nmetrics: {run_dir / 'metrics.json'}\nwall time: {time.time() - t0:.1f} s")
    return 0
