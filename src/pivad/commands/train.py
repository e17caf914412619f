"""``pivad train -c CONFIG [--section.key value ...] [--resume RUN_DIR]``.

Trains the UR-DMU teacher (or loads ``train.teacher_ckpt``), then π-VAD steps 1 and 2, into
``<train.out_dir>/<model>/<dataset>/v<N>/``; evaluates the kept checkpoints on the test set at the end.
Under ``torchrun`` every rank runs this; only rank 0 writes, holding the run folder's lock
(:func:`pivad.engine.runs.run_lock`): a second ``pivad train`` into the same folder is refused.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from pivad.cli import add_config_arguments, config_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last.pt")
    parser.add_argument("--run-dir", metavar="DIR", help="write the run here instead of a new v<N> folder")
    parser.add_argument("--no-eval", action="store_true", help="skip the final test-set evaluation")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--stop-after", type=int, default=None, help=argparse.SUPPRESS)  # test hook


def _claim_run_dir(cfg, args: argparse.Namespace, stack: contextlib.ExitStack) -> Path:
    """Rank 0 finds (``--resume``, ``--run-dir``) or creates the run folder and locks it for the rest of
    the command; under torchrun the others receive its path, or the reason it could not be had."""
    from pivad.engine import ddp
    from pivad.engine.runs import new_run_dir, resolve_run_dir, run_lock
    from pivad.errors import ConfigError, PivadError

    info = ddp.init_distributed(cfg.train.device)
    path = problem = None
    if info.is_main:
        try:
            if args.resume:
                path = resolve_run_dir(args.resume)
            elif args.run_dir:
                path = Path(args.run_dir)
            else:  # `latest` moves only once the run holds a checkpoint (finish_run)
                path = new_run_dir(cfg.train.out_dir, cfg.train.model, cfg.data.name, link=False)
            stack.enter_context(run_lock(path))
        except PivadError as exc:
            if not info.enabled:
                raise
            problem = exc
    if info.enabled:
        import torch.distributed as dist

        box = [(str(path) if path else None, str(problem) if problem else None)]
        dist.broadcast_object_list(box, src=0)
        if box[0][1]:
            ddp.shutdown(info)  # every rank leaves the group before it stops
            raise problem if problem else ConfigError(box[0][1])
        path = Path(box[0][0])
    return path


def _resume_line(run_dir: Path) -> str:
    """Where a resumed run continues from (its last.pt), said before any work."""
    from pivad.engine.checkpoint import load_checkpoint
    from pivad.errors import CheckpointError

    last = run_dir / "last.pt"
    if not last.is_file():
        raise CheckpointError(f"{last}: nothing to resume (no last.pt in the run directory)")
    ck = load_checkpoint(last)
    return (f"resuming from global step {ck.get('global_step')} ({ck.get('phase')} phase, step {ck.get('step')}) "
            f"of {last}")


def run(args: argparse.Namespace) -> int:
    from pivad.config import load_config
    from pivad.engine.preflight import check_run_inputs
    from pivad.engine.runs import resolve_run_dir
    from pivad.errors import ConfigError

    if args.resume:
        if args.config or args.overrides:
            raise ConfigError("--resume continues a run with its own config.yaml: drop -c and overrides")
        cfg = load_config(resolve_run_dir(args.resume) / "config.yaml")
    else:
        if not args.config:
            raise ConfigError("pivad train: give -c CONFIG (e.g. configs/ucf_crime.yaml) or --resume RUN_DIR; "
                              "`pivad config show` prints the defaults")
        cfg = config_from_args(args)
        # every input the run will read, before a run folder exists (a bad one must not leave an empty vN)
        check_run_inputs(cfg, evaluate=not args.no_eval, out_dir=args.run_dir)
    with contextlib.ExitStack() as stack:  # the run folder stays locked until the command ends
        return _train(cfg, args, _claim_run_dir(cfg, args, stack))


def _train(cfg, args: argparse.Namespace, run_dir: Path) -> int:
    from pivad.engine.ddp import init_distributed, shutdown
    from pivad.engine.report import evaluate_run
    from pivad.engine.runs import finish_run
    from pivad.engine.trainer import train

    info = init_distributed(cfg.train.device)
    if info.is_main:
        print(f"run directory: {run_dir}", file=sys.stderr)
        if args.resume:
            print(_resume_line(run_dir), file=sys.stderr)
    try:
        result = train(cfg, run_dir, resume=bool(args.resume), stop_after=args.stop_after,
                       progress=not args.no_progress)
    finally:
        if info.is_main and not args.run_dir and not args.resume:
            finish_run(run_dir, created=True)
    if result.interrupted:
        if info.is_main:
            print(f"pivad: stopped at step {result.global_step}; continue with: pivad train --resume {run_dir}",
                  file=sys.stderr)
        shutdown(info)
        return 130 if args.stop_after is None else 0
    if info.is_main and not args.no_eval:
        evaluate_run(run_dir, progress=not args.no_progress)
    shutdown(info)
    return 0
