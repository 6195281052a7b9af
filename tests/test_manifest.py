"""The DuckDB manifest of preprocessing.manifest on a tiny corpus made with ffmpeg."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from preprocessing import manifest as manifest_module
from preprocessing.manifest import SQL_DIR, import_corpus, open_manifest, record_failure, record_token_cache, split_rows

TABLES = ("sources", "annotations", "splits", "token_caches", "cache_members", "failures")
SPLITS = {"clip_000000": "train", "clip_000001": "val", "clip_000002": "train", "clip_000003": "train"}


def make_video(out: Path, colour: str, seconds: float = 1.0) -> None:
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi",
         "-i", f"color={colour}:size=64x48:rate=10", "-t", str(seconds),
         "-c:v", "libx264", "-pix_fmt", "yuv420p", str(out)],
        check=True,
    )


def record(clip_id: str, split: str, colour: str) -> dict:
    return {
        "clip_id": clip_id,
        "path": f"videos/{clip_id}.mp4",
        "split": split,
        "duration": 1.0, "fps": 10, "width": 64, "height": 48,
        "caption": f"a small {colour} circle moves left, then a blue square moves up",
        "label": f"{colour} circle",
        "events": [
            {"start": 0.0, "end": 0.5, "caption": f"a small {colour} circle moves left", "colour": colour,
             "shape": "circle", "size": "small", "count": 1, "motion": "moves left"},
            {"start": 0.5, "end": 1.0, "caption": "a blue square moves up", "colour": "blue",
             "shape": "square", "size": "large", "count": 1, "motion": "moves up"},
        ],
        "qa": [{"question": "what colour is the circle?", "answer": colour},
               {"question": "how many squares are there?", "answer": "1"}],
    }


def write_annotations(corpus: Path, records: list[dict], extra_lines: tuple[str, ...] = ()) -> None:
    lines = [json.dumps(r) for r in records] + list(extra_lines)
    (corpus / "annotations.jsonl").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def corpus_template(tmp_path_factory) -> Path:
    """Four good clips and one text file named .mp4 (clip_000004)."""
    corpus = tmp_path_factory.mktemp("corpus")
    (corpus / "videos").mkdir()
    colours = ["red", "green", "yellow", "white"]
    records = []
    for i, (colour, split) in enumerate(zip(colours, SPLITS.values())):
        make_video(corpus / "videos" / f"clip_{i:06d}.mp4", colour)
        records.append(record(f"clip_{i:06d}", split, colour))
    (corpus / "videos" / "clip_000004.mp4").write_text("not a video\n")
    records.append(record("clip_000004", "train", "black"))
    write_annotations(corpus, records)
    (corpus / "corpus.json").write_text(json.dumps({"config": {"seed": 0}, "labels": []}))
    return corpus


@pytest.fixture
def corpus(corpus_template, tmp_path) -> Path:
    return Path(shutil.copytree(corpus_template, tmp_path / "corpus"))


@pytest.fixture
def con(tmp_path):
    connection = open_manifest(tmp_path / "db" / "manifest.duckdb")
    yield connection
    connection.close()


def counts(con) -> dict[str, int]:
    return {t: con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0] for t in TABLES}  # table names are constants


def test_import_twice_adds_nothing_the_second_time(con, corpus):
    first = import_corpus(con, corpus)
    assert (first.n_in, first.n_imported, first.n_failed, first.n_skipped) == (5, 4, 1, 0)
    assert first.n_in == first.n_imported + first.n_failed + first.n_skipped
    after_first = counts(con)
    # 4 sources x (caption + label + 2 events + 2 QA) annotations.
    assert after_first == {"sources": 4, "annotations": 24, "splits": 4,
                           "token_caches": 0, "cache_members": 0, "failures": 1}

    second = import_corpus(con, corpus)
    assert (second.n_in, second.n_imported, second.n_failed, second.n_skipped) == (5, 0, 1, 4)
    assert counts(con) == after_first


def test_corrupt_file_is_recorded_in_failures(con, corpus):
    summary = import_corpus(con, corpus)
    bad = str((corpus / "videos" / "clip_000004.mp4").resolve())
    assert summary.failed == (bad,)
    rows = con.execute("SELECT path, stage, error FROM failures").fetchall()
    assert len(rows) == 1
    path, stage, error = rows[0]
    assert (path, stage) == (bad, "import") and "Invalid data" in error
    assert con.execute("SELECT count(*) FROM sources WHERE source_id = 'clip_000004'").fetchall() == [(0,)]

    # Once the file is fixed, a re-import takes it and clears the failure.
    make_video(corpus / "videos" / "clip_000004.mp4", "black")
    again = import_corpus(con, corpus)
    assert (again.n_imported, again.n_skipped, again.n_failed) == (1, 4, 0)
    assert counts(con)["failures"] == 0 and counts(con)["sources"] == 5


def test_sources_hold_probed_metadata(con, corpus):
    import_corpus(con, corpus)
    rows = con.execute(
        "SELECT source_id, path, kind, duration, fps, width, height, codec, length(content_hash) "
        "FROM sources ORDER BY source_id"
    ).fetchall()
    assert [r[0] for r in rows] == ["clip_000000", "clip_000001", "clip_000002", "clip_000003"]
    for source_id, path, kind, duration, fps, width, height, codec, hash_len in rows:
        assert Path(path).is_absolute() and Path(path).is_file() and Path(path).stem == source_id
        assert (kind, fps, width, height, codec, hash_len) == ("video", 10.0, 64, 48, "h264", 64)
        assert duration == pytest.approx(1.0, abs=0.05)


def test_annotations_rows(con, corpus):
    import_corpus(con, corpus)
    rows = con.execute(
        "SELECT task, idx, text, question, answer, label, start_s, end_s, attributes FROM annotations "
        "WHERE source_id = 'clip_000000' ORDER BY task, idx"
    ).fetchall()
    by_task = {}
    for row in rows:
        by_task.setdefault(row[0], []).append(row[1:])
    assert by_task["caption"] == [(0, "a small red circle moves left, then a blue square moves up",
                                   None, None, None, None, None, None)]
    assert by_task["classification"] == [(0, None, None, None, "red circle", None, None, None)]
    assert [(e[0], e[1], e[5], e[6]) for e in by_task["event"]] == [
        (0, "a small red circle moves left", 0.0, 0.5), (1, "a blue square moves up", 0.5, 1.0)]
    assert json.loads(by_task["event"][0][7]) == {
        "colour": "red", "shape": "circle", "size": "small", "count": 1, "motion": "moves left"}
    assert [(q[2], q[3]) for q in by_task["vqa"]] == [
        ("what colour is the circle?", "red"), ("how many squares are there?", "1")]


def test_split_rows(con, corpus):
    import_corpus(con, corpus)
    train = split_rows(con, "train")
    assert [r["source_id"] for r in train] == ["clip_000000", "clip_000002", "clip_000003"]
    clip_path = corpus / "videos" / "clip_000002.mp4"
    assert train[1]["path"] == str(clip_path.resolve())
    assert train[1]["content_hash"] == hashlib.sha256(clip_path.read_bytes()).hexdigest()
    assert train[1]["caption"].startswith("a small yellow circle") and train[1]["label"] == "yellow circle"
    val = split_rows(con, "val")
    assert [(r["source_id"], r["label"]) for r in val] == [("clip_000001", "green circle")]
    assert split_rows(con, "test") == []
    assert split_rows(con, "train", dataset="other") == []


def test_changed_record_replaces_rows(con, corpus):
    import_corpus(con, corpus)
    records = [json.loads(line) for line in (corpus / "annotations.jsonl").read_text().splitlines()]
    records[0]["caption"] = "a new caption"
    records[0]["qa"] = records[0]["qa"][:1]
    records[1]["split"] = "test"
    write_annotations(corpus, records)
    summary = import_corpus(con, corpus)
    assert (summary.n_imported, summary.n_skipped, summary.n_failed) == (2, 2, 1)
    assert split_rows(con, "train")[0]["caption"] == "a new caption"
    assert counts(con)["annotations"] == 23 and counts(con)["splits"] == 4
    assert [r["source_id"] for r in split_rows(con, "test")] == ["clip_000001"]
    assert split_rows(con, "val") == []


def test_import_without_probe_uses_the_record(con, corpus):
    summary = import_corpus(con, corpus, dataset="unprobed", probe=False)
    # Without ffprobe the text file named .mp4 is not noticed; it can still be hashed.
    assert (summary.n_imported, summary.n_failed) == (5, 0)
    rows = con.execute("SELECT DISTINCT duration, fps, width, height, codec FROM sources").fetchall()
    assert rows == [(1.0, 10.0, 64, 48, None)]
    assert len(split_rows(con, "train", dataset="unprobed")) == 4


def test_malformed_lines_and_missing_files_are_failures(con, corpus):
    records = [json.loads(line) for line in (corpus / "annotations.jsonl").read_text().splitlines()]
    records[2]["path"] = "videos/does_not_exist.mp4"
    del records[3]["split"]
    write_annotations(corpus, records, extra_lines=("{not json", "[1, 2]"))
    summary = import_corpus(con, corpus)
    assert summary.n_in == 7
    assert (summary.n_imported, summary.n_failed, summary.n_skipped) == (2, 5, 0)
    errors = dict(con.execute("SELECT path, error FROM failures").fetchall())
    assert len(errors) == 5
    annotations_path = str((corpus / "annotations.jsonl").resolve())
    assert "malformed JSON" in errors[f"{annotations_path}:6"]
    assert "JSON object" in errors[f"{annotations_path}:7"]
    assert "No such file" in errors[str((corpus / "videos" / "does_not_exist.mp4").resolve())]
    assert "split" in errors[str((corpus / "videos" / "clip_000003.mp4").resolve())]
    # Re-importing does not pile up failure rows.
    import_corpus(con, corpus)
    assert counts(con)["failures"] == 5


def test_missing_annotations_file_stops_the_import(con, tmp_path):
    with pytest.raises(FileNotFoundError, match="annotations.jsonl"):
        import_corpus(con, tmp_path)


def test_values_are_bound_not_formatted(con, corpus):
    """Quotes and SQL in a clip_id are stored verbatim."""
    nasty = "clip'); DROP TABLE sources; --"
    records = [json.loads(line) for line in (corpus / "annotations.jsonl").read_text().splitlines()]
    records[0]["clip_id"] = nasty
    write_annotations(corpus, records[:1])
    assert import_corpus(con, corpus).n_imported == 1
    assert [r["source_id"] for r in split_rows(con, "train")] == [nasty]
    record_failure(con, "it's/a'path", "encode", "boom; DROP TABLE failures")
    assert ("it's/a'path", "boom; DROP TABLE failures") in con.execute("SELECT path, error FROM failures").fetchall()


def test_record_token_cache_is_idempotent_and_checks_encoder(con):
    config = json.dumps({"encoder": "tiny", "size": 64}, sort_keys=True)
    kwargs = dict(cache_key="ab" * 32, encoder_id="tiny", config_json=config, path="/c/ab.parquet",
                  source_ids=["clip_000000", "clip_000001"])
    record_token_cache(con, **kwargs)
    record_token_cache(con, **kwargs)
    assert con.execute("SELECT cache_key, encoder_id, path, n_samples FROM token_caches").fetchall() == [
        ("ab" * 32, "tiny", "/c/ab.parquet", 2)]
    assert con.execute("SELECT source_id FROM cache_members ORDER BY source_id").fetchall() == [
        ("clip_000000",), ("clip_000001",)]
    # Rewritten elsewhere with one sample fewer: the record follows, members are replaced.
    record_token_cache(con, **{**kwargs, "path": "/moved/ab.parquet", "source_ids": ["clip_000001"]})
    assert con.execute("SELECT path, n_samples FROM token_caches").fetchall() == [("/moved/ab.parquet", 1)]
    assert con.execute("SELECT source_id FROM cache_members").fetchall() == [("clip_000001",)]
    with pytest.raises(ValueError, match="encoder"):
        record_token_cache(con, **{**kwargs, "encoder_id": "other"})
    with pytest.raises(ValueError):
        record_token_cache(con, **{**kwargs, "config_json": "not json"})
    with pytest.raises(ValueError, match="distinct"):
        record_token_cache(con, **{**kwargs, "source_ids": ["a", "a"]})
    assert counts(con)["token_caches"] == 1


def test_record_failure_keeps_the_latest_error(con):
    record_failure(con, "/v/a.mp4", "decode", "first")
    record_failure(con, "/v/a.mp4", "decode", "second")
    record_failure(con, "/v/a.mp4", "encode", "other stage")
    rows = con.execute("SELECT stage, error FROM failures ORDER BY stage").fetchall()
    assert rows == [("decode", "second"), ("encode", "other stage")]


def test_open_manifest_is_reentrant(tmp_path):
    db = tmp_path / "m.duckdb"
    open_manifest(db).close()
    con = open_manifest(db)  # schema statements are IF NOT EXISTS
    assert set(TABLES) <= {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    con.close()


# A process that opens the manifest, says so, waits for a line on stdin, then reads it.
_READER = """
import sys
from preprocessing.manifest import open_manifest
try:
    con = open_manifest(sys.argv[1], read_only=sys.argv[2] == "ro")
except Exception as err:
    print("error", type(err).__name__, str(err).replace(chr(10), " "), flush=True)
    sys.exit(0)
print("open", flush=True)
sys.stdin.readline()
print("sources", con.execute("SELECT count(*) FROM sources").fetchone()[0], flush=True)
con.close()
"""


def _start_reader(db: Path, mode: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-c", _READER, str(db), mode], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parent.parent)
    return proc, proc.stdout.readline().strip()


def _finish(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate("go\n", timeout=60)
    return out.strip()


def test_read_only_connections_in_two_processes_at_once(con, corpus, tmp_path):
    """Training ranks each open the manifest: read-only they can all hold it, read-write only one can."""
    n = import_corpus(con, corpus, probe=False).n_imported  # unprobed: the text file named .mp4 too
    db = tmp_path / "db" / "manifest.duckdb"
    con.close()  # the fixture's connection holds the file read-write: let go of it
    first, first_state = _start_reader(db, "ro")
    second, second_state = _start_reader(db, "ro")  # while the first holds its connection
    assert (first_state, second_state) == ("open", "open")
    assert (_finish(first), _finish(second)) == (f"sources {n}", f"sources {n}")
    # The same two processes read-write: the second cannot take DuckDB's lock on the file.
    writer, writer_state = _start_reader(db, "rw")
    other, other_state = _start_reader(db, "rw")
    assert writer_state == "open"
    assert other_state.startswith("error") and "lock" in other_state, other_state
    assert _finish(writer) == f"sources {n}"
    other.communicate(timeout=60)


def test_read_only_open_runs_no_schema_and_needs_the_file(tmp_path):
    db = tmp_path / "nothing" / "manifest.duckdb"
    with pytest.raises(FileNotFoundError, match="no manifest at .*vljepa data"):
        open_manifest(db, read_only=True)
    assert not db.parent.exists()  # a reader creates nothing
    open_manifest(db).close()
    reader = open_manifest(db, read_only=True)
    try:
        assert reader.execute("SELECT count(*) FROM sources").fetchall() == [(0,)]
        with pytest.raises(duckdb.Error, match="read-only"):
            reader.execute("CREATE TABLE extra (x INTEGER)")
    finally:
        reader.close()
    with pytest.raises(ValueError, match="in-memory"):
        open_manifest(":memory:", read_only=True)


def test_read_only_open_shares_this_process_read_write_connection(tmp_path):
    """DuckDB refuses a second configuration of one file in one process: a reader there shares the writer's."""
    db = tmp_path / "m.duckdb"
    writer = open_manifest(db)
    try:
        reader = open_manifest(db, read_only=True)
        assert reader.execute("SELECT count(*) FROM sources").fetchall() == [(0,)]
        reader.close()
    finally:
        writer.close()


def test_every_sql_file_is_used_and_parameterised(con, corpus, monkeypatch, tmp_path):
    used: set[str] = set()
    real_load_sql = manifest_module.load_sql

    def recording_load_sql(name: str) -> str:
        used.add(name)
        return real_load_sql(name)

    monkeypatch.setattr(manifest_module, "load_sql", recording_load_sql)
    open_manifest(":memory:").close()
    import_corpus(con, corpus)
    split_rows(con, "train")
    record_token_cache(con, cache_key="cd" * 32, encoder_id="e", config_json="{}", path="/x",
                       source_ids=["clip_000000"])
    record_failure(con, "/v/x.mp4", "decode", "boom")
    records = [json.loads(line) for line in (corpus / "annotations.jsonl").read_text().splitlines()]
    records[0]["caption"] = "bad \udcff text"  # a lone surrogate: replaced, and noted
    (corpus / "annotations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    import_corpus(con, corpus)
    assert "lone surrogates" in manifest_module.list_import_notes(con, str(corpus))[0]["note"]
    # The shard, failure and data-mix queries (preprocessing.mix calls manifest.load_sql).
    from preprocessing.manifest import list_failures, record_shards
    from preprocessing.mix import MixComponent, create_mix, draw, mix_stats

    record_shards(con, "cd" * 32, [{"name": "shard-00000.tar", "n_samples": 1, "bytes": 10}], directory="/x",
                  fmt="webdataset")
    assert list_failures(con, "decode")[0]["error"] == "boom"
    component = MixComponent(name="c", task="caption", dataset="synthetic", split="train", weight=1)
    create_mix(con, "m", [component])
    assert mix_stats(con, "m", 10)[0].n_items > 0
    draw(con, "m", 5, seed=0, run_id="r")
    from preprocessing.mix import component_samples

    assert component_samples(con, component, classification_query="what object is this?")
    # The queries flows/loaders.py runs (selective decoding, the decoders, the task suite, SFT), through it.
    import numpy as np

    from flows import loaders
    from preprocessing.cache import write_token_cache

    db, train = str(con.execute("PRAGMA database_list").fetchall()[0][2]), ["clip_000000", "clip_000002", "clip_000003"]
    assert {r["split"]: r["n_clips"] for r in loaders.dataset_profile(db, "synthetic")} == {"train": 3, "val": 1}
    assert loaders.foreign_sources(db, "synthetic", corpus) == (0, None)  # every clip is under the corpus folder
    from preprocessing.retry import retry_import_failures  # import_origins: written by import_corpus, read here

    assert [(s.n_in, s.n_failed) for s in retry_import_failures(con).by_origin.values()] == [(1, 1)]  # still bad
    assert [c["source_id"] for c in loaders.event_clips(db, "train", min_events=2)] == train
    assert loaders.caption_bank(db, "train") and loaders.annotations(db, "train")["clip_000000"]["qa"]
    cache = write_token_cache(tmp_path / "train.parquet", sample_ids=train, tokens=np.zeros((3, 2, 4), np.float16),
                              timestamps=np.zeros((3, 2)), encoder_id="e", metadata={})
    assert len(loaders.load_sft_split(db, str(cache), "train")) > len(train)  # captions, labels and VQA pairs
    files = {p.stem for p in SQL_DIR.glob("*.sql")}
    assert used == files
    for name in files - {"schema"}:
        text = (SQL_DIR / f"{name}.sql").read_text()
        assert re.search(r"\$[a-z_]+|\?", text), f"{name}.sql takes no parameters"
        assert "{" not in text and "%s" not in text, f"{name}.sql looks like a format string"
