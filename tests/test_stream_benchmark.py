"""The selective-decoding stream benchmark (``preprocessing.streams``): statistics shaped
after the paper's EgoExo4D set, held-out keystep compositions, determinism, the files."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest

from preprocessing.corpus_render import SIZE_RADIUS, safe_box
from preprocessing.streams import (PRESETS, StreamCorpusConfig, compositions, generate_streams, plan_stream, splits,
                                   stream_record)

SMALL = PRESETS["small"]
MINI = dataclasses.replace(PRESETS["tiny"], n_train=1, n_val=0, n_test=1, stream_seconds=12.0, keystep_seconds=5.0)


@pytest.fixture(scope="module")
def small_plans():
    return [(split, plan_stream(SMALL, i, split)) for i, split in enumerate(splits(SMALL))]


def test_small_preset_statistics_follow_its_config(small_plans):
    records = [stream_record(SMALL, i, split, plan) for i, (split, plan) in enumerate(small_plans)]
    lengths = np.array([r["duration"] for r in records])
    gaps = np.array([b["time"] - a["time"] for r in records for a, b in zip(r["annotations"], r["annotations"][1:])])
    keysteps = np.array([k["end"] - k["start"] for r in records for k in r["keysteps"]])
    assert abs(lengths.mean() - 180) < 10 and lengths.min() >= 0.8 * 180 - 1 and lengths.max() <= 1.2 * 180 + 1
    assert abs(gaps.mean() - 2.5) < 0.15  # one annotation every ~2.5 s, as the paper's benchmark
    assert abs(keysteps.mean() - 30) < 4
    per_stream = np.array([len(r["annotations"]) for r in records])
    assert abs(per_stream.mean() - 72) < 6  # 180 s / 2.5 s


def test_actions_tile_each_keystep_and_objects_stay_in_view(small_plans):
    x0, y0, x1, y1 = safe_box(SMALL.width, SMALL.height)
    side = min(SMALL.width, SMALL.height)
    for _, keysteps in small_plans:
        assert keysteps[0].start_frame == 0
        for a, b in zip(keysteps, keysteps[1:]):
            assert a.end_frame == b.start_frame
        for k in keysteps:
            assert k.actions[0].start_frame == k.start_frame and k.actions[-1].end_frame == k.end_frame
            for a, b in zip(k.actions, k.actions[1:]):
                assert a.end_frame == b.start_frame and a.after == b.before  # objects stay where they were left
            for action in k.actions:
                assert action.end_frame - action.start_frame >= 2
                for obj, (x, y, s) in zip(k.objects, action.after):
                    r = SIZE_RADIUS[obj.size] * side * s
                    assert x0 - 1e-6 <= x - r and x + r <= x1 + 1e-6 and y0 - 1e-6 <= y - r and y + r <= y1 + 1e-6
                moved = [i for i, (p, q) in enumerate(zip(action.before, action.after)) if p != q]
                assert moved == [action.actor]  # one object acts at a time


def test_test_and_val_keysteps_use_compositions_no_training_stream_shows(small_plans):
    train_pool, held_pool = compositions(SMALL)
    assert not set(train_pool) & set(held_pool)
    seen_by = {s: set().union(*[{tuple((o.colour, o.shape) for o in k.objects) for k in p}
                                for sp, p in small_plans if sp == s]) for s in ("train", "val", "test")}
    assert seen_by["test"] and not (seen_by["train"] & seen_by["test"]) and not (seen_by["train"] & seen_by["val"])
    train_objects = {pair for combo in seen_by["train"] for pair in combo}
    assert {pair for combo in seen_by["test"] for pair in combo} <= train_objects  # objects seen, combinations not


def test_plans_are_deterministic_and_seeded():
    assert plan_stream(SMALL, 5, "test") == plan_stream(SMALL, 5, "test")
    assert plan_stream(SMALL, 5, "test") != plan_stream(dataclasses.replace(SMALL, seed=1), 5, "test")


def test_generated_files_are_byte_identical_and_add_up(tmp_path):
    a = generate_streams(MINI, tmp_path / "a", progress=False)
    generate_streams(MINI, tmp_path / "b", progress=False)
    for name in ("streams.jsonl", "clips/annotations.jsonl", "stream_corpus.json", "streams/stream_001.mp4"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    records = [json.loads(line) for line in (tmp_path / "a" / "streams.jsonl").read_text().splitlines()]
    clips = [json.loads(line) for line in (tmp_path / "a" / "clips" / "annotations.jsonl").read_text().splitlines()]
    test = records[1]
    assert test["split"] == "test" and records[0]["path"] is None  # training streams exist as clips only
    assert len(clips) == sum(len(r["annotations"]) for r in records)
    assert [c["caption"] for c in clips if c["clip_id"].startswith("stream_001")] == \
        [x["caption"] for x in test["annotations"]]
    frames = int(subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                                 "stream=nb_read_frames", "-of", "csv=p=0", str(tmp_path / "a" / test["path"])],
                                capture_output=True, text=True, check=True).stdout)
    assert frames == round(test["duration"] * MINI.fps)
    for clip in clips[:4] + clips[-4:]:  # the segment muxer cut exactly at the action boundaries
        n = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                            "stream=nb_read_frames", "-of", "csv=p=0", str(tmp_path / "a" / "clips" / clip["path"])],
                           capture_output=True, text=True, check=True).stdout
        assert int(n) == round(clip["duration"] * MINI.fps), clip
    assert a["counts"] == {"train": 1, "val": 0, "test": 1} and a["clips"]["test"] == len(test["annotations"])


def test_cli_prints_the_statistics_reuses_and_refuses_another_config(tmp_path):
    args = [sys.executable, "-m", "preprocessing.streams", "--preset", "tiny", "--n-train", "1", "--n-val", "0",
            "--n-test", "1", "--stream-seconds", "12", "--keystep-seconds", "5", "--out", str(tmp_path), "--no-progress"]
    first = subprocess.run(args, capture_output=True, text=True, check=True)
    assert "'test': 1} streams" in first.stdout and "annotations each, one every" in first.stdout
    again = subprocess.run(args, capture_output=True, text=True, check=True)
    assert again.stdout == first.stdout
    other = subprocess.run(args[:-3] + ["--seed", "3", "--out", str(tmp_path), "--no-progress"], capture_output=True,
                           text=True)
    assert other.returncode == 2 and "another config" in other.stderr
    with pytest.raises(ValueError, match="action_seconds < keystep_seconds"):
        StreamCorpusConfig(keystep_seconds=2.0, action_seconds=2.5)
