"""Embedding-space analysis against hand-computed cases, and the plots it writes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vljepa import analysis


def test_alignment_and_gap_of_identical_spaces_are_zero():
    x = F.normalize(torch.randn(50, 8, generator=torch.Generator().manual_seed(0)), dim=-1)
    assert analysis.alignment(x, x) == pytest.approx(0.0, abs=1e-6)
    assert analysis.modality_gap(x, x) == pytest.approx(0.0, abs=1e-6)
    assert analysis.nn_agreement(x, x, k=5) == 1.0


def test_hand_computed_cases():
    # Antipodal pairs: ||p - t||^2 = 4 for unit vectors.
    p = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert analysis.alignment(p, -p) == pytest.approx(4.0)
    # Two points at distance sqrt(2): uniformity = log exp(-2 * 2) = -4.
    assert analysis.uniformity(p) == pytest.approx(-4.0)
    # Two clouds shifted apart: the centroid distance.
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    b = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    assert analysis.modality_gap(a, b) == pytest.approx(math.sqrt(2))


def test_uniformity_prefers_spread_points_and_agreement_drops_for_unrelated_spaces():
    g = torch.Generator().manual_seed(1)
    spread = torch.randn(200, 16, generator=g)
    clumped = torch.randn(1, 16, generator=g) + 0.05 * torch.randn(200, 16, generator=g)
    assert analysis.uniformity(spread) < analysis.uniformity(clumped)
    unrelated = torch.randn(200, 16, generator=g)
    metrics, reference = analysis.analyse(spread, unrelated, k=10)
    assert metrics["nn_agreement"] < 0.2 and reference["nn_agreement"] == pytest.approx(10 / 199)
    noisy = spread + 0.1 * torch.randn(200, 16, generator=g)
    close, _ = analysis.analyse(spread, noisy, k=10)
    assert close["nn_agreement"] > 0.6 and close["alignment"] < metrics["alignment"]


def test_plots_are_written_as_png(tmp_path):
    g = torch.Generator().manual_seed(2)
    p, t = torch.randn(30, 8, generator=g), torch.randn(30, 8, generator=g)
    labels = ["red circle", "blue square", "green cross"] * 10
    paths = [
        analysis.embedding_map_png(p, t, labels, tmp_path / "map.png"),
        analysis.confusion_png([[3, 1], [0, 4]], ["a", "b"], tmp_path / "cm.png", "cm"),
        analysis.rank_histogram_png({"t2v": [1, 2, 5, 80], "v2t": [1, 1, 3]}, tmp_path / "ranks.png", "ranks"),
        analysis.examples_table_png([("a red circle grows", "a red circle grows"), ("x " * 40, "y")],
                                    ("reference", "decoded"), tmp_path / "table.png", "examples"),
    ]
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 2000
