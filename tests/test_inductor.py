"""PMG, CMI and PI modules on tiny widths: shapes, structure, the activation decomposition."""

from __future__ import annotations

import pytest
import torch

from pivad.models.cmi import CMI
from pivad.models.inductor import PI
from pivad.models.pmg import PMG

WIDTHS = {"pose": 5, "depth": 3, "text": 7}


@pytest.mark.parametrize("T", [1, 17, 200])
def test_pmg_shapes(T):
    pmg = PMG(16, 8, WIDTHS)
    out = pmg(torch.randn(2, T, 16))
    assert list(out) == list(WIDTHS)
    for name, d in WIDTHS.items():
        assert out[name].shape == (2, T, d)


def test_pmg_structure_and_temporal_receptive_field():
    pmg = PMG(16, 8, WIDTHS)
    assert pmg.encoder.conv.kernel_size == (3,) and pmg.encoder.conv.out_channels == 8
    for name, d in WIDTHS.items():
        dec = pmg.decoders[name]
        assert dec.view.in_features == dec.view.out_features == 8
        assert dec.decoder.conv.kernel_size == (3,) and dec.decoder.conv.out_channels == d
    # encoder k=3 and decoder k=3: snippet t sees t-2..t+2 and nothing further
    x = torch.randn(1, 11, 16)
    y = x.clone()
    y[0, 0] += 10.0
    a, b = pmg(x)["pose"], pmg(y)["pose"]
    assert not torch.allclose(a[0, 2], b[0, 2])
    assert torch.allclose(a[0, 3:], b[0, 3:])


@pytest.mark.parametrize("T", [1, 17])
def test_cmi_shapes_and_f_star_is_added_before_every_block(T):
    torch.manual_seed(0)
    cmi = CMI(16, WIDTHS, depth=3, heads=4, mlp_ratio=2.0, dropout=0.0).eval()
    f = torch.randn(2, T, 16)
    mods = {n: torch.randn(2, T, d) for n, d in WIDTHS.items()}
    out, aligned = cmi(f, mods)
    assert out.shape == (2, T, 16)
    assert all(aligned[n].shape == (2, T, 16) for n in WIDTHS)
    # the same stream written out by hand
    h = cmi.fuse(torch.cat([cmi.proj[n](mods[n]) for n in WIDTHS], dim=-1))
    for block in cmi.blocks:
        h = block(h + f)
    assert torch.allclose(out, h, atol=1e-6)
    assert torch.isfinite(out).all()


def test_cmi_modality_activations_split_the_first_layernorm_exactly():
    """Σ_j ĉ_j + the F* and bias terms, plus β, rebuild LayerNorm(h_0 + F*) of the first block."""
    torch.manual_seed(1)
    cmi = CMI(16, WIDTHS, depth=2, heads=4, dropout=0.0).eval()
    with torch.no_grad():
        cmi.blocks[0].norm1.weight.uniform_(0.5, 1.5)
        cmi.blocks[0].norm1.bias.uniform_(-1, 1)
    f = torch.randn(2, 9, 16)
    mods = {n: torch.randn(2, 9, d) for n, d in WIDTHS.items()}
    acts = cmi.modality_activations(f, mods)
    assert set(acts) == set(WIDTHS) and all(a.shape == (2, 9) for a in acts.values())
    assert all((a >= 0).all() for a in acts.values())

    norm = cmi.blocks[0].norm1
    z = cmi.align(mods)
    x = cmi.fuse(torch.cat([z[n] for n in WIDTHS], dim=-1)) + f
    sigma = torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + norm.eps)

    def normed(c):
        return (c - c.mean(-1, keepdim=True)) / sigma * norm.weight

    terms = [normed(torch.nn.functional.linear(z[n], cmi.fuse.weight[:, j * 16:(j + 1) * 16]))
             for j, n in enumerate(WIDTHS)]
    rebuilt = sum(terms) + normed(f) + normed(cmi.fuse.bias.expand_as(f)) + norm.bias
    assert torch.allclose(rebuilt, norm(x), atol=1e-5)
    for j, n in enumerate(WIDTHS):
        assert torch.allclose(acts[n], terms[j].abs().mean(-1), atol=1e-6)


def test_pi_pseudo_and_real_sources():
    f = torch.randn(2, 6, 16)
    pseudo = PI(16, WIDTHS, latent_dim=8, depth=1, heads=2)
    res = pseudo(f)
    assert res.out.shape == f.shape and set(res.pseudo) == set(WIDTHS)
    real = PI(16, WIDTHS, latent_dim=8, depth=1, heads=2, source="real")
    assert real.pmg is None  # no PMG to train or run with real modalities
    mods = {n: torch.randn(2, 6, d) for n, d in WIDTHS.items()}
    res = real(f, mods)
    assert res.out.shape == f.shape and res.pseudo == {}
    with pytest.raises(ValueError, match="real"):
        real(f)
    with pytest.raises(ValueError, match="missing"):
        real(f, {"pose": mods["pose"]})


def test_bad_construction_arguments():
    with pytest.raises(ValueError, match="source"):
        PI(16, WIDTHS, source="imagined")
    with pytest.raises(ValueError, match="divisible"):
        CMI(16, WIDTHS, heads=3)
    with pytest.raises(ValueError, match="identifier"):
        PMG(16, 8, {"a.b": 3})
    with pytest.raises(ValueError, match="at least one"):
        PMG(16, 8, {})
    with pytest.raises(ValueError, match="depth"):
        CMI(16, WIDTHS, depth=0)


def test_cmi_residual_between_adds_f_star_only_between_blocks():
    torch.manual_seed(0)
    cmi = CMI(16, WIDTHS, depth=3, heads=4, mlp_ratio=2.0, dropout=0.0, residual="between").eval()
    f = torch.randn(2, 9, 16)
    mods = {n: torch.randn(2, 9, d) for n, d in WIDTHS.items()}
    h = cmi.fuse(torch.cat([cmi.proj[n](mods[n]) for n in WIDTHS], dim=-1))
    h = cmi.blocks[0](h)
    for block in cmi.blocks[1:]:
        h = block(h + f)
    assert torch.allclose(cmi(f, mods)[0], h, atol=1e-6)
    one = CMI(16, WIDTHS, depth=1, heads=4, residual="between").eval()  # K = 1: F* enters only via modalities
    assert torch.equal(one(f, mods)[0], one(torch.zeros_like(f), mods)[0])
    acts = one.modality_activations(f, mods)  # the decomposition still holds without F* in the first block
    assert set(acts) == set(WIDTHS) and all(a.shape == (2, 9) for a in acts.values())
    with pytest.raises(ValueError, match="cmi_residual"):
        CMI(16, WIDTHS, residual="sometimes")


def test_pi_standardize_normalises_targets_and_real_inputs():
    torch.manual_seed(0)
    mods = {n: 3.0 + 0.5 * torch.randn(2, 6, d) for n, d in WIDTHS.items()}
    stats = {n: (m.reshape(-1, m.shape[-1]).mean(0), m.reshape(-1, m.shape[-1]).std(0)) for n, m in mods.items()}
    pi = PI(16, WIDTHS, latent_dim=8, depth=1, heads=2, standardize=True)
    assert torch.equal(pi.normalise(mods)["pose"], mods["pose"] - 0.0)  # mean 0, std 1 until set
    pi.set_modality_stats(stats)
    z = pi.normalise(mods)
    for n in WIDTHS:
        flat = z[n].reshape(-1, WIDTHS[n])
        assert torch.allclose(flat.mean(0), torch.zeros(WIDTHS[n]), atol=1e-5)
        assert torch.allclose(flat.std(0), torch.ones(WIDTHS[n]), atol=1e-4)
    real = PI(16, WIDTHS, latent_dim=8, depth=1, heads=2, source="real", standardize=True).eval()
    real.set_modality_stats(stats)
    f = torch.randn(2, 6, 16)
    assert torch.equal(real(f, mods).out, real.cmi(f, z)[0])  # CMI reads the standardised real features
    with pytest.raises(ValueError, match="standardize"):
        PI(16, WIDTHS, latent_dim=8, depth=1, heads=2).set_modality_stats(stats)


def test_pi_detach_pseudo_keeps_downstream_gradients_out_of_pmg():
    torch.manual_seed(0)
    f = torch.randn(2, 6, 16, requires_grad=True)
    for detach in (False, True):
        pi = PI(16, WIDTHS, latent_dim=8, depth=1, heads=2, detach_pseudo=detach).eval()
        res = pi(f)
        res.out.square().mean().backward()  # a downstream loss (distillation, MIL) on F_M*
        reached = [p.grad is not None and p.grad.abs().sum() > 0 for p in pi.pmg.parameters()]
        assert any(reached) != detach
        assert pi.cmi.fuse.weight.grad.abs().sum() > 0  # CMI itself still learns
        f.grad = None
    # the forward pass is unchanged
    a = PI(16, WIDTHS, latent_dim=8, depth=1, heads=2).eval()
    b = PI(16, WIDTHS, latent_dim=8, depth=1, heads=2, detach_pseudo=True).eval()
    b.load_state_dict(a.state_dict())
    assert torch.equal(a(f).out, b(f).out)


def test_pi_pmg_input_rgb_reads_the_rgb_input_not_f():
    torch.manual_seed(0)
    pi = PI(16, WIDTHS, latent_dim=8, depth=1, heads=2, pmg_input="rgb", rgb_dim=24).eval()
    assert pi.pmg.encoder.conv.in_channels == 24
    f, rgb = torch.randn(2, 6, 16), torch.randn(2, 6, 24, requires_grad=True)
    res = pi(f, rgb=rgb)
    assert all(res.pseudo[k].shape == (2, 6, d) for k, d in WIDTHS.items())
    # the pseudo-modalities are a function of the RGB input alone
    assert all(torch.equal(res.pseudo[k], pi(torch.randn(2, 6, 16), rgb=rgb).pseudo[k]) for k in WIDTHS)
    res.out.sum().backward()
    assert rgb.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="RGB input"):
        pi(f)
    with pytest.raises(ValueError, match="rgb_dim"):
        PI(16, WIDTHS, latent_dim=8, depth=1, heads=2, pmg_input="rgb")
    with pytest.raises(ValueError, match="pmg_input"):
        PI(16, WIDTHS, latent_dim=8, depth=1, heads=2, pmg_input="video")
