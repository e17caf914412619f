"""``pivad evaluate --run RUN_DIR | --ckpt CKPT [-c CONFIG] [--section.key value ...]``.

Scores the test set with each checkpoint (whole videos, crops batched, one pass), then writes
``metrics.json`` (AUC, AUC_A, AP, AP_A, video AUC, class-wise AUC), ``scores/*.npz`` (per-video
snippet scores) and ``plots/*.png``, and prints the table; ``--html`` adds ``report.html`` (docs/report.md).
``-c``/overrides replace the checkpoint's ``data``/``eval`` sections (evaluate on another test list, AP
form, ...).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pivad.cli import add_config_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", metavar="RUN_DIR", help="a run directory (teacher.pt, best.pt, last.pt)")
    src.add_argument("--ckpt", metavar="CKPT", help="one checkpoint (ours, or an official UR-DMU, PEL4VAD or RTFM state dict: model.backbone of -c CONFIG says which)")
    add_config_arguments(parser)
    parser.add_argument("--out", metavar="DIR", help="output folder (default: the run dir, or <ckpt dir>/eval_<name>)")
    parser.add_argument("--no-plots", action="store_true", help="metrics and scores only")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--html", action="store_true",
                        help="also write report.html: tables, ROC/PR, every test video's curves, training curves")


def _overrides(args: argparse.Namespace, base_config: Path | None):
    """A Config whose data/eval sections replace the checkpoint's, or None when nothing was given."""
    from pivad.config import load_config

    if args.config:
        return load_config(args.config, args.overrides)
    if args.overrides:
        return load_config(base_config, args.overrides) if base_config else load_config(None, args.overrides)
    return None


MODEL_SECTIONS = ("model", "inductor", "loss", "train")  # rebuilt from a pivad checkpoint's own config


def _is_official(ckpt: Path) -> bool:
    from pivad.engine.checkpoint import _torch_load, is_state_dict

    return is_state_dict(_torch_load(ckpt))


def _note_ignored(overrides: list[str]) -> None:
    """Say which overrides cannot apply: a pivad checkpoint is rebuilt with its own model sections."""
    import sys

    for token in overrides:
        key = token[2:].split("=", 1)[0] if token.startswith("--") else ""
        if key.split(".", 1)[0] in MODEL_SECTIONS:
            print(f"pivad: warning: --{key} ignored: a pivad checkpoint is rebuilt with the model and training "
                  "settings it was trained with (only data.* and eval.* apply)", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    from pivad.engine.report import evaluate_checkpoints, run_checkpoints
    from pivad.engine.runs import resolve_run_dir
    from pivad.errors import CheckpointError, ConfigError

    if args.run:
        run_dir = resolve_run_dir(args.run)
        checkpoints = run_checkpoints(run_dir)
        if not checkpoints:
            raise CheckpointError(f"{run_dir}: no checkpoints (teacher.pt, best.pt, last.pt) to evaluate")
        out = Path(args.out) if args.out else run_dir
        overrides = _overrides(args, run_dir / "config.yaml")
    else:
        from pivad.safe_load import check_file

        ckpt = check_file(args.ckpt, "checkpoint")
        checkpoints = {"model": ckpt}
        out = Path(args.out) if args.out else ckpt.parent / f"eval_{ckpt.stem}"
        overrides = _overrides(args, None)
        if overrides is None:
            from pivad.engine.checkpoint import is_state_dict, _torch_load

            if is_state_dict(_torch_load(ckpt)):
                raise ConfigError(f"{ckpt}: an official state dict carries no data config: add -c CONFIG")
    from pivad.outputs import check_output_dir

    check_output_dir(out)
    official = args.ckpt and overrides is not None and _is_official(Path(args.ckpt))
    if not official:
        _note_ignored(args.overrides)
    from contextlib import nullcontext

    from pivad.engine.runs import is_run_dir, run_lock

    with run_lock(out) if is_run_dir(out) else nullcontext():  # not while a run (or evaluation) writes there
        evaluate_checkpoints(checkpoints, out, overrides=overrides, progress=not args.no_progress,
                             plots=not args.no_plots)
        print(f"metrics: {out / 'metrics.json'}")
        if args.html:
            from pivad.report.evaluation import write_evaluation_html

            log = (run_dir if args.run else ckpt.parent) / "log.jsonl"
            print(f"report: {write_evaluation_html(out, log if log.is_file() else None)}")
    return 0
