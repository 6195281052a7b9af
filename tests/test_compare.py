"""VL-JEPA vs the token VLM (paper §4.2): the schedule of snapshots and a tiny comparison end to end."""

import json
from pathlib import Path

import pytest

from flows.compare import snapshot_steps


@pytest.mark.parametrize("total,points", [(45, 5), (4, 5), (1, 3), (100_000, 6)])
def test_snapshot_steps_are_log_spaced_and_end_at_the_last_step(total, points):
    steps = snapshot_steps(total, points)
    assert steps[-1] == total and steps[0] >= 1 and steps == sorted(set(steps)) and len(steps) <= points
    if total >= 2 ** (points - 1):
        assert len(steps) == points
        ratios = [b / a for a, b in zip(steps, steps[1:])]
        assert max(ratios) / min(ratios) < 1.6  # roughly constant ratio: log-spaced


@pytest.fixture(scope="module")
def tiny_compare(tmp_path_factory):
    from flows.compare import run_compare
    from flows.resolve import RunConfig

    state = tmp_path_factory.mktemp("compare")
    run = RunConfig(preset="tiny", launcher="inline", state_dir=str(state), tracking_uri=f"sqlite:///{state}/mlflow.db",
                    progress=False)
    return run, run_compare(run, points=3, cost_clips=2, seeds=(0, 1))


def test_both_models_are_evaluated_at_the_same_samples_seen_per_seed(tiny_compare):
    run, result = tiny_compare
    assert result.seeds == [0, 1] and set(result.curves["vl-jepa"]) == set(result.curves["token-vlm"]) == {"0", "1"}
    for seed in ("0", "1"):
        jepa, vlm = result.curves["vl-jepa"][seed], result.curves["token-vlm"][seed]
        assert len(jepa) == len(vlm) == len(result.points) >= 2
        assert [r["samples_seen"] for r in jepa] == [r["samples_seen"] for r in vlm]
        assert [r["samples_seen"] for r in jepa] == sorted(r["samples_seen"] for r in jepa)
        for row in jepa + vlm:
            assert 0.0 <= row["classification/top5"] <= 1.0 and row["captioning/cider"] >= 0.0
        # Same optimiser steps and batch size: the logged training histories line up step by step.
        root = Path(result.out_dir) / f"seed-{seed}"
        jepa_summary = json.loads((root / "vl-jepa" / "train_summary.json").read_text())
        vlm_summary = json.loads((root / "token-vlm" / "train_summary.json").read_text())
        assert jepa_summary["steps"] == vlm_summary["steps"] and jepa_summary["samples_seen"] == vlm_summary["samples_seen"]
        assert json.loads((root / "vl-jepa" / "config.json").read_text())["train"]["seed"] == int(seed)


def test_the_vlm_trains_twice_the_predictors_layers(tiny_compare):
    """The paper's ratio: its VLM trains all 16 layers of Llama-3.2-1B, VL-JEPA's predictor the upper 8."""
    from vljepa.baselines import load_token_vlm
    from vljepa.checkpoint import load_checkpoint

    _, result = tiny_compare
    root = Path(result.out_dir) / "seed-0"
    jepa, vlm = load_checkpoint(root / "vl-jepa"), load_token_vlm(root / "token-vlm")
    assert len(vlm.layers) == 2 * len(jepa.predictor.layers) == 2 * result.layers["vl-jepa"] == result.layers["token-vlm"]


def test_inference_cost_counts_passes_side_by_side(tiny_compare):
    _, result = tiny_compare
    cost = result.cost
    assert cost["vl-jepa"]["predictor_passes_per_caption"] == pytest.approx(1.0)  # one non-autoregressive pass
    assert cost["vl-jepa"]["decoder_passes_per_caption"] >= 1.0
    assert cost["token-vlm"]["decoder_passes_per_caption"] >= 1.0
    assert cost["vl-jepa"]["seconds_per_caption"] > 0 and cost["token-vlm"]["seconds_per_caption"] > 0
    assert result.params["vl-jepa"]["trainable"] > 0 and result.params["token-vlm"]["trainable"] > 0


def test_figure_table_and_mlflow_runs(tiny_compare):
    import mlflow
    from mlflow.tracking import MlflowClient

    run, result = tiny_compare
    root = Path(result.out_dir)
    assert (root / "compare.png").stat().st_size > 5000
    assert "VLM CIDEr" in (root / "compare.md").read_text()
    mlflow.set_tracking_uri(run.layout().tracking_uri)
    client = MlflowClient()
    assert len(result.mlflow_run_ids) == 4
    for name_seed, run_id in result.mlflow_run_ids.items():
        name, seed = name_seed.split("/")
        logged = client.get_run(run_id)
        assert (logged.data.tags["compare.model"], logged.data.tags["compare.seed"]) == (name, seed)
        history = client.get_metric_history(run_id, "classification/top5")
        assert [m.step for m in history] == [int(r["samples_seen"]) for r in result.curves[name][seed]]
    # The table the overview rebuilds from those runs is the one this run printed.
    from flows.compare_report import collect, markdown

    record = collect(run.layout().tracking_uri)
    assert record["curves"] == {m: {s: [{k: r[k] for k in ("samples_seen", "captioning/cider", "classification/top1",
                                                            "classification/top5")} for r in rows]
                                    for s, rows in by_seed.items()} for m, by_seed in result.curves.items()}
    assert markdown(record) == result.markdown


def test_rerun_reuses_both_trained_models(tiny_compare):
    from flows.compare import run_compare

    run, result = tiny_compare
    root = Path(result.out_dir)
    before = {p: p.stat().st_mtime for p in (root / "seed-1" / "vl-jepa" / "model.safetensors",
                                             root / "seed-1" / "token-vlm" / "train_summary.json")}
    again = run_compare(run, points=3, cost_clips=1, log_to_mlflow=False, seeds=(0, 1))
    assert again.out_dir == result.out_dir
    assert {p: p.stat().st_mtime for p in before} == before
    assert again.curves == result.curves  # evaluation is deterministic
