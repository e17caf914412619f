"""Training and evaluation memory (issue 11): CMI attention through SDPA, activation checkpointing,
bf16 autocast. Each test compares two ways of computing the same thing, or checks the bf16 run."""

from __future__ import annotations

import json

import pytest
import torch
from einops import rearrange

from pivad.config import Config, InductorConfig, LossConfig, ModalityConfig, URDMUConfig
from pivad.engine.checkpoint import load_checkpoint
from pivad.engine.precision import autocast, to_float
from pivad.engine.trainer import plan_phases, step_loss, train
from pivad.errors import ConfigError
from pivad.models import PIVAD, URDMU
from pivad.models.checkpointing import set_activation_checkpointing
from pivad.models.cmi import SelfAttention
from test_resume import tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")

MODS = [ModalityConfig("pose", 5), ModalityConfig("depth", 3)]


def explicit_attention(att: SelfAttention, x: torch.Tensor) -> torch.Tensor:
    """The reference: softmax(q kᵀ · scale) v with the T x T probabilities built, then the projection."""
    q, k, v = rearrange(att.qkv(x), "b t (three h e) -> three b h t e", three=3, h=att.heads)  # (B, H, T, E)
    p = torch.softmax(q @ k.transpose(-2, -1) * att.scale, dim=-1)  # (B, H, T, T)
    return att.proj(rearrange(p @ v, "b h t e -> b t (h e)"))  # (B, T, D)


@pytest.mark.parametrize("T", [1, 7, 300])
def test_cmi_attention_through_sdpa_equals_the_explicit_product(T):
    torch.manual_seed(0)
    att = SelfAttention(32, heads=4, dropout=0.1).eval()
    x = torch.randn(3, T, 32, requires_grad=True)
    got, want = att(x), explicit_attention(att, x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # the gradient too (SDPA without dropout is also the train path when cmi_dropout = 0)
    g_got = torch.autograd.grad(got.square().sum(), x)[0]
    g_want = torch.autograd.grad(want.square().sum(), x)[0]
    torch.testing.assert_close(g_got, g_want, rtol=1e-4, atol=1e-5)


def test_cmi_attention_with_dropout_in_training_keeps_its_random_stream():
    torch.manual_seed(0)
    att = SelfAttention(16, heads=2, dropout=0.5).train()
    x = torch.randn(2, 9, 16)
    torch.manual_seed(5)
    got = att(x)
    torch.manual_seed(5)
    q, k, v = rearrange(att.qkv(x), "b t (three h e) -> three b h t e", three=3, h=2)
    p = att.drop(torch.softmax(q @ k.transpose(-2, -1) * att.scale, dim=-1))  # (B, H, T, T), dropped
    want = att.drop(att.proj(rearrange(p @ v, "b h t e -> b t (h e)")))
    assert torch.equal(got, want)


def tiny_pivad(depth: int = 2) -> PIVAD:
    mcfg = URDMUConfig(input_dim=16, hidden_dim=8, depth=2, heads=2, dim_head=4, mlp_dim=8, a_nums=4, n_nums=4,
                       head_dim=8, dropout=0.5)
    ind = InductorConfig(position="both", latent_dim=8, cmi_depth=depth, cmi_heads=2, cmi_dropout=0.3)
    model = PIVAD(mcfg, ind, LossConfig(), MODS)
    model.set_teacher(URDMU(mcfg))
    return model


def _batch(B: int = 4, T: int = 12):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(B, T, 16, generator=g)
    mods = {m.name: torch.randn(B, T, m.dim, generator=g) for m in MODS}
    labels = torch.cat([torch.zeros(B // 2), torch.ones(B // 2)])
    return x, labels, mods


def _loss_and_grads(model, phase: str, checkpointing: bool, precision: str = "fp32"):
    cfg = Config()
    cfg.train.precision = precision
    set_activation_checkpointing(model, checkpointing)
    model.train().zero_grad(set_to_none=True)
    x, labels, mods = _batch()
    torch.manual_seed(7)  # dropout masks and the reparameterisation noise
    loss, parts = step_loss(model, phase, x, labels, mods, cfg)
    loss.backward()
    after = torch.rand(3)  # the RNG stream after the step (checkpointing must not move it)
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), grads, after


@pytest.mark.parametrize("phase", ["teacher", "first", "second"])
def test_checkpointing_gives_the_same_loss_and_gradients_in_float32(phase):
    torch.manual_seed(0)
    model = URDMU(tiny_pivad().student.cfg) if phase == "teacher" else tiny_pivad()
    assert set_activation_checkpointing(model, True) == (1 if phase == "teacher" else 7)  # PIVAD (L_align), student, teacher (no_grad: no-op), 2 PIs (PMG), 2 CMIs
    loss0, grads0, rng0 = _loss_and_grads(model, phase, checkpointing=False)
    loss1, grads1, rng1 = _loss_and_grads(model, phase, checkpointing=True)
    torch.testing.assert_close(loss1, loss0, rtol=1e-5, atol=1e-5)
    assert torch.equal(rng0, rng1)
    assert grads0.keys() == grads1.keys() and len(grads0) > 0
    for name in grads0:
        torch.testing.assert_close(grads1[name], grads0[name], rtol=1e-5, atol=1e-5, msg=name)


def test_checkpointing_recomputes_the_blocks_in_backward(monkeypatch):
    """The blocks run twice per step with checkpointing (forward, recompute), once without."""
    from pivad.models import cmi

    calls = []
    original = cmi.TransformerBlock.forward
    monkeypatch.setattr(cmi.TransformerBlock, "forward", lambda self, x: calls.append(1) or original(self, x))
    torch.manual_seed(0)
    model = tiny_pivad(depth=2)
    for checkpointing, expected in ((False, 4), (True, 8)):  # 2 PIs x 2 blocks
        calls.clear()
        _loss_and_grads(model, "second", checkpointing)
        assert len(calls) == expected


def _weights(run):
    return load_checkpoint(run / "last.pt")["model"]


def test_training_with_and_without_checkpointing_ends_at_the_same_weights(tmp_path, tiny_dataset):
    """Teacher, step 1 and step 2 (10 steps, dropout on) with and without checkpointing."""
    runs = {}
    for flag in (False, True):
        cfg = tiny_config(tiny_dataset, train={"activation_checkpointing": flag})
        cfg.model.dropout = 0.3
        train(cfg, tmp_path / str(flag), progress=False)
        runs[flag] = _weights(tmp_path / str(flag))
    assert runs[False].keys() == runs[True].keys()
    for k in runs[False]:
        torch.testing.assert_close(runs[True][k], runs[False][k], rtol=1e-5, atol=1e-5, msg=k)


def test_fp32_precision_is_plain_float32():
    """``fp32`` enters no autocast region: the step's loss equals the plain forward + loss bit for bit."""
    from pivad.losses.inductor import pivad_loss

    assert not torch.is_autocast_enabled("cpu")
    with autocast("cpu", "fp32"):
        assert not torch.is_autocast_enabled("cpu")
    torch.manual_seed(0)
    model = tiny_pivad().train()
    x, labels, mods = _batch()
    torch.manual_seed(3)
    got, _ = step_loss(model, "second", x, labels, mods, Config())
    torch.manual_seed(3)
    want, _ = pivad_loss(model(x, modalities=mods, phase="second"), labels, model.loss_cfg, "second")
    assert torch.equal(got, want)


@pytest.mark.parametrize("phase", ["teacher", "second"])
def test_bf16_step_runs_in_bfloat16_with_float32_losses(phase):
    torch.manual_seed(0)
    model = URDMU(tiny_pivad().student.cfg) if phase == "teacher" else tiny_pivad()
    seen = []
    hook = model.register_forward_hook(lambda m, i, o: seen.append(o))
    loss_bf, grads_bf, _ = _loss_and_grads(model, phase, checkpointing=True, precision="bf16")
    hook.remove()
    scores = seen[0].scores if phase == "teacher" else seen[0].student.scores
    assert scores.dtype == torch.bfloat16  # the forward pass ran under autocast
    assert loss_bf.dtype == torch.float32 and torch.isfinite(loss_bf)
    assert all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads_bf.values())
    if phase == "second":
        from pivad.losses.inductor import inductor_terms

        aux = inductor_terms(seen[0], model.loss_cfg)
        assert all(v.dtype == torch.float32 for v in aux.values())  # PMG, align, distill in float32
    loss_fp, _, _ = _loss_and_grads(model, phase, checkpointing=False)
    torch.testing.assert_close(loss_bf, loss_fp, rtol=0.05, atol=0.05)  # the same loss to bf16 precision


def test_bf16_training_run_has_finite_float32_losses(tmp_path, tiny_dataset):
    cfg = tiny_config(tiny_dataset, train={"precision": "bf16", "activation_checkpointing": True})
    result = train(cfg, tmp_path, progress=False)
    assert result.global_step == 10
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == 10 and all(v == v and abs(v) < float("inf") for v in losses)
    assert all(w.dtype == torch.float32 for w in _weights(tmp_path).values() if w.is_floating_point())


def test_unknown_precision_is_refused(tiny_dataset):
    with pytest.raises(ConfigError, match="train.precision"):
        tiny_config(tiny_dataset, train={"precision": "fp16"})


def test_to_float_leaves_float32_tensors_as_they_are():
    a = torch.ones(2)
    out = to_float({"a": a, "b": torch.ones(2, dtype=torch.bfloat16), "n": None, "i": torch.ones(2, dtype=torch.long)})
    assert out["a"] is a and out["b"].dtype == torch.float32 and out["n"] is None and out["i"].dtype == torch.long


def test_long_video_scores_equal_the_explicit_attention_and_crop_by_crop(monkeypatch):
    """Eval of a many-crop long video in one pass (SDPA, no T x T) equals the explicit product and the
    crop-by-crop mean."""
    from pivad.models import cmi

    torch.manual_seed(0)
    model = tiny_pivad().eval()
    x = torch.randn(1, 4, 700, 16)  # (b, n, T, D): T above the distance kernel's banded threshold
    with torch.inference_mode():
        one_pass = model(x)  # (1, T)
        by_crop = torch.stack([model(x[:, c : c + 1]) for c in range(4)]).mean(0)
        monkeypatch.setattr(cmi.SelfAttention, "forward", lambda self, h: explicit_attention(self, h))
        explicit = model(x)
    torch.testing.assert_close(one_pass, explicit, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(one_pass, by_crop, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape", [(2, 5, 60, 16), (3, 60, 16)])
def test_eval_in_crop_chunks_equals_one_pass(shape):
    """Above ``max_snippets`` crop-snippets the RGB-only model scores crops in chunks: same scores."""
    torch.manual_seed(0)
    infer = tiny_pivad().student_only().eval()
    x = torch.randn(*shape)
    with torch.inference_mode():
        infer.max_snippets = 0
        one_pass = infer(x)
        for budget in (60, 150, 2 * 60 * 2):  # 1 crop, 2 crops (1 per video when b = 2), 2 crops per pass
            infer.max_snippets = budget
            torch.testing.assert_close(infer(x), one_pass, rtol=1e-5, atol=1e-6)
    assert one_pass.shape == (shape[0], shape[-2])


# ------------------------------------------------------------------------------------ micro-batches


def _deterministic_pivad() -> PIVAD:
    """tiny_pivad with nothing random in a train step: no dropout, z = mu."""
    torch.manual_seed(0)
    mcfg = URDMUConfig(input_dim=16, hidden_dim=8, depth=2, heads=2, dim_head=4, mlp_dim=8, a_nums=4, n_nums=4,
                       head_dim=8, dropout=0.0)
    ind = InductorConfig(position="both", latent_dim=8, cmi_depth=2, cmi_heads=2, cmi_dropout=0.0)
    model = PIVAD(mcfg, ind, LossConfig(), MODS)
    model.set_teacher(URDMU(mcfg))
    model.student.sample = False
    return model


@pytest.mark.parametrize("phase", ["teacher", "first", "second"])
def test_micro_batches_give_the_whole_batch_step(phase):
    """8 + 8 crops in one pass, in pairs of 2 + 2 and in uneven micro-batches (3 + 3, 3 + 3, 2 + 2):
    the same loss, logged parts and gradients (every loss term is a mean over crops or pairs)."""
    from pivad.engine.trainer import backward_step

    model = _deterministic_pivad()
    model = model.student if phase == "teacher" else model
    model.train()
    x, labels, mods = _batch(B=16, T=12)
    results = {}
    for size in (0, 4, 6):
        cfg = Config()
        cfg.train.micro_batch = size
        model.zero_grad(set_to_none=True)
        loss, parts = backward_step(model, phase, x, labels, mods, cfg)
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results[size] = loss, parts, grads
    loss0, parts0, grads0 = results[0]
    assert len(grads0) > 0 and float(loss0) > 0
    for size in (4, 6):
        loss, parts, grads = results[size]
        torch.testing.assert_close(loss, loss0, rtol=1e-5, atol=1e-6)
        assert parts.keys() == parts0.keys()
        for k in parts0:
            torch.testing.assert_close(torch.as_tensor(parts[k]), torch.as_tensor(parts0[k]), rtol=1e-5, atol=1e-6,
                                       msg=k)
        assert grads.keys() == grads0.keys()
        for n in grads0:
            torch.testing.assert_close(grads[n], grads0[n], rtol=1e-4, atol=1e-6, msg=n)


def test_micro_batches_keep_normal_abnormal_pairs_together():
    from pivad.engine.trainer import micro_batches

    x = torch.arange(10.0)[:, None]  # crops 0-4 normal, 5-9 abnormal
    labels = torch.cat([torch.zeros(5), torch.ones(5)])
    chunks = micro_batches(x, labels, {"pose": x * 10}, 4)
    assert [c[0][:, 0].tolist() for c in chunks] == [[0, 1, 5, 6], [2, 3, 7, 8], [4, 9]]
    assert [c[1].tolist() for c in chunks] == [[0, 0, 1, 1], [0, 0, 1, 1], [0, 1]]
    assert [c[2]["pose"][:, 0].tolist() for c in chunks][2] == [40, 90]
    assert [c[3] for c in chunks] == [0.4, 0.4, 0.2]
    assert micro_batches(x, labels, {}, 0)[0][3] == 1.0 and len(micro_batches(x, labels, {}, 10)) == 1


@pytest.mark.parametrize("size", [-2, 3])
def test_micro_batch_must_be_even(size):
    cfg = Config()
    cfg.train.micro_batch = size
    with pytest.raises(ConfigError, match="train.micro_batch"):
        plan_phases(cfg)


def test_training_in_micro_batches_runs_and_resumes_exactly(tmp_path, tiny_dataset):
    """All three phases in micro-batches of 1 + 1; stopped after step 7 and resumed, the same weights."""
    cfg = tiny_config(tiny_dataset, train={"micro_batch": 2})
    whole = train(cfg, tmp_path / "whole", progress=False)
    assert not whole.interrupted
    first = train(cfg, tmp_path / "resumed", progress=False, stop_after=7)
    assert first.interrupted
    train(cfg, tmp_path / "resumed", resume=True, progress=False)
    a, b = _weights(tmp_path / "whole"), _weights(tmp_path / "resumed")
    for k in a:
        assert torch.equal(a[k], b[k]), k
