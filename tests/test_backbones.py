"""Modality backbones: the real transformers model code with tiny random configurations (no weights)."""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

from pivad.errors import PivadError
from pivad.extract.backbones import MODALITIES, SNIPPET, build_backbone, resolve_device, sample_frame_indices
from pivad.extract.backbones import base as base_mod
from pivad.extract.backbones.flow import flow_descriptor, torchvision_available

TINY_MODEL_BACKBONES = ("pose", "depth", "panoptic", "text")


def smooth_snippets(n: int, h: int = 40, w: int = 56, seed: int = 0) -> np.ndarray:
    """``uint8 [n, 16, h, w, 3]`` of smooth moving patterns (realistic for resizing, distinct per frame)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    out = np.empty((n, SNIPPET, h, w, 3), np.uint8)
    for i in range(n):
        f = rng.uniform(5, 12, size=3)
        for t in range(SNIPPET):
            shift = 1.5 * t
            out[i, t] = np.stack([128 + 100 * np.sin((xx + shift) / f[0]), 128 + 100 * np.cos((yy - shift) / f[1]),
                                  128 + 80 * np.sin((xx + yy + i) / f[2])], -1).astype(np.uint8)
    return out


@pytest.fixture(scope="module")
def snippets() -> np.ndarray:
    return smooth_snippets(3)


@pytest.fixture(scope="module")
def tiny() -> dict:
    return {m: build_backbone(m, "tiny-random") for m in TINY_MODEL_BACKBONES}


def test_sample_frame_indices_hand_cases():
    assert sample_frame_indices(1) == (8,)
    assert sample_frame_indices(2) == (4, 12)
    assert sample_frame_indices(4) == (2, 6, 10, 14)
    assert sample_frame_indices(16) == tuple(range(16))
    assert sample_frame_indices(15, 15) == tuple(range(15))
    with pytest.raises(PivadError):
        sample_frame_indices(0)
    with pytest.raises(PivadError):
        sample_frame_indices(17)


@pytest.mark.parametrize("modality", TINY_MODEL_BACKBONES)
def test_tiny_backbone_shapes_batching_and_manifest_entry(tiny, snippets, modality):
    bb = tiny[modality]
    out = bb.encode(snippets)
    assert out.shape == (3, bb.dim) and out.dtype == np.float32
    assert np.isfinite(out).all()
    assert np.abs(out).max() > 0  # random weights still give a non-trivial vector
    # batching: one batch of 3 snippets == three single snippets (one vector each)
    singles = np.stack([bb.encode(s) for s in snippets])
    np.testing.assert_allclose(out, singles, rtol=1e-4, atol=1e-5)
    # different snippets give different vectors
    assert not np.allclose(out[0], out[1])
    desc = bb.describe()
    for key in ("backbone", "weights", "layer", "pooling", "preprocessing", "frames_per_snippet", "dim"):
        assert key in desc
    assert desc["dim"] == bb.dim and desc["frames_per_snippet"] == len(bb.frame_indices)
    assert desc["weights"] == {"source": "tiny-random", "seed": 0}


@pytest.mark.parametrize("modality", TINY_MODEL_BACKBONES)
def test_tiny_backbones_are_the_same_in_every_process(snippets, modality):
    """Seeded construction: a second build (as a Ray worker would do) gives identical features."""
    a = build_backbone(modality, "tiny-random").encode(snippets[:1])
    b = build_backbone(modality, "tiny-random").encode(snippets[:1])
    np.testing.assert_array_equal(a, b)


def test_frames_per_snippet_selects_the_documented_frames(tiny, snippets):
    """Only the sampled frames matter: changing the others leaves the features unchanged."""
    bb = build_backbone("text", "tiny-random", frames=2)
    assert bb.frame_indices == (4, 12)
    altered = snippets.copy()
    keep = list(bb.frame_indices)
    others = [t for t in range(SNIPPET) if t not in keep]
    altered[:, others] = 255 - altered[:, others]
    np.testing.assert_array_equal(bb.encode(snippets), bb.encode(altered))
    altered[:, keep[0]] = 0
    assert not np.allclose(bb.encode(snippets), bb.encode(altered))


def test_depth_feature_is_the_encoder_output_the_dpt_head_reads(tiny, snippets):
    """Default layer: the last out_indices feature map of the DINOv2 backbone, CLS dropped, mean over tokens."""
    bb = tiny["depth"]
    frames = torch.from_numpy(snippets[:, list(bb.frame_indices)].reshape(-1, *snippets.shape[2:]))
    with torch.inference_mode():
        pixels = bb.preprocess(frames)
        fmap = bb.model(pixels).feature_maps[-1]  # (M, 1 + tokens, C), layernormed
        expected = fmap[:, 1:].mean(1).reshape(3, len(bb.frame_indices), -1).mean(1).numpy()
    assert pixels.shape[-2] % 14 == 0 and pixels.shape[-1] % 14 == 0
    np.testing.assert_allclose(bb.encode(snippets), expected, rtol=1e-5, atol=1e-6)
    first = build_backbone("depth", "tiny-random", layer=1)
    assert first.layer == 1 and not np.allclose(first.encode(snippets), expected)
    with pytest.raises(PivadError):
        build_backbone("depth", "tiny-random", layer=9)


def test_panoptic_pools_only_the_cells_covering_the_image(tiny):
    """A wide frame fills the top of SAM's square input; the zero padding below is not averaged."""
    bb = tiny["panoptic"]
    clip = smooth_snippets(1, h=20, w=64)  # -> 20x64 resized to 20x64 (longest 64), padded to 64x64
    frames = torch.from_numpy(clip[:, list(bb.frame_indices)].reshape(-1, 20, 64, 3))
    with torch.inference_mode():
        pixels, (gh, gw) = bb.preprocess(frames)
        emb = bb.model(pixels).last_hidden_state  # (M, C, 4, 4)
    assert (gh, gw) == (math.ceil(20 / 16), 4)
    expected = emb[:, :, :gh, :gw].mean((2, 3)).numpy()
    np.testing.assert_allclose(bb.encode(clip), expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(expected, emb.mean((2, 3)).numpy())
    block = build_backbone("panoptic", "tiny-random", layer=2)
    assert block.dim == 32 and block.encode(clip).shape == (1, 32)


def test_text_embedding_is_mean_then_l2(tiny, snippets):
    bb = tiny["text"]
    out = bb.encode(snippets)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)
    plain = build_backbone("text", "tiny-random", pooling="mean").encode(snippets)
    np.testing.assert_allclose(plain / np.linalg.norm(plain, axis=1, keepdims=True), out, rtol=1e-5, atol=1e-6)
    cls = build_backbone("text", "tiny-random", layer=2)
    assert cls.dim == 32 and cls.encode(snippets).shape == (3, 32)


def test_pose_keypoints_inside_frame_and_nobody_gives_zeros(tiny, snippets):
    bb = tiny["pose"]
    out = bb.encode(snippets)
    C, K = bb.channels, bb.n_keypoints
    assert bb.dim == C + 3 * K
    xy = out[:, C : C + 2 * K]
    # whole-frame box grown to 3:4 and padded 1.25: keypoints land within the crop window around the frame
    assert np.all(xy > -1.0) and np.all(xy < 2.0)
    empty = build_backbone("pose", "tiny-random", detector=lambda x: [torch.zeros(0, 4)] * x.shape[0],
                           detector_name="none found")
    np.testing.assert_array_equal(empty.encode(snippets), np.zeros((3, bb.dim), np.float32))
    # two identical boxes per frame: the mean over people equals one person
    twice = build_backbone("pose", "tiny-random",
                           detector=lambda x: [torch.tensor([[0.0, 0.0, x.shape[-1], x.shape[-2]]] * 2)] * x.shape[0])
    np.testing.assert_allclose(twice.encode(snippets), out, rtol=1e-4, atol=1e-5)


def test_pose_plus_mixture_of_experts_checkpoints_run(snippets):
    """ViTPose+ backbones need a dataset index (0 = COCO's expert)."""
    import transformers as t

    from pivad.extract.backbones.pose import VitPoseFeatures

    backbone = t.VitPoseBackboneConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                       image_size=[64, 48], patch_size=[16, 16], out_indices=[2], num_experts=2,
                                       part_features=8)
    bb = VitPoseFeatures(t.VitPoseForPoseEstimation(t.VitPoseConfig(backbone_config=backbone, num_labels=17)))
    out = bb.encode(snippets)
    assert out.shape == (3, 32 + 51) and np.isfinite(out).all()


def test_pose_with_an_rtdetr_person_detector(snippets):
    bb = build_backbone("pose", "tiny-random", detector="tiny-random", threshold=0.0, max_people=3)
    frames = torch.from_numpy(snippets[:, 0]).permute(0, 3, 1, 2).float() / 255  # (3, 3, 40, 56)
    with torch.inference_mode():
        boxes = bb.detector(frames)
    assert [len(b) for b in boxes] == [3, 3, 3]  # threshold 0: the best 3 queries of each frame
    for b in boxes:
        assert (b[:, 0] <= b[:, 2]).all() and (b[:, 1] <= b[:, 3]).all()
        assert (b >= 0).all() and (b[:, [0, 2]] <= 56).all() and (b[:, [1, 3]] <= 40).all()
    out = bb.encode(snippets)
    assert out.shape == (3, bb.dim) and np.isfinite(out).all() and np.abs(out).max() > 0
    assert "RT-DETR person detector" in bb.describe()["person_boxes"]
    bb.detector.threshold = 1.0  # a sigmoid score never exceeds 1: nobody is found
    np.testing.assert_array_equal(bb.encode(snippets), np.zeros((3, bb.dim), np.float32))


def test_person_crop_places_the_box_where_expected():
    """Hand-computed: a 10x10 box grown to 3:4 (10 x 13.33) and padded 1.25 (12.5 x 16.67 px) around
    its centre (25, 15). Crop row r samples frame y = 6.667 + (r + 0.5) * 16.667 / 64 and column c
    samples x = 18.75 + (c + 0.5) * 12.5 / 48 (bilinear between pixel centres); the square is
    frame rows/columns 10..19 / 20..29."""
    from pivad.extract.backbones.preprocess import crop_boxes

    frame = torch.zeros(1, 3, 40, 56)
    frame[:, :, 10:20, 20:30] = 1.0
    crops, centre, size = crop_boxes(frame, torch.tensor([[20.0, 10.0, 30.0, 20.0]]), torch.tensor([0]), (64, 48))
    torch.testing.assert_close(centre, torch.tensor([[25.0, 15.0]]))
    torch.testing.assert_close(size, torch.tensor([[12.5, 12.5 / 0.75]]))
    c = crops[0, 0]  # (64, 48)
    assert (c[15:49, 7:41] == 1).all()  # rows 15..48 sample y in 10.70..19.30, columns 7..40 x in 20.70..29.28
    assert (c[:11] == 0).all() and (c[53:] == 0).all() and (c[:, :3] == 0).all() and (c[:, 45:] == 0).all()
    torch.testing.assert_close(c[11, 20], torch.tensor(9.6615 - 9.5), atol=1e-3, rtol=0)  # row 11: y = 9.66


@pytest.mark.parametrize("modality,cls_name,kwargs", [
    ("text", "CLIPImageProcessorPil", dict(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})),
    ("depth", "DPTImageProcessorPil", dict(size={"height": 56, "width": 56}, keep_aspect_ratio=True, ensure_multiple_of=14,
                                           resample=3, image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])),
    ("panoptic", "SamImageProcessorPil", dict(size={"longest_edge": 64}, pad_size={"height": 64, "width": 64})),
])
def test_preprocessing_matches_the_models_pil_processors(tiny, modality, cls_name, kwargs):
    import transformers
    from PIL import Image

    img = smooth_snippets(1, h=90, w=120)[0, 0]
    ours = tiny[modality].preprocess(torch.from_numpy(img[None]))
    ours = ours[0] if isinstance(ours, tuple) else ours
    proc = getattr(transformers, cls_name)(**kwargs)
    ref = torch.as_tensor(np.asarray(proc(Image.fromarray(img), return_tensors="np")["pixel_values"]))
    assert ours.shape == ref.shape
    # PIL rounds to 8 bits after resizing; torch does not: differences of about one grey level
    assert (ours - ref).abs().mean() < 0.01 and (ours - ref).abs().max() < 0.05


@pytest.mark.parametrize("modality,proc", [
    ("depth", {"size": {"height": 42, "width": 42}, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.25, 0.25]}),
    ("panoptic", {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.25, 0.25]}),
    ("text", {"size": {"shortest_edge": 40}, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.25, 0.25]}),
])
def test_local_weights_folder_loads_offline_with_its_preprocessor_config(tiny, snippets, tmp_path, modality, proc):
    """A saved model folder (as downloaded from the hub) loads without network; the manifest gets the
    sha256 of its weight file and preprocessing follows its preprocessor_config.json."""
    import hashlib
    import json

    tiny_module = __import__(f"pivad.extract.backbones.{modality}", fromlist=["tiny_model"])
    tiny_module.tiny_model().save_pretrained(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(proc))
    bb = build_backbone(modality, str(tmp_path))
    assert bb.mean == (0.5, 0.5, 0.5) and bb.std == (0.25, 0.25, 0.25)
    weights = bb.describe()["weights"]
    assert weights["source"] == "local" and weights["path"] == str(tmp_path.resolve())
    digest = hashlib.sha256((tmp_path / "model.safetensors").read_bytes()).hexdigest()
    assert weights["sha256"] == {"model.safetensors": digest}
    if modality == "depth":
        assert bb.size == 42
    if modality == "text":
        assert (bb.size, bb.crop) == (40, 32)
    # the weights were loaded, not re-initialised: with the tiny model's preprocessing, the same features
    ref = tiny[modality]
    bb.mean, bb.std = ref.mean, ref.std
    if modality in ("depth", "text"):
        bb.size = ref.size
    np.testing.assert_allclose(bb.encode(snippets), ref.encode(snippets), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- ViFi-CLIP checkpoint mapping


class QuickGELU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class RefBlock(nn.Module):
    """An OpenAI-CLIP residual attention block (sequence-first), written here as the reference."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads)
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(OrderedDict([("c_fc", nn.Linear(width, 4 * width)), ("gelu", QuickGELU()),
                                              ("c_proj", nn.Linear(4 * width, width))]))
        self.ln_2 = nn.LayerNorm(width)

    def forward(self, x):  # (L, B, w)
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class RefVisual(nn.Module):
    """OpenAI CLIP's VisionTransformer layout (the names ViFi-CLIP's ``image_encoder`` uses)."""

    def __init__(self, image: int = 32, patch: int = 16, width: int = 128, layers: int = 2, out: int = 16):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, patch, patch, bias=False)
        self.class_embedding = nn.Parameter(torch.randn(width))
        self.positional_embedding = nn.Parameter(torch.randn((image // patch) ** 2 + 1, width))
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = nn.Module()
        self.transformer.resblocks = nn.Sequential(*[RefBlock(width, width // 64) for _ in range(layers)])
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(torch.randn(width, out))

    def forward(self, x):  # (B, 3, H, W) -> (B, out)
        x = self.conv1(x).flatten(2).transpose(1, 2)  # (B, grid^2, w)
        cls = self.class_embedding.expand(x.shape[0], 1, -1)
        x = self.ln_pre(torch.cat([cls, x], 1) + self.positional_embedding)
        x = self.transformer.resblocks(x.transpose(0, 1)).transpose(0, 1)
        return self.ln_post(x[:, 0]) @ self.proj


class TrainingConfig:  # stands in for the yacs config ViFi-CLIP pickles into its checkpoints
    def __init__(self):
        self.arch = "ViT-B/16"


def test_vifi_clip_checkpoint_maps_onto_transformers_clip(tmp_path, snippets):
    torch.manual_seed(1)
    ref = RefVisual().eval()
    with torch.no_grad():
        for name, p in ref.named_parameters():
            p.add_(torch.randn_like(p) * 0.05) if name.endswith("weight") and "ln" in name else p.copy_(torch.randn_like(p) * 0.05)
    sd = {f"module.image_encoder.{k}": v for k, v in ref.state_dict().items()}
    sd["module.logit_scale"] = torch.tensor(4.6)
    sd["module.prompt_learner.complete_text_embeddings"] = torch.zeros(3, 77, 8)
    path = tmp_path / "vifi_clip_k400.pth"
    torch.save({"model": sd, "optimizer": {}, "epoch": 9, "config": TrainingConfig()}, path)

    bb = build_backbone("text", str(path))
    assert bb.family == "ViFi-CLIP" and bb.dim == 16 and bb.crop == 32
    assert bb.mean == (0.485, 0.456, 0.406)  # ViFi-CLIP normalises with ImageNet statistics
    frames = torch.from_numpy(snippets[:, list(bb.frame_indices)].reshape(-1, *snippets.shape[2:]))
    with torch.inference_mode():
        emb = ref(bb.preprocess(frames)).reshape(3, len(bb.frame_indices), -1).mean(1)
    expected = torch.nn.functional.normalize(emb, dim=-1).numpy()
    np.testing.assert_allclose(bb.encode(snippets), expected, rtol=1e-4, atol=1e-5)
    assert bb.describe()["weights"]["sha256"][path.name]


class Payload:
    """An object whose unpickling would run a command (what a malicious checkpoint could hold)."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_checkpoint_reader_runs_no_code(tmp_path):
    marker = tmp_path / "ran"
    ref = RefVisual()
    sd = {f"module.image_encoder.{k}": v for k, v in ref.state_dict().items()}
    path = tmp_path / "evil.pth"
    torch.save({"model": sd, "config": Payload(str(marker))}, path)
    bb = build_backbone("text", str(path))
    assert bb.dim == 16 and not marker.exists()


def test_text_checkpoint_without_an_image_tower_is_a_clear_error(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"model": {"module.head.weight": torch.zeros(2, 2)}}, path)
    with pytest.raises(PivadError, match="no CLIP image tower"):
        build_backbone("text", str(path))
    bad = tmp_path / "broken.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(PivadError, match="broken.pth: cannot read checkpoint"):
        build_backbone("text", str(bad))


# ---------------------------------------------------------------- flow


def test_flow_descriptor_hand_cases():
    h, w = 8, 8
    right = np.zeros((h, w, 2), np.float32)
    right[..., 0] = 1.0  # 1 px/frame along +x: direction bin 0 in every cell, mean magnitude 1
    d = flow_descriptor(right, grid=2, bins=4).reshape(4, 4)
    np.testing.assert_allclose(d, [[1, 0, 0, 0]] * 4)
    down = np.zeros((h, w, 2), np.float32)
    down[:4, :4, 1] = 2.0  # only the top-left cell moves, 2 px/frame along +y (angle pi/2: bin 1 of 4)
    d = flow_descriptor(down, grid=2, bins=4).reshape(4, 4)
    np.testing.assert_allclose(d, [[0, 2, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    half = np.zeros((h, w, 2), np.float32)
    half[:2, :4, 0] = -3.0  # half of the top-left cell moves along -x (bin 2): cell mean 1.5
    np.testing.assert_allclose(flow_descriptor(half, grid=2, bins=4)[:4], [0, 0, 1.5, 0])
    np.testing.assert_array_equal(flow_descriptor(np.zeros((h, w, 2), np.float32)), np.zeros(128, np.float32))


def test_dis_flow_sees_a_shift_and_pairs_are_consecutive():
    bb = build_backbone("flow", "dis", frames=4, size=64)
    assert [tuple(p) for p in bb.pair_starts()] == [(1, 2), (5, 6), (9, 10), (13, 14)]
    clip = smooth_snippets(1, h=48, w=64)  # the pattern moves 1.5 px/frame: +x in red, -y in green
    still = np.repeat(clip[:, :1], SNIPPET, axis=1)
    moving = bb.encode(clip)
    assert moving.shape == (1, 128) and moving.sum() > 0
    np.testing.assert_array_equal(bb.encode(still), np.zeros((1, 128), np.float32))


def test_raft_needs_torchvision():
    if torchvision_available():
        bb = build_backbone("flow", "tiny-random", frames=1, size=64)
        assert bb.encode(smooth_snippets(1, h=48, w=64)).shape == (1, 128)
    else:
        with pytest.raises(PivadError, match="needs torchvision"):
            build_backbone("flow", "raft_small")


# ---------------------------------------------------------------- devices and errors


def test_cuda_request_falls_back_to_cpu_with_a_message(capsys, monkeypatch):
    if torch.cuda.is_available():
        assert resolve_device("cuda").type == "cuda"
        return
    monkeypatch.setattr(base_mod, "_warned_cuda", False)
    bb = build_backbone("text", "tiny-random", device="cuda")
    assert bb.device.type == "cpu"
    assert "CUDA is not available; running on CPU" in capsys.readouterr().err
    assert bb.encode(smooth_snippets(1)).shape == (1, bb.dim)


def test_bf16_autocast_is_close_to_fp32_and_fp16_needs_cuda(snippets):
    fp32 = build_backbone("text", "tiny-random", pooling="mean").encode(snippets)
    bf16 = build_backbone("text", "tiny-random", pooling="mean", precision="bf16")
    assert bf16.precision == "bf16"
    out = bf16.encode(snippets)
    assert out.dtype == np.float32 and not np.array_equal(out, fp32)
    np.testing.assert_allclose(out, fp32, atol=0.05 * np.abs(fp32).max())
    if not torch.cuda.is_available():
        with pytest.raises(PivadError, match="fp16 needs a CUDA device"):
            build_backbone("text", "tiny-random", precision="fp16")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu(snippets):
    for m in TINY_MODEL_BACKBONES:
        cpu = build_backbone(m, "tiny-random").encode(snippets)
        gpu = build_backbone(m, "tiny-random", device="cuda").encode(snippets)
        np.testing.assert_allclose(gpu, cpu, rtol=1e-3, atol=1e-3)


def test_unknown_modality_and_bad_inputs(tmp_path):
    with pytest.raises(PivadError, match="unknown modality"):
        build_backbone("audio")
    assert set(MODALITIES) == {"pose", "depth", "panoptic", "flow", "text"}
    with pytest.raises(PivadError, match=f"{tmp_path}: cannot load Depth Anything weights"):
        build_backbone("depth", str(tmp_path))  # an empty local folder
    bb = build_backbone("flow", "dis")
    with pytest.raises(ValueError, match="uint8 snippets"):
        bb.encode(np.zeros((2, 8, 16, 16, 3), np.uint8))
