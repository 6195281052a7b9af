"""The main job end to end on the tiny preset, as `vljepa run` with Prefect not importable; its
content keys pinned; its idempotence; the stream and selective-decoding commands on its model."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from flows.pipeline import format_report, run_pipeline
from flows.resolve import RunConfig

# The content addresses of the main job's stages on `tiny`: a refactor that changes one re-trains or
# re-caches users' runs. They do not depend on where the state dir is (a model that starts from another
# is keyed by that model's own key, not its path), so any temporary state dir gives these names.
PINNED = {
    "data": ["items", "synthetic-dbb83703d033", "synthetic-dbb83703d033-stills"],
    "models": ["pretrain-image-tiny-64c6244d6fa9", "pretrain-video-tiny-083d334baa34"],
    "caches": ["0eb633cc9a937242115bb5b249f59db80c024b94b839ae2d717a02f17c00196e",
               "23eeba2c9035e67b59fb84433a7c1e2d7b61bb83d9e84c04dc74d4d2e2cb89ce",
               "74eb6a8f2878f9708b294e989ae88ebe7ba3b3fc04361308691a8dc69d03bd14",
               "c624afab88dec4fa258d51101810c2066fa5e65484415cd2f4e0b5b9e01b72b8"],
}
# Its figures (2 test clips: a recall is 0, 0.5 or 1); recorded from a run, equal in a second one.
PINNED_METRICS = {"t2v_r1": 0.5, "t2v_r5": 1.0, "t2v_r10": 1.0, "t2v_median_rank": 1.0, "v2t_r1": 0.5, "v2t_r5": 1.0,
                  "v2t_r10": 1.0, "v2t_median_rank": 1.0, "cls_top1": 0.0, "cls_top5": 0.0}
PINNED_COUNTS = (40, 2, 10)  # train samples (last phase), test clips, optimiser steps
PINNED_FINAL_LOSS = 2.2855730056762695
HIDE_PREFECT = "import sys; sys.modules['prefect'] = None; from flows.cli import main; sys.exit(main(sys.argv[1:]))"


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    """`vljepa run --preset tiny` in a subprocess where `import prefect` fails."""
    state = tmp_path_factory.mktemp("main-job") / "state"
    run = RunConfig(preset="tiny", launcher="inline", state_dir=str(state),
                    tracking_uri=f"sqlite:///{state}/mlflow.db", progress=False)
    out = subprocess.run([sys.executable, "-c", HIDE_PREFECT, "run", "--preset", "tiny", "--launcher", "inline",
                          "--state-dir", str(state), "--tracking-uri", run.tracking_uri, "--json"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "[prepare-corpus]" in out.stderr  # the stage log went to stderr: stdout is the JSON alone (| jq)
    return run, json.loads(out.stdout)


def test_content_keys_of_the_main_job_are_pinned(first_run):
    state = first_run[0].layout().root
    found = {"data": sorted(p.name for p in (state / "data").iterdir()),
             "models": sorted(p.name for p in (state / "models").iterdir() if not p.name.endswith("-eval")),
             "caches": sorted(p.name for p in (state / "cache" / "shards").glob("*/*"))}
    assert found == PINNED


def test_vljepa_run_never_imported_prefect(first_run):
    """The run above had `import prefect` fail; check that the blocker really blocks."""
    out = subprocess.run([sys.executable, "-c", "import sys; sys.modules['prefect'] = None; import flows.prefect_flows.tasks"],
                         capture_output=True, text=True)
    assert out.returncode != 0 and "prefect" in out.stderr


def test_slice_produces_metrics_checkpoint_and_registered_model(first_run):
    run, result = first_run
    # The tiny run is seeded and single-process: its figures are golden values.
    assert result["metrics"] == pytest.approx(PINNED_METRICS, abs=1e-6)
    assert (result["n_train"], result["n_test"], result["train_steps"]) == PINNED_COUNTS
    assert result["final_loss"] == pytest.approx(PINNED_FINAL_LOSS, rel=1e-5)

    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(run.layout().tracking_uri)
    client = MlflowClient()
    version = client.get_model_version_by_alias("vljepa", "candidate")
    assert str(version.version) == result["mlflow"]["model_version"]
    logged = client.get_run(result["mlflow"]["run_id"])
    assert logged.data.metrics["test/t2v_r1"] == pytest.approx(result["metrics"]["t2v_r1"])
    assert logged.data.params["preset"] == "tiny"
    history = client.get_metric_history(result["mlflow"]["run_id"], "train/loss")
    assert len(history) == result["train_steps"]
    artifacts = {a.path for a in client.list_artifacts(result["mlflow"]["run_id"])}
    assert {"loss_curve.png", "config.json", "evaluation.json"} <= artifacts

    # The registered pyfunc loads and embeds text, unit-normalised.
    model = mlflow.pyfunc.load_model("models:/vljepa@candidate")
    import pandas as pd

    out = model.predict(pd.DataFrame({"text": ["a small red circle moves left", "two blue squares"]}))
    assert len(out) == 2 and abs(float((out["embedding"][0] ** 2).sum()) - 1.0) < 1e-4


def test_rerun_reuses_every_stage_and_registers_nothing_new(first_run):
    run, result = first_run
    assert result["phases"] == ["image", "video"] and not result["reused_stages"]
    again_result = run_pipeline(run)
    again = again_result.to_dict()
    assert sorted(again["reused_caches"]) == ["synthetic-stills/train@image", "synthetic-stills/train@video",
                                              "synthetic/train@video", "test"]
    for name in ("train-image", "train-video", "evaluate", "track", "evaluate-and-register"):
        assert name in again["reused_stages"], name
    assert again["checkpoint_dir"] == result["checkpoint_dir"]
    assert again["mlflow"]["run_id"] == result["mlflow"]["run_id"]
    assert again["mlflow"]["model_version"] == result["mlflow"]["model_version"]
    assert again["metrics"] == result["metrics"]
    report = format_report(again_result)
    assert f"{result['metrics']['t2v_r1']:.3f}" in report and "t2v_r1" in report


def test_each_phase_read_its_own_mix(first_run):
    """Phase 1A drew still images only; phase 1B a mixture of stills and videos near its weights."""
    _, result = first_run
    image, video = result["phase_data"]["image"], result["phase_data"]["video"]
    assert image["mix"] == "pretrain-image" and set(image["drawn"]) == {"stills"}
    assert video["mix"] == "pretrain-video" and set(video["drawn"]) == {"stills", "videos"}
    assert video["drawn"]["videos"] > video["drawn"]["stills"] > 0  # weights 0.7 / 0.3
    assert sum(image["drawn"].values()) > 0 and not any(image["skipped"].values())


def test_video_phase_starts_from_the_image_phase_model(first_run):
    run, result = first_run
    video_cfg = json.loads((Path(result["checkpoint_dir"]) / "config.json").read_text())
    image_dir = Path(video_cfg["train"]["init_from"])
    assert image_dir.name.startswith("pretrain-image-tiny-")
    image_cfg = json.loads((image_dir / "config.json").read_text())
    assert image_cfg["x_encoder"]["num_frames"] == 1 and video_cfg["x_encoder"]["num_frames"] == 2


def test_a_failed_stage_is_rerun_alone(first_run, monkeypatch):
    """After a failure in evaluation, a re-run trains nothing: only the failed stage and later run."""
    from flows import pipeline

    run, result = first_run
    stamp = Path(result["checkpoint_dir"]) / "test_metrics.json"
    stamp.unlink()
    monkeypatch.setattr(pipeline, "evaluate_checkpoint", lambda *a, **k: (_ for _ in ()).throw(OSError("disk")))
    with pytest.raises(OSError, match="disk"):
        run_pipeline(run)
    monkeypatch.undo()
    again = run_pipeline(run).to_dict()
    assert "evaluate" not in again["reused_stages"] and "train-video" in again["reused_stages"]
    assert again["metrics"] == result["metrics"]


@pytest.mark.slow  # the default tier's submitit job: test_launch.py's, with its MLflow run
def test_submitit_local_launcher_trains_in_a_subprocess(first_run, tmp_path):
    import os

    from flows.data import prepare_data
    from flows.launch import launch

    run, _ = first_run
    cfg, layout = run.model_config(), run.layout()
    data = prepare_data(cfg, layout, ("train",), progress=False)  # reused: content-addressed
    summary = launch(cfg, data.spec(), tmp_path / "ckpt", launcher="local", folder=layout.submitit,
                     progress=False).result()
    state = layout.root
    assert (tmp_path / "ckpt" / "model.safetensors").is_file()
    assert json.loads((tmp_path / "ckpt" / "config.json").read_text())["preset"] == "tiny"
    assert summary.steps >= 1
    job_dirs = list((state / "submitit").iterdir())
    assert job_dirs, "submitit wrote no job folder"
    assert os.getpid() not in {int(p.name) for p in job_dirs if p.name.isdigit()}


@pytest.mark.parametrize("method", ["online", "ward", "uniform"])
def test_stream_cli_prints_timestamped_captions(first_run, capsys, method):
    from flows.cli import main

    run, _ = first_run
    video = sorted((run.layout().data_dir).rglob("clip_*.mp4"))[0]
    assert main(["stream", str(video), "--state-dir", str(run.layout().root), "--tracking-uri", run.tracking_uri,
                 "--method", method, "--rate", "1.0", "--window", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    captions = [line for line in out if line.startswith("[")]
    assert captions and all("s" in line.split("]")[0] for line in captions)
    assert "model models:/vljepa@champion (version 1), decoder: its y-decoder (beam 1)" in out[0]
    assert out[-1].startswith("decodes: ") and "uniform 1 Hz" in out[-1]


def test_selective_decoding_benchmark_runs_on_the_tiny_corpus(first_run, tmp_path):
    from flows.loaders import caption_bank, event_clips
    from flows.selective import SelectiveConfig, run_selective
    from flows.train import latest_base_model
    from vljepa.encoders import build_x_encoder
    from vljepa.checkpoint import load_checkpoint

    run, _ = first_run
    state = run.layout().root
    model = load_checkpoint(latest_base_model(run.layout()))
    cfg = SelectiveConfig(split="train", window_frames=2, stream_seconds=20.0, max_clips=6,
                          rates=(1.0, 0.5), thresholds=(0.1,))
    assert event_clips(state / "manifest.duckdb", cfg.split, max_clips=cfg.max_clips)
    result = run_selective(model, build_x_encoder(model.cfg.x_encoder), state / "manifest.duckdb",
                           caption_bank(state / "manifest.duckdb"), cfg, tmp_path)
    methods = {row["method"] for row in result["rows"]}
    assert methods == {"uniform", "ward", "online"}
    uniform_1hz = [r for r in result["rows"] if r["method"] == "uniform" and r["setting"] == 1.0][0]
    assert uniform_1hz["n_decodes"] >= result["stream_seconds"] // 1 - result["n_streams"]
    assert (tmp_path / "pareto.png").stat().st_size > 1000 and (tmp_path / "selective_decoding.md").is_file()


def test_selective_decoding_sweep_logs_into_the_models_run(first_run):
    from mlflow.tracking import MlflowClient

    from flows.selective import sweep_registered_model

    run, result = first_run
    out = sweep_registered_model(state_dir=str(run.layout().root), tracking_uri=run.layout().tracking_uri,
                                 max_clips=4, split="train")
    client = MlflowClient(run.layout().tracking_uri)
    version = client.get_model_version_by_alias("vljepa", "candidate")
    logged = client.get_run(version.run_id)
    assert "selective/compute_per_window_over_stride" in logged.data.metrics
    artifacts = {a.path for a in client.list_artifacts(version.run_id, "selective_decoding")}
    assert "selective_decoding/pareto.png" in artifacts
    assert out["n_streams"] >= 1
