"""``pivad study [-c CONFIG] [--seeds 1-5] [--data-seeds 0-2] --variant NAME[:section.key=value,...] ...``.

Paired comparison of the UR-DMU teacher and π-VAD variants over training seeds: on synthetic data
(no ``-c``, the demo config, or ``--preset``) also over data seeds, one generated dataset each; with
``-c CONFIG`` on real features, over training seeds alone. Resumable; ``--report-only`` summarises
what has finished (also a stored ``NAME.json`` whose runs are gone). Writes ``OUT/NAME.{json,md,html}``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pivad.cli import add_config_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--out", metavar="DIR", help="study folder (default: <train.out_dir>/study/<dataset>)")
    parser.add_argument("--seeds", "--train-seeds", dest="train_seeds", metavar="SEEDS",
                        help="training seeds: 1-5, 1,2,3 or 1-3,7 (default: 1-5)")
    parser.add_argument("--data-seeds", metavar="SEEDS", help="synthetic data seeds, same syntax (default: 0-2)")
    parser.add_argument("--preset", help="synthetic dataset preset (default: demo when the config is the demo's)")
    parser.add_argument("--family", type=int, choices=(1, 2),
                        help="synthetic generator family: 1 (v6, default) or 2 (docs/synthetic.md, 'Family 2')")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME[:section.key=value,...]",
                        help="a π-VAD variant: the config plus these overrides (repeatable; default: 'base')")
    parser.add_argument("--lanes", type=int, default=2, help="runs at a time, one thread each (default: 2)")
    parser.add_argument("--name", default="study", help="summary files OUT/NAME.json, .md, .html (default: study)")
    parser.add_argument("--report-only", action="store_true", help="summarise the finished runs, train nothing")


def _is_synthetic(args: argparse.Namespace) -> bool:
    """Synthetic unless a config of real features is given: no -c, --preset, or the demo's data section."""
    from pivad.config import read_yaml

    if args.preset or not args.config:
        return True
    return (read_yaml(args.config).get("data") or {}).get("name") == "demo"


def build_spec(args: argparse.Namespace):
    """The :class:`~pivad.engine.study.StudySpec` of the arguments (every user mistake a ConfigError)."""
    from pivad.data.synth import PRESETS
    from pivad.engine.study import StudySpec, Variant, config_values, parse_seeds, parse_variant, read_setup
    from pivad.errors import ConfigError

    if args.lanes < 1:
        raise ConfigError(f"--lanes {args.lanes}: must be at least 1")
    if not args.name or Path(args.name).name != args.name or args.name.startswith("."):
        raise ConfigError(f"--name '{args.name}': a plain file name (no folder, not hidden)")
    variants = [parse_variant(v) for v in args.variant]
    names = [v.name for v in variants]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup:
        raise ConfigError(f"--variant {dup}: given twice")
    out = Path(args.out) if args.out else None
    setup = read_setup(out) if out is not None and args.report_only else None
    config, overrides, preset = args.config, list(args.overrides), args.preset
    if setup is not None and not args.config and not overrides and not args.preset:  # report what the folder holds
        config, overrides, preset = setup.get("config"), list(setup.get("overrides") or []), setup.get("preset")
        synthetic = preset is not None
        family = args.family or setup.get("family") or 1
    else:
        synthetic = _is_synthetic(args)
        preset = (args.preset or "demo") if synthetic else None
        family = args.family or 1
    if preset is not None and preset not in PRESETS:
        raise ConfigError(f"--preset '{preset}': unknown synthetic preset (known: {', '.join(PRESETS)})")
    if not synthetic and args.family:
        raise ConfigError(f"--family: {args.config} reads real features; add --preset NAME to study synthetic data")
    if not synthetic and args.data_seeds:
        raise ConfigError(f"--data-seeds: {args.config} reads real features (data.name is not 'demo'); only "
                          "--seeds varies, or add --preset NAME to study synthetic data")
    if setup is not None:  # report-only: every variant of the folder, or a bare name selects one
        known = setup.get("variants") or {}
        variants = ([Variant(v.name, v.overrides or tuple(known.get(v.name, ()))) for v in variants] if variants
                    else [Variant(n, tuple(o)) for n, o in known.items()])
    train_seeds = parse_seeds(args.train_seeds) if args.train_seeds else (
        setup.get("train_seeds") if setup else None) or list(range(1, 6))
    data_seeds: list[int] = []
    if synthetic:
        data_seeds = parse_seeds(args.data_seeds, "--data-seeds") if args.data_seeds else (
            setup.get("data_seeds") if setup else None) or [0, 1, 2]
    if out is None:
        values = config_values(StudySpec(Path("."), config, overrides, preset, [], [], []))
        out_dir = (values.get("train") or {}).get("out_dir") or "results"
        name = (values.get("data") or {}).get("name") or "demo"
        out = Path(out_dir) / "study" / ("demo" if synthetic else name)
    return StudySpec(out=out, config=config, overrides=overrides, preset=preset, data_seeds=data_seeds,
                     train_seeds=list(train_seeds), variants=variants or [Variant("base")], lanes=args.lanes,
                     name=args.name, family=family)


def run(args: argparse.Namespace) -> int:
    from pivad.engine.study import SETUP, check_setup, fingerprint, read_setup, run_study
    from pivad.engine.study_report import report_study, resummarise
    from pivad.engine.study_summary import render_markdown
    from pivad.errors import DataError
    from pivad.outputs import check_output_dir

    spec = build_spec(args)
    check_output_dir(spec.out, "--out" if args.out else "study folder")
    if args.report_only:
        stored = spec.out / f"{spec.name}.json"
        if (spec.out / SETUP).is_file() or (spec.out / "runs").is_dir():
            check_setup(spec, read_setup(spec.out))
            summary = report_study(spec)
        elif stored.is_file():  # a summary whose runs are gone (e.g. committed results)
            summary = resummarise(stored, spec.name, spec.variants if args.variant else None, config=args.config,
                                  fp=fingerprint(spec) if args.config else None,
                                  data_seeds=spec.data_seeds if args.data_seeds else None,
                                  train_seeds=spec.train_seeds if args.train_seeds else None)
        else:
            raise DataError(f"{spec.out}: no study here (no {SETUP}, no runs/, no {spec.name}.json)")
    else:
        summary = run_study(spec)
    print(render_markdown(summary))
    files = summary["files"]
    print(f"\nsummary: {files['json']}, {files['md']}, {files['html']}", file=sys.stderr)
    return 0
