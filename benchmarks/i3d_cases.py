"""I3D forward speed, old path against new, as frames of video per second and as a fraction of the matmul peak.

    from i3d_cases import baseline_i3d, i3d_flops, time_i3d_cases

The old path is the I3D of git revision ``BASELINE_REV`` (before issue 11: layer by layer, BatchNorm and
ReLU as separate passes, contiguous layout, so ``slow_conv3d``), loaded from git into a throw-away module
with the same weights; the new one is today's :class:`pivad.video.I3D`. Cases alternate within each
repeat, so load spikes hit them alike.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
BASELINE_REV = "ab68fb1"  # main before issue 11's I3D work


def baseline_i3d(model: torch.nn.Module, rev: str = BASELINE_REV) -> torch.nn.Module | None:
    """The I3D class of ``rev`` (from git) with ``model``'s weights, in eval mode; None without git."""
    try:
        source = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:src/pivad/video/i3d.py"],
                                capture_output=True, text=True, check=True).stdout  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return None
    path = Path(tempfile.mkdtemp()) / "i3d_baseline.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("i3d_baseline", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["i3d_baseline"] = module
    spec.loader.exec_module(module)
    old = module.I3D()
    old.load_state_dict(model.state_dict())
    return old.eval()


def i3d_flops(model: torch.nn.Module, size: int = 224) -> float:
    """FLOPs of one 16-frame clip through ``model`` (FlopCounterMode: convolutions and matmuls), counted on
    the layer-by-layer path (the counter does not see oneDNN's fused convolution)."""
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model.use_fused(False)(torch.zeros(1, 3, 16, size, size))
    model.use_fused(True)
    return float(counter.get_total_flops())


def time_i3d_cases(cases: dict[str, tuple[torch.nn.Module, torch.dtype]], clips: int, repeats: int,
                   size: int = 224) -> dict[str, float]:
    """Best seconds per clip of each ``name: (model, input dtype)`` on ``clips`` random clips, alternating."""
    x = torch.rand(clips, 3, 16, size, size) * 2 - 1
    best = {name: float("inf") for name in cases}
    with torch.inference_mode():
        for model, dtype in cases.values():
            model(x[:1].to(dtype))  # warm-up (oneDNN primitives, cached folded weights)
        for _ in range(repeats):
            for name, (model, dtype) in cases.items():
                xi = x.to(dtype)
                start = time.perf_counter()
                model(xi)
                best[name] = min(best[name], (time.perf_counter() - start) / clips)
    return best
