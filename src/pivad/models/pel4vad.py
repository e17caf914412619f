"""PEL4VAD: Prompt-Enhanced Learning for weakly-supervised video anomaly detection (Pu et al., TIP 2024).

Computes what the official code (yujiangpu20/PEL4VAD, commit eeb31f4, MIT) computes, in train and
test mode, with the quirks that change the numbers marked ``QUIRK``:

- TCA splits heads by re-reading the ``[B, T, hidden]`` projections as ``[heads, B, T, hidden/heads]``
  (not a per-channel split; the same as a plain split for the official ``heads: 1``);
- TCA's power-normalised output is L2-normalised over the *time* axis (``F.normalize``'s default dim 1);
- the local branch masks its logits with ``-1e9`` outside a window of ``window`` snippets (clamped at
  the ends), the global branch adds the learnt distance prior ``exp(-|w d² - b|)``;
- test-time smoothing pads the crop-mean scores with zeros on the right, so the last window's mean
  counts them (``fixed``: block means of ``kappa`` snippets; ``slide``: forward moving mean).

What differs: no CUDA calls; ``[B, T, C]`` layout throughout (the 1x1 convolutions are ``Linear``,
:meth:`PEL4VAD.from_official_state_dict` reshapes them); the window mask is built once per length
without Python loops; smoothing is one pooling call (``slide``) or differences of a running sum
(``fixed``), both with T dynamic in an ONNX trace. The prompt-enhanced loss is in
:mod:`pivad.losses.pel4vad` (the model returns what it needs).

Hook points (π-VAD reads F* and writes F_M* there): ``context`` (after TCA and the LayerNorm, width
``input_dim``), ``embed`` (the prompt-aligned feature, ``input_dim // 2``; the prompt loss reads the
hooked value) and ``head`` (the causal classifier's input, ``out_dim``). ``early``/``late`` are
``embed``/``head``.

Axes: b videos, n crops, B batch (videos x crops), T snippets, D input width, C channels.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pivad.config import PEL4VADConfig, URDMUConfig
from pivad.errors import CheckpointError
from pivad.models.backbone import Hook, apply_hook, flatten_crops

SMOOTHING = ("none", "fixed", "slide")


@dataclass
class PEL4VADOutput:
    """Train-mode outputs: what the MIL BCE and the prompt-enhanced loss read."""

    scores: torch.Tensor  # (B, T) snippet anomaly scores
    video_feat: torch.Tensor  # (B, T, D/2) the prompt-aligned feature (after the ``embed`` hook)
    logit_scale: torch.Tensor  # () learnt log(1/temperature) of the prompt logits
    lengths: torch.Tensor  # (B,) long: snippets before the zero padding (official seq_len)
    prompts: torch.Tensor  # (C, D/2) class-prompt features, row 0 the normal class


def window_mask(T: int, window: int, device=None) -> torch.Tensor:
    """(T, T) bool: row j keeps columns ``clamp(j - window//2 + k, 0, T-1)`` for k < window (official get_mask)."""
    # the clamped indices stay inside [j - window//2, j - window//2 + window - 1]: a band, built by comparison
    t = torch.arange(T, device=device)
    offset = t.unsqueeze(0) - t.unsqueeze(1) + window // 2  # (T, T): column - row + window//2
    return (offset >= 0) & (offset < window)


def smooth_scores(scores: torch.Tensor, mode: str, kappa: int) -> torch.Tensor:
    """Official test-time smoothing of crop-mean scores ``[b, T]`` (zero-padded on the right)."""
    if mode == "none":
        return scores
    if kappa < 2:
        raise ValueError(f"pel4vad.kappa must be at least 2 for smoothing, got {kappa}")
    if mode == "fixed":
        # block sums from a float64 running sum (exact enough for hours of snippets); the running sum is
        # extended by kappa copies of its total, which stands for the zero padding, so no step depends on
        # T in Python and an ONNX trace keeps T dynamic
        c = F.pad(scores.double().cumsum(-1), (1, 0))  # (b, T + 1): sum of the first t scores
        c = torch.cat([c, c[:, -1:].expand(-1, kappa)], dim=-1)  # (b, T + 1 + kappa)
        start = torch.div(torch.arange(scores.shape[-1], device=scores.device), kappa, rounding_mode="floor") * kappa
        return ((c[:, start + kappa] - c[:, start]) / kappa).to(scores.dtype)  # (b, T) block means
    if mode == "slide":
        padded = F.pad(scores, (0, kappa - 1)).unsqueeze(1)  # (b, 1, T + kappa - 1)
        return F.avg_pool1d(padded, kappa, stride=1).squeeze(1)  # (b, T): mean of snippets t .. t+kappa-1
    raise ValueError(f"pel4vad.smooth must be one of {SMOOTHING}, got {mode!r}")


class DistancePrior(nn.Module):
    """Learnt temporal prior ``exp(-|w |i-j|² - b|)`` ``[T, T]`` added to TCA's global logits."""

    def __init__(self, gamma: float, bias: float) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.full((1,), float(gamma)))
        self.b = nn.Parameter(torch.full((1,), float(bias)))

    def forward(self, T: int) -> torch.Tensor:
        t = torch.arange(T, device=self.w.device, dtype=self.w.dtype)
        d = (t.unsqueeze(0) - t.unsqueeze(1)).abs()  # (T, T)
        return torch.exp(-torch.abs(self.w * d**2 - self.b))


class TCA(nn.Module):
    """Temporal context aggregation: a global (softmax + distance prior) and a local (windowed) attention
    over one value projection, mixed by a learnt ``sigmoid(alpha)``."""

    def __init__(self, dim: int, hidden: int, heads: int, window: int, norm: bool) -> None:
        super().__init__()
        if hidden % heads:
            raise ValueError(f"pel4vad.hidden_dim {hidden} is not divisible by pel4vad.heads {heads}")
        self.hidden, self.heads, self.window, self.norm = hidden, heads, window, norm
        self.q = nn.Linear(dim, hidden)
        self.k = nn.Linear(dim, hidden)
        self.v = nn.Linear(dim, hidden)
        self.o = nn.Linear(hidden, dim)
        self.alpha = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        h, e = self.heads, self.hidden // self.heads
        # QUIRK: heads by re-reading the (B, T, hidden) memory as (h, B, T, e)
        q, k, v = (p(x).reshape(h, B, T, e) for p in (self.q, self.k, self.v))
        logits = q @ k.transpose(-1, -2) / math.sqrt(self.hidden) + prior  # (h, B, T, T)
        local = logits.masked_fill(~window_mask(T, self.window, x.device), -1e9)
        glb = (logits.softmax(-1) @ v).reshape(B, T, -1)  # (B, T, hidden)
        lcl = (local.softmax(-1) @ v).reshape(B, T, -1)
        a = torch.sigmoid(self.alpha)
        mix = a * glb + (1 - a) * lcl  # (B, T, hidden)
        if self.norm:
            mix = torch.sqrt(F.relu(mix)) - torch.sqrt(F.relu(-mix))  # power normalisation
            mix = F.normalize(mix, dim=1)  # QUIRK: L2 over time
        return self.o(mix)  # (B, T, D)


class PEL4VAD(nn.Module):
    """PEL4VAD. ``PEL4VAD(model_cfg, pel_cfg, prompts)``; ``prompts`` ``[C, D/2]`` (row 0 normal) or None.

    Eval: x ``[b, n, T, D]`` or ``[B, T, D]`` -> smoothed crop-mean scores ``[b, T]``.
    Train: x ``[B, T, D]`` -> :class:`PEL4VADOutput`. ``hooks={"context"|"embed"|"head": fn}`` replace
    the feature at those points (:mod:`pivad.models.backbone`).
    """

    name = "pel4vad"
    placements = {"early": ("embed",), "late": ("head",), "both": ("embed", "head")}
    exact_prefix = ("context", "embed", "head")  # hook_features equals the train forward's feature there

    def __init__(self, model_cfg: URDMUConfig | None = None, cfg: PEL4VADConfig | None = None,
                 prompts: torch.Tensor | None = None) -> None:
        super().__init__()
        model_cfg = model_cfg or URDMUConfig()
        cfg = cfg or PEL4VADConfig()
        if cfg.smooth not in SMOOTHING:
            raise ValueError(f"pel4vad.smooth must be one of {SMOOTHING}, got {cfg.smooth!r}")
        self.cfg = cfg
        self.dropout = cfg.dropout  # after the two 1x1 convolutions (0: set_clean)
        D = model_cfg.input_dim
        self.input_dim = D
        self.hook_points = {"context": D, "embed": D // 2, "head": cfg.out_dim}
        self.prior = DistancePrior(cfg.gamma, cfg.bias)
        self.tca = TCA(D, cfg.hidden_dim, cfg.heads, cfg.window, cfg.norm)
        self.norm = nn.LayerNorm(D)
        self.proj1 = nn.Linear(D, D // 2)
        self.proj2 = nn.Linear(D // 2, cfg.out_dim)
        self.classifier = nn.Conv1d(cfg.out_dim, 1, cfg.causal_steps)  # causal: left-padded by steps - 1
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / cfg.temp)))
        for m in self.modules():  # official weight_init: Xavier-uniform weights, default biases
            if isinstance(m, (nn.Linear, nn.Conv1d)):
                nn.init.xavier_uniform_(m.weight)
        if prompts is None:
            prompts = binary_prompts(D // 2)
        if prompts.dim() != 2 or prompts.shape[1] != D // 2 or prompts.shape[0] < 2:
            raise ValueError(f"pel4vad.prompts: expected [C>=2, {D // 2}] class-prompt features, "
                             f"got {list(prompts.shape)}")
        self.register_buffer("prompts", prompts.float(), persistent=False)

    def set_clean(self) -> PEL4VAD:
        """Train without dropout; returns self."""
        self.dropout = 0.0
        return self

    # ------------------------------------------------------------------------------------ pieces

    def _features(self, x: torch.Tensor, hooks: Mapping[str, Hook], until: str | None = None) -> dict:
        """Hook points in order as far as ``until``: ``{"context", "embed", "head"}`` ``[B, T, C]``."""
        drop = self.training and self.dropout > 0
        out = {}
        x = x + self.tca(x, self.prior(x.shape[1]))  # (B, T, D)
        out["context"] = apply_hook(hooks, "context", self.norm(x))
        if until == "context":
            return out
        v = F.dropout(F.gelu(self.proj1(out["context"])), self.dropout, drop)  # (B, T, D/2)
        out["embed"] = apply_hook(hooks, "embed", v)
        if until == "embed":
            return out
        e = F.dropout(F.gelu(self.proj2(out["embed"])), self.dropout, drop)  # (B, T, out_dim)
        out["head"] = apply_hook(hooks, "head", e)
        return out

    def _scores(self, head: torch.Tensor) -> torch.Tensor:
        """Causal classifier: score t reads snippets t - steps + 1 .. t. ``[B, T, C]`` -> ``[B, T]``."""
        z = F.pad(head.transpose(1, 2), (self.classifier.kernel_size[0] - 1, 0))  # (B, C, T + steps - 1)
        return torch.sigmoid(self.classifier(z)).squeeze(1)  # (B, T)

    def hook_features(self, x: torch.Tensor, points: Iterable[str]) -> dict[str, torch.Tensor]:
        """The features at ``points`` as this mode computes them, no hooks, computed only as far as needed."""
        points = list(points)
        last = max(points, key=list(self.hook_points).index)
        feats = self._features(x.to(self.norm.weight.dtype), {}, until=last)
        return {p: feats[p] for p in points}

    # ---------------------------------------------------------------------------------- forward

    def forward(self, x: torch.Tensor, hooks: Mapping[str, Hook] | None = None) -> torch.Tensor | PEL4VADOutput:
        hooks = hooks or {}
        if self.training:
            if x.dim() != 3:
                raise ValueError(f"PEL4VAD train mode expects [B,T,D] features, got shape {list(x.shape)}")
            lengths = (x.abs().amax(-1) > 0).sum(1)  # (B,) official seq_len: rows before zero padding
            feats = self._features(x, hooks)
            return PEL4VADOutput(self._scores(feats["head"]), feats["embed"], self.logit_scale, lengths,
                                 self.prompts)
        x, b, n = flatten_crops(x, "PEL4VAD")
        in_dtype = x.dtype
        scores = self._scores(self._features(x.to(self.norm.weight.dtype), hooks)["head"])  # (B, T)
        mean = scores.view(b, n, -1).mean(1)  # (b, T) crop mean
        return smooth_scores(mean, self.cfg.smooth, self.cfg.kappa).to(in_dtype)

    # ------------------------------------------------------------------------------- checkpoints

    @classmethod
    def from_official_state_dict(cls, sd: Mapping[str, torch.Tensor], model_cfg: URDMUConfig | None = None,
                                 cfg: PEL4VADConfig | None = None, prompts: torch.Tensor | None = None,
                                 source: str = "official PEL4VAD state dict") -> PEL4VAD:
        """Build from an official ``XModel.state_dict()`` (``module.`` prefixes allowed); widths from the weights."""
        own = official_to_pivad(sd, source)
        model_cfg = URDMUConfig(**{**vars(model_cfg or URDMUConfig()), "input_dim": own["norm.weight"].shape[0]})
        widths = {"hidden_dim": own["tca.q.weight"].shape[0], "out_dim": own["proj2.weight"].shape[0],
                  "causal_steps": own["classifier.weight"].shape[-1]}
        cfg = PEL4VADConfig(**{**vars(cfg or PEL4VADConfig()), **widths})
        model = cls(model_cfg, cfg, prompts)
        try:
            model.load_state_dict(own, strict=True)
        except RuntimeError as exc:
            raise CheckpointError(f"{source}: weights do not fit PEL4VAD ({str(exc).splitlines()[-1].strip()})") from None
        return model


def binary_prompts(dim: int) -> torch.Tensor:
    """Two fixed, orthogonal unit "prompts" ``[2, dim]`` (normal, anomalous) for runs without prompt features."""
    base = torch.ones(2, dim)
    base[1, 1::2] = -1.0  # alternate signs: orthogonal to the all-ones row for even dim
    return F.normalize(base, dim=1)


_OFFICIAL = [
    (r"^self_attention\.self_attn\.(q|k|v|o)\.", r"tca.\1."),
    (r"^self_attention\.self_attn\.alpha$", "tca.alpha"),
    (r"^self_attention\.loc_adj\.", "prior."),
    (r"^self_attention\.norm\.", "norm."),
    (r"^self_attention\.linear1\.", "proj1."),
    (r"^self_attention\.linear2\.", "proj2."),
]


def official_to_pivad(sd: Mapping[str, torch.Tensor], source: str = "official PEL4VAD state dict") -> dict:
    """Official ``XModel`` key names and shapes -> :class:`PEL4VAD`'s (1x1 convolutions as ``Linear``)."""
    out = {}
    for key, value in sd.items():
        key = key[len("module."):] if key.startswith("module.") else key
        new = key
        for pattern, repl in _OFFICIAL:
            new = re.sub(pattern, repl, new)
        if new.startswith(("proj1.", "proj2.")) and new.endswith("weight"):
            value = value.squeeze(-1)  # Conv1d(k=1) [out, in, 1] -> Linear [out, in]
        out[new] = value
    need = {"norm.weight", "tca.q.weight", "proj2.weight", "classifier.weight"}
    if not need <= out.keys():
        raise CheckpointError(f"{source}: not a PEL4VAD state dict (missing {sorted(need - out.keys())[0]})")
    return out
