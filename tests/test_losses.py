import math

import pytest
import torch

from vljepa.losses import cosine_loss, embedding_loss, info_nce, l1_loss, l2_loss


def test_info_nce_matches_hand_computed_value():
    # Two samples in 2-D, already unit norm: p0=(1,0), p1=(0,1); t0=(1,0), t1=(0.6,0.8).
    predicted = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    target = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    tau = 0.5
    # logits = P T^T / tau = [[1, 0.6], [0, 0.8]] / 0.5 = [[2, 1.2], [0, 1.6]]
    p2t = (-(2 - math.log(math.exp(2) + math.exp(1.2))) - (1.6 - math.log(math.exp(0) + math.exp(1.6)))) / 2
    # columns: t0 sees [2, 0] (positive 2), t1 sees [1.2, 1.6] (positive 1.6)
    t2p = (-(2 - math.log(math.exp(2) + math.exp(0))) - (1.6 - math.log(math.exp(1.2) + math.exp(1.6)))) / 2
    expected = 0.5 * (p2t + t2p)
    assert info_nce(predicted, target, temperature=tau).item() == pytest.approx(expected, rel=1e-6)


def test_info_nce_normalises_inputs_and_is_symmetric():
    torch.manual_seed(0)
    a, b = torch.randn(6, 8), torch.randn(6, 8)
    assert info_nce(a, b).item() == pytest.approx(info_nce(3 * a, 0.5 * b).item(), rel=1e-5)
    assert info_nce(a, b).item() == pytest.approx(info_nce(b, a).item(), rel=1e-5)
    # Perfect alignment with well separated samples gives a near-zero loss.
    eye = torch.eye(6, 8)
    assert info_nce(eye, eye, temperature=0.01).item() < 1e-6


def test_regression_losses():
    p, t = torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 4.0]])
    assert l2_loss(p, t).item() == pytest.approx((1 + 4) / 2)
    assert l1_loss(p, t).item() == pytest.approx((1 + 2) / 2)
    cos = (0 * 1 + 2 * 4) / (math.sqrt(5) * 4)
    assert cosine_loss(p, t).item() == pytest.approx(1 - cos, rel=1e-6)
    assert embedding_loss("l1", p, t).item() == pytest.approx(1.5)
    with pytest.raises(ValueError):
        embedding_loss("hinge", p, t)  # type: ignore[arg-type]


def test_info_nce_rejects_bad_shapes():
    with pytest.raises(ValueError):
        info_nce(torch.randn(4, 3), torch.randn(5, 3))
