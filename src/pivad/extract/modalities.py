"""``pivad extract modalities``: pose/depth/panoptic/flow/text features per 16-frame snippet.

Writes the modality store ``ROOT/<modality>/<video>.npy`` (``float32 [T, d_j]``, T = the video's RGB
snippet count: 16-frame snippets, the last padded by repeating the last frame, as ``extract rgb``) and
``ROOT/manifest.json`` (see :mod:`pivad.extract.manifest`). Each video is decoded once; every batch
of snippets goes to every requested backbone. Videos are jobs of :mod:`pivad.extract.runner`: finished
ones are skipped, files are written atomically, a bad video is reported and skipped; ``--ray`` spreads
the videos over a Ray cluster (:mod:`pivad.extract.ray_executor`).
"""

from __future__ import annotations

import argparse
import queue
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, TypeVar

import numpy as np

from pivad.errors import PivadError, VideoError
from pivad.extract.backbones import DEFAULT_FRAMES, DEFAULT_MODELS, MODALITIES, SNIPPET
from pivad.io import atomic_save_npy

LAYERED = ("depth", "panoptic", "text")  # modalities with a configurable layer


@dataclass(frozen=True)
class ModalitySpec:
    name: str
    model: str  # tiny-random | local path | hub name (flow: dis[:preset] | raft_small | raft_large)
    frames: int  # frames sampled per snippet (flow: consecutive pairs)
    layer: str | None = None  # None = the backbone's default
    options: tuple[tuple[str, Any], ...] = ()  # extra build options, e.g. (("grid", 4),)


@dataclass(frozen=True)
class ModalityOptions:
    specs: tuple[ModalitySpec, ...]
    device: str = "cpu"
    precision: str = "fp32"  # fp32 | bf16 | fp16 autocast for the neural backbones
    snippet_batch: int = 8  # snippets decoded and encoded together
    max_side: int | None = None  # downscale frames at decode so the longer side is at most this
    rgb_root: str | None = None  # check T against ROOT/<video>__0.npy (or <video>.npy) RGB features


def _layer_value(layer: str | None) -> Any:
    if layer is None:
        return None
    try:
        return int(layer)
    except ValueError:
        return layer


def build_backbones(options: ModalityOptions) -> dict[str, Any]:
    from pivad.extract.backbones import build_backbone

    return {
        s.name: build_backbone(s.name, s.model, device=options.device, frames=s.frames, layer=_layer_value(s.layer),
                               precision=options.precision, **dict(s.options))
        for s in options.specs
    }


class _MaxSide:
    """Decode-time downscale (area filter) so the longer side is at most ``side`` pixels."""

    def __init__(self, side: int):
        self.side = side

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        h, w = frame.shape[:2]
        if max(h, w) <= self.side:
            return frame
        import cv2

        s = self.side / max(h, w)
        return cv2.resize(frame, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)


def rgb_snippet_count(rgb_root: Path, name: str) -> int | None:
    """T of the video's RGB features in ``rgb_root`` (``<name>__0.npy`` or ``<name>.npy``), or None."""
    for cand in (rgb_root / f"{name}__0.npy", rgb_root / f"{name}.npy"):
        if cand.is_file():
            try:
                return int(np.load(cand, mmap_mode="r").shape[-2])
            except (OSError, ValueError) as exc:
                raise PivadError(f"{cand}: unreadable RGB features ({exc})") from None
    return None


_T = TypeVar("_T")
_END = object()


def prefetch(items: Iterator[_T], depth: int = 2) -> Iterator[_T]:
    """Iterate ``items`` in a background thread, ``depth`` items ahead, so decoding the next batch of
    snippets overlaps with the backbones working on this one. Exceptions come out where the item would."""
    slots: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def fill() -> None:
        try:
            for item in items:
                slots.put(item)
                if stop.is_set():
                    return
            slots.put(_END)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            slots.put(exc)

    thread = threading.Thread(target=fill, name="pivad-decode", daemon=True)
    thread.start()
    try:
        while (item := slots.get()) is not _END:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                slots.get_nowait()
            except queue.Empty:
                thread.join(0.05)


@dataclass
class ModalityExtractor:
    """The per-video worker (picklable: backbones are built on first use in each process)."""

    options: ModalityOptions
    root: Path
    redo: frozenset[str] = frozenset()  # modalities to recompute even where a file exists
    overwrite: bool = False  # recompute every modality of every video it is given
    _backbones: dict[str, Any] | None = field(default=None, repr=False)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_backbones": None}

    @property
    def backbones(self) -> dict[str, Any]:
        if self._backbones is None:
            self._backbones = build_backbones(self.options)
        return self._backbones

    def output(self, modality: str, video: str) -> Path:
        return self.root / modality / f"{video}.npy"

    def extract(self, path: str | Path, modalities: list[str] | None = None, report: Any = None) -> dict[str, np.ndarray]:
        """Features ``{modality: float32 [T, d]}`` of one video, decoded once."""
        from pivad.video.decode import iter_snippets, probe

        names = list(self.backbones) if modalities is None else list(modalities)
        if not names:
            raise ValueError("extract: no modalities to compute")
        backbones = {m: self.backbones[m] for m in names}
        total = probe(path).n_snippets
        transform = _MaxSide(self.options.max_side) if self.options.max_side else None
        parts: dict[str, list[np.ndarray]] = {m: [] for m in names}
        done = 0
        batches = iter_snippets(path, SNIPPET, batch=self.options.snippet_batch, transform=transform)
        for _, snippets in prefetch(batches):
            for m, bb in backbones.items():  # the same decoded batch feeds every backbone
                parts[m].append(bb.encode(snippets))  # (n, d)
            done += len(snippets)
            if report is not None:
                report(done, max(total, done))
        if done == 0:
            raise VideoError(f"{path}: no frames decoded")
        return {m: np.concatenate(p).astype(np.float32, copy=False) for m, p in parts.items()}

    def __call__(self, job: Any, report: Any) -> dict[str, Any]:
        todo = [m for m in self.backbones
                if self.overwrite or m in self.redo or not self.output(m, job.name).is_file()]
        if not todo:  # finished meanwhile (e.g. by another run)
            return {"snippets": None, "modalities": []}
        feats = self.extract(job.source, todo, report)
        T = next(iter(feats.values())).shape[0]
        if self.options.rgb_root:
            t_rgb = rgb_snippet_count(Path(self.options.rgb_root), job.name)
            if t_rgb is not None and t_rgb != T:
                raise PivadError(f"{job.source}: {T} snippets decoded but the RGB features in "
                                 f"{self.options.rgb_root} have T={t_rgb} (different decoder or file?)")
        for m, arr in feats.items():
            if not np.isfinite(arr).all():
                raise PivadError(f"{job.source}: {m} backbone produced NaN/Inf features")
        for m, arr in feats.items():
            atomic_save_npy(self.output(m, job.name), arr)
        return {"snippets": T, "modalities": todo}


# ---------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Modality features per 16-frame snippet: ROOT/<modality>/<video>.npy [T,d] float32 and ROOT/manifest.json. "
        "Model specs: a Hugging Face name, a local folder (ViFi-CLIP: a .pth file for --text-model), or "
        "'tiny-random' (tests/debugging: random weights, meaningless features)."
    )
    parser.add_argument("videos", nargs="*", help="video files or folders")
    parser.add_argument("--list", dest="video_list", help="text file with one video path per line (relative to the file)")
    parser.add_argument("--out", required=True, help="modality store root")
    parser.add_argument("--modalities", default=",".join(MODALITIES), help=f"comma-separated (default {','.join(MODALITIES)})")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:i]; cuda without a GPU falls back to cpu (default cpu)")
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32",
                        help="neural backbones in fp32 (default) or bf16/fp16 autocast (GPU speed; features change slightly)")
    parser.add_argument("--ray", metavar="ADDRESS", default=None,
                        help="run the videos on a Ray cluster: 'auto' (running cluster), an address, or 'local' (start one here)")
    parser.add_argument("--ray-gpus", type=float, default=None,
                        help="GPUs per Ray worker (default 1 with --device cuda, else 0; 0.5 packs two workers per GPU)")
    parser.add_argument("--ray-workers", type=int, default=None, help="Ray workers (default: as many as the cluster fits)")
    parser.add_argument("--snippet-batch", type=int, default=8, help="snippets decoded and encoded together (default 8)")
    parser.add_argument("--max-side", type=int, default=None,
                        help="downscale frames at decode so the longer side is at most this many pixels (default: off)")
    parser.add_argument("--rgb-root", default=None, help="check each video's T against its RGB features in this folder")
    parser.add_argument("--force", action="store_true",
                        help="recompute modalities whose manifest settings differ from the requested ones")
    parser.add_argument("--overwrite", action="store_true", help="recompute videos whose outputs exist")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    for m in MODALITIES:
        parser.add_argument(f"--{m}-model", default=DEFAULT_MODELS[m], help=f"{m} model (default {DEFAULT_MODELS[m]})")
        unit = "consecutive frame pairs" if m == "flow" else "frames"
        parser.add_argument(f"--{m}-frames", type=int, default=DEFAULT_FRAMES[m],
                            help=f"{unit} sampled per snippet (default {DEFAULT_FRAMES[m]})")
    parser.add_argument("--pose-detector", default=None,
                        help="RT-DETR person detector (e.g. PekingU/rtdetr_r50vd_coco_o365); default none: the whole frame is one box")
    parser.add_argument("--pose-detector-threshold", type=float, default=0.5, help="person score threshold (default 0.5)")
    parser.add_argument("--pose-max-people", type=int, default=10, help="people per frame at most (default 10)")
    parser.add_argument("--depth-layer", default=None, help="encoder block (1..L or -k; default last)")
    parser.add_argument("--panoptic-layer", default=None, help="'neck' (default) or a ViT block 1..L")
    parser.add_argument("--text-layer", default=None, help="'embeds' (default: projected embedding) or a block 1..L (CLS)")
    parser.add_argument("--text-pooling", choices=("mean_l2", "mean"), default="mean_l2",
                        help="frames -> snippet: mean then L2-normalise (default, as ViFi-CLIP) or plain mean")
    parser.add_argument("--flow-grid", type=int, default=4, help="flow descriptor grid (default 4: 4x4 cells)")
    parser.add_argument("--flow-bins", type=int, default=8, help="flow direction bins per cell (default 8)")
    parser.add_argument("--flow-size", type=int, default=320, help="flow computed with the longer side at this size (default 320)")
    parser.add_argument("--flow-threads", type=int, default=None,
                        help="DIS frame pairs computed in parallel (default: min(8, CPU cores)); results do not depend on it")


def check_flow_size(size: int) -> None:
    """OpenCV's DIS flow needs frames with a side of 12 pixels or more: a smaller ``--flow-size`` failed every video."""
    if size < 12:
        raise PivadError(f"--flow-size {size}: must be >= 12 (the longer side, in pixels, flow is computed at)")


def options_from_args(args: argparse.Namespace) -> ModalityOptions:
    names = [m.strip() for m in args.modalities.split(",") if m.strip()]
    unknown = [m for m in names if m not in MODALITIES]
    if unknown or not names:
        raise PivadError(f"--modalities: unknown {', '.join(unknown) or '(none given)'} (known: {', '.join(MODALITIES)})")
    if args.snippet_batch < 1:
        raise PivadError(f"--snippet-batch {args.snippet_batch}: must be >= 1")
    check_flow_size(args.flow_size)
    specs = []
    for m in dict.fromkeys(names):
        layer = getattr(args, f"{m}_layer", None) if m in LAYERED else None
        opts: tuple[tuple[str, Any], ...] = ()
        if m == "flow":
            opts = (("grid", args.flow_grid), ("bins", args.flow_bins), ("size", args.flow_size),
                    ("threads", args.flow_threads))
        elif m == "text":
            opts = (("pooling", args.text_pooling),)
        elif m == "pose" and args.pose_detector:
            opts = (("detector", args.pose_detector), ("threshold", args.pose_detector_threshold),
                    ("max_people", args.pose_max_people))
        specs.append(ModalitySpec(m, getattr(args, f"{m}_model"), getattr(args, f"{m}_frames"), layer, opts))
    return ModalityOptions(tuple(specs), device=args.device, precision=args.precision, snippet_batch=args.snippet_batch,
                           max_side=args.max_side, rgb_root=args.rgb_root)


def describe(backbone: Any) -> dict[str, Any]:
    """A backbone's manifest description, with its numeric precision where it has one."""
    desc = backbone.describe()
    if hasattr(backbone, "precision"):
        desc["precision"] = backbone.precision
    return desc


def video_jobs(videos: list[Path], root: Path, modalities: list[str]) -> list[Any]:
    from pivad.extract.runner import VideoJob

    return [VideoJob(v.stem, v, tuple(root / m / f"{v.stem}.npy" for m in modalities)) for v in videos]


def estimated_bytes(jobs: list[Any], dims: dict[str, int], redo: set[str], overwrite: bool) -> int:
    """Bytes of the ``[T, dim]`` float32 files still to write (T from each video's header frame count;
    a video that cannot be probed counts 0: it fails on its own)."""
    from pivad.extract.rgb import NPY_HEADER
    from pivad.video.decode import probe

    total = 0
    for job in jobs:
        todo = [p for p in job.outputs if overwrite or p.parent.name in redo or not p.is_file()]
        if not todo:
            continue
        try:
            snippets = probe(job.source).n_snippets
        except PivadError:
            continue
        total += sum(snippets * dims.get(p.parent.name, 0) * 4 + NPY_HEADER for p in todo)
    return total


def make_executor(args: argparse.Namespace) -> Any:
    if not args.ray:
        return None
    from pivad.extract.ray_executor import RayExecutor

    gpus = args.ray_gpus if args.ray_gpus is not None else (1.0 if args.device.startswith("cuda") else 0.0)
    return RayExecutor(address=args.ray, num_gpus=gpus, num_workers=args.ray_workers)


def run(args: argparse.Namespace) -> int:
    from pivad.extract import manifest
    from pivad.extract.rgb import expand_videos, read_video_list
    from pivad.extract.runner import run_jobs

    if bool(args.videos) == bool(args.video_list):
        raise PivadError("extract modalities: give video files/folders or --list FILE (one of them)")
    videos = read_video_list(args.video_list) if args.video_list else expand_videos(args.videos)
    if not videos:
        raise PivadError(f"extract modalities: no video files in {' '.join(args.videos)}")
    options = options_from_args(args)
    from pivad.outputs import check_free_space, check_output_dir

    root = check_output_dir(args.out)
    names = [s.name for s in options.specs]
    worker = ModalityExtractor(options, root, overwrite=args.overwrite)
    # build the backbones here once: a bad model spec fails before any video, and the manifest needs them
    entries = {m: manifest.make_entry({**describe(bb), "decode_max_side": options.max_side})
               for m, bb in worker.backbones.items()}
    redo = manifest.reconcile(root, entries, force=args.force)
    if redo:
        print(f"pivad: --force: recomputing {', '.join(sorted(redo))} with the requested settings", file=sys.stderr)
    worker.redo = frozenset(redo)
    executor = make_executor(args)
    if executor is not None:
        worker._backbones = None  # remote workers build their own; free this process's copies
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    jobs = video_jobs(videos, root, names)
    check_free_space(root, estimated_bytes(jobs, {m: int(e["dim"]) for m, e in entries.items()},
                                           redo=set(redo), overwrite=args.overwrite),
                     f"the modality features of {len(jobs)} video(s)")  # fmt: skip
    summary = run_jobs(jobs, worker, executor=executor,
                       overwrite=args.overwrite or bool(redo), progress=not args.no_progress, desc="extract modalities")
    print(summary.text(), file=sys.stderr)
    dims = ", ".join(f"{{name: {m}, dim: {e['dim']}}}" for m, e in entries.items())
    print(f"modality store: {root}; config: --data.modality_root {root} and data.modalities: [{dims}]", file=sys.stderr)
    return summary.exit_code()
