"""Text / vision-language: a CLIP image tower through ``transformers``' CLIPVisionModelWithProjection,
with ViFi-CLIP (Rasheed et al., 2023: CLIP ViT-B/16 fine-tuned on Kinetics videos) as the paper's choice.

Feature (default ``layer="embeds"``): each sampled frame's projected image embedding (the vector that
is compared with text embeddings, 512-d for ViT-B/16), averaged over the snippet's frames and
L2-normalised, as ViFi-CLIP forms a video embedding (``pooling="mean_l2"``; ``"mean"`` skips the
normalisation). ``layer=k`` takes the CLS token of the k-th block's output instead.

Weights: a Hugging Face CLIP (``openai/clip-vit-base-patch16``, CLIP mean/std), or a ViFi-CLIP release
checkpoint (a ``.pth`` file: ``{"model": state_dict}`` with OpenAI-CLIP names under
``module.image_encoder.``), mapped onto the transformers implementation by :func:`vifi_to_hf` (ViFi-CLIP
normalises with ImageNet mean/std). Preprocessing: shorter side to the input size (224), bicubic,
centre crop, mean/std.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from pivad.errors import PivadError
from pivad.extract.backbones import preprocess as pp
from pivad.extract.backbones.base import TorchImageBackbone
from pivad.extract.backbones.weights import describe_weights, is_tiny, load_pretrained, read_preprocessor_config, seeded

DEFAULT_MODEL = "openai/clip-vit-base-patch16"
# prefixes under which a checkpoint may hold the OpenAI-layout image tower
VISION_PREFIXES = ("module.image_encoder.", "image_encoder.", "visual.")


def tiny_config() -> Any:
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                            image_size=32, patch_size=16, projection_dim=16)


def tiny_model() -> Any:
    """A tiny random CLIP image tower (2 blocks, width 32, 32-pixel input, 16-d projection) for tests."""
    from transformers import CLIPVisionModelWithProjection

    with seeded():
        return CLIPVisionModelWithProjection(tiny_config())


# ---------------------------------------------------------------- ViFi-CLIP / OpenAI-CLIP checkpoints


class _Opaque(dict):
    """Stands in for any non-tensor object in a training checkpoint (e.g. a yacs config)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()

    def __setstate__(self, state: Any) -> None:
        pass


class _CheckpointUnpickler(pickle.Unpickler):
    """Loads tensors and plain containers only. Every other global (a checkpoint's pickled training
    config, or anything that would run code) becomes an inert :class:`_Opaque`, so reading a
    checkpoint needs neither the training code's packages nor trust in the file."""

    def find_class(self, module: str, name: str) -> Any:
        if self._allowed(module, name):
            return super().find_class(module, name)
        return _Opaque

    @staticmethod
    def _allowed(module: str, name: str) -> bool:
        if module == "torch":
            return name.endswith("Storage") or name in {"Size", "device", "float32", "float16", "bfloat16", "float64"}
        if module == "torch._utils":
            return name.startswith("_rebuild_")
        if module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            return name in {"_reconstruct", "scalar"}
        if module == "numpy":
            return name in {"ndarray", "dtype"}
        if module == "numpy.dtypes":
            return name.endswith("DType")
        return (module, name) in {("collections", "OrderedDict"), ("_codecs", "encode"), ("builtins", "set"),
                                  ("builtins", "frozenset"), ("builtins", "slice"), ("builtins", "complex")}


def _restricted_load(file: Any, **kwargs: Any) -> Any:
    """``pickle.load`` through the allow-list: torch's legacy (non-zip) path reads whole pickles with it."""
    return _CheckpointUnpickler(file, **kwargs).load()


class _checkpoint_pickle:  # a pickle "module" for torch.load; every path goes through the allow-list
    Unpickler = _CheckpointUnpickler
    load = staticmethod(_restricted_load)
    __name__ = "pivad_checkpoint_pickle"


def load_checkpoint_state(path: Path) -> dict[str, torch.Tensor]:
    """The state dict inside a ViFi-CLIP (or plain) checkpoint file."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False, pickle_module=_checkpoint_pickle)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a user error here
        from pivad.safe_load import first_line

        raise PivadError(f"{path}: cannot read checkpoint ({type(exc).__name__}: {first_line(exc)})") from None
    if isinstance(obj, dict):
        for key in ("model", "state_dict"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not any(isinstance(v, torch.Tensor) for v in obj.values()):
        raise PivadError(f"{path}: no state dict found (expected a ViFi-CLIP checkpoint with a 'model' entry)")
    return obj


def vifi_to_hf(sd: dict[str, torch.Tensor]) -> tuple[Any, dict[str, torch.Tensor]]:
    """Map an OpenAI-CLIP-layout image tower (ViFi-CLIP's ``module.image_encoder.*``) onto
    CLIPVisionModelWithProjection: returns (CLIPVisionConfig inferred from the shapes, state dict)."""
    from transformers import CLIPVisionConfig

    prefix = next((p for p in VISION_PREFIXES if f"{p}conv1.weight" in sd), None)
    if prefix is None:
        raise PivadError("checkpoint holds no CLIP image tower (no '<prefix>conv1.weight' for prefixes "
                         + ", ".join(VISION_PREFIXES) + ")")
    v = {k[len(prefix):]: t for k, t in sd.items() if k.startswith(prefix)}
    width, _, patch, _ = v["conv1.weight"].shape
    n_pos = v["positional_embedding"].shape[0]
    grid = int(round((n_pos - 1) ** 0.5))
    layers = 1 + max(int(k.split(".")[2]) for k in v if k.startswith("transformer.resblocks."))
    cfg = CLIPVisionConfig(
        hidden_size=width, intermediate_size=v["transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
        projection_dim=v["proj"].shape[1], num_hidden_layers=layers, num_attention_heads=width // 64 or 1,
        image_size=grid * patch, patch_size=patch, hidden_act="quick_gelu", layer_norm_eps=1e-5,
    )
    out = {
        "vision_model.embeddings.patch_embedding.weight": v["conv1.weight"],
        "vision_model.embeddings.class_embedding": v["class_embedding"],
        "vision_model.embeddings.position_embedding.weight": v["positional_embedding"],
        "vision_model.pre_layrnorm.weight": v["ln_pre.weight"],
        "vision_model.pre_layrnorm.bias": v["ln_pre.bias"],
        "vision_model.post_layernorm.weight": v["ln_post.weight"],
        "vision_model.post_layernorm.bias": v["ln_post.bias"],
        "visual_projection.weight": v["proj"].t().contiguous(),
    }
    for i in range(layers):
        src, dst = f"transformer.resblocks.{i}.", f"vision_model.encoder.layers.{i}."
        q, k, w_v = v[src + "attn.in_proj_weight"].chunk(3, dim=0)
        qb, kb, vb = v[src + "attn.in_proj_bias"].chunk(3, dim=0)
        out.update({
            dst + "self_attn.q_proj.weight": q, dst + "self_attn.q_proj.bias": qb,
            dst + "self_attn.k_proj.weight": k, dst + "self_attn.k_proj.bias": kb,
            dst + "self_attn.v_proj.weight": w_v, dst + "self_attn.v_proj.bias": vb,
            dst + "self_attn.out_proj.weight": v[src + "attn.out_proj.weight"],
            dst + "self_attn.out_proj.bias": v[src + "attn.out_proj.bias"],
            dst + "layer_norm1.weight": v[src + "ln_1.weight"], dst + "layer_norm1.bias": v[src + "ln_1.bias"],
            dst + "layer_norm2.weight": v[src + "ln_2.weight"], dst + "layer_norm2.bias": v[src + "ln_2.bias"],
            dst + "mlp.fc1.weight": v[src + "mlp.c_fc.weight"], dst + "mlp.fc1.bias": v[src + "mlp.c_fc.bias"],
            dst + "mlp.fc2.weight": v[src + "mlp.c_proj.weight"], dst + "mlp.fc2.bias": v[src + "mlp.c_proj.bias"],
        })
    return cfg, {k: t.float() for k, t in out.items()}


def load_vifi_clip(path: Path) -> Any:
    """CLIPVisionModelWithProjection holding a ViFi-CLIP (or OpenAI-layout CLIP) checkpoint's image tower."""
    from transformers import CLIPVisionModelWithProjection

    cfg, sd = vifi_to_hf(load_checkpoint_state(path))
    model = CLIPVisionModelWithProjection(cfg)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise PivadError(f"{path}: image tower does not fit CLIP ViT (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return model


# ---------------------------------------------------------------- the backbone


class ClipFeatures(TorchImageBackbone):
    modality = "text"

    def __init__(
        self, model: Any, *, weights: dict[str, Any] | None = None, family: str = "CLIP", device: str = "cpu",
        frames: int = 4, layer: int | str = "embeds", pooling: str = "mean_l2", size: int | None = None,
        mean=pp.CLIP_MEAN, std=pp.CLIP_STD, micro_batch: int = 64,
    ):
        super().__init__(model, device, frames, micro_batch)
        cfg = model.config
        self.n_layers = cfg.num_hidden_layers
        if layer in ("embeds", None):
            self.layer: int | str = "embeds"
            self.dim = cfg.projection_dim
        else:
            k = int(layer)
            k = self.n_layers + 1 + k if k < 0 else k
            if not 1 <= k <= self.n_layers:
                raise PivadError(f"text layer must be 'embeds' or in 1..{self.n_layers}, got {layer}")
            self.layer, self.dim = k, cfg.hidden_size
        if pooling not in ("mean", "mean_l2"):
            raise PivadError(f"text pooling must be 'mean' or 'mean_l2', got {pooling!r}")
        self.pooling, self.family = pooling, family
        self.crop = int(cfg.image_size)
        self.size = int(size or cfg.image_size)
        self.mean, self.std = tuple(mean), tuple(std)
        self.weights = weights or {}

    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        x = pp.to_float(frames)  # (M, 3, H, W)
        x = pp.resize(x, pp.short_side_size(x.shape[-2], x.shape[-1], self.size), "bicubic")
        return pp.normalize(pp.center_crop(x, (self.crop, self.crop)), self.mean, self.std)  # (M, 3, c, c)

    def frame_features(self, pixels: torch.Tensor) -> torch.Tensor:
        if self.layer == "embeds":
            return self.model(pixel_values=pixels).image_embeds  # (M, P)
        out = self.model(pixel_values=pixels, output_hidden_states=True)
        return out.hidden_states[self.layer][:, 0]  # (M, C) CLS token

    def pool_frames(self, feats: torch.Tensor) -> torch.Tensor:
        pooled = feats.mean(dim=1)  # (N, d)
        return F.normalize(pooled, dim=-1) if self.pooling == "mean_l2" else pooled

    def describe(self) -> dict[str, Any]:
        layer = "projected image embedding" if self.layer == "embeds" else f"CLS token of block {self.layer} of {self.n_layers}"
        pooling = "mean over the sampled frames" + (", then L2-normalised" if self.pooling == "mean_l2" else "")
        return {
            "backbone": f"{self.family} image tower (transformers CLIPVisionModelWithProjection)",
            "weights": self.weights,
            "layer": layer,
            "pooling": pooling,
            "preprocessing": {
                "resize": f"shorter side {self.size}, bicubic antialiased, centre crop {self.crop}x{self.crop}",
                "mean": list(self.mean), "std": list(self.std),
            },
            "frames_per_snippet": len(self.frame_indices),
            "frame_indices": list(self.frame_indices),
            "dim": self.dim,
        }


def build(spec: str = DEFAULT_MODEL, *, device: str = "cpu", frames: int = 4, layer: int | str | None = None,
          micro_batch: int = 64, pooling: str = "mean_l2") -> ClipFeatures:
    """Text features from ``tiny-random``, a ViFi-CLIP ``.pth`` checkpoint, a local HF directory, or a hub name."""
    layer = "embeds" if layer is None else layer
    common = dict(device=device, frames=frames, layer=layer, pooling=pooling, micro_batch=micro_batch)
    if is_tiny(spec):
        return ClipFeatures(tiny_model(), weights=describe_weights(spec), **common)
    path = Path(spec).expanduser()
    if path.is_file():
        return ClipFeatures(load_vifi_clip(path), weights=describe_weights(spec), family="ViFi-CLIP",
                            mean=pp.IMAGENET_MEAN, std=pp.IMAGENET_STD, **common)
    from transformers import CLIPVisionModelWithProjection

    model = load_pretrained(CLIPVisionModelWithProjection, spec, "CLIP")
    proc = read_preprocessor_config(spec)
    size = proc.get("size", {}).get("shortest_edge") if isinstance(proc.get("size"), dict) else proc.get("size")
    return ClipFeatures(model, weights=describe_weights(spec, model), size=size,
                        mean=proc.get("image_mean", pp.CLIP_MEAN), std=proc.get("image_std", pp.CLIP_STD), **common)
