"""The machine's matmul peak, measured in the benchmark's own run.

Every benchmark reports its cases as a fraction of this figure as well as in seconds: a fraction of
the peak measured minutes apart under the same load survives a noisy machine better than seconds do.

    from peak import matmul_peak
    peak = matmul_peak(torch.float32)        # {"dtype", "n", "threads", "gflops", "seconds"}
    frac = flops / seconds / 1e9 / peak["gflops"]
    flops = count_flops(lambda: model(x))    # FlopCounterMode, CPU attention included
"""

from __future__ import annotations

import math
import os
import time

import torch


def matmul_peak(dtype: torch.dtype = torch.float32, n: int = 2048, repeats: int = 5,
                device: str = "cpu") -> dict:
    """Best-of-``repeats`` GFLOP/s of an ``n × n`` by ``n × n`` matmul (2·n³ FLOPs) in ``dtype``."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    a @ b  # warm-up (thread pool, kernels)
    sync()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        sync()
        best = min(best, time.perf_counter() - t0)
    return {"dtype": str(dtype).removeprefix("torch."), "n": n, "threads": torch.get_num_threads(),
            "gflops": round(2 * n**3 / best / 1e9, 1), "seconds": best}


def _cpu_attention_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """``q kᵀ`` and ``(softmax) v`` of CPU scaled-dot-product attention: ``2·B·h·Tq·Tk·(d + dv)``."""
    *batch, tq, d = query_shape
    tk, dv = key_shape[-2], value_shape[-1]
    return 2 * math.prod(batch) * tq * tk * (d + dv)


def count_flops(fn) -> float:
    """FLOPs of one call of ``fn()`` (matmuls, convolutions, attention) with FlopCounterMode; the CPU
    attention kernel, which FlopCounterMode does not know, is counted as its two products."""
    from torch.utils.flop_counter import FlopCounterMode

    mapping = {}
    cpu_attention = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if cpu_attention is not None:
        mapping[cpu_attention] = _cpu_attention_flops
    counter = FlopCounterMode(display=False, custom_mapping=mapping)
    with counter:
        fn()
    return float(counter.get_total_flops())


def load_average() -> str:
    """``/proc/loadavg``'s 1/5/15-minute figures (the machine's load while a benchmark ran)."""
    try:
        return " / ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return f"unknown (cpus: {os.cpu_count()})"


if __name__ == "__main__":
    for dt in (torch.float32, torch.bfloat16):
        print(matmul_peak(dt), "load", load_average())
