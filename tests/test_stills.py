"""The still-image caption set derived from a generated corpus (preprocessing.stills)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from preprocessing.corpus import MOTIONS, PLURAL_MOTIONS, PRESETS, generate_corpus, plan_corpus
from preprocessing.corpus_render import PALETTE
from preprocessing.decode import decode_frames
from preprocessing.manifest import import_corpus, open_manifest
from preprocessing.stills import generate_stills, png_bytes, still_frame

SMALL = dataclasses.replace(PRESETS["tiny"], n_videos=8)  # 6 train, 1 val, 1 test clips of 96x72


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("stills") / "corpus"
    generate_corpus(SMALL, out, progress=False)
    return out


@pytest.fixture(scope="module")
def stills(corpus: Path) -> Path:
    out = corpus.parent / "stills"
    summary = generate_stills(corpus, out, progress=False)
    assert summary.counts == {"train": 6} and (summary.n_generated, summary.n_reused) == (6, 0)
    return out


def ffmpeg_rgb(path: Path, width: int, height: int) -> np.ndarray:
    """An independent decode of ``path`` by the ffmpeg binary, (H, W, 3) uint8."""
    raw = subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(path), "-f", "rawvideo",
                          "-pix_fmt", "rgb24", "-"], capture_output=True, check=True).stdout
    return np.frombuffer(raw, dtype=np.uint8).reshape(height, width, 3)


def test_deterministic_bytes_and_idempotent(corpus: Path, stills: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    generate_stills(corpus, again, progress=False)
    names = sorted(p.name for p in (stills / "images").iterdir())
    assert names == sorted(p.name for p in (again / "images").iterdir()) and len(names) == 6
    for name in names:
        assert (stills / "images" / name).read_bytes() == (again / "images" / name).read_bytes(), name
    for name in ("annotations.jsonl", "corpus.json"):
        assert (stills / name).read_bytes() == (again / name).read_bytes(), name
    rerun = generate_stills(corpus, again, progress=False)
    assert (rerun.n_generated, rerun.n_reused) == (0, 6)


def test_records_captions_and_vocabulary(corpus: Path, stills: Path) -> None:
    from flows.loaders import corpus_labels, load_vocabulary

    records = read_jsonl(stills / "annotations.jsonl")
    source = {r["clip_id"]: r for r in read_jsonl(corpus / "annotations.jsonl")}
    motion_words = {w for m in (*MOTIONS, *PLURAL_MOTIONS.values()) for w in m.split()}
    for r in records:
        clip = source[r["clip_id"].replace("still_", "clip_")]
        assert r["split"] == clip["split"] == "train" and r["label"] == clip["label"]
        assert clip["events"][0]["caption"].startswith(r["caption"] + " ")  # the event's caption, motion cut
        assert not motion_words & set(r["caption"].split()), r["caption"]
        assert (r["duration"], r["fps"], r["events"], r["qa"]) == (0.0, 0.0, [], [])
        assert (r["width"], r["height"]) == (SMALL.width, SMALL.height)
    labels, vocabulary = load_vocabulary(stills)
    assert labels == corpus_labels(corpus) and "grows" in vocabulary.motions
    assert json.loads((stills / "corpus.json").read_text())["counts"] == {"train": 6}


def test_png_decodes_to_the_rendered_frame(corpus: Path, stills: Path) -> None:
    plans = {f"still_{p.index:06d}": p for p in plan_corpus(SMALL)}
    for r in read_jsonl(stills / "annotations.jsonl"):
        path = stills / r["path"]
        frame = still_frame(plans[r["clip_id"]])
        np.testing.assert_array_equal(ffmpeg_rgb(path, SMALL.width, SMALL.height), frame)  # lossless, exact
        one, two = decode_frames(path, num_frames=1, size=32), decode_frames(path, num_frames=2, size=32)
        assert one.frames.shape == (1, 32, 32, 3) and two.frames.shape == (2, 32, 32, 3)
        np.testing.assert_array_equal(two.frames[0], two.frames[1])  # an image is duplicated to num_frames
        colour = np.asarray(PALETTE[r["label"].split()[0]], dtype=np.int16)
        decoded = decode_frames(path, num_frames=1, size=64).frames[0].astype(np.int16)  # (64, 64, 3)
        near = np.abs(decoded - colour).max(axis=-1) <= 30
        assert near.sum() >= 4, f"{r['caption']}: the object colour is not in the decoded pixels"


def test_png_writer_rejects_other_layouts() -> None:
    assert png_bytes(np.zeros((2, 3, 3), dtype=np.uint8)).startswith(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(ValueError, match="uint8"):
        png_bytes(np.zeros((2, 3, 4), dtype=np.uint8))


def test_import_gives_image_sources(stills: Path, tmp_path: Path) -> None:
    con = open_manifest(tmp_path / "m.duckdb")
    try:
        summary = import_corpus(con, stills, dataset="synthetic-stills")
        assert (summary.n_imported, summary.n_failed) == (6, 0)
        rows = con.execute("SELECT kind, duration, width, codec FROM sources").fetchall()
        assert rows == [("image", 0.0, SMALL.width, "png")] * 6
        tasks = con.execute("SELECT task, count(*) FROM annotations GROUP BY task ORDER BY task").fetchall()
        assert tasks == [("caption", 6), ("classification", 6)]
    finally:
        con.close()


def test_another_corpus_in_the_same_out_dir_is_an_error(stills: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    config = dataclasses.replace(SMALL, seed=1).content_dict()
    (other / "corpus.json").write_text(json.dumps({"config": config}))
    with pytest.raises(ValueError, match="another corpus"):
        generate_stills(other, stills, progress=False)
