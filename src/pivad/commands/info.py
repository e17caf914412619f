"""``pivad info -c CONFIG``: parameters per module and multiply-accumulates for one crop.

Prints UR-DMU (``model.*``) and π-VAD (``model.*``, ``inductor.*``, ``data.modalities``) beside the
paper's Table 5; the teacher is counted apart from the inference path. The counting rule is in
:mod:`pivad.models.size`.
"""

from __future__ import annotations

import argparse

from pivad.cli import add_config_arguments, config_from_args
from pivad.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--snippets", type=int, default=200,
                        help="snippets in the one crop the MACs are counted for (default 200, as paper Table 5)")


def run(args: argparse.Namespace) -> int:
    from pivad.models.size import format_report, size_report

    cfg = config_from_args(args)
    source = args.config or "default config"
    from pivad.config import MAX_SEGMENTS

    if not 1 <= args.snippets <= MAX_SEGMENTS:  # attention holds snippets^2 scores: more overflowed torch
        raise ConfigError(f"--snippets: expected a number of snippets in 1..{MAX_SEGMENTS}, got {args.snippets}")
    try:
        report = size_report(cfg, snippets=args.snippets)
    except ValueError as exc:  # widths that do not fit together (e.g. heads not dividing D)
        raise ConfigError(f"{source}: {exc}") from None
    mods = ", ".join(f"{m.name} {m.dim}" for m in cfg.data.modalities)
    ind = cfg.inductor
    print(f"config: {source}; inductor: position {ind.position}, L={ind.latent_dim}, CMI depth {ind.cmi_depth}, "
          f"heads {ind.cmi_heads}, mlp ratio {ind.cmi_mlp_ratio:g}, source {ind.modality_source}; "
          f"modalities: {mods}")
    print(format_report(report))
    return 0
