"""The Prefect flows that no deployment test runs (evaluate, selective-decoding, compare, ablate,
preprocess), each called as a flow on one temporary Prefect API, and the decoder study on a tiny
checkpoint.

Each flow runs on the tiny preset at the smallest size it accepts, in a state dir of its own seeded
with copies of the shared tiny run's corpus and token caches (content-addressed: found again, not
rebuilt), so ``tiny_state`` stays read-only. Checked: the final state the API records, the return
value against the plain function on the same input, the files and the MLflow runs the flow wrote,
and the message of a flow that fails.
"""

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread(tiny_state):
    """Torch at one intra-op thread while this module runs (the shared tiny run is built before, as
    everywhere else). The y-decoder asks for two (``YDecoderConfig.num_threads``); on 2 cores shared
    with other jobs two threads spin against them: the tiny decoder's 60 steps took 30-55 s instead
    of under 2 s. The thread count is no part of what these tests check."""
    import torch

    threads, set_num_threads = torch.get_num_threads(), torch.set_num_threads
    set_num_threads(1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch, "set_num_threads", lambda n: None)
        yield
    set_num_threads(threads)


@pytest.fixture(scope="module")
def prefect_api():
    """One temporary Prefect server (SQLite in a temp dir) for every flow of this module.

    Block types are not registered on start and telemetry is off: no flow here uses a block, and
    those two steps are most of the server's start-up and its "database is locked" noise.
    """
    from prefect.settings import (PREFECT_API_BLOCKS_REGISTER_ON_START, PREFECT_SERVER_ANALYTICS_ENABLED,
                                  temporary_settings)
    from prefect.testing.utilities import prefect_test_harness

    with pytest.MonkeyPatch.context() as env:
        # The flows resolve their state dir and MLflow store from these when not given: none may leak in.
        env.delenv("VLJEPA_STATE_DIR", raising=False)
        env.delenv("MLFLOW_TRACKING_URI", raising=False)
        with temporary_settings(updates={PREFECT_API_BLOCKS_REGISTER_ON_START: False,
                                         PREFECT_SERVER_ANALYTICS_ENABLED: False}):
            # The start-up timeout is generous: on 2 shared cores the server takes 10-25 s to answer.
            with prefect_test_harness(server_startup_timeout=180):
                yield


def seeded_state(tiny_state: dict, root: Path):
    """A state dir of its own with copies of the tiny run's corpus and caches; returns its layout
    and the tiny preset's ``PreparedData`` there (the manifest imported anew, the caches reused)."""
    from flows.data import prepare_data
    from flows.env import StateLayout
    from vljepa.config import get_preset

    source, layout = StateLayout.resolve(tiny_state["state"]), StateLayout.resolve(root)
    shutil.copytree(source.data_dir, layout.data_dir)
    shutil.copytree(source.shard_cache, layout.shard_cache)
    data = prepare_data(get_preset("tiny"), layout, progress=False)
    assert all(cache.reused for cache in data.caches.values())  # else this is not the tiny run's data
    return layout, data


def exactly(metrics: dict):
    """``metrics`` compared exactly, a NaN equal to a NaN (world prediction has no tiny test clip: NaN)."""
    return pytest.approx(metrics, rel=0, abs=0, nan_ok=True)


def recorded(state):
    """What the Prefect API holds for the flow run of ``state``: (flow name, state type, artifacts by key)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    flow_run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(flow_run_id)
        flow = client.read_flow(flow_run.flow_id)
        artifacts = client.read_artifacts(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return flow.name, flow_run.state.type.value, {a.key: a.data for a in artifacts}


# ---------------------------------------------------------------------------------------------
# evaluate, then selective-decoding on the model it registered (as pretrain/full chains them)


@pytest.fixture(scope="module")
def evaluated(prefect_api, tiny_state, tmp_path_factory):
    """The ``evaluate`` flow on the tiny checkpoint, logging into a fresh MLflow run of a state dir
    of its own (its default store), so it registers the model with its y-decoder there."""
    from mlflow.tracking import MlflowClient

    from flows.prefect_flows.evaluate import evaluate
    from flows.tracking import ensure_experiment
    from flows.tracking_store import use_tracking

    layout, data = seeded_state(tiny_state, tmp_path_factory.mktemp("evaluate"))
    use_tracking(layout.tracking_uri)
    experiment = ensure_experiment("vljepa-flow-tests", layout.artifact_root)
    run_id = MlflowClient(layout.tracking_uri).create_run(experiment, run_name="tiny").info.run_id
    inputs = dict(checkpoint_dir=str(tiny_state["checkpoint_dir"]), db_path=str(data.db_path),
                  test_cache=data.caches["test"].path, corpus_dir=str(data.corpus_dir),
                  train_cache=data.caches["train"].path, tracking_uri=layout.tracking_uri,
                  out_dir=str(layout.root / "eval"))
    state = evaluate(**inputs, run_id=run_id, return_state=True)
    return SimpleNamespace(layout=layout, inputs=inputs, run_id=run_id, state=state, summary=state.result())


def test_evaluate_flow_returns_the_evaluation_and_registers_the_model(evaluated):
    from mlflow.tracking import MlflowClient

    from flows.evaluate import run_evaluation

    assert recorded(evaluated.state)[:2] == ("evaluate", "COMPLETED")
    summary = evaluated.summary
    assert not summary["decoder"]["reused"]  # the flow trained the y-decoder itself
    # The plain function on the same input (the decoder the flow trained, found by its key) scores the same.
    plain = run_evaluation(**{k: v for k, v in evaluated.inputs.items() if k != "out_dir"},
                           out_dir=Path(evaluated.inputs["out_dir"]) / "plain-decoder-reuse")
    assert plain["decoder"]["key"] == summary["decoder"]["key"]
    assert plain["metrics"] == exactly(summary["metrics"])
    assert plain["chance"] == summary["chance"]
    assert {"retrieval/t2v_r1", "captioning/cider", "vqa/accuracy", "world_prediction/accuracy"} <= set(
        summary["metrics"])
    out = Path(summary["out_dir"])
    assert out == Path(evaluated.inputs["out_dir"])
    assert json.loads((out / "results.json").read_text())["metrics"] == exactly(summary["metrics"])
    assert all(Path(p).is_file() for p in summary["plots"]) and len(summary["plots"]) == 4
    # Logged into the given run and registered from it, as the first version: the candidate.
    client = MlflowClient(evaluated.layout.tracking_uri)
    logged = client.get_run(evaluated.run_id).data.metrics
    assert {k: logged[f"eval/{k}"] for k in summary["metrics"]} == exactly(summary["metrics"])
    assert (summary["mlflow"]["version"], summary["mlflow"]["candidate"]) == ("1", True)
    assert client.get_model_version_by_alias("vljepa", "candidate").run_id == evaluated.run_id


def test_evaluate_flow_fails_without_the_train_cache_the_decoder_needs(evaluated):
    from flows.prefect_flows.evaluate import evaluate

    inputs = {**evaluated.inputs, "train_cache": None, "out_dir": str(evaluated.layout.root / "eval-no-train-cache")}
    state = evaluate(**inputs, register=False, return_state=True)
    assert recorded(state)[:2] == ("evaluate", "FAILED")
    assert "give train_cache" in state.message
    with pytest.raises(ValueError, match="decoder_train='text'"):
        state.result()


def test_selective_decoding_flow_sweeps_the_registered_model(evaluated):
    """On val: the tiny corpus's one multi-event clip outside train (its test clips have one event each)."""
    from mlflow.tracking import MlflowClient

    from flows.prefect_flows.selective_decoding import selective_decoding
    from flows.selective import sweep_registered_model

    state_dir = str(evaluated.layout.root)
    state = selective_decoding(state_dir=state_dir, split="val", max_clips=1, return_state=True)
    assert recorded(state)[:2] == ("selective-decoding", "COMPLETED")
    result = state.result()
    assert result["model"] == f"models:/vljepa@candidate (version 1, run {evaluated.run_id})"
    assert result["decoder"] == "y-decoder"  # the decoder that evaluate registered with the model
    assert (result["n_clips"], result["config"]["split"]) == (1, "val")
    assert {r["method"] for r in result["rows"]} == {"uniform", "ward", "online"}
    # The plain function on the same input: the same decode points, decodes and CIDEr (no timings in a row).
    plain = sweep_registered_model(state_dir=state_dir, split="val", max_clips=1)
    assert plain["rows"] == result["rows"]
    assert plain["savings_vs_uniform_1hz"] == result["savings_vs_uniform_1hz"]
    # Logged into the registered model's training run: once by the flow, once by the plain call.
    client = MlflowClient(evaluated.layout.tracking_uri)
    history = client.get_metric_history(evaluated.run_id, "selective/compute_per_window_over_stride")
    assert sorted(m.value for m in history) == sorted(r["compute_per_window_over_stride"] for r in (result, plain))
    logged = {a.path for a in client.list_artifacts(evaluated.run_id, "selective_decoding")}
    assert logged == {f"selective_decoding/{n}" for n in ("pareto.png", "selective_decoding.md",
                                                          "selective_decoding.json")}


def test_selective_decoding_flow_names_the_split_without_multi_event_clips(evaluated):
    from flows.prefect_flows.selective_decoding import selective_decoding

    state = selective_decoding(state_dir=str(evaluated.layout.root), split="test", return_state=True)
    assert recorded(state)[:2] == ("selective-decoding", "FAILED")
    with pytest.raises(ValueError, match="no test clips with ≥ 2 events"):
        state.result()


# ---------------------------------------------------------------------------------------------
# compare and ablate: each trains in a state dir of its own


def test_compare_flow_trains_both_models_alike_and_logs_them(prefect_api, tiny_state, tmp_path):
    from mlflow.tracking import MlflowClient

    from flows.compare import run_compare
    from flows.prefect_flows.compare import compare
    from flows.resolve import RunConfig, length_overrides

    layout, _ = seeded_state(tiny_state, tmp_path / "state")
    state = compare(preset="tiny", points=2, seeds=[0], launcher="inline", max_steps=2, state_dir=str(layout.root),
                    return_state=True)
    name, final, artifacts = recorded(state)
    assert (name, final) == ("compare", "COMPLETED")
    result = state.result()
    assert (result["points"], result["seeds"]) == ([1, 2], [0])
    for model in ("vl-jepa", "token-vlm"):
        assert [row["samples_seen"] for row in result["curves"][model]["0"]] == [8, 16]  # batch 8, steps 1 and 2
    root = Path(result["out_dir"])
    assert artifacts["vlm-vs-jepa"].startswith((root / "compare.md").read_text().strip())
    assert (root / "compare.png").stat().st_size > 5000
    client = MlflowClient(layout.tracking_uri)
    assert sorted(result["mlflow_run_ids"]) == ["token-vlm/0", "vl-jepa/0"]
    for run_id in result["mlflow_run_ids"].values():
        assert client.get_run(run_id).data.tags["prefect.flow_run_id"] == str(state.state_details.flow_run_id)
    # The plain function on the same input finds both models and scores them the same.
    run = RunConfig(preset="tiny", launcher="inline", state_dir=str(layout.root), progress=False,
                    overrides=length_overrides(max_steps=2))
    plain = run_compare(run, points=2, seeds=(0,), log_to_mlflow=False)
    assert plain.out_dir == result["out_dir"] and plain.curves == result["curves"]
    assert plain.params == result["params"] and plain.layers == result["layers"]


def test_ablate_flow_runs_a_sweep_through_mlflow(prefect_api, tiny_state, tmp_path):
    from mlflow.tracking import MlflowClient

    from flows.ablate import EXPERIMENT_PREFIX, evaluate_variant
    from flows.prefect_flows.ablate import ablate

    layout, data = seeded_state(tiny_state, tmp_path / "state")
    # One variant (the default: the sweep keeps it whatever is asked), one seed, one step; the
    # override keeps BASE's two pretraining phases at one step each too.
    state = ablate(sweep="pretraining", preset="tiny", variants=["base"], launcher="inline", samples=8, batch_size=8,
                   seeds=[0], overrides=["train.max_steps=1"], state_dir=str(layout.root), return_state=True)
    name, final, artifacts = recorded(state)
    assert (name, final) == ("ablate", "COMPLETED")
    result = state.result()
    assert [(r["variant"], r["seed"]) for r in result["runs"]] == [("base", 0)]
    out = Path(result["out_dir"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["protocol"]["samples"] == 8 and summary["protocol"]["seeds"] == [0]
    checkpoint = layout.ablations / "models" / summary["runs"][0]["key"]
    assert json.loads((checkpoint / "train_summary.json").read_text())["steps"] == 1
    # The metrics are the variant's own, evaluated again here on the test split (the three fields
    # evaluate_variant reads).
    test = SimpleNamespace(db_path=data.db_path, corpus_dir=data.corpus_dir, test=data.caches["test"])
    assert result["runs"][0]["metrics"] == evaluate_variant(str(checkpoint), test)
    assert artifacts["ablate-pretraining"].startswith((out / "summary.md").read_text().strip())
    client = MlflowClient(layout.tracking_uri)
    experiment = client.get_experiment_by_name(EXPERIMENT_PREFIX + "pretraining")
    logged = [r for r in client.search_runs([experiment.experiment_id]) if "ablation.seed" in r.data.tags]
    assert [(r.data.tags["ablation.variant"], r.data.tags["ablation.seed"]) for r in logged] == [("base", "0")]
    assert logged[0].data.metrics["vqa/accuracy"] == pytest.approx(result["runs"][0]["metrics"]["vqa/accuracy"])
    assert client.get_run(result["summary_run_id"]).info.experiment_id == experiment.experiment_id


# ---------------------------------------------------------------------------------------------
# preprocess


def test_preprocess_flow_caches_the_same_tokens_as_the_main_job(prefect_api, tiny_state, tmp_path):
    import pyarrow.parquet as pq

    from flows.prefect_flows.preprocess import preprocess

    state = preprocess(source=str(tiny_state["corpus_dir"]), preset="tiny", splits=["test"],
                       state_dir=str(tmp_path / "state"), return_state=True)
    assert recorded(state)[:2] == ("preprocess", "COMPLETED")
    result = state.result()
    corpus = json.loads(Path(tiny_state["corpus_dir"], "corpus.json").read_text())
    assert result["import"]["n_in"] == corpus["config"]["n_videos"]
    assert result["import"]["n_imported"] == result["import"]["n_in"] and result["import"]["n_failed"] == 0
    cache = result["caches"]["test"]
    assert (cache["reused"], cache["n_failed"]) == (False, 0)
    assert result["empty_splits"] == []
    # The flow encodes the test clips as the main job's data stage did: the same samples, tokens and timestamps.
    ours, main_job = (pq.read_table(sorted(Path(d).glob("*.parquet"))).sort_by("sample_id")
                      for d in (cache["cache_dir"], tiny_state["test_cache"]))
    assert cache["n_samples"] == ours.num_rows == main_job.num_rows
    assert ours.equals(main_job)


def test_preprocess_flow_fails_on_a_misspelt_override_before_any_work(prefect_api, tiny_state, tmp_path):
    from flows.prefect_flows.preprocess import preprocess

    state = preprocess(source=str(tiny_state["corpus_dir"]), preset="tiny", overrides=["x_encoder.num_frame=2"],
                       state_dir=str(tmp_path / "state"), return_state=True)
    assert recorded(state)[:2] == ("preprocess", "FAILED")
    assert "did you mean 'x_encoder.num_frames'" in state.message
    assert not (tmp_path / "state" / "manifest.duckdb").exists()


# ---------------------------------------------------------------------------------------------
# the decoder study (no Prefect)


def test_decoder_study_on_the_tiny_checkpoint(tiny_state, tmp_path, capsys):
    from flows.data import cache_split_tokens
    from flows.decoder_study import VARIANTS, main, markdown
    from flows.evaluate import predicted_pairs
    from flows.loaders import load_task_data
    from vljepa.checkpoint import load_checkpoint
    from vljepa.decoder import decoder_preset
    from vljepa.evaluate import text_embeddings
    from vljepa.tasks.common import frames_per_token_group

    layout, data = seeded_state(tiny_state, tmp_path / "state")
    out = tmp_path / "study"
    assert main([str(tiny_state["checkpoint_dir"]), "--state-dir", str(layout.root), "--out", str(out),
                 "--steps", "1"]) == 0
    result = json.loads((out / "decoder_study.json").read_text())
    assert capsys.readouterr().out.endswith("\n".join(markdown(result)) + f"\n\n{out}/decoder_study.json\n")
    model = load_checkpoint(tiny_state["checkpoint_dir"])
    sizes = {s: cache_split_tokens(model.cfg, layout, s, progress=False).n_samples for s in ("train", "val", "test")}
    assert result["n"] == sizes and result["decoder_steps"] == 1
    # The matched noise is the predictor's own error on the training clips, recomputed here.
    train = load_task_data(data.db_path, data.caches["train"].path, "train", num_frames=model.cfg.x_encoder.num_frames,
                           tubelet_size=frames_per_token_group(model.cfg.x_encoder))
    predicted, captions = predicted_pairs(model, train)
    error = float((predicted - text_embeddings(model, captions)).norm(dim=1).mean())
    assert result["predictor_error_norm"] == pytest.approx(error, rel=1e-5)
    default_noise = decoder_preset("tiny", shared_dim=model.cfg.shared_dim).noise_norm
    assert [(r["variant"], r["noise_norm"]) for r in result["rows"]] == [
        (VARIANTS[0], default_noise), (VARIANTS[1], pytest.approx(error, rel=1e-5)), (VARIANTS[2], default_noise)]
    keys = {f"cider_{split}_beam{b}" for split in ("val", "test") for b in (1, 3)} | {"round_trip_cider_val"}
    assert all(keys <= set(r) for r in result["rows"])
    # Chosen on val: the (variant, beams) of the highest val CIDEr, reported with its test CIDEr.
    best_variant, best_beams = max(((r["variant"], b) for r in result["rows"] for b in (1, 3)),
                                   key=lambda vb: next(r for r in result["rows"] if r["variant"] == vb[0])
                                   [f"cider_val_beam{vb[1]}"])
    row = next(r for r in result["rows"] if r["variant"] == best_variant)
    assert result["chosen_on_val"] == {"variant": best_variant, "num_beams": best_beams,
                                       "cider_val": row[f"cider_val_beam{best_beams}"],
                                       "cider_test": row[f"cider_test_beam{best_beams}"]}


class _Four(torch.utils.data.IterableDataset):
    def __iter__(self):
        return iter(range(4))


def test_a_forked_dataloader_worker_exits_cleanly_in_a_process_that_ran_a_flow(prefect_api):
    """Prefect 3.8's at-exit drain fails in a forked child; ``flows.prefect_flows`` marks it drained.
    Without that, both workers exit 1 and torch raises 'DataLoader worker ... exited unexpectedly'."""
    from prefect import flow
    from torch.utils.data import DataLoader

    import flows.prefect_flows  # noqa: F401  (what every flow module imports first)

    @flow(name="forked-loader")
    def forked_loader() -> list[int]:
        loader = DataLoader(_Four(), batch_size=None, num_workers=2, multiprocessing_context="fork")
        return sorted(int(x) for x in loader)

    assert forked_loader() == [0, 0, 1, 1, 2, 2, 3, 3]  # each worker yields the whole dataset
    after = DataLoader(_Four(), batch_size=None, num_workers=2, multiprocessing_context="fork")
    assert sorted(int(x) for x in after) == [0, 0, 1, 1, 2, 2, 3, 3]  # and after the flow, in the same process
