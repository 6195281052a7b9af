"""An annotation file cannot make the importer read outside its folder, and one bad row costs only itself.

A folder with 14 kinds of bad rows (none of them in tests/test_bad_input.py) beside good ones: every
good row is cached, every bad one recorded with a reason a user can act on, ``in = cached +
failed`` exactly, and an audit hook sees no open and no subprocess touch a file outside the folder.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from preprocessing.importers import import_folder
from preprocessing.manifest import list_failures, list_import_notes, open_manifest
from preprocessing.pipeline import CacheConfig
from preprocessing.sampling import SamplingConfig
from preprocessing.stage import PreprocessConfig, run
from tests.media import make_h264

_WATCH: dict[str, object] = {"targets": (), "seen": []}


def _audit(event: str, args: tuple) -> None:
    """Every open / subprocess whose arguments name a watched file (installed once per session)."""
    targets = _WATCH["targets"]
    if not targets or event not in ("open", "os.open", "subprocess.Popen", "os.exec", "os.posix_spawn"):
        return
    text = repr(args)
    for target in targets:  # type: ignore[union-attr]
        if target in text:
            _WATCH["seen"].append((event, text[:200]))  # type: ignore[union-attr]


sys.addaudithook(_audit)


@pytest.fixture
def folder(tmp_path: Path) -> tuple[Path, Path, dict[str, str], list[str]]:
    """root/ with good clips and 14 kinds of bad rows; outside/ holds real videos the rows point at."""
    root, outside = tmp_path / "dataset", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    for i in range(3):
        make_h264(root / f"good{i}.mp4", 1.0 + 0.2 * i)
    make_h264(root / "surrogate.mp4", 1.0)
    make_h264(root / "rawbytes.mp4", 1.0)
    secret = make_h264(outside / "secret.mp4", 1.0)  # a real video: only the confinement stops it
    other = make_h264(outside / "other.mp4", 1.0)
    (root / "link.mp4").symlink_to(other)  # a symlink inside the folder to a file outside it
    (root / "loop.mp4").symlink_to(root / "loop.mp4")  # a symlink to itself
    os.mkfifo(root / "pipe.mp4")  # reading it would block forever
    make_h264(root / "dup.mp4", 1.0)
    lines = [json.dumps({"path": f"good{i}.mp4", "caption": f"clip {i}"}) for i in range(3)]
    lines += [
        json.dumps({"path": "surrogate.mp4", "caption": "caf\udcff au lait"}),  # valid JSON, not valid UTF-8
        json.dumps({"path": "../outside/secret.mp4", "caption": "x", "clip_id": "traversal"}),
        json.dumps({"path": str(secret), "caption": "x", "clip_id": "absolute"}),
        json.dumps({"path": "link.mp4", "caption": "x"}),
        json.dumps({"path": "loop.mp4", "caption": "x"}),
        json.dumps({"path": "pipe.mp4", "caption": "x"}),
        json.dumps({"path": "nul\u0000.mp4", "caption": "x", "clip_id": "nul"}),
        json.dumps({"path": "\udcff.mp4", "caption": "x", "clip_id": "surrogate-path"}),
        json.dumps({"path": "dup.mp4", "caption": "first", "clip_id": "dup"}),
        json.dumps({"path": "dup.mp4", "caption": "second", "clip_id": "dup"}),
        json.dumps({"path": "good0.mp4", "caption": "x", "clip_id": "badqa", "qa": "not a list"}),
        '{"path": "good1.mp4", "caption": ',  # malformed JSON
        json.dumps(["a", "list"]),  # not an object
        json.dumps({"caption": "no path at all"}),
    ]
    annotations = root / "annotations.jsonl"
    body = "\n".join(lines).encode() + b'\n{"path": "rawbytes.mp4", "caption": "d\xe9j\xe0 vu"}\n'  # Latin-1 bytes
    annotations.write_bytes(body)
    expected = {  # annotation line -> words its failure must hold
        5: "outside the dataset folder", 6: "outside the dataset folder", 7: "outside the dataset folder",
        8: "cannot resolve", 9: "not a regular file", 10: "NUL byte", 11: "No such file", 13: "appears twice",
        14: "qa must be a list of", 15: "malformed JSON", 16: "expected a JSON object", 17: "no path/video/file column",
    }
    return root, annotations, expected, [str(secret), str(other)]


def test_bad_rows_are_recorded_and_no_file_outside_the_folder_is_opened(folder, tmp_path, tiny_cfg):
    root, annotations, expected, watched = folder
    db = str(tmp_path / "m.duckdb")
    _WATCH["targets"], _WATCH["seen"] = tuple(watched), []
    try:
        con = open_manifest(db)
        summary = import_folder(con, root, annotations, dataset="unsafe", default_split="train")
        con.close()
        x_encoder = tiny_cfg.x_encoder.__class__(**{**tiny_cfg.x_encoder.__dict__, "num_frames": 4})
        result = run(PreprocessConfig(manifest=db, dataset="unsafe", split="train", x_encoder=x_encoder,
                                      sampling=SamplingConfig(num_frames=4),
                                      cache=CacheConfig(root=str(tmp_path / "cache"), shard_size=4)))
    finally:
        _WATCH["targets"] = ()
    assert _WATCH["seen"] == []  # no open(), no ffprobe / ffmpeg of a file outside the folder
    n_rows = 18
    assert summary.n_in == n_rows
    assert summary.n_in == summary.n_imported + summary.n_failed  # a fresh manifest: nothing skipped
    assert n_rows == result.n_cached_sources + result.n_failed_sources + summary.n_failed
    # The good rows, the two whose text was repaired and the first of the duplicates are cached.
    assert sorted(result.cached_source_ids) == ["dup", "good0", "good1", "good2", "rawbytes", "surrogate"]
    con = open_manifest(db, read_only=True)
    failures = list_failures(con)
    notes = {Path(n["path"]).name: n["note"] for n in list_import_notes(con)}
    captions = dict(con.execute("SELECT s.source_id, a.text FROM sources s JOIN annotations a USING (source_id) "
                                "WHERE a.task = 'caption'").fetchall())
    con.close()
    assert len(failures) == summary.n_failed == 12  # 14 bad rows; the two with bad text were repaired
    # Each bad row's failure names its annotation line and a reason a user can act on.
    by_line = {}
    for f in failures:
        line = int(f"{f['path']} {f['error']}".split("annotations.jsonl:")[1].split("]")[0].split()[0])
        by_line[line] = f["error"]
    assert sorted(by_line) == sorted(expected)
    for line, reason in expected.items():
        assert reason in by_line[line], (line, by_line[line])
    assert "--allow-outside-root" in by_line[5]
    # Invalid text was replaced, noted, and the row kept.
    assert captions["surrogate"] == "caf\ufffd au lait" and captions["rawbytes"] == "d\ufffdj\ufffd vu"
    assert set(notes) == {"surrogate.mp4", "rawbytes.mp4"} and all("U+FFFD" in n for n in notes.values())


def test_allow_outside_root_lifts_the_confinement(folder, tmp_path):
    root, annotations, _, _ = folder
    con = open_manifest(":memory:")
    strict = import_folder(con, root, annotations, dataset="a", probe=False)
    allowed = import_folder(con, root, annotations, dataset="b", probe=False, allow_outside_root=True)
    con.close()
    assert allowed.n_failed == strict.n_failed - 3  # ../, the absolute path and the symlink now import


def test_failures_are_grouped_by_reason_with_counts(folder, tmp_path, capsys):
    from flows.cli.data import main as data_main

    root, annotations, _, _ = folder
    db = str(tmp_path / "m.duckdb")
    con = open_manifest(db)
    import_folder(con, root, annotations, dataset="unsafe", probe=False)
    con.close()
    capsys.readouterr()
    assert data_main(["--manifest", db, "failures"]) == 0
    out = capsys.readouterr().out
    groups = {line.split(None, 2)[2]: int(line.split()[0]) for line in out.splitlines()
              if line[:6].strip().isdigit()}
    assert groups["outside the dataset folder"] == 3 and groups["malformed JSON"] == 1
    assert sum(groups.values()) == 12 and out.rstrip().endswith("12 failure(s)")
    assert data_main(["--manifest", db, "failures", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)  # the JSON alone on stdout
    assert len(rows) == 12 and sum(r["reason"] == "outside the dataset folder" for r in rows) == 3


def test_vljepa_preprocess_imports_caches_and_says_what_failed(folder, tmp_path, capsys):
    """The README's `vljepa preprocess FOLDER --annotations FILE` on the folder above (tiny encoder)."""
    from flows.cli import main

    root, annotations, _, _ = folder
    argv = ["preprocess", str(root), "--annotations", str(annotations), "--preset", "tiny",
            "--state-dir", str(tmp_path / "state")]
    assert main([*argv, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)  # the JSON alone on stdout
    assert out["import"] == {"n_in": 18, "n_imported": 6, "n_skipped": 0, "n_failed": 12}
    caches = out["caches"].values()  # rows give no split: train/val/test by a hash of the clip id
    assert [sum(c[k] for c in caches) for k in ("n_in", "n_cached", "n_failed")] == [6, 6, 0]
    assert not any(c["reused"] for c in caches)
    assert main(argv) == 0  # again: nothing changes, the summary says so
    text = capsys.readouterr().out
    assert "18 rows: 0 imported, 6 unchanged, 12 failed" in text and "reused (nothing changed)" in text


@pytest.mark.parametrize("error, reason", [
    ("cannot decode /a b/t.mp4: ffprobe failed: /a b/t.mp4: Invalid data found when processing input [/c.csv:14]",
     "ffprobe failed: Invalid data found when processing input"),
    ("outside the dataset folder: '../x' resolves to /a/x, not under /b (pass --allow-outside-root …) [/b/a.jsonl:5]",
     "outside the dataset folder"),
    ("cannot decode /x.mp4: no video stream (streams: audio)", "no video stream"),
    ("cannot decode /x.mp4: file is empty (0 bytes)", "file is empty (N bytes)"),
    ("clip too short: 2 decodable frames, 4 needed", "clip too short"),
    ("malformed JSON: Expecting value: line 1 column 1 (char 0)", "malformed JSON"),
    ("clip_id 'dup' appears twice in /x/annotations.jsonl [/x/annotations.jsonl:13]", "clip_id … appears twice in …"),
])
def test_failure_reasons_group_what_a_user_fixes_alike(error, reason):
    from preprocessing.manifest import failure_reason

    assert failure_reason(error) == reason
