"""CLI paths as users run them, each on a tiny input built here: ``vljepa ablate overview``, ``vljepa data
import`` of each format, ``vljepa preprocess`` with each ``--kind``, ``--format`` and ``--sampling``, and
``vljepa run --config FILE --engine ray``. Each checks what a user would see: the exit code, what was
printed, the rows in the manifest, the files written and the config that was used.

The commands run in this process through ``flows.cli.main`` where a subprocess would add nothing; ``vljepa
run`` runs in a subprocess (its own Ray, started and stopped with it).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections import Counter
from pathlib import Path

import pytest

from tests.media import make_h264

REPO = Path(__file__).resolve().parents[1]
ABLATIONS = REPO / "docs" / "results" / "ablations"


def cli(argv: list[str], capsys) -> str:
    """``vljepa ARGV`` in this process; its stdout (the exit code must be 0)."""
    from flows.cli import main

    capsys.readouterr()  # drop what earlier steps of the test printed
    assert main(argv) == 0
    return capsys.readouterr().out


def manifest_rows(db: Path, dataset: str) -> dict[str, tuple[str, str | None, str | None]]:
    """{source_id: (split, caption, label)} of every source of ``dataset`` in the manifest."""
    from preprocessing.manifest import open_manifest, split_rows

    con = open_manifest(db, read_only=True)
    try:
        return {r["source_id"]: (split, r["caption"], r["label"]) for split in ("train", "val", "test")
                for r in split_rows(con, split, dataset)}
    finally:
        con.close()


def import_failures(db: Path) -> list[tuple[str, str]]:
    from preprocessing.manifest import list_failures, open_manifest

    con = open_manifest(db, read_only=True)
    try:
        return [(f["path"], f["error"]) for f in list_failures(con, "import")]
    finally:
        con.close()


def clip(path: Path) -> Path:
    """5 s at 8 fps (frames every 0.125 s): uniform, fps and sliding samples land on exact frame times."""
    return make_h264(path, 5, "64x48", 8)


def write_tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def write_msrvtt(root: Path, videos: list[dict], sentences: list[dict]) -> Path:
    (root / "info.json").write_text(json.dumps({"videos": videos, "sentences": sentences}))
    return root / "info.json"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, list[dict]]:
    """``vljepa corpus``'s tiny preset at 8 clips (6 train, 1 val, 1 test), and its records."""
    from flows.cli import main

    out = tmp_path_factory.mktemp("corpus") / "tiny"
    assert main(["corpus", "--out", str(out), "--preset", "tiny", "--n-videos", "8", "--no-progress"]) == 0
    records = [json.loads(line) for line in (out / "annotations.jsonl").read_text().splitlines()]
    assert Counter(r["split"] for r in records) == {"train": 6, "val": 1, "test": 1}
    return out, records


# ---------------------------------------------------------------------------------------------------
# vljepa data import


def test_data_import_corpus_lands_every_record_and_a_rerun_changes_nothing(corpus, tmp_path, capsys):
    root, records = corpus
    db = tmp_path / "manifest.duckdb"
    command = ["data", "--manifest", str(db), "import", "corpus", str(root)]
    assert cli(command, capsys) == "in 8: imported 8, unchanged 0, failed 0\n"
    assert manifest_rows(db, "synthetic") == {r["clip_id"]: (r["split"], r["caption"], r["label"]) for r in records}
    assert cli(command, capsys) == "in 8: imported 0, unchanged 8, failed 0\n"


def test_data_import_video2dataset_extracts_each_keys_video_and_records_the_key_without_one(tmp_path, capsys):
    a, b = clip(tmp_path / "a.mp4"), clip(tmp_path / "b.mp4")
    tar = write_tar(tmp_path / "shard-0000.tar", {
        "000000000.mp4": a.read_bytes(), "000000000.txt": b"a red square moves left",
        "000000000.json": json.dumps({"split": "validation"}).encode(),  # the caption is the .txt's
        "000000001.mp4": b.read_bytes(),
        "000000001.json": json.dumps({"caption": "two blue circles grow", "split": "test"}).encode(),
        "000000002.json": json.dumps({"caption": "a key without its video"}).encode()})
    db, media = tmp_path / "manifest.duckdb", tmp_path / "media"
    out = cli(["data", "--manifest", str(db), "import", "video2dataset", str(tar), "--media-dir", str(media),
               "--dataset", "web"], capsys)
    assert out == "in 3: imported 2, unchanged 0, failed 1 (see `vljepa data failures`)\n"
    assert manifest_rows(db, "web") == {"shard-0000/000000000": ("val", "a red square moves left", None),
                                        "shard-0000/000000001": ("test", "two blue circles grow", None)}
    assert (media / "shard-0000" / "000000000.mp4").read_bytes() == a.read_bytes()
    assert (media / "shard-0000" / "000000001.mp4").read_bytes() == b.read_bytes()
    assert import_failures(db) == [(f"{tar}:000000002", "key 000000002 has no video (['json'])")]


def test_data_import_msrvtt_takes_each_videos_first_sentence_and_its_split(tmp_path, capsys):
    videos = tmp_path / "TrainValVideo"
    videos.mkdir()
    for name in ("video0", "video1", "video2"):
        clip(videos / f"{name}.mp4")
    splits = {"video0": "train", "video1": "validate", "video2": "test"}
    info = write_msrvtt(tmp_path, [{"video_id": video, "split": split} for video, split in splits.items()],
                        [{"video_id": "video0", "sen_id": 5, "caption": "a later sentence"},
                         {"video_id": "video0", "sen_id": 2, "caption": "a man cooks"},
                         {"video_id": "video1", "sen_id": 0, "caption": "a dog runs"},
                         {"video_id": "video2", "sen_id": 1, "caption": "cars drive by"}])
    db = tmp_path / "manifest.duckdb"
    out = cli(["data", "--manifest", str(db), "import", "msrvtt", str(info), "--videos", str(videos),
               "--dataset", "msrvtt"], capsys)
    assert out == "in 3: imported 3, unchanged 0, failed 0\n"
    assert manifest_rows(db, "msrvtt") == {"video0": ("train", "a man cooks", None),
                                           "video1": ("val", "a dog runs", None),
                                           "video2": ("test", "cars drive by", None)}


# ---------------------------------------------------------------------------------------------------
# vljepa preprocess --kind K --format F --sampling S
#
# The tiny x-encoder reads 2 frames a sample (vljepa.config's tiny preset); every clip here is 5 s at 8 fps.
# uniform: the centres of 2 equal segments, 1.25 s and 3.75 s. sliding: 2 fps (10 frames), windows of the
# encoder's 2 frames every 8 frames: 0-0.5 s and 4-4.5 s. fps: the 10 frames at 2 fps, encoded 2 at a time
# (5 samples a clip).
UNIFORM = [("", [1.25, 3.75])]
SLIDING = [("@w0", [0.0, 0.5]), ("@w1", [4.0, 4.5])]
FPS = [(f"@w{k}", [k * 1.0, k * 1.0 + 0.5]) for k in range(5)]


def folder_source(root: Path) -> tuple[list[str], dict[str, list[str]]]:
    (root / "mine").mkdir()
    for name in ("a", "b"):
        clip(root / "mine" / f"{name}.mp4")
    (root / "mine" / "captions.csv").write_text("path,caption,split\n"
                                                "a.mp4,a red square,train\nb.mp4,a blue disc,test\n")
    return ([str(root / "mine"), "--annotations", str(root / "mine" / "captions.csv"), "--dataset", "mine"],
            {"train": ["a"], "test": ["b"]})


def video2dataset_source(root: Path) -> tuple[list[str], dict[str, list[str]]]:
    a, b = clip(root / "a.mp4"), clip(root / "b.mp4")
    tar = write_tar(root / "web-0.tar", {"k0.mp4": a.read_bytes(), "k0.txt": b"a red square",
                                         "k0.json": b'{"split": "train"}', "k1.mp4": b.read_bytes(),
                                         "k1.txt": b"a blue disc", "k1.json": b'{"split": "test"}'})
    return ([str(tar), "--media-dir", str(root / "media"), "--dataset", "web"],
            {"train": ["web-0/k0"], "test": ["web-0/k1"]})


def msrvtt_source(root: Path) -> tuple[list[str], dict[str, list[str]]]:
    (root / "videos").mkdir()
    for name in ("video0", "video1"):
        clip(root / "videos" / f"{name}.mp4")
    info = write_msrvtt(root, [{"video_id": "video0", "split": "train"}, {"video_id": "video1", "split": "test"}],
                        [{"video_id": "video0", "sen_id": 0, "caption": "a red square"},
                         {"video_id": "video1", "sen_id": 0, "caption": "a blue disc"}])
    return ([str(root / "videos"), "--annotations", str(info), "--dataset", "msrvtt"],
            {"train": ["video0"], "test": ["video1"]})


@pytest.mark.parametrize("kind,fmt,sampling,build,samples", [
    ("folder", "parquet", "sliding", folder_source, SLIDING),
    ("video2dataset", "parquet", "fps", video2dataset_source, FPS),
    ("msrvtt", "webdataset", "uniform", msrvtt_source, UNIFORM),
])
def test_preprocess_caches_each_split_with_the_sampling_and_format_asked_for(kind, fmt, sampling, build, samples,
                                                                            tmp_path, capsys):
    from preprocessing.shards import read_cache

    source, clips = build(tmp_path)
    out = cli(["preprocess", *source, "--kind", kind, "--format", fmt, "--sampling", sampling, "--preset", "tiny",
               "--state-dir", str(tmp_path / "state"), "--json"], capsys)
    summary = json.loads(out)
    assert summary["import"] == {"n_in": 2, "n_imported": 2, "n_skipped": 0, "n_failed": 0}
    assert summary["empty_splits"] == ["val"]  # no clip of these datasets is in val: nothing cached, said so
    assert set(summary["caches"]) == {"train", "test"}
    for split, ids in clips.items():
        cached = summary["caches"][split]
        expected = [(clip_id + suffix, stamps) for clip_id in ids for suffix, stamps in samples]
        assert (cached["n_in"], cached["n_cached"], cached["n_failed"], cached["n_samples"]) == (1, 1, 0, len(expected))
        cache_dir = Path(cached["cache_dir"])
        assert cache_dir.is_relative_to(tmp_path / "state" / "cache" / "shards")
        assert cache_dir.name == cached["cache_key"]
        shards = sorted(p.name for p in cache_dir.iterdir() if p.name != "index.json")
        assert shards == [f"shard-00000.{'tar' if fmt == 'webdataset' else 'parquet'}"]
        tokens = read_cache(cache_dir)
        assert [(i, t.tolist()) for i, t in zip(tokens.sample_ids, tokens.timestamps)] == expected
        assert tokens.tokens.shape[0] == len(expected)


def test_preprocess_corpus_to_webdataset_shards_caches_every_clip_of_every_split(corpus, tmp_path, capsys):
    from preprocessing.shards import read_cache

    root, records = corpus
    out = cli(["preprocess", str(root), "--kind", "corpus", "--format", "webdataset", "--sampling", "uniform",
               "--preset", "tiny", "--state-dir", str(tmp_path / "state"), "--json"], capsys)
    summary = json.loads(out)
    assert summary["import"] == {"n_in": 8, "n_imported": 8, "n_skipped": 0, "n_failed": 0}
    assert summary["empty_splits"] == []
    for split in ("train", "val", "test"):
        ids = sorted(r["clip_id"] for r in records if r["split"] == split)
        cached = summary["caches"][split]
        assert (cached["n_cached"], cached["n_failed"], cached["n_samples"]) == (len(ids), 0, len(ids))
        cache_dir = Path(cached["cache_dir"])
        assert {p.suffix for p in cache_dir.iterdir() if p.name != "index.json"} == {".tar"}
        tokens = read_cache(cache_dir)
        assert sorted(tokens.sample_ids) == ids and tokens.timestamps.shape == (len(ids), 2)
    # Nothing changed: the re-run imports nothing and reuses every cache.
    again = json.loads(cli(["preprocess", str(root), "--kind", "corpus", "--format", "webdataset", "--preset", "tiny",
                            "--state-dir", str(tmp_path / "state"), "--json"], capsys))
    assert again["import"]["n_skipped"] == 8 and all(c["reused"] for c in again["caches"].values())


# ---------------------------------------------------------------------------------------------------
# vljepa ablate overview


def record_export(uri: str, export: dict) -> None:
    """Log an overview export's runs into MLflow with the tags, params and metrics ``flows.ablate.log_sweep``
    and ``flows.compare.log_compare`` give them: the runs ``vljepa ablate overview`` reads back."""
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    from flows.ablate_report import EXPERIMENT_PREFIX
    from flows.compare import EXPERIMENT as COMPARE

    client = MlflowClient(uri)
    for name, sweep in export["sweeps"].items():
        experiment_id = client.create_experiment(EXPERIMENT_PREFIX + name)
        protocol = sweep["protocol"]
        for r in sweep["runs"]:
            tags = {"ablation.sweep": name, "ablation.axis": sweep["axis"], "ablation.variant": r["variant"],
                    "ablation.seed": str(r["seed"]), "ablation.key": r["key"],
                    "ablation.order": str(sweep["order"].index(r["variant"])),
                    "ablation.default": str(r["variant"] == sweep["default"]).lower(), "ablation.note": sweep["note"],
                    "ablation.samples": str(protocol["samples"]), "ablation.batch_size": str(protocol["batch_size"])}
            run_id = client.create_run(experiment_id, tags=tags).info.run_id
            metrics = {**r["metrics"], "train/seconds": r["seconds"], "eval/seconds": r["eval_seconds"]}
            client.log_batch(run_id, metrics=[Metric(k, v, 0, 0) for k, v in metrics.items()])
            client.set_terminated(run_id)
    compare = export["compare"]
    experiment_id = client.create_experiment(COMPARE)
    for model, by_seed in compare["curves"].items():
        for seed, rows in by_seed.items():
            tags = {"compare.model": model, "compare.seed": seed, "compare.key": compare["key"]}
            run_id = client.create_run(experiment_id, tags=tags).info.run_id
            metrics = [Metric(k, value, 0, int(row["samples_seen"])) for row in rows for k, value in row.items()
                       if k != "samples_seen"]
            if seed == str(compare["seeds"][0]):
                metrics += [Metric(f"cost/{k}", v, 0, 0) for k, v in compare["cost"][model].items()]
            params = [Param("lm_layers", str(compare["layers"][model])),
                      Param("params.trainable", str(compare["params"][model]["trainable"]))]
            client.log_batch(run_id, metrics=metrics, params=params)
            client.set_terminated(run_id)


def without_run_ids(export: dict) -> dict:
    return {**export, "sweeps": {name: {**sweep, "runs": [{k: v for k, v in r.items() if k != "run_id"}
                                                          for r in sweep["runs"]]}
                                 for name, sweep in export["sweeps"].items()}}


def test_ablate_overview_rebuilds_the_committed_tables_from_the_runs_of_its_export(tmp_path, capsys):
    """The committed export (docs/results/ablations: 60 ablation runs of 5 sweeps, a comparison of 3 seeds)
    recorded into MLflow as the flows log runs; the overview from those runs is the committed one."""
    committed = json.loads((ABLATIONS / "overview.json").read_text())
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    record_export(uri, committed)
    out = tmp_path / "overview"
    printed = cli(["ablate", "overview", "--tracking-uri", uri, "--out", str(out)], capsys)
    assert printed == (ABLATIONS / "overview.md").read_text() + "\n"
    assert (out / "overview.md").read_text() == (ABLATIONS / "overview.md").read_text()
    assert without_run_ids(json.loads((out / "overview.json").read_text())) == without_run_ids(committed)
    assert (out / "overview.png").stat().st_size > 5000 and (out / "compare.png").stat().st_size > 5000


# ---------------------------------------------------------------------------------------------------
# vljepa run --config FILE --engine ray


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory):
    """One ``vljepa run`` in a subprocess that reads its config from a file and preprocesses on Ray Data
    (a local Ray of its own, its session under a short RAY_TMPDIR: Ray's socket paths have a length limit).
    The file is the tiny preset with 2 optimiser steps and another learning rate, so both show."""
    from vljepa.config import get_preset, replace

    root = tmp_path_factory.mktemp("pipeline")
    cfg = replace(get_preset("tiny"), **{"train.max_steps": 2, "train.lr": 0.002})
    (root / "config.json").write_text(cfg.to_json())
    ray_tmp = Path(tempfile.mkdtemp(prefix="vljepa-ray-", dir="/tmp"))
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "VLJEPA_STATE_DIR", "MLFLOW_TRACKING_URI")}
    env.update(PYTHONPATH=str(REPO), RAY_TMPDIR=str(ray_tmp))
    state, uri = root / "state", f"sqlite:///{root / 'mlflow.db'}"
    entry = "from flows.cli import main; import sys; sys.exit(main(sys.argv[1:]))"
    try:
        proc = subprocess.run([sys.executable, "-c", entry, "run", "--config", str(root / "config.json"),
                               "--phase", "video", "--launcher", "inline", "--engine", "ray", "--json",
                               "--state-dir", str(state), "--tracking-uri", uri],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
        ray_data_logs = {p.name: p.read_text()
                         for p in (ray_tmp / "ray").glob("session_*/logs/ray-data/ray-data-*.log")}
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    yield {"result": json.loads(proc.stdout), "cfg": cfg, "state": state, "uri": uri, "ray_data_logs": ray_data_logs}


def test_run_trains_the_config_file_it_is_given(pipeline_run):
    from mlflow.tracking import MlflowClient

    from vljepa.config import VLJepaConfig

    result, cfg = pipeline_run["result"], pipeline_run["cfg"]
    assert (result["preset"], result["phases"]) == ("tiny", ["video"])
    assert result["train_steps"] == 2  # the file's train.max_steps (the tiny preset trains 2 epochs: 10 steps)
    # The tiny recipe's video phase changes nothing (vljepa.recipes): the model was trained on the file as written.
    assert VLJepaConfig.from_json((Path(result["checkpoint_dir"]) / "config.json").read_text()) == cfg
    logged = MlflowClient(pipeline_run["uri"]).get_run(result["mlflow"]["run_id"]).data.params
    assert (logged["train.lr"], logged["train.max_steps"]) == ("0.002", "2")


def test_run_engine_ray_caches_every_split_through_ray_data(pipeline_run):
    result, logs = pipeline_run["result"], pipeline_run["ray_data_logs"]
    plans = [line for text in logs.values() for line in text.splitlines() if "Execution plan of Dataset" in line]
    # One Ray Data pipeline (decode/sample, then the encoder actors) per cache the run wrote, and no other.
    caches = list((pipeline_run["state"] / "cache" / "shards").rglob("index.json"))
    assert len(plans) == len(caches) >= 2, plans
    assert all("MapBatches(DecodeSample)" in p and "MapBatches(EncodeTokens)" in p for p in plans), plans
    # Every clip reached the caches: the tiny corpus's 20 train videos and their 20 stills (the video phase's
    # mix), and its 2 test clips.
    assert (result["n_train"], result["n_test"]) == (40, 2)
