"""The ``pivad`` command line: one verb per module in :mod:`pivad.commands`.

Each verb module defines ``add_arguments(parser)`` and ``run(args) -> int``. Verbs that take a config
accept ``-c CONFIG`` plus ``--section.key value`` overrides (see :func:`add_config_arguments`).
User mistakes (:class:`~pivad.errors.PivadError`) print one line and exit with code 2, and so does a
write that a full, over-quota or read-only disk refused wherever it happened (``pivad.io.DISK_PROBLEMS``).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from pivad import __version__
from pivad.errors import PivadError

# verb -> (module under pivad.commands, one-line help)
VERBS: dict[str, tuple[str, str]] = {
    "demo": ("demo", "generate the demo dataset, train UR-DMU and π-VAD, evaluate both"),
    "data": ("data", "dataset tools: synthetic data, frame ground truth, checks"),
    "fit": ("fit", "videos in, trained π-VAD and its report out: index, features, training, evaluation"),
    "train": ("train", "train the UR-DMU teacher and π-VAD"),
    "evaluate": ("evaluate", "evaluate a run or checkpoint: metrics, tables, plots"),
    "ablate": ("ablate", "run an ablation grid and tabulate it"),
    "study": ("study", "teacher against π-VAD variants over seeds: paired differences with their intervals"),
    "info": ("info", "parameters and multiply-accumulates per module"),
    "config": ("config", "print the resolved config (defaults <- -c FILE <- overrides)"),
    "extract": ("extract", "extract RGB (I3D) or modality features from videos"),
    "detect": ("detect", "score a video file or stream with a trained model"),
    "export": ("export", "export the RGB-only inference model (ONNX)"),
}


def add_config_arguments(parser: argparse.ArgumentParser, required: bool = False) -> None:
    """``-c CONFIG``; dotted overrides are collected from the unknown arguments by :func:`main`."""
    parser.add_argument("-c", "--config", required=required, help="YAML config file")


def config_from_args(args: argparse.Namespace):
    """The resolved :class:`~pivad.config.Config` of a verb's arguments."""
    from pivad.config import load_config

    return load_config(getattr(args, "config", None), getattr(args, "overrides", None) or [])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pivad",
        description="π-VAD: weakly-supervised video anomaly detection with a Poly-modal Inductor.",
        epilog="Config overrides: --section.key value (e.g. --train.lr 3e-4).",
    )
    parser.add_argument("--version", action="version", version=f"pivad {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for verb, (module_name, help_text) in VERBS.items():
        p = sub.add_parser(verb, help=help_text, description=help_text)
        try:
            module = importlib.import_module(f"pivad.commands.{module_name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"pivad.commands.{module_name}":
                raise
            p.set_defaults(_missing=verb)
            continue
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.verb is None:
        parser.print_help()
        return 2
    if getattr(args, "_missing", None):
        print(f"pivad: error: '{args.verb}' is not available in this build", file=sys.stderr)
        return 2
    if extra:
        if not hasattr(args, "config"):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = extra
    else:
        args.overrides = []
    try:
        return int(args._run(args) or 0)
    except PivadError as exc:
        text = str(exc).encode("utf-8", "backslashreplace").decode()  # a file name that is not UTF-8 prints escaped
        print(f"pivad: error: {text}", file=sys.stderr)
        return 2
    except OSError as exc:
        from pivad.io import disk_problem

        if (problem := disk_problem(exc)) is None:
            raise
        print(f"pivad: error: {exc.filename or 'output'}: {problem}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pivad: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
