"""The inductor's losses: InfoNCE by hand in both forms and directions, PMG, distillation, pivad_loss."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from pivad.config import LossConfig
from pivad.losses.inductor import align_loss, distill_loss, infonce, pivad_loss, pmg_loss

R2 = math.sqrt(2.0)


def _pair():
    """F* = [(1,0), (0,1)], z = [(1,0), (1,1)] (one video, T=2, D=2); τ = 0.5.

    sim(F*_i, z_k): [[1, 1/√2], [0, 1/√2]], so the logits S = sim/τ are [[2, √2], [0, √2]].
    """
    rgb = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    z = torch.tensor([[[1.0, 0.0], [1.0, 1.0]]])
    return rgb, z


def test_infonce_paper_form_by_hand():
    rgb, z = _pair()
    # F*→z, row i: −(S_ii − log Σ_{k≠i} exp S_ik): row 0 −(2 − √2), row 1 −(√2 − 0)  -> mean −1
    r2m = ((-(2 - R2)) + (-(R2 - 0.0))) / 2
    # z→F* uses Sᵀ = [[2, 0], [√2, √2]]: row 0 −(2 − 0), row 1 −(√2 − √2)  -> mean −1
    m2r = ((-(2 - 0.0)) + (-(R2 - R2))) / 2
    got = {d: infonce(rgb, z, tau=0.5, form="paper", direction=d).item()
           for d in ("rgb_to_modality", "modality_to_rgb", "both")}
    assert got["rgb_to_modality"] == pytest.approx(r2m, abs=1e-6)
    assert got["modality_to_rgb"] == pytest.approx(m2r, abs=1e-6)
    assert got["both"] == pytest.approx((r2m + m2r) / 2, abs=1e-6)


def test_infonce_standard_form_by_hand():
    rgb, z = _pair()
    e = math.exp
    r2m = ((math.log(e(2) + e(R2)) - 2) + (math.log(e(0) + e(R2)) - R2)) / 2
    m2r = ((math.log(e(2) + e(0)) - 2) + (math.log(e(R2) + e(R2)) - R2)) / 2
    assert infonce(rgb, z, 0.5, "standard", "rgb_to_modality").item() == pytest.approx(r2m, abs=1e-6)
    assert infonce(rgb, z, 0.5, "standard", "modality_to_rgb").item() == pytest.approx(m2r, abs=1e-6)
    assert infonce(rgb, z, 0.5, "standard", "both").item() == pytest.approx((r2m + m2r) / 2, abs=1e-6)
    assert r2m == pytest.approx(0.33008, abs=1e-5)  # the number itself, worked out on paper (4 d.p.)


def test_infonce_standard_is_cross_entropy_and_per_video():
    """Two paths agree: the standard form is cross-entropy over each video's snippets (T=3, B=2)."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 3, 4, generator=g), torch.randn(2, 3, 4, generator=g)
    logits = torch.einsum("bid,bkd->bik", F.normalize(a, dim=-1), F.normalize(b, dim=-1)) / 0.1
    target = torch.arange(3).repeat(2)
    ce_r2m = F.cross_entropy(logits.reshape(6, 3), target)
    ce_m2r = F.cross_entropy(logits.transpose(1, 2).reshape(6, 3), target)
    assert torch.allclose(infonce(a, b, 0.1, "standard", "both"), (ce_r2m + ce_m2r) / 2, atol=1e-6)
    # negatives come from the same video only: changing video 1 leaves video 0's term alone
    b2 = b.clone()
    b2[1] = torch.randn(3, 4, generator=g)
    one = infonce(a[:1], b[:1], 0.1, "paper")
    assert torch.allclose(infonce(a[:1], b2[:1], 0.1, "paper"), one)
    assert not torch.allclose(infonce(a, b2, 0.1, "paper"), infonce(a, b, 0.1, "paper"))


def test_infonce_single_snippet_is_zero_without_nan():
    a = torch.randn(3, 1, 8, requires_grad=True)
    b = torch.randn(3, 1, 8, requires_grad=True)
    for form in ("paper", "standard"):
        loss = infonce(a, b, 0.1, form)
        assert loss.item() == 0.0
        loss.backward()
        assert torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all()


def test_infonce_rejects_bad_arguments():
    a = torch.randn(1, 2, 3)
    with pytest.raises(ValueError, match="form"):
        infonce(a, a, form="other")
    with pytest.raises(ValueError, match="direction"):
        infonce(a, a, direction="sideways")
    with pytest.raises(ValueError, match="shape"):
        infonce(a, torch.randn(1, 2, 4))


def test_align_pmg_distill_by_hand():
    rgb, z = _pair()
    assert align_loss(rgb, {"p": z, "q": z}, tau=0.5).item() == pytest.approx(-2.0, abs=1e-6)  # 2 × (−1)
    pred = {"p": torch.tensor([[[1.0, 2.0]]]), "q": torch.tensor([[[0.0]]])}
    real = {"p": torch.tensor([[[0.0, 0.0]]]), "q": torch.tensor([[[3.0]]])}
    assert pmg_loss(pred, real).item() == pytest.approx((1 + 4) / 2 + 9)  # mean over dims, summed over j
    with pytest.raises(ValueError, match="'q'"):
        pmg_loss(pred, {"p": real["p"]})
    s, t = torch.tensor([[[1.0, 3.0]]], requires_grad=True), torch.tensor([[[0.0, 1.0]]])
    d = distill_loss(s, t)
    assert d.item() == pytest.approx((1 + 4) / 2)
    d.backward()
    assert torch.allclose(s.grad, torch.tensor([[[1.0, 2.0]]]))


def _fake_output(pmg=1.0, align=2.0, distill=3.0):
    aux = {"pmg": torch.tensor(pmg), "align": torch.tensor(align), "distill": torch.tensor(distill),
           "early/align": torch.tensor(align)}
    return SimpleNamespace(student=None, aux=aux)


def test_pivad_loss_first_phase_and_switches():
    total, parts = pivad_loss(_fake_output(), torch.zeros(2), LossConfig(), "first")
    assert total.item() == pytest.approx(6.0)  # L_PMG + L_align + L_distill, unweighted
    assert parts["total"] == pytest.approx(6.0) and parts["early/align"] == pytest.approx(2.0)
    total, parts = pivad_loss(_fake_output(), torch.zeros(2), LossConfig(use_align=False), "first")
    assert total.item() == pytest.approx(4.0) and "align" not in parts
    with pytest.raises(ValueError, match="switched off"):
        pivad_loss(_fake_output(), torch.zeros(2), LossConfig(False, False, False, False, False), "first")
    with pytest.raises(ValueError, match="phase"):
        pivad_loss(_fake_output(), torch.zeros(2), LossConfig(), "third")
    with pytest.raises(ValueError, match="student"):
        pivad_loss(_fake_output(), torch.zeros(2), LossConfig(), "second")


def test_pivad_loss_second_phase_adds_weighted_terms_to_mil():
    from pivad.losses.mil import mil_loss
    from pivad.config import URDMUConfig
    from pivad.models import URDMU

    torch.manual_seed(0)
    cfg = URDMUConfig(input_dim=16, hidden_dim=8, depth=1, heads=2, dim_head=4, mlp_dim=8, a_nums=4, n_nums=4,
                      head_dim=8)
    model = URDMU(cfg).train()
    student = model(torch.randn(4, 20, 16))
    labels = torch.tensor([0.0, 0.0, 1.0, 1.0])
    out = SimpleNamespace(student=student, aux=_fake_output().aux)
    loss_cfg = LossConfig(lambda_align=0.1, lambda_distill=0.5)
    total, parts = pivad_loss(out, labels, loss_cfg, "second")
    mil, _ = mil_loss(student, labels)
    assert total.item() == pytest.approx(mil.item() + 0.1 * 2.0 + 0.5 * 3.0 + 1.0, rel=1e-6)
    assert parts["mil"] == pytest.approx(mil.item()) and any(k.startswith("mil/") for k in parts)


def test_repeated_snippets_marks_runs_of_identical_rows():
    from pivad.losses.inductor import repeated_snippets

    x = torch.tensor([[[1.0, 0], [1.0, 0], [2.0, 0], [1.0, 0]]])  # rows 0 and 1 repeat; row 3 equals them but is apart
    same = repeated_snippets(x)[0]
    expected = torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=torch.bool)
    assert torch.equal(same, expected)


def test_infonce_exclude_leaves_copies_out_of_the_negatives():
    torch.manual_seed(0)
    a, z = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    none = torch.zeros(2, 5, 5, dtype=torch.bool)
    for form in ("paper", "standard"):
        assert torch.allclose(infonce(a, z, form=form, exclude=none), infonce(a, z, form=form))
    # exclude snippets 0 <-> 1 (one direction, by hand): row 0's denominator loses k = 1
    ex = none.clone()
    ex[:, 0, 1] = ex[:, 1, 0] = True
    s = torch.nn.functional.normalize(a, dim=-1) @ torch.nn.functional.normalize(z, dim=-1).transpose(1, 2) / 0.1
    keep = ~(torch.eye(5, dtype=torch.bool) | ex[0])
    rows = [torch.logsumexp(s[b, i][keep[i]], 0) - s[b, i, i] for b in range(2) for i in range(5)]
    assert torch.allclose(infonce(a, z, form="paper", direction="rgb_to_modality", exclude=ex), torch.stack(rows).mean())
    # a video whose snippets are all one copy has no negatives: 0, not inf or nan
    full = torch.ones(2, 5, 5, dtype=torch.bool)
    assert infonce(a, z, form="paper", exclude=full).item() == 0.0
