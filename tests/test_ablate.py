"""The ablation sweeps: their definitions, the Δ / agreement arithmetic, and a tiny sweep end to end."""

import json

import pytest

from vljepa.ablations import Sweep, Variant, agreement, deltas, paper_delta, summary_markdown, sweeps, variant_config
from vljepa.config import get_preset
from vljepa.predictor import selected_layers


@pytest.mark.parametrize("preset", ["small", "paper", "tiny"])
def test_every_variant_is_a_valid_config_with_one_default(preset):
    base = get_preset(preset)
    for sweep in sweeps(base).values():
        assert sum(v.default for v in sweep.variants) == 1
        setting = variant_config(base, sweep.default, sweep)
        assert (setting == base) == (not sweep.setting)
        for v in sweep.variants:
            cfg = variant_config(base, v, sweep)
            selected_layers(cfg.predictor)  # raises if the layers do not exist
            assert (cfg == setting) == v.default, v.name


def test_sweeps_cover_the_papers_axes_on_the_embedded_default():
    s = sweeps(get_preset("small"))
    assert set(s) == {"loss", "loss-trainable", "y-lr", "depth", "attention", "init", "y-encoder"}
    # Paper Table 4(c): losses compared on a frozen text encoder without a projection head.
    frozen = variant_config(get_preset("small"), s["loss"].variants[3], s["loss"])
    assert frozen.train.loss == "l2" and frozen.y_encoder.lr_multiplier == 0.0 and not frozen.y_encoder.projection
    assert [v.name for v in s["loss"].variants] == ["infonce", "cosine", "l1", "l2"]
    assert {v.name for v in s["y-lr"].variants} == {"0.0", "0.01", "0.05", "0.1", "1.0"}
    assert s["y-lr"].default.name == "0.05"
    depth = {v.name: variant_config(get_preset("small"), v, s["depth"]).predictor for v in s["depth"].variants}
    assert selected_layers(depth["last-4"]) == [26, 27, 28, 29]
    assert selected_layers(depth["last-8"]) == list(range(22, 30))
    assert selected_layers(depth["first-4"]) == [0, 1, 2, 3]
    assert selected_layers(depth["middle-4"]) == [13, 14, 15, 16]
    # The paper preset (16-layer Llama-3.2-1B, last 8 by default): "all 16" is the paper's 0-16 row.
    paper_depth = sweeps(get_preset("paper"))["depth"]
    assert paper_delta(paper_depth, next(v for v in paper_depth.variants if v.name == "last-16")) == ("all", (0.1, 0.8, 3.0))
    # Extra y-encoders are variants of the y-encoder sweep.
    extra = sweeps(get_preset("small"), y_encoder_paths={"gemma": "/models/embeddinggemma"})["y-encoder"]
    assert variant_config(get_preset("small"), extra.variants[1], extra).y_encoder.path == "/models/embeddinggemma"


def test_select_keeps_the_default_and_rejects_unknown_names():
    sweep = sweeps(get_preset("small"))["loss"]
    assert [v.name for v in sweep.select(["l2"]).variants] == ["infonce", "l2"]
    with pytest.raises(KeyError, match="no variant"):
        sweep.select(["l3"])
    with pytest.raises(ValueError, match="exactly one default"):
        Sweep(name="x", axis="y", variants=(Variant(name="a"), Variant(name="b")))


def test_deltas_agreement_and_table():
    sweep = sweeps(get_preset("small"))["loss"]
    results = {"infonce": {"classification/top1": 0.40, "retrieval/t2v_r1": 0.60, "vqa/accuracy": 0.50},
               "l2": {"classification/top1": 0.30, "retrieval/t2v_r1": 0.605, "vqa/accuracy": 0.52}}
    d = deltas(results, "infonce")
    assert d["l2"]["classification/top1"] == pytest.approx(-10.0)
    assert d["l2"]["retrieval/t2v_r1"] == pytest.approx(0.5)
    # Paper, L2 vs InfoNCE: -9.8 cls (agrees), -18.6 retrieval (ours flat: disagrees), -0.6 VQA
    # (flat) vs our +2.0 (disagrees).
    assert agreement(sweep, results) == {"l2": {"classification": "agrees", "retrieval": "disagrees", "vqa": "disagrees"}}
    table = summary_markdown(sweep, results)
    assert "| l2 | 30.0 (-10.0) | 60.5 (+0.5) | 52.0 (+2.0) | l2: -9.8, -18.6, -0.6 |" in table
    assert "cosine" not in table  # variants without results are left out


def test_tiny_sweep_end_to_end_logs_runs_and_reuses_models(tmp_path):
    import mlflow
    from mlflow.tracking import MlflowClient

    from flows.ablate import EXPERIMENT_PREFIX, run_sweep
    from flows.resolve import RunConfig

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run = RunConfig(preset="tiny", launcher="inline", state_dir=str(tmp_path / "state"), tracking_uri=uri, progress=False)
    first = run_sweep("attention", run)
    assert [v.variant for v in first.variants] == ["bidirectional", "causal"]
    assert not any(v.reused for v in first.variants)
    summary = json.loads((tmp_path / "state" / "ablations" / "attention" / "summary.json").read_text())
    assert set(summary["metrics"]) == {"bidirectional", "causal"}
    assert (tmp_path / "state" / "ablations" / "attention" / "summary.png").stat().st_size > 1000
    # The two models differ (attention changed), so their checkpoints are two different files.
    assert first.variants[0].key != first.variants[1].key

    mlflow.set_tracking_uri(uri)
    client = MlflowClient()
    experiment = client.get_experiment_by_name(EXPERIMENT_PREFIX + "attention")
    runs = client.search_runs([experiment.experiment_id])
    variant_runs = {r.data.tags["ablation.variant"]: r for r in runs if "ablation.variant" in r.data.tags}
    assert set(variant_runs) == {"bidirectional", "causal"}
    assert variant_runs["causal"].data.params["predictor.attention"] == "causal"
    assert variant_runs["causal"].data.tags["ablation.axis"] == "predictor.attention"
    assert "vqa/accuracy" in variant_runs["causal"].data.metrics
    assert any(r.data.tags.get("ablation.summary") == "true" for r in runs)

    from flows.ablate import overview

    figure, tables = overview(run.layout(), tmp_path / "overview.png", preset="tiny")
    assert figure.stat().st_size > 5000 and "### Ablation `attention`" in tables and "`loss`" not in tables

    second = run_sweep("attention", run)
    assert all(v.reused for v in second.variants)
    assert [v.mlflow_run_id for v in second.variants] == [v.mlflow_run_id for v in first.variants]
    runs_after = client.search_runs([experiment.experiment_id])
    assert sum("ablation.variant" in r.data.tags for r in runs_after) == 2  # not logged twice


def test_slurm_array_path_submits_one_batch(tmp_path, monkeypatch):
    """launch_array submits every variant in one executor.batch(); here through submitit's local
    executor standing in for Slurm (same submission code path, no cluster)."""
    import submitit

    from flows import launch as launch_mod
    from flows.data import prepare_data
    from flows.resolve import RunConfig

    run = RunConfig(preset="tiny", state_dir=str(tmp_path / "state"), progress=False)
    data = prepare_data(run.model_config(), run.layout(), progress=False)
    batches = []

    def local_executor(cfg, launcher, folder, **_):
        assert launcher == "slurm"
        executor = submitit.AutoExecutor(folder=str(tmp_path / "jobs" / "%j"), cluster="local")
        executor.update_parameters(timeout_min=10, tasks_per_node=1, nodes=1)
        real_batch = executor.batch

        def batch(*a, **k):
            batches.append(1)
            return real_batch(*a, **k)

        executor.batch = batch
        return executor

    monkeypatch.setattr(launch_mod, "make_executor", local_executor)
    base = get_preset("tiny")
    jobs = [(variant_config(base, v), data.spec(), tmp_path / v.name) for v in sweeps(base)["attention"].variants]
    launched = launch_mod.launch_array(jobs, folder=tmp_path / "jobs")
    summaries = [job.result() for job in launched]
    assert batches == [1] and len(launched) == 2
    assert all((tmp_path / v).joinpath("model.safetensors").is_file() for v in ("bidirectional", "causal"))
    assert all(s.steps > 0 for s in summaries)


def test_y_encoder_without_projection_head():
    from torch import nn

    from vljepa.config import replace
    from vljepa.model import build_model

    cfg = replace(get_preset("tiny"), **{"y_encoder.projection": False, "y_encoder.lr_multiplier": 0.0})
    model = build_model(cfg)
    assert isinstance(model.y_encoder.proj, nn.Identity)
    assert model.encode_text(["a red circle"]).shape == (1, cfg.shared_dim)
    assert not any(p.requires_grad for p in model.y_encoder.parameters())  # frozen, and nothing on top
    with pytest.raises(ValueError, match="shared_dim"):
        build_model(replace(cfg, shared_dim=cfg.shared_dim * 2))
