"""RTFM: Robust Temporal Feature Magnitude learning (Tian et al., ICCV 2021), a backbone beside UR-DMU.

Computes what the official code (tianyu0207/RTFM, commit cf938f4, no licence: read, not copied)
computes in train and test mode: the Multi-scale Temporal Network (MTN: three dilated temporal
convolutions beside a non-local block over a 1x1 reduction, concatenated, fused, residual) and the
snippet classifier (three FC layers, dropout 0.7, sigmoid). The top-k selection by feature magnitude
and the losses live in :mod:`pivad.losses.rtfm`, outside the model.

What differs from the official ``Model``:

- the input width ``F`` is a setting (officially ``Aggregate(len_feature=2048)`` and the 1x1
  reduction's 2048 are hard-coded, so 1024-d I3D features do not run);
- the batch is split per video (normal half first) instead of at ``batch_size * 10`` feature rows,
  which assumes 10 crops; the official forward's test-time special case (one video: the "abnormal"
  half is the normal one) is not needed, since :meth:`RTFM.snippet_scores` skips the selection;
- the non-local block computes ``theta (phi g) / T`` instead of ``(theta phi) g / T``: equal up to
  float rounding, ``O(T C^2)`` instead of an ``O(T^2 C)`` product and a ``T x T`` matrix (one
  10-crop UCF test video of 6,749 snippets: 1.8 GB);
- no CUDA calls; hooks read and replace intermediate features (:data:`RTFM.hook_widths`).

:class:`RTFMBackbone` is the same network behind the backbone interface (:mod:`pivad.models.backbone`):
eval forward returns scores, π-VAD's PIs sit at ``mtn`` / ``fc1`` / ``fc2``. pivad's loader gives one crop
per row, so in training each crop row is a one-crop video (docs/rtfm.md).

Dropout masks are drawn in the official order (MTN output, fc1, fc2; then the selection masks in the
loss), so with the same seed a train step draws the official masks.

Axes: b videos, n crops, B = b*n sequences, T snippets, F input width, C branch width (512).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace

import torch
import torch.nn as nn
import torch.nn.functional as F

from pivad.config import RTFMConfig
from pivad.errors import CheckpointError
from pivad.models.backbone import flatten_crops, load_state_dict_checked

Hook = Callable[[torch.Tensor], torch.Tensor]
Hooks = Mapping[str, Hook]


@dataclass
class RTFMOutput:
    """What :meth:`RTFM.forward` returns; the loss (:func:`pivad.losses.rtfm.rtfm_loss`) reads all three."""

    scores: torch.Tensor  # (b, T) snippet scores, mean over crops
    features: torch.Tensor  # (b, n, T, F) MTN output after dropout: the magnitudes' features
    magnitudes: torch.Tensor  # (b, T) L2 norm of the features over F, mean over crops


class DilatedBranch(nn.Module):
    """Conv1d(F -> C, k=3, dilation d, same length), ReLU, BatchNorm: ``[B, F, T]`` -> ``[B, C, T]``."""

    def __init__(self, in_dim: int, out_dim: int, dilation: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(in_dim, out_dim, kernel_size=3, dilation=dilation, padding=dilation)
        self.bn = nn.BatchNorm1d(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(F.relu(self.conv(x)))


class NonLocal1d(nn.Module):
    """Embedded-dot-product non-local block (no subsampling): ``x + BN(W(f g))`` with
    ``f = theta(x)ᵀ phi(x) / T``, ``[B, C, T]`` -> ``[B, C, T]``; inner width C // 2.

    ``W``'s BatchNorm starts at zero weight and bias, so the block starts as the identity."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        inner = max(1, dim // 2)
        # registration order mirrors the official block (g, W, theta, phi) for seeded inits
        self.g = nn.Conv1d(dim, inner, kernel_size=1)
        self.out = nn.Conv1d(inner, dim, kernel_size=1)
        self.out_bn = nn.BatchNorm1d(dim)
        nn.init.zeros_(self.out_bn.weight)
        nn.init.zeros_(self.out_bn.bias)
        self.theta = nn.Conv1d(dim, inner, kernel_size=1)
        self.phi = nn.Conv1d(dim, inner, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T = x.shape[-1]
        g = self.g(x)  # (B, c, T)
        theta = self.theta(x)  # (B, c, T)
        phi = self.phi(x)  # (B, c, T)
        # official: y = (thetaᵀ phi / T) gᵀ, a (T, T) matrix; associativity gives thetaᵀ (phi gᵀ) / T
        ctx = torch.bmm(phi, g.transpose(1, 2)) / T  # (B, c, c)
        y = torch.bmm(ctx.transpose(1, 2), theta)  # (B, c, T) = (thetaᵀ ctx)ᵀ
        return x + self.out_bn(self.out(y))


class MTN(nn.Module):
    """Multi-scale Temporal Network (official ``Aggregate``): ``[B, T, F]`` -> ``[B, T, F]``.

    ``fuse(cat(branch_1(x), ..., branch_d(x), nonlocal(relu(reduce(x))))) + x``, where fuse is
    Conv1d(k=3, no bias), ReLU, BatchNorm back to F."""

    def __init__(self, in_dim: int, dim: int, dilations: list[int]) -> None:
        super().__init__()
        self.branches = nn.ModuleList(DilatedBranch(in_dim, dim, d) for d in dilations)
        self.reduce = nn.Conv1d(in_dim, dim, kernel_size=1, bias=False)
        self.fuse = nn.Conv1d((len(dilations) + 1) * dim, in_dim, kernel_size=3, padding=1, bias=False)
        self.fuse_bn = nn.BatchNorm1d(in_dim)
        self.non_local = NonLocal1d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xc = x.transpose(1, 2)  # (B, F, T)
        multi = [branch(xc) for branch in self.branches]  # d x (B, C, T)
        multi.append(self.non_local(F.relu(self.reduce(xc))))  # (B, C, T)
        out = self.fuse_bn(F.relu(self.fuse(torch.cat(multi, dim=1))))  # (B, F, T)
        return (out + xc).transpose(1, 2)  # (B, T, F)


class RTFM(nn.Module):
    """RTFM. ``model(x)`` with x ``[b, n, T, F]`` (or ``[B, T, F]``, one crop) -> :class:`RTFMOutput`;
    :meth:`snippet_scores` gives only the crop-mean scores ``[b, T]`` (the official test path).

    Training batches put the normal videos first (see :func:`pivad.losses.rtfm.rtfm_loss`).
    ``hooks`` maps a name of :attr:`hook_widths` to a callable that replaces the feature there,
    per crop (``[B, T, width]`` in, same shape out):

    - ``"mtn"``: the MTN output, ``F`` wide, before the dropout; the magnitudes and the classifier
      read what it returns;
    - ``"fc1"``: after fc1 and its ReLU, ``fc1_dim`` (512) wide, before the dropout;
    - ``"fc2"``: after fc2 and its ReLU, ``fc2_dim`` (128) wide, before the dropout.
    """

    def __init__(self, cfg: RTFMConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or RTFMConfig(feature_dim=2048)
        if cfg.feature_dim < 1:
            raise ValueError("RTFMConfig.feature_dim: give the input width (0 means model.input_dim in a run's config)")
        self.cfg = cfg
        # construction and init order mirror the official Model, so torch.manual_seed(s) gives its weights
        self.mtn = MTN(cfg.feature_dim, cfg.branch_dim, cfg.dilations)
        self.fc1 = nn.Linear(cfg.feature_dim, cfg.fc1_dim)
        self.fc2 = nn.Linear(cfg.fc1_dim, cfg.fc2_dim)
        self.fc3 = nn.Linear(cfg.fc2_dim, 1)
        self._init_official()

    def _init_official(self) -> None:
        """Xavier-uniform weights and zero biases for every conv and linear layer, in module order
        (the official ``weight_init``); BatchNorm layers keep their defaults (the non-local's zeros)."""
        for m in self.modules():
            if isinstance(m, (nn.Conv1d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    @property
    def hook_widths(self) -> dict[str, int]:
        """Hook point name -> feature width (last axis of the ``[B, T, width]`` tensor it sees)."""
        return {"mtn": self.cfg.feature_dim, "fc1": self.cfg.fc1_dim, "fc2": self.cfg.fc2_dim}

    # --------------------------------------------------------------------------------------- forward

    def _flatten(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        """``[b, n, T, F]`` or ``[B, T, F]`` -> ``([b*n, T, F], b, n)``."""
        x, b, n = flatten_crops(x, "RTFM")
        if x.shape[-1] != self.cfg.feature_dim:
            raise ValueError(f"RTFM expects {self.cfg.feature_dim}-d features, got {x.shape[-1]}")
        return x, b, n

    def _drop(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout(x, self.cfg.dropout, self.training)

    def _hook(self, hooks: Hooks | None, name: str, x: torch.Tensor) -> torch.Tensor:
        if hooks is None or name not in hooks:
            return x
        return hooks[name](x)

    def head(self, feat: torch.Tensor, hooks: Hooks | None = None) -> torch.Tensor:
        """Snippet scores from (dropped-out) MTN features: ``[B, T, F]`` -> ``[B, T]``."""
        h = self._drop(self._hook(hooks, "fc1", F.relu(self.fc1(feat))))  # (B, T, fc1)
        h = self._drop(self._hook(hooks, "fc2", F.relu(self.fc2(h))))  # (B, T, fc2)
        return torch.sigmoid(self.fc3(h)).squeeze(-1)  # (B, T)

    def forward(self, x: torch.Tensor, hooks: Hooks | None = None) -> RTFMOutput:
        """Scores, features and magnitudes; dropout is active in train mode."""
        _check_hooks(hooks, self.hook_widths)
        xf, b, n = self._flatten(x)
        feat = self._drop(self._hook(hooks, "mtn", self.mtn(xf)))  # (B, T, F)
        scores = self.head(feat, hooks).view(b, n, -1).mean(1)  # (b, T) crop mean
        magnitudes = feat.norm(p=2, dim=-1).view(b, n, -1).mean(1)  # (b, T) crop mean
        return RTFMOutput(scores, feat.view(b, n, *feat.shape[1:]), magnitudes)

    def snippet_scores(self, x: torch.Tensor, hooks: Hooks | None = None) -> torch.Tensor:
        """Crop-mean snippet scores ``[b, T]`` (the official test's logits; it repeats each 16 times
        to frames). x ``[b, n, T, F]`` or ``[B, T, F]``; run in eval mode for test scores. Inputs are cast
        to the weights' dtype (``model.to(torch.bfloat16)``) and the scores come back in the input's dtype."""
        _check_hooks(hooks, self.hook_widths)
        xf, b, n = self._flatten(x)
        feat = self._drop(self._hook(hooks, "mtn", self.mtn(xf.to(self.fc1.weight.dtype))))  # (B, T, F)
        return self.head(feat, hooks).view(b, n, -1).mean(1).to(x.dtype)  # (b, T)

    def features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every hook point's feature, per crop ``[B, T, width]`` (no hooks; dropout as the mode says)."""
        xf, _, _ = self._flatten(x)
        seen: dict[str, torch.Tensor] = {}

        def keep(name: str) -> Hook:
            def hook(t: torch.Tensor) -> torch.Tensor:
                seen[name] = t
                return t

            return hook

        feat = self._drop(self._hook({"mtn": keep("mtn")}, "mtn", self.mtn(xf)))
        self.head(feat, {name: keep(name) for name in ("fc1", "fc2")})
        return seen

    # ------------------------------------------------------------------------------------ checkpoints

    @classmethod
    def from_official_state_dict(
        cls, sd: Mapping[str, torch.Tensor], cfg: RTFMConfig | None = None, source: str = "official RTFM state dict"
    ) -> RTFM:
        """Build from an official RTFM state dict (``Model.state_dict()`` key names, optionally
        ``module.``-prefixed); widths are read from the weights unless ``cfg`` is given."""
        sd = official_to_pivad(sd)
        model = cls(cfg if cfg is not None else _infer_config(sd, source))
        load_state_dict_checked(model, sd, source)
        return model


class RTFMBackbone(RTFM):
    """RTFM as π-VAD's teacher and student (:class:`pivad.models.backbone.Backbone`).

    Eval: x ``[b, n, T, F]`` or ``[B, T, F]`` -> crop-mean scores ``[b, T]`` (:meth:`RTFM.snippet_scores`).
    Train: x ``[B, T, F]``, normal half first, each row one crop taken as a one-crop video -> :class:`RTFMOutput`
    (``[B, 1, T, F]`` features), which :func:`pivad.losses.rtfm.rtfm_loss` reads. ``early``/``late`` are
    ``mtn``/``fc1``: where the temporal context is formed, and the classifier's first hidden feature."""

    name = "rtfm"
    placements = {"early": ("mtn",), "late": ("fc1",), "both": ("mtn", "fc1")}
    exact_prefix = ("mtn", "fc1", "fc2")  # hook_features computes the train forward's features there

    def __init__(self, cfg: RTFMConfig | None = None) -> None:
        super().__init__(cfg)
        self.input_dim = self.cfg.feature_dim
        self.dropout = self.cfg.dropout  # the network's dropouts (0: set_clean); the loss's selection keeps cfg's

    @classmethod
    def from_config(cls, cfg: RTFMConfig, input_dim: int) -> RTFMBackbone:
        """From a run's ``rtfm`` section, ``feature_dim`` 0 meaning ``model.input_dim``."""
        return cls(replace(cfg, feature_dim=cfg.feature_dim or input_dim, dilations=list(cfg.dilations)))

    @property
    def hook_points(self) -> dict[str, int]:
        return self.hook_widths

    def set_clean(self) -> RTFMBackbone:
        """Train without the network's dropout; returns self."""
        self.dropout = 0.0
        return self

    def _drop(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout(x, self.dropout, self.training and self.dropout > 0)

    def forward(self, x: torch.Tensor, hooks: Hooks | None = None) -> torch.Tensor | RTFMOutput:
        if not self.training:
            return self.snippet_scores(x, hooks)  # (b, T)
        if x.dim() != 3:
            raise ValueError(f"RTFM train mode expects [B,T,F] features, got shape {list(x.shape)}")
        return super().forward(x, hooks)

    def hook_features(self, x: torch.Tensor, points: Iterable[str]) -> dict[str, torch.Tensor]:
        """The features at ``points`` as this mode computes them, no hooks, computed only as far as needed."""
        points = list(points)
        xf, _, _ = self._flatten(x.to(self.fc1.weight.dtype))
        feats = {"mtn": self.mtn(xf)}  # (B, T, F)
        if points != ["mtn"]:
            feats["fc1"] = F.relu(self.fc1(self._drop(feats["mtn"])))  # (B, T, fc1)
            feats["fc2"] = F.relu(self.fc2(self._drop(feats["fc1"])))  # (B, T, fc2)
        return {p: feats[p] for p in points}


def _check_hooks(hooks: Hooks | None, widths: Mapping[str, int]) -> None:
    unknown = sorted(set(hooks or {}) - set(widths))
    if unknown:
        raise ValueError(f"RTFM has no hook point {unknown[0]!r} (it has {', '.join(widths)})")


# official key prefix <-> pivad key prefix ("Aggregate" is the MTN; conv_1..3 its dilated branches)
_KEY_MAP = [
    *((f"Aggregate.conv_{i + 1}.0.", f"mtn.branches.{i}.conv.") for i in range(3)),
    *((f"Aggregate.conv_{i + 1}.2.", f"mtn.branches.{i}.bn.") for i in range(3)),
    ("Aggregate.conv_4.0.", "mtn.reduce."),
    ("Aggregate.conv_5.0.", "mtn.fuse."),
    ("Aggregate.conv_5.2.", "mtn.fuse_bn."),
    ("Aggregate.non_local.g.", "mtn.non_local.g."),
    ("Aggregate.non_local.W.0.", "mtn.non_local.out."),
    ("Aggregate.non_local.W.1.", "mtn.non_local.out_bn."),
    ("Aggregate.non_local.theta.", "mtn.non_local.theta."),
    ("Aggregate.non_local.phi.", "mtn.non_local.phi."),
    ("fc1.", "fc1."),
    ("fc2.", "fc2."),
    ("fc3.", "fc3."),
]


def _rename(key: str, src: int) -> str:
    for pair in _KEY_MAP:
        if key.startswith(pair[src]):
            return pair[1 - src] + key[len(pair[src]) :]
    return key


def official_to_pivad(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename official RTFM keys to this module's; keys that match no rule are kept (and then rejected)."""
    sd = {k[len("module.") :] if k.startswith("module.") else k: v for k, v in sd.items()}  # DataParallel
    return {_rename(k, 0): v for k, v in sd.items()}


def pivad_to_official(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """This module's state dict under the official key names (loads into the official ``Model``)."""
    return {_rename(k, 1): v for k, v in sd.items()}


def _infer_config(sd: Mapping[str, torch.Tensor], source: str) -> RTFMConfig:
    """Widths from a (renamed) official state dict; dilations and dropout are the official ones."""
    cfg = RTFMConfig()
    try:
        cfg.feature_dim = int(sd["fc1.weight"].shape[1])
        cfg.branch_dim = int(sd["mtn.reduce.weight"].shape[0])
        cfg.fc1_dim = int(sd["fc1.weight"].shape[0])
        cfg.fc2_dim = int(sd["fc2.weight"].shape[0])
        n_branches = len({m.group(1) for k in sd if (m := re.match(r"mtn\.branches\.(\d+)\.", k))})
    except (KeyError, IndexError, AttributeError) as exc:
        raise CheckpointError(f"{source}: missing or malformed key {exc}") from None
    if n_branches != len(cfg.dilations):
        raise CheckpointError(f"{source}: {n_branches} dilated branches, the official RTFM has {len(cfg.dilations)}")
    return cfg
