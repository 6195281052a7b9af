"""``vljepa data failures --retry`` (preprocessing.retry) and ``vljepa data notes`` (long captions)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from flows.cli.data import main as data_main
from preprocessing import manifest as manifest_module
from preprocessing.manifest import list_failures, open_manifest
from tests.media import make_h264

ROWS = [("good1.mp4", "a first clip"), ("good2.mp4", "a second clip"), ("later.mp4", "its file comes later"),
        ("good3.mp4", ""), ("../outside.mp4", "a file outside the folder")]


def _write(path: Path, rows) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "caption", "split"])
        writer.writerows([(p, c, "train") for p, c in rows])


@pytest.fixture
def probed(monkeypatch):
    """The files ffprobe is run on (every import of a new or changed row probes its file)."""
    seen: list[str] = []
    real = manifest_module.probe_video

    def probe(path):
        seen.append(Path(path).name)
        return real(path)

    monkeypatch.setattr(manifest_module, "probe_video", probe)
    return seen


def test_retry_reimports_only_the_failed_rows_once_they_are_fixed(tmp_path, probed, capsys):
    root = tmp_path / "mine"
    root.mkdir()
    for name in ("good1.mp4", "good2.mp4", "good3.mp4"):
        make_h264(root / name, 1)
    make_h264(tmp_path / "outside.mp4", 1)
    _write(root / "ann.csv", ROWS)
    db = str(tmp_path / "m.duckdb")
    assert data_main(["--manifest", db, "import", "folder", str(root), "--annotations", str(root / "ann.csv"),
                      "--dataset", "mine"]) == 0
    assert "imported 2, unchanged 0, failed 3" in capsys.readouterr().out
    assert "outside.mp4" not in probed and {"good1.mp4", "good2.mp4"} <= set(probed)  # outside: never opened
    make_h264(root / "later.mp4", 1)  # the user fixes two rows in place; the outside one stays
    _write(root / "ann.csv", [*ROWS[:3], ("good3.mp4", "a third clip, captioned now"), ROWS[4]])
    probed.clear()
    assert data_main(["--manifest", db, "failures", "--retry"]) == 0
    out = capsys.readouterr().out
    assert f"retry {root / 'ann.csv'}: 3 failed row(s) read again: 2 imported, 0 unchanged, 1 still failing" in out
    assert sorted(probed) == ["good3.mp4", "later.mp4"]  # good1/good2 are not read again
    con = open_manifest(db, read_only=True)
    failures = list_failures(con, "import")
    assert [f["path"] for f in failures] == [f"{root / 'ann.csv'}:6"]
    assert "outside the dataset folder" in failures[0]["error"]
    captions = dict(con.execute("SELECT source_id, text FROM annotations WHERE task = 'caption'").fetchall())
    assert captions == {"good1": "a first clip", "good2": "a second clip", "later": "its file comes later",
                        "good3": "a third clip, captioned now"}
    con.close()
    assert data_main(["--manifest", db, "failures", "--retry"]) == 0  # again: the one left still fails
    assert "1 failed row(s) read again: 0 imported, 0 unchanged, 1 still failing" in capsys.readouterr().out


def test_captions_longer_than_the_y_encoder_reads_are_kept_and_noted(tmp_path, capsys):
    from flows.user_data import detect_source, import_data
    from vljepa.config import get_preset

    cfg = get_preset("tiny")  # the tiny y-encoder reads 16 byte tokens
    root = tmp_path / "mine"
    root.mkdir()
    rows = [("a.mp4", "short one", "train"), ("b.mp4", "a caption of thirty-one bytes..", "train"),
            ("c.mp4", "sixteen bytes ok", "test"), ("d.mp4", "seventeen bytes!!", "test")]
    for name, _, _ in rows:
        make_h264(root / name, 1)
    with open(root / "ann.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([("path", "caption", "split"), *rows])
    db = tmp_path / "m.duckdb"
    info = import_data(detect_source(root), db, cfg=cfg)
    assert info.n_long_captions == 2 and info.counts.n_imported == 4  # kept, all four
    assert "2 caption(s) longer than the y-encoder reads" in "\n".join(info.summary_lines())
    assert data_main(["--manifest", str(db), "notes", "--json"]) == 0
    notes = {Path(n["path"]).name: n["note"] for n in json.loads(capsys.readouterr().out)}
    assert notes == {
        "b.mp4 (caption length)": "caption is 31 tokens; the y-encoder (tiny) reads 16 (y_encoder.max_length): "
                                  "kept, the rest is cut at training",
        "d.mp4 (caption length)": "caption is 17 tokens; the y-encoder (tiny) reads 16 (y_encoder.max_length): "
                                  "kept, the rest is cut at training"}
