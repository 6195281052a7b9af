"""Tests for the procedural video-language corpus (preprocessing.corpus): tiny preset, seconds."""

from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from preprocessing import corpus_render
from preprocessing.corpus import (
    COLOURS,
    PRESETS,
    SHAPES,
    CorpusConfig,
    Event,
    event_caption,
    generate_corpus,
    held_out_pairs,
    main,
    plan_corpus,
    qa_pairs,
)

TINY = PRESETS["tiny"]  # 24 clips of 96x72 at 8 fps, workers=1


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tiny") / "corpus"
    summary = generate_corpus(TINY, out, progress=False)
    assert summary.n_generated == TINY.n_videos and summary.n_reused == 0
    return out


def decode_frame(path: Path, index: int, width: int, height: int) -> np.ndarray:
    """Decode frame ``index`` of ``path`` with the ffmpeg binary, (H, W, 3) uint8 RGB."""
    raw = subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(path), "-vf", f"select=eq(n\\,{index})",
         "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        capture_output=True, check=True).stdout
    assert len(raw) == width * height * 3, f"frame {index} of {path} did not decode"
    return np.frombuffer(raw, dtype=np.uint8).reshape(height, width, 3)


def test_deterministic_and_independent_of_worker_count(tiny_corpus: Path, tmp_path: Path) -> None:
    again = generate_corpus(dataclasses.replace(TINY, workers=2), tmp_path / "again", progress=False)
    assert again.config_hash == TINY.config_hash()  # workers do not change the content
    for name in ("annotations.jsonl", "annotations.csv", "corpus.json"):
        assert (tiny_corpus / name).read_bytes() == (tmp_path / "again" / name).read_bytes(), name
    for record in read_jsonl(tiny_corpus / "annotations.jsonl"):
        assert (tiny_corpus / record["path"]).read_bytes() == (tmp_path / "again" / record["path"]).read_bytes()


def test_layout_and_splits(tiny_corpus: Path) -> None:
    records = read_jsonl(tiny_corpus / "annotations.jsonl")
    meta = json.loads((tiny_corpus / "corpus.json").read_text())
    assert [r["clip_id"] for r in records] == [f"clip_{i:06d}" for i in range(TINY.n_videos)]
    assert meta["counts"] == {"train": 18, "val": 3, "test": 3}
    assert {s: sum(r["split"] == s for r in records) for s in meta["counts"]} == meta["counts"]
    assert len(meta["labels"]) == 35 == len(set(meta["labels"]))
    assert meta["config_hash"] == TINY.config_hash() and "workers" not in meta["config"]
    csv_lines = (tiny_corpus / "annotations.csv").read_text().splitlines()
    assert csv_lines[0] == "clip_id,path,split,duration,caption,label" and len(csv_lines) == 1 + len(records)
    assert sorted(p.name for p in tiny_corpus.iterdir()) == ["annotations.csv", "annotations.jsonl", "corpus.json", "videos"]
    for r in records:
        assert r["label"] == f'{r["events"][0]["colour"]} {r["events"][0]["shape"]}' and r["label"] in meta["labels"]
        assert r["events"][0]["start"] == 0.0 and r["events"][-1]["end"] == r["duration"]
        assert all(a["end"] == b["start"] for a, b in zip(r["events"], r["events"][1:]))
        assert 1 <= len(r["events"]) <= TINY.max_events


def test_held_out_pairs_only_in_test(tiny_corpus: Path) -> None:
    meta = json.loads((tiny_corpus / "corpus.json").read_text())
    held = {tuple(p) for p in meta["held_out_pairs"]}
    assert len(held) == 7  # round(0.2 * 35)
    records = read_jsonl(tiny_corpus / "annotations.jsonl")
    for r in records:
        pairs = [(e["colour"], e["shape"]) for e in r["events"]]
        if r["split"] == "test":
            assert pairs[0] in held, r["clip_id"]
        else:
            assert not held & set(pairs), r["clip_id"]


@pytest.mark.parametrize("seed", range(30))
def test_held_out_pairs_leave_every_colour_and_shape_in_training(seed: int) -> None:
    held = set(held_out_pairs(CorpusConfig(seed=seed)))
    train = [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in held]
    assert len(held) == 7 and {c for c, _ in train} == set(COLOURS) and {s for _, s in train} == set(SHAPES)
    assert held_out_pairs(CorpusConfig(seed=seed)) == sorted(held, key=lambda p: (COLOURS.index(p[0]), SHAPES.index(p[1])))


def test_videos_decode_to_annotated_size_and_duration(tiny_corpus: Path) -> None:
    for r in read_jsonl(tiny_corpus / "annotations.jsonl"):
        probe = json.loads(subprocess.run(
            ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
             "stream=codec_name,width,height,duration,nb_frames", "-of", "json", str(tiny_corpus / r["path"])],
            capture_output=True, check=True).stdout)["streams"][0]
        assert probe["codec_name"] == "h264"
        assert (probe["width"], probe["height"]) == (r["width"], r["height"]) == (TINY.width, TINY.height)
        assert abs(float(probe["duration"]) - r["duration"]) <= 1 / r["fps"] + 1e-6, r["clip_id"]
        assert abs(int(probe["nb_frames"]) - r["duration"] * r["fps"]) <= 1, r["clip_id"]


def test_rendered_frames_show_the_annotated_colour_where_the_objects_are(tiny_corpus: Path) -> None:
    palette = np.array([corpus_render.PALETTE[c] for c in COLOURS], dtype=np.float64)
    plans = plan_corpus(TINY)
    checked = 0
    for plan in plans[:8]:
        for event, group in zip(plan.events, plan.job.groups):
            mid = (event.end_frame - event.start_frame) // 2
            frame = decode_frame(tiny_corpus / plan.path, event.start_frame + mid, TINY.width, TINY.height)
            centres, _ = corpus_render.object_centres(group, mid)
            assert len(centres) == event.count
            for cx, cy in centres:
                pixel = frame[int(cy), int(cx)].astype(np.float64)
                distances = np.linalg.norm(palette - pixel, axis=1)
                assert COLOURS[int(distances.argmin())] == event.colour, (plan.clip_id, pixel, event)
                assert distances.min() < 60, (plan.clip_id, pixel, event)
                checked += 1
            assert frame[1, 1].sum() < 150, "the corner (outside the centre square) should be dark background"
    assert checked >= 8


@pytest.mark.parametrize("cfg", [TINY, dataclasses.replace(PRESETS["small"], n_videos=300)], ids=["tiny", "small"])
def test_objects_stay_inside_what_the_decoder_crop_keeps(cfg: CorpusConfig) -> None:
    # preprocessing.decode scales the short edge to 256/224 of the crop and keeps the centre square.
    side = min(cfg.width, cfg.height) * 224 / 256
    x0, y0 = (cfg.width - side) / 2, (cfg.height - side) / 2
    moved = 0
    for plan in plan_corpus(cfg):
        for group in plan.job.groups:
            for frame in range(group.n_frames):
                centres, r = corpus_render.object_centres(group, frame)
                for cx, cy in centres:
                    assert x0 <= cx - r and cx + r <= x0 + side and y0 <= cy - r and cy + r <= y0 + side, plan.clip_id
            start, _ = corpus_render.object_centres(group, 0)
            end, _ = corpus_render.object_centres(group, group.n_frames - 1)
            moved += max(abs(a[0] - b[0]) + abs(a[1] - b[1]) for a, b in zip(start, end)) >= 0.4 * side
    assert moved > 0  # translations cover a visible distance


def test_grammar() -> None:
    def ev(count: int, shape: str, motion: str) -> Event:
        return Event(start_frame=0, end_frame=10, colour="red", shape=shape, size="small", count=count, motion=motion)

    assert event_caption(ev(1, "circle", "moves left")) == "a small red circle moves left"
    assert event_caption(ev(2, "square", "moves up")) == "two small red squares move up"
    assert event_caption(ev(3, "cross", "grows")) == "three small red crosses grow"
    assert event_caption(ev(1, "cross", "shrinks")) == "a small red cross shrinks"
    assert qa_pairs(ev(1, "cross", "moves down")) == [
        {"question": "what colour is the cross?", "answer": "red"},
        {"question": "what shape is the red object?", "answer": "cross"},
        {"question": "how many red crosses are there?", "answer": "one"},
        {"question": "which way does the red cross move?", "answer": "down"},
    ]
    plural = qa_pairs(ev(3, "triangle", "grows"))
    assert plural[0]["question"] == "what colour are the triangles?"
    assert plural[2]["answer"] == "three" and plural[3] == {"question": "which way do the red triangles move?",
                                                            "answer": "grows"}


def test_captions_agree_with_events(tiny_corpus: Path) -> None:
    for r in read_jsonl(tiny_corpus / "annotations.jsonl"):
        assert r["caption"] == ", then ".join(e["caption"] for e in r["events"])
        for e in r["events"]:
            words = e["caption"].split()
            assert words[0] == {1: "a", 2: "two", 3: "three"}[e["count"]]
            assert words[1:3] == [e["size"], e["colour"]]
            if e["count"] == 1:
                assert " ".join(words[3:]) == f'{e["shape"]} {e["motion"]}'
            else:
                plural_verb = e["motion"].replace("moves", "move").replace("grows", "grow").replace("shrinks", "shrink")
                assert words[3] == e["shape"] + ("es" if e["shape"].endswith("ss") else "s")
                assert " ".join(words[4:]) == plural_verb


def test_rerun_is_idempotent_and_resumes(tmp_path: Path) -> None:
    cfg = dataclasses.replace(TINY, n_videos=6)
    first = generate_corpus(cfg, tmp_path, progress=False)
    victim = tmp_path / "videos" / "clip_000003.mp4"
    original, mtime = victim.read_bytes(), (tmp_path / "videos" / "clip_000000.mp4").stat().st_mtime_ns
    again = generate_corpus(cfg, tmp_path, progress=False)
    assert (first.n_generated, again.n_generated, again.n_reused) == (6, 0, 6)
    assert (tmp_path / "videos" / "clip_000000.mp4").stat().st_mtime_ns == mtime
    victim.unlink()
    resumed = generate_corpus(cfg, tmp_path, progress=False)
    assert (resumed.n_generated, resumed.n_reused) == (1, 5) and victim.read_bytes() == original


def test_a_different_config_or_a_foreign_directory_is_an_error(tmp_path: Path) -> None:
    cfg = dataclasses.replace(TINY, n_videos=2)
    generate_corpus(cfg, tmp_path / "corpus", progress=False)
    with pytest.raises(ValueError, match="different config"):
        generate_corpus(dataclasses.replace(cfg, seed=1), tmp_path / "corpus", progress=False)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        generate_corpus(cfg, tmp_path / "other", progress=False)


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="even"):
        CorpusConfig(width=95)
    with pytest.raises(ValueError, match="no training clips"):
        CorpusConfig(val_fraction=0.5, test_fraction=0.5)
    with pytest.raises(ValueError, match="held-out"):
        CorpusConfig(held_out_fraction=0.0)
    with pytest.raises(TypeError):
        CorpusConfig(n_video=3)  # type: ignore[call-arg]  # a misspelt option is an error


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0 and "--n-videos" in capsys.readouterr().out
    assert main(["--preset", "tiny", "--n-videos", "3", "--seed", "5", "--out", str(tmp_path), "--no-progress"]) == 0
    assert "rendered 3" in capsys.readouterr().out
    assert len(read_jsonl(tmp_path / "annotations.jsonl")) == 3 and len(list((tmp_path / "videos").glob("*.mp4"))) == 3
    assert json.loads((tmp_path / "corpus.json").read_text())["config"]["seed"] == 5
    with pytest.raises(SystemExit) as exit_info:  # a different config into the same directory
        main(["--preset", "tiny", "--n-videos", "4", "--out", str(tmp_path), "--no-progress"])
    assert exit_info.value.code == 2 and "different config" in capsys.readouterr().err


def test_records_hold_what_ffprobe_reads(tiny_corpus: Path, tmp_path: Path) -> None:
    """The main job imports its generated corpus without ffprobe (flows.data.import_manifest), trusting
    each record's duration, fps and size: they must equal what ffprobe reads from every clip."""
    from preprocessing.manifest import import_corpus, open_manifest

    rows = {}
    for probe in (True, False):
        con = open_manifest(tmp_path / f"probe-{probe}.duckdb")
        try:
            assert import_corpus(con, tiny_corpus, probe=probe).n_failed == 0
            rows[probe] = con.execute("SELECT source_id, duration, fps, width, height FROM sources "
                                      "ORDER BY source_id").fetchall()
        finally:
            con.close()
    assert len(rows[True]) == TINY.n_videos
    assert len({r[1] for r in rows[True]}) > 1  # multi-event clips: durations differ, so this can fail
    assert rows[False] == rows[True]
