"""``pivad ablate -c CONFIG --grid modalities|position|losses|real [--set key=v1,v2 ...] --seeds 0,1,2``.

One run per (cell, seed) (finished cells are skipped, interrupted ones continue), one UR-DMU
teacher per seed shared by the cells, and one table (markdown + CSV) with mean ± std over seeds.
"""

from __future__ import annotations

import argparse

from pivad.cli import add_config_arguments, config_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, required=True)
    parser.add_argument("--grid", choices=["modalities", "position", "losses", "real"], help="a paper ablation")
    parser.add_argument("--set", dest="specs", action="append", metavar="KEY=V1,V2",
                        help="generic grid over a config key (repeatable: cartesian product)")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds (default: 0)")
    parser.add_argument("--out", metavar="DIR", help="grid folder (default: <train.out_dir>/ablate/<dataset>/<grid>)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from pivad.engine.ablate import run_ablation
    from pivad.errors import ConfigError

    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--seeds '{args.seeds}': expected comma-separated integers") from None
    if not seeds:
        raise ConfigError("--seeds: no seed given")
    cfg = config_from_args(args)
    from pivad.outputs import check_output_dir

    check_output_dir(args.out or cfg.train.out_dir, "--out" if args.out else "train.out_dir")
    table = run_ablation(cfg, grid=args.grid, specs=args.specs, seeds=seeds, out_dir=args.out,
                         progress=not args.no_progress)
    print(table["markdown"])
    print(f"\ntable: {table['dir']}/table.md, {table['dir']}/table.csv")
    return 0
