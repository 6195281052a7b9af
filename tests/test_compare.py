"""VL-JEPA vs the token VLM (paper §4.2): the schedule of snapshots and a tiny comparison end to end."""

import json
import os
import re
from pathlib import Path

import pytest

from flows.compare import snapshot_steps

REPO = Path(__file__).resolve().parents[1]


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
    """``vljepa compare`` as users run it, in a subprocess; its result is the ``compare.json`` it wrote
    beside the figure it names. The ``RunConfig`` is the one that command line resolves to."""
    from flows.compare import CompareResult
    from flows.resolve import RunConfig
    from tests.test_multirank import vljepa

    state = tmp_path_factory.mktemp("compare")
    uri = f"sqlite:///{state}/mlflow.db"
    out = vljepa(["vljepa", "compare", "--preset", "tiny", "--launcher", "inline", "--points", "3", "--seeds", "0", "1",
                  "--state-dir", str(state), "--tracking-uri", uri], {**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    figure = re.search(r"^figure: (.+)/compare\.png$", out.stdout, re.MULTILINE)
    assert figure, out.stdout[-2000:]
    result = CompareResult(**json.loads((Path(figure[1]) / "compare.json").read_text()))
    assert result.markdown and result.markdown in out.stdout  # the table printed is the one saved
    return RunConfig(preset="tiny", launcher="inline", state_dir=str(state), tracking_uri=uri, progress=False), result


# Golden values of the seeded tiny run (2 test clips, so top-5 is 0, 1/2 or 1): snapshots after 1, 2 and 4
# steps of 8 samples; the untrained tiny decoders get no caption n-gram right (CIDEr 0), and only the VLM's
# seed 0 ranks a true label in its top 5, for one of the two clips, after its second step.
SAMPLES_SEEN = [8, 16, 32]
TOP5 = {"vl-jepa": {"0": [0.0, 0.0, 0.0], "1": [0.0, 0.0, 0.0]},
        "token-vlm": {"0": [0.0, 0.5, 0.5], "1": [0.0, 0.0, 0.0]}}


def test_both_models_are_evaluated_at_the_same_samples_seen_per_seed(tiny_compare):
    run, result = tiny_compare
    assert result.seeds == [0, 1] and result.points == [1, 2, 4]
    assert set(result.curves["vl-jepa"]) == set(result.curves["token-vlm"]) == {"0", "1"}
    for seed in ("0", "1"):
        jepa, vlm = result.curves["vl-jepa"][seed], result.curves["token-vlm"][seed]
        assert [r["samples_seen"] for r in jepa] == [r["samples_seen"] for r in vlm] == SAMPLES_SEEN
        assert [r["step"] for r in jepa] == [r["step"] for r in vlm] == result.points
        for name, rows in (("vl-jepa", jepa), ("token-vlm", vlm)):
            assert [r["classification/top5"] for r in rows] == pytest.approx(TOP5[name][seed], abs=1e-9), (name, seed)
            assert [r["classification/top1"] for r in rows] == [0.0, 0.0, 0.0], (name, seed)
            assert [r["captioning/cider"] for r in rows] == pytest.approx([0.0, 0.0, 0.0], abs=1e-9), (name, seed)
        # Same optimiser steps and batch size: the logged training histories line up step by step.
        root = Path(result.out_dir) / f"seed-{seed}"
        jepa_summary = json.loads((root / "vl-jepa" / "train_summary.json").read_text())
        vlm_summary = json.loads((root / "token-vlm" / "train_summary.json").read_text())
        assert jepa_summary["steps"] == vlm_summary["steps"] == 4 and jepa_summary["samples_seen"] == 32
        assert vlm_summary["samples_seen"] == 32
        assert json.loads((root / "vl-jepa" / "config.json").read_text())["train"]["seed"] == int(seed)


def test_the_vlm_trains_twice_the_predictors_layers(tiny_compare):
    """The paper's ratio: its VLM trains all 16 layers of Llama-3.2-1B, VL-JEPA's predictor the upper 8."""
    from vljepa.baselines import load_token_vlm
    from vljepa.checkpoint import load_checkpoint

    _, result = tiny_compare
    root = Path(result.out_dir) / "seed-0"
    jepa, vlm = load_checkpoint(root / "vl-jepa"), load_token_vlm(root / "token-vlm")
    assert len(vlm.layers) == 2 * len(jepa.predictor.layers) == 2 * result.layers["vl-jepa"] == result.layers["token-vlm"]


def llama_layer_params(lm) -> int:
    """One Llama decoder layer by hand: q and o (d x d), k and v (d x kv heads x head dim), the gated
    MLP (3 x d x ffn), two RMSNorm weights (d); no biases."""
    d, kv = lm.hidden_size, lm.num_key_value_heads * lm.head_dim
    return 2 * d * d + 2 * d * kv + 3 * d * lm.intermediate_size + 2 * d


def test_inference_cost_counts_passes_side_by_side(tiny_compare):
    from vljepa.config import get_preset

    _, result = tiny_compare
    cost = result.cost
    assert cost["n_captions"] == 4  # both test clips, twice
    assert cost["vl-jepa"]["predictor_passes_per_caption"] == 1.0  # one non-autoregressive pass
    # One pass per generated token; the untrained tiny decoders never emit end-of-text, so every caption
    # runs to its decoder's max_length: the tiny y-decoder's 32 tokens, the token VLM's 48.
    assert cost["vl-jepa"]["decoder_passes_per_caption"] == 32.0
    assert cost["token-vlm"]["decoder_passes_per_caption"] == 48.0
    # Wall time is measured, not pinned (no clock in a verdict): it is there for both models.
    assert set(cost["vl-jepa"]) == {"predictor_passes_per_caption", "decoder_passes_per_caption", "seconds_per_caption"}
    assert set(cost["token-vlm"]) == {"decoder_passes_per_caption", "seconds_per_caption"}
    # Parameters by hand from the tiny preset (LM width 64, 4 heads of 16, 2 KV heads, MLP 128):
    # 36,992 a layer. The VLM trains 4 layers, its visual projection (32 -> 64, with bias) and final norm;
    # its token embeddings, frozen, are the cut vocabulary's 26 rows. VL-JEPA's predictor trains 2 layers,
    # its input projection (32 -> 64) and output projection (64 -> 32) with biases, and its norm; its 256 x 64
    # token embeddings are frozen; the tiny y-encoder (26,976) trains whole.
    lm = get_preset("tiny").predictor.lm
    layer = llama_layer_params(lm)
    assert layer == 36_992
    assert result.params["token-vlm"] == {"trainable": 4 * layer + (32 * 64 + 64) + 64, "frozen": 26 * 64}
    predictor = 2 * layer + (32 * 64 + 64) + (64 * 32 + 32) + 64
    assert result.params["vl-jepa"] == {"trainable": predictor + 26_976, "frozen": lm.vocab_size * 64}
    assert result.params == {"vl-jepa": {"trainable": 105_216, "frozen": 16_384},
                             "token-vlm": {"trainable": 150_144, "frozen": 1_664}}


def test_figure_table_and_mlflow_runs(tiny_compare):
    from mlflow.tracking import MlflowClient

    from flows.compare import EXPERIMENT

    run, result = tiny_compare
    root = Path(result.out_dir)
    assert (root / "compare.png").stat().st_size > 5000
    assert "VLM CIDEr" in (root / "compare.md").read_text()
    client = MlflowClient(run.layout().tracking_uri)
    logged = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id])
    assert sorted((r.data.tags["compare.model"], r.data.tags["compare.seed"]) for r in logged) == [
        ("token-vlm", "0"), ("token-vlm", "1"), ("vl-jepa", "0"), ("vl-jepa", "1")]
    assert {r.data.tags["compare.key"] for r in logged} == {root.name}  # the runs of this comparison's directory
    for r in logged:
        name, seed = r.data.tags["compare.model"], r.data.tags["compare.seed"]
        history = client.get_metric_history(r.info.run_id, "classification/top5")
        assert [(m.step, m.value) for m in history] == [(int(row["samples_seen"]), row["classification/top5"])
                                                        for row in result.curves[name][seed]]
        assert int(r.data.params["params.trainable"]) == result.params[name]["trainable"]
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
