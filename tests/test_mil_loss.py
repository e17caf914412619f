"""L_MIL (the official AD_Loss): hand-computed cases and the golden loss dict."""

from __future__ import annotations

import math

import pytest
import torch

from pivad.losses.mil import mil_loss
from pivad.models import URDMUOutput

LN2 = math.log(2.0)



pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see conftest

def _out(scores, att, triplet=1.0, kl=2.0, distance=100.0) -> URDMUOutput:
    half = scores.shape[0] // 2
    t = torch.tensor
    return URDMUOutput(scores, att[:half].clone(), att[:half].clone(), att[:half].clone(), att[:half].clone(),
                       t(triplet), t(kl), t(distance))


def test_all_half_gives_ln2_terms():
    out = _out(torch.full((4, 16), 0.5), torch.full((4, 16), 0.5))
    total, parts = mil_loss(out, torch.tensor([0, 0, 1, 1]))
    for name in ("att_loss", "A_loss", "N_Aatt", "N_loss", "A_Nloss"):
        assert parts[name].item() == pytest.approx(LN2, rel=1e-6), name
    expected = LN2 + 0.1 * 4 * LN2 + 0.1 * 1.0 + 0.001 * 2.0 + 0.0001 * 100.0
    assert total.item() == pytest.approx(expected, rel=1e-6)
    assert parts["total_loss"] is total
    assert set(parts) == {"total_loss", "att_loss", "N_Aatt", "A_loss", "N_loss", "A_Nloss", "triplet", "kl_loss", "distance"}


def test_topk_is_t_over_16_plus_one():
    # T = 16 -> k = 2: the video score is the mean of the two largest snippet scores
    scores = torch.full((2, 16), 0.1)
    scores[0, 3], scores[0, 9] = 0.2, 0.4  # normal video: top-2 mean 0.3 -> -log(0.7)
    scores[1, 0], scores[1, 15] = 0.9, 0.8  # abnormal video: top-2 mean 0.85 -> -log(0.85)
    a_att = torch.full((2, 16), 0.5)
    out = URDMUOutput(scores, a_att[:1], a_att[:1], a_att[:1], torch.full((1, 16), 0.75),
                      torch.tensor(0.0), torch.tensor(0.0), torch.tensor(0.0))
    total, parts = mil_loss(out, torch.tensor([0, 1]))
    assert parts["att_loss"].item() == pytest.approx((-math.log(0.7) - math.log(0.85)) / 2, rel=1e-6)
    assert parts["N_Aatt"].item() == pytest.approx(-math.log(0.25), rel=1e-6)  # BCE(top-k of 1 - 0.75, 1)
    # T = 15 -> k = 1
    total15, parts15 = mil_loss(URDMUOutput(scores[:, :15], *(x[:, :15] for x in (a_att[:1],) * 3),
                                            torch.full((1, 15), 0.75), out.triplet, out.kl, out.distance),
                                torch.tensor([0, 1]))
    assert parts15["att_loss"].item() == pytest.approx((-math.log(0.6) - math.log(0.9)) / 2, rel=1e-6)


def test_gradient_flows_to_every_output():
    scores = torch.rand(4, 20, requires_grad=True)
    att = [torch.rand(2, 20, requires_grad=True) for _ in range(4)]
    extras = [torch.tensor(v, requires_grad=True) for v in (0.5, 0.3, 99.0)]
    total, _ = mil_loss(URDMUOutput(scores, *att, *extras), torch.tensor([0, 0, 1, 1]))
    total.backward()
    for t in [scores, *att, *extras]:
        assert t.grad is not None and t.grad.abs().sum() > 0


@pytest.mark.golden
def test_golden_loss_dict(shared_dir):
    g = torch.load(shared_dir / "golden" / "public" / "urdmu.pt", weights_only=True)
    o = g["train_outputs"]
    out = URDMUOutput(o["frame"], o["A_att"], o["N_att"], o["A_Natt"], o["N_Aatt"], o["triplet_margin"],
                      o["kl_loss"], o["distance"])
    total, parts = mil_loss(out, g["train_labels"])
    for name, ref in g["train_losses"].items():
        assert parts[name].item() == pytest.approx(ref, rel=1e-6), name
