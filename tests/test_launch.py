"""Launching: the sbatch script submitit would submit, local submitit jobs, requeue, SFT data, MLflow."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vljepa.config import get_preset, replace

COLOURS = ["red", "green", "blue", "white"]
SHAPES = ["circle", "square", "star", "cube"]


def test_dry_run_renders_the_sbatch_directives_from_the_config(tmp_path):
    from flows.launch import render_sbatch

    cfg = replace(get_preset("paper"), **{"slurm.partition": "h200", "slurm.account": "vljepa",
                                          "slurm.constraint": "h200", "slurm.time_min": 600, "slurm.qos": "high"})
    script = render_sbatch(cfg, tmp_path)
    directives = {line.split("=", 1)[0][len("#SBATCH "):]: line.split("=", 1)[1]
                  for line in script.splitlines() if line.startswith("#SBATCH ") and "=" in line}
    expected = {"--nodes": "24", "--gpus-per-node": "8", "--ntasks-per-node": "8", "--cpus-per-task": "12",
                "--partition": "h200", "--account": "vljepa", "--constraint": "h200", "--qos": "high",
                "--time": "600", "--mem": "1800GB", "--signal": "USR2@120", "--job-name": "vljepa-pretrain-image-paper"}
    assert {k: directives.get(k) for k in expected} == expected
    assert "srun" in script and "submitit.core._submit" in script
    # a 1-minute limit (the slurm tier's timeout test) gets USR2 15 s before the end (Slurm may send it 30 s
    # earlier still), not 120 s before it starts
    short = render_sbatch(replace(cfg, **{"slurm.time_min": 1}), tmp_path / "short")
    assert "#SBATCH --signal=USR2@15" in short.splitlines()
    four = render_sbatch(replace(cfg, **{"slurm.time_min": 4}), tmp_path / "four")
    assert "#SBATCH --signal=USR2@60" in four.splitlines()


def test_dry_run_cli_prints_config_and_script(capsys):
    from flows.cli import main

    assert main(["train", "--stage", "sft", "--preset", "paper", "--dry-run", "--set", "slurm.partition=h100"]) == 0
    out = capsys.readouterr().out
    assert '"stage": "sft"' in out and '"max_steps": 35000' in out and '"schedule": "cosine"' in out
    assert "#SBATCH --partition=h100" in out and "#SBATCH --job-name=vljepa-sft-mix-paper" in out
    assert "192 ranks, global batch 5952" in out and "#SBATCH --nodes=24" in out and "#SBATCH --ntasks-per-node=8" in out
    assert main(["train", "--stage", "pretrain", "--phase", "image", "--preset", "paper", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert '"num_frames": 1' in out and "192 ranks, global batch 24000" in out and "#SBATCH --nodes=24" in out


def test_misspelt_override_is_an_error():
    from flows.resolve import ConfigError, RunConfig
    from flows.train import TrainJobConfig

    job = TrainJobConfig(run=RunConfig(preset="tiny", overrides=("train.lrr=1",)))
    with pytest.raises(ConfigError, match="did you mean 'train.lr"):
        job.model_config()


def test_recipe_presets():
    from vljepa.recipes import stage_config

    paper = get_preset("paper")
    image = stage_config(paper, "pretrain", "image")
    assert (image.x_encoder.num_frames, image.train.batch_size, image.train.max_steps, image.train.lr,
            image.train.schedule) == (1, 24000, 100_000, 5e-5, "constant")
    assert stage_config(paper, "pretrain", "video").x_encoder.num_frames == 16
    sft = stage_config(paper, "sft")
    assert (sft.train.batch_size, sft.train.max_steps, sft.train.schedule, sft.train.stage) == (6000, 35_000, "cosine", "sft")
    small = get_preset("small")
    # small's video phase: 1.5 epochs of the stills + videos mix (the steps its 3 epochs of videos took)
    assert stage_config(small, "pretrain").to_dict() == replace(
        small, **{"train.stage": "pretrain", "train.epochs": 1.5, "train.max_steps": None}).to_dict()


def test_local_executor_gets_an_int_timeout(tmp_path):
    from flows.launch import make_executor

    executor = make_executor(get_preset("tiny"), "local", tmp_path)
    assert isinstance(executor._executor.parameters["timeout_min"], int)
    assert executor._executor.parameters["timeout_min"] >= 60


@pytest.fixture
def tiny_state(tmp_path) -> dict:
    """A 16-clip manifest (imported without probing) and a random token cache of its train split."""
    from preprocessing.cache import write_token_cache
    from preprocessing.manifest import import_corpus, open_manifest

    corpus = tmp_path / "corpus"
    (corpus / "videos").mkdir(parents=True)
    records = []
    for i in range(16):
        colour, shape = COLOURS[i % 4], SHAPES[i // 4]
        (corpus / "videos" / f"clip_{i:06d}.mp4").write_bytes(f"stand-in {i}".encode())
        records.append({"clip_id": f"clip_{i:06d}", "path": f"videos/clip_{i:06d}.mp4", "split": "train",
                        "duration": 1.0, "fps": 10, "width": 64, "height": 48,
                        "caption": f"a {colour} {shape} moves left", "label": f"{colour} {shape}",
                        "qa": [{"question": f"what colour is the {shape}?", "answer": colour},
                               {"question": "what shape is it?", "answer": shape}]})
    (corpus / "annotations.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    (corpus / "corpus.json").write_text(json.dumps({"labels": [f"{c} {s}" for c in COLOURS for s in SHAPES]}))
    db = tmp_path / "manifest.duckdb"
    con = open_manifest(db)
    assert import_corpus(con, corpus, probe=False).n_imported == 16
    con.close()
    rng = np.random.default_rng(0)
    cache = write_token_cache(tmp_path / "tokens.parquet", sample_ids=[r["clip_id"] for r in records],
                              tokens=rng.standard_normal((16, 8, 32)).astype(np.float16),
                              timestamps=np.zeros((16, 2)), encoder_id="tiny", metadata={})
    return {"db": db, "cache": cache, "corpus": corpus, "tmp": tmp_path}


class _Preempted(Exception):
    """Stands for the signal that ends a Slurm allocation between two checkpoints."""


def test_requeue_resubmits_the_same_job_which_resumes_from_checkpoints(tiny_state, monkeypatch):
    """A job stopped after its step-4 checkpoint is requeued as submitit does (``TrainJob.checkpoint`` →
    DelayedSubmission, run with the same arguments): it resumes at step 4 and ends with the weights and
    losses of a run never stopped (cosine lr, 2 shuffled batches per epoch: forgetting the optimiser,
    the schedule or the data order would show)."""
    import torch
    from safetensors.torch import load_file

    import vljepa.train
    from flows.job import TrainDataSpec
    from flows.launch import TrainJob

    cfg = replace(get_preset("tiny"), **{"train.max_steps": 6, "train.checkpoint_every": 2, "train.batch_size": 8,
                                         "train.schedule": "cosine", "train.warmup_steps": 1, "train.num_threads": 1})
    spec = TrainDataSpec(db_path=str(tiny_state["db"]), train_cache=str(tiny_state["cache"]))
    stopped, straight = tiny_state["tmp"] / "stopped", tiny_state["tmp"] / "straight"
    args = (cfg.to_json(), spec, str(stopped), False, None)

    updates = []
    apply_update = vljepa.train.apply_update

    def preempted_in_step_5(*a, **kw):
        if len(updates) == 4:  # steps 1-4 done and checkpointed at 2 and 4; the signal comes during step 5
            raise _Preempted
        updates.append(1)
        return apply_update(*a, **kw)

    monkeypatch.setattr(vljepa.train, "apply_update", preempted_in_step_5)
    with pytest.raises(_Preempted):
        TrainJob()(*args)
    monkeypatch.setattr(vljepa.train, "apply_update", apply_update)
    assert sorted(p.name for p in (stopped / "checkpoints").iterdir()) == ["step-00000002", "step-00000004"]
    assert not (stopped / "model.safetensors").exists()

    delayed = TrainJob().checkpoint(*args)
    assert isinstance(delayed.function, TrainJob) and delayed.args == args
    resumed = delayed.function(*delayed.args, **delayed.kwargs)
    baseline = TrainJob()(cfg.to_json(), spec, str(straight), False, None)

    assert (resumed.resumed_from, resumed.steps, len(resumed.history)) == (4, 6, 6)
    assert baseline.resumed_from is None and baseline.steps == 6
    assert json.loads((stopped / "train_summary.json").read_text())["resumed_from"] == 4
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in baseline.history]
    assert [h["lr"] for h in resumed.history] == [h["lr"] for h in baseline.history]
    weights, expected = load_file(str(stopped / "model.safetensors")), load_file(str(straight / "model.safetensors"))
    assert weights.keys() == expected.keys()
    assert all(torch.equal(weights[k], expected[k]) for k in expected), "resumed weights differ from the straight run"
    initial = load_file(str(stopped / "checkpoints" / "step-00000004" / "model.safetensors"))
    assert not all(torch.equal(initial[k], expected[k]) for k in expected)  # steps 5-6 did train


def test_sft_samples_from_the_manifest(tiny_state):
    from flows.loaders import CLASSIFICATION_QUERY, load_sft_split

    data = load_sft_split(tiny_state["db"], str(tiny_state["cache"]), "train")
    assert len(data) == 16 * 4  # 2 VQA pairs + 1 caption + 1 label per clip
    by_task = {}
    for i, task in enumerate(data.tasks):
        by_task.setdefault(task, i)
    vqa, caption, label = by_task["vqa"], by_task["caption"], by_task["classification"]
    assert data.queries[vqa].startswith("what") and data.texts[vqa] in COLOURS + SHAPES
    assert data.queries[caption] == "" and "moves left" in data.texts[caption]
    assert data.queries[label] == CLASSIFICATION_QUERY and data.texts[label].startswith("a ")
    assert data.query(np.array([caption])) is None  # query-free batch
    np.testing.assert_array_equal(data.visual(np.array([vqa, caption])).numpy()[0],
                                  data.visual(np.array([caption])).numpy()[0])  # same clip, same tokens


def test_sft_trains_with_queries(tiny_state):
    from flows.loaders import load_sft_split
    from vljepa.recipes import stage_config
    from vljepa.train import train

    cfg = replace(stage_config(get_preset("tiny"), "sft"), **{"train.max_steps": 3, "train.num_threads": 1})
    data = load_sft_split(tiny_state["db"], str(tiny_state["cache"]), "train")
    result = train(cfg, data, tiny_state["tmp"] / "sft", progress=False)
    assert len(result.history) == 3 and all(np.isfinite(h["loss"]) for h in result.history)
    lrs = [h["lr"] for h in result.history]
    assert lrs[0] == lrs[1] > lrs[2] > 0  # 1 warmup step to the peak, then cosine decay


def test_local_submitit_job_trains_and_tracks_to_mlflow(tiny_state):
    import mlflow
    from mlflow.tracking import MlflowClient

    from flows.launch import launch
    from flows.job import TrainDataSpec
    from flows.train_tracker import TrackingSpec, sweep_tracking

    tmp = tiny_state["tmp"]
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    tracking = sweep_tracking(TrackingSpec(tracking_uri=uri, artifact_root=str(tmp / "artifacts")), "lr-sweep", "lr-a")
    cfg = replace(get_preset("tiny"), **{"train.max_steps": 4, "train.checkpoint_every": 2, "train.num_threads": 1})
    spec = TrainDataSpec(db_path=str(tiny_state["db"]), train_cache=str(tiny_state["cache"]))
    launched = launch(cfg, spec, tmp / "run", launcher="local", folder=tmp / "submitit", progress=False,
                      tracking=tracking)
    lines: list[str] = []
    summary = launched.wait(emit=lines.append, poll_s=0.5)
    assert summary.steps == 4 and (tmp / "run" / "model.safetensors").is_file()
    assert launched.job_id != "inline" and any((tmp / "submitit").iterdir())

    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    run = client.get_run(summary.mlflow_run_id)
    assert run.info.status == "FINISHED" and run.data.tags["sweep"] == "lr-sweep"
    assert run.data.params["train.lr"] == str(cfg.train.lr) and "sys.torch" in run.data.params
    losses = client.get_metric_history(run.info.run_id, "train/loss")
    assert [m.value for m in sorted(losses, key=lambda m: m.step)] == [h["loss"] for h in summary.history]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.json", "loss_curve.png", "train_summary.json"} <= artifacts
    assert client.get_experiment(run.info.experiment_id).name == "vljepa-train/lr-sweep"


def test_failed_job_surfaces_its_error(tiny_state):
    from flows.launch import launch
    from flows.job import TrainDataSpec

    tmp = tiny_state["tmp"]
    cfg = replace(get_preset("tiny"), **{"train.max_steps": 2, "train.batch_size": 64})  # > 16 samples
    spec = TrainDataSpec(db_path=str(tiny_state["db"]), train_cache=str(tiny_state["cache"]))
    launched = launch(cfg, spec, tmp / "run", launcher="local", folder=tmp / "submitit", progress=False)
    with pytest.raises(RuntimeError, match="smaller than one batch"):
        launched.wait(emit=lambda line: None, poll_s=0.5)


@pytest.mark.slow
def test_timed_out_local_job_is_requeued_and_resumes_from_its_checkpoint(tiny_state):
    """LocalExecutor signals the job at timeout_min (1 min): TrainJob.checkpoint requeues it and
    the new job resumes from the last checkpoint instead of starting over (~3 min; the local
    launcher honours slurm.max_requeues, as Slurm does)."""
    from flows.launch import launch
    from flows.job import TrainDataSpec

    tmp = tiny_state["tmp"]
    cfg = replace(get_preset("tiny"), **{"train.max_steps": 4000, "train.checkpoint_every": 100,
                                         "train.num_threads": 1, "slurm.time_min": 1})
    spec = TrainDataSpec(db_path=str(tiny_state["db"]), train_cache=str(tiny_state["cache"]))
    launched = launch(cfg, spec, tmp / "run", launcher="local", folder=tmp / "submitit", progress=False)
    summary = launched.wait(emit=lambda line: None, poll_s=2.0)
    assert summary.steps == 4000 and summary.resumed_from is not None and summary.resumed_from > 0
    assert len(summary.history) == 4000
