"""``pivad config show [-c FILE] [--section.key value ...]``: the resolved config as YAML.

Defaults, then the file, then the overrides, validated as every verb validates them; every key and
its meaning is in ``docs/config.md``.
"""

from __future__ import annotations

import argparse

from pivad.cli import add_config_arguments, config_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("show",), help="show: print the resolved config")
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from pivad.config import config_yaml

    print(config_yaml(config_from_args(args)), end="")
    return 0
