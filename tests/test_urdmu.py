"""UR-DMU: parity with the official code (golden file), shapes, hooks, checkpoints, gradients."""

from __future__ import annotations

import io
import math

import pytest
import torch

from pivad.config import URDMUConfig
from pivad.errors import CheckpointError
from pivad.losses.mil import mil_loss
from pivad.models import URDMU, URDMUOutput
from pivad.models.urdmu import official_to_pivad, pivad_to_official
from pivad.models.distance_kernel import BLOCK, apply_distance_kernel, column_scale, distance_kernel

TINY = URDMUConfig(input_dim=24, hidden_dim=16, heads=2, dim_head=8, mlp_dim=16, a_nums=20, n_nums=20, head_dim=8)

# golden train_outputs name -> URDMUOutput field
OUT_NAMES = {
    "frame": "scores",
    "triplet_margin": "triplet",
    "kl_loss": "kl",
    "distance": "distance",
    "A_att": "A_att",
    "N_att": "N_att",
    "A_Natt": "A_Natt",
    "N_Aatt": "N_Aatt",
}



pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see conftest

@pytest.fixture(scope="module")
def golden(shared_dir):
    return torch.load(shared_dir / "golden" / "public" / "urdmu.pt", weights_only=True)


@pytest.fixture(scope="module")
def official(golden):
    """The golden weights loaded through the official-checkpoint path, in eval mode."""
    return URDMU.from_official_state_dict(golden["state_dict"]).eval()


def _tiny(seed: int = 0, **kw) -> URDMU:
    torch.manual_seed(seed)
    return URDMU(URDMUConfig(**{**TINY.__dict__, **kw}))


# ------------------------------------------------------------------------------------------- golden


@pytest.mark.golden
def test_eval_scores_match_official(golden, official):
    with torch.no_grad():
        scores = official(golden["eval_input"])  # (2, 64) from [2, 10, 64, 1024]
    assert scores.shape == golden["eval_scores"].shape
    torch.testing.assert_close(scores, golden["eval_scores"], atol=1e-5, rtol=0)
    torch.testing.assert_close(scores.double(), golden["eval_scores_float64"], atol=1e-5, rtol=0)


@pytest.mark.golden
def test_intermediate_features_match_official(golden, official):
    model = official
    x = golden["eval_input"].flatten(0, 1)  # (20, 64, 1024)
    with torch.no_grad():
        feats = model.features(x)
        trans = model.transformer(model.embed_features(x), drop=False)
    torch.testing.assert_close(feats["early"], golden["feat_embed"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(trans, golden["feat_trans"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(feats["late"], golden["feat_late"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(feats["late"][..., :512], trans)


@pytest.mark.golden
def test_train_outputs_and_losses_match_official(golden):
    # the golden README's determinism patches: dropout p=0, reparameterisation noise 0
    model = URDMU.from_official_state_dict(golden["state_dict"], cfg=URDMUConfig(dropout=0.0)).train()
    out = model(golden["train_input"], sample=False)
    assert isinstance(out, URDMUOutput)
    for name, ref in golden["train_outputs"].items():
        torch.testing.assert_close(getattr(out, OUT_NAMES[name]), ref, rtol=1e-5, atol=0, msg=name)
    total, parts = mil_loss(out, golden["train_labels"])
    for name, ref in golden["train_losses"].items():
        assert parts[name].item() == pytest.approx(ref, rel=1e-5), name
    assert total.item() == pytest.approx(golden["train_losses"]["total_loss"], rel=1e-5)


@pytest.mark.golden
def test_seeded_init_and_size_match_official(official):
    torch.manual_seed(0)  # the golden file's model seed; construction order mirrors the official WSAD
    own = URDMU().state_dict()
    ref = official.state_dict()
    assert own.keys() == ref.keys()
    for k in own:
        assert torch.equal(own[k], ref[k]), k
    assert sum(v.numel() for v in own.values()) == 6_492_929


# -------------------------------------------------------------------------------------- checkpoints


def test_checkpoint_round_trip():
    model = _tiny(1).eval()
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    other = _tiny(2).eval()
    other.load_state_dict_checked(torch.load(buf, weights_only=True))
    x = torch.rand(2, 3, 9, 24)
    with torch.no_grad():
        assert torch.equal(model(x), other(x))


def _official_names(model: URDMU) -> dict[str, torch.Tensor]:
    return pivad_to_official(model.state_dict())


@pytest.mark.golden
def test_official_key_names_round_trip(golden):
    sd = golden["state_dict"]
    assert pivad_to_official(official_to_pivad(sd)).keys() == sd.keys()


def test_official_state_dict_infers_config_and_loads():
    model = _tiny(3, heads=4, dim_head=4, mlp_dim=12)  # the official head count (4) cannot be read from weights
    sd = _official_names(model)
    assert len(sd) == 34
    loaded = URDMU.from_official_state_dict({"module." + k: v for k, v in sd.items()})  # DataParallel prefix too
    assert loaded.cfg == model.cfg
    x = torch.rand(1, 11, 24)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), loaded.eval()(x))


@pytest.mark.parametrize("edit", ["missing", "unexpected", "shape"])
def test_official_state_dict_errors_are_one_line(edit):
    sd = _official_names(_tiny(4))
    if edit == "missing":
        del sd["encoder_var.0.bias"]
    elif edit == "unexpected":
        sd["selfatt.extra.weight"] = torch.zeros(1)
    else:
        sd["cls_head.mlp.2.weight"] = torch.zeros(2, 8)
    with pytest.raises(CheckpointError) as err:
        URDMU.from_official_state_dict(sd, cfg=TINY, source="/x/ucf.pkl")
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("/x/ucf.pkl: ")
    assert {"missing": "encoder_var.bias", "unexpected": "selfatt.extra.weight", "shape": "head.fc2.weight"}[edit] in msg


# ------------------------------------------------------------------------------------- shapes / NaN


@pytest.mark.parametrize("T", [1, 17, 200])
@pytest.mark.parametrize("n", [1, 5, 10])
def test_eval_shapes_any_length(T, n):
    model = _tiny().eval()
    with torch.no_grad():
        s4 = model(torch.rand(2, n, T, 24))
        s3 = model(torch.rand(3, T, 24))
    assert s4.shape == (2, T) and s3.shape == (3, T)
    assert torch.isfinite(s4).all() and torch.isfinite(s3).all()


def test_crop_mean_equals_per_crop_loop():
    model = _tiny().eval()
    x = torch.rand(2, 5, 13, 24)
    with torch.no_grad():
        loop = torch.stack([torch.stack([model(x[i, c : c + 1])[0] for c in range(5)]).mean(0) for i in range(2)])
        torch.testing.assert_close(model(x), loop)


@pytest.mark.parametrize("T", [1, 17])
def test_train_mode_finite_any_length(T):
    model = _tiny().train()
    out = model(torch.rand(4, T, 24))
    total, parts = mil_loss(out, torch.tensor([0, 0, 1, 1]))
    assert out.scores.shape == (4, T) and out.A_att.shape == (2, T)
    assert all(torch.isfinite(v) for v in parts.values())


def test_bad_shapes_raise():
    model = _tiny()
    with pytest.raises(ValueError, match="B even"):
        model.train()(torch.rand(3, 8, 24))
    with pytest.raises(ValueError, match="B even"):
        model.train()(torch.rand(2, 2, 8, 24))
    with pytest.raises(ValueError, match=r"\[b,n,T,D\]"):
        model.eval()(torch.rand(8, 24))


# ----------------------------------------------------------------------------- training behaviour


def test_gradients_reach_every_parameter():
    model = _tiny().train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, weight_decay=5e-5)
    total, _ = mil_loss(model(torch.rand(4, 32, 24)), torch.tensor([0, 0, 1, 1]))
    opt.zero_grad()
    total.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    opt.step()


def test_noise_switches():
    model = _tiny(dropout=0.0).train()
    x = torch.rand(4, 16, 24)
    a, b = model(x, sample=False), model(x, sample=False)
    assert torch.equal(a.scores, b.scores)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    c, d = model(x, generator=g1), model(x, generator=g2)
    assert torch.equal(c.scores, d.scores) and not torch.equal(a.scores, c.scores)
    # the noise only touches the normal half's latent; the abnormal half is unchanged
    assert torch.equal(a.scores[2:], c.scores[2:])
    model.sample = False
    assert torch.equal(model(x).scores, a.scores)


# ------------------------------------------------------------------------------------------- hooks


def test_hooks_see_and_replace_features():
    model = _tiny().eval()
    x = torch.rand(6, 10, 24)
    seen = {}

    def early(f):
        seen["early"] = f
        return f

    def late(f):
        seen["late"] = f
        return f

    with torch.no_grad():
        plain = model(x)
        hooked = model(x, early=early, late=late)
        feats = model.features(x)
        torch.testing.assert_close(hooked, plain, rtol=0, atol=1e-6)  # the hook-free path folds the head
        torch.testing.assert_close(seen["early"], feats["early"], rtol=0, atol=0)
        torch.testing.assert_close(seen["late"], feats["late"], rtol=0, atol=0)
        assert feats["early"].shape == (6, 10, 16) and feats["late"].shape == (6, 10, 32)
        # a late hook's output is what the head scores
        zero_late = model(x, late=torch.zeros_like)
        expected = torch.sigmoid(model.head.fc2(torch.relu(model.head.fc1.bias))).expand(6, 10)
        torch.testing.assert_close(zero_late, expected)
        assert not torch.allclose(model(x, early=lambda f: f + 1.0), plain)


def test_train_late_hook_gets_whole_batch_normal_first():
    model = _tiny(dropout=0.0).train()
    x = torch.rand(4, 12, 24)
    seen = []
    out = model(x, late=lambda f: seen.append(f) or f, sample=False)
    (late,) = seen
    assert late.shape == (4, 12, 32)
    # the first H columns are the transformer output of the whole batch in input order
    with torch.no_grad():
        trans = model.transformer(model.embed_features(x), drop=False)
    torch.testing.assert_close(late[..., :16], trans)
    # the normal half's augmentation is mu(N_aug) + mu(A_Naug) with z = mu, read as the official memory unit
    with torch.no_grad():
        def read(memory):
            return torch.sigmoid(trans[:2] @ memory.t() / 16**0.5) @ memory  # (2, T, H)

        expected = model.encoder_mu(read(model.memory_n.memory)) + model.encoder_mu(read(model.memory_a.memory))
        torch.testing.assert_close(late[:2, :, 16:], expected)
    torch.testing.assert_close(out.scores, model.head(late))


# -------------------------------------------------------------------------------- distance kernel


E32 = float(torch.exp(torch.tensor(1.0)))  # the official code's e (float32)


def _kernel64(T: int) -> torch.Tensor:
    """The official column-normalised kernel, in float64 from its definition."""
    i = torch.arange(T, dtype=torch.float64)
    k = torch.exp(-(i[None] - i[:, None]).abs() / E32)
    return k / k.sum(-1)  # column j divided by the sum of row j


def test_distance_kernel_hand_case():
    # T=2: K = [[1, r], [r, 1]], both rows sum to 1 + r, so A2 = K / (1 + r)
    r = math.exp(-1 / E32)
    expected = torch.tensor([[1, r], [r, 1]], dtype=torch.float64) / (1 + r)
    torch.testing.assert_close(distance_kernel(2, dtype=torch.float64), expected, rtol=1e-6, atol=0)
    # T=3: the middle row sums to 1 + 2r, so the middle column is divided by it, the others by 1 + r + r^2
    a2 = distance_kernel(3, dtype=torch.float64)
    assert a2[0, 1].item() == pytest.approx(r / (1 + 2 * r), rel=1e-6)
    assert a2[1, 0].item() == pytest.approx(r / (1 + r + r * r), rel=1e-6)
    # the quirk: columns sum to 1, rows do not
    assert a2[:, 0].sum().item() == pytest.approx(1.0, rel=1e-6)
    row0 = (1 + r * r) / (1 + r + r * r) + r / (1 + 2 * r)
    assert a2[0].sum().item() == pytest.approx(row0, rel=1e-6) and abs(row0 - 1) > 0.02


@pytest.mark.parametrize("T", [1, 5, BLOCK, BLOCK + 1, 3 * BLOCK + 7, 700])
def test_banded_kernel_equals_dense(T):
    t = torch.randn(2, T, 6, dtype=torch.float64)
    ref = _kernel64(T) @ t
    torch.testing.assert_close(apply_distance_kernel(t, "banded"), ref, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(apply_distance_kernel(t, "dense"), ref, rtol=1e-6, atol=1e-7)
    i = torch.arange(T, dtype=torch.float64)
    row_sums = torch.exp(-(i[None] - i[:, None]).abs() / E32).sum(-1)
    torch.testing.assert_close(column_scale(T, dtype=torch.float64), 1 / row_sums, rtol=1e-6, atol=0)


def test_model_banded_and_dense_agree():
    model = _tiny().eval()
    x = torch.rand(1, 300, 24)
    with torch.no_grad():
        outs = []
        for impl in ("dense", "banded"):
            for layer in model.layers:
                layer.attn.distance_impl = impl
            outs.append(model(x))
    torch.testing.assert_close(outs[0], outs[1], atol=1e-6, rtol=0)


# ------------------------------------------------------------------------------ folds, cache, bf16


def test_folded_weights_follow_parameter_updates():
    model, other = _tiny(5).eval(), _tiny(6).eval()
    x = torch.rand(2, 3, 20, 24)
    with torch.no_grad():
        before = model(x)  # builds and caches the folded weights
        model.load_state_dict(other.state_dict())
        torch.testing.assert_close(model(x), other(x), rtol=0, atol=0)
        model.layers[0].attn.to_out.weight.add_(0.1)  # in-place update: the cache must notice
        assert not torch.allclose(model(x), other(x))
    # a train step changes the weights in place too
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    mil_loss(model(torch.rand(2, 20, 24)), torch.tensor([0, 1]))[0].backward()
    opt.step()
    model.eval()
    with torch.no_grad():
        fresh = _tiny(0).eval()
        fresh.load_state_dict(model.state_dict())
        torch.testing.assert_close(model(x), fresh(x), rtol=0, atol=0)
        assert not torch.allclose(model(x), before)


def test_frozen_teacher_features_under_grad_mode():
    teacher = _tiny(7).eval().requires_grad_(False)
    x = torch.rand(2, 9, 24)
    with torch.no_grad():
        ref = teacher.features(x)
    feats = teacher.features(x)  # grad mode on, as inside a student's training step
    torch.testing.assert_close(feats["late"], ref["late"], rtol=0, atol=0)
    assert not feats["late"].requires_grad


def test_bfloat16_inference_switch():
    model = _tiny(8).eval()
    x = torch.rand(2, 5, 40, 24)
    with torch.no_grad():
        ref = model(x)
        low = model.to(torch.bfloat16)(x)
    assert low.dtype == torch.float32 and torch.isfinite(low).all()
    torch.testing.assert_close(low, ref, atol=2e-2, rtol=0)


def test_kernel_cached_in_inference_mode_works_in_training():
    # The distance-kernel cache is module-level: an entry first built inside inference_mode
    # (evaluation) must not poison a later training step at the same T.
    from pivad.models.distance_kernel import _CACHE

    _CACHE._store.clear()
    cfg = URDMUConfig(input_dim=8, hidden_dim=8, heads=2, dim_head=4, mlp_dim=8, a_nums=4, n_nums=4, head_dim=4)
    model = URDMU(cfg)
    x = torch.rand(2, 5, 8)
    model.eval()
    with torch.inference_mode():
        model(x)
    model.train()
    out = model(x)
    out.scores.sum().backward()
    assert model.embed.weight.grad is not None


def test_set_clean_removes_dropout_and_noise_from_training():
    """A clean student's train-mode pass draws nothing: two seeds give the same outputs (not so before)."""
    torch.manual_seed(0)
    model = URDMU(URDMUConfig(input_dim=16, hidden_dim=8, depth=2, heads=2, dim_head=4, mlp_dim=8, a_nums=4,
                              n_nums=4, head_dim=8, dropout=0.5)).train()
    x = torch.randn(4, 12, 16)

    def two_seeds():
        torch.manual_seed(1)
        a = model(x).scores
        torch.manual_seed(2)
        return a, model(x).scores

    a, b = two_seeds()
    assert not torch.allclose(a, b)
    assert model.set_clean() is model and model.sample is False
    a, b = two_seeds()
    assert torch.equal(a, b)
