"""Bad input is recorded and skipped; every good clip reaches the cache: in == cached + failed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from preprocessing.importers import import_folder
from preprocessing.manifest import list_failures, open_manifest
from preprocessing.pipeline import CacheConfig
from preprocessing.readers import TokenShardDataset
from preprocessing.sampling import SamplingConfig
from preprocessing.stage import PreprocessConfig, run
from tests.media import ffmpeg_make, make_h264, make_vfr


@pytest.fixture(scope="module")
def messy(tmp_path_factory) -> tuple[Path, Path, dict[str, str]]:
    """A folder of 17 rows of which 9 are bad (53 %), with what each bad one should fail at."""
    root = tmp_path_factory.mktemp("messy")
    for i in range(5):
        make_h264(root / f"good{i}.mp4", 1.0 + 0.2 * i)
    make_h264(root / "odd.mp4", 1.0, "97x61")  # odd resolution: must work
    make_vfr(root / "vfr.mp4")  # variable frame rate: must work
    ffmpeg_make(root / "still.png", "color=orange:size=40x30", "-frames:v", "1")  # image: 1-frame clip
    (root / "zero.mp4").write_bytes(b"")
    (root / "text.mp4").write_text("not a video\n")
    ffmpeg_make(root / "tone.mp4", "sine=frequency=440:duration=1")  # audio only
    full = make_h264(root / "full.mp4", 2.0).read_bytes()
    (root / "truncated.mp4").write_bytes(full[: len(full) // 2])  # moov atom is at the end: lost
    make_h264(root / "short.mp4", 0.2)  # 2 frames, 4 needed
    (root / "adir.mp4").mkdir()  # a path that is not a readable file
    make_h264(root / "nocap.mp4", 1.0)
    make_h264(root / "emptycap.mp4", 1.0)
    rows = [{"path": f"good{i}.mp4", "caption": f"clip {i}"} for i in range(5)]
    rows += [{"path": p, "caption": "fine"} for p in ("odd.mp4", "vfr.mp4", "still.png")]
    expected = {"zero.mp4": "import", "text.mp4": "import", "tone.mp4": "import", "truncated.mp4": "import",
                "short.mp4": "decode", "adir.mp4": "import", "missing.mp4": "import",
                "nocap.mp4": "import", "emptycap.mp4": "import"}
    rows += [{"path": p, "caption": "x"} for p in ("zero.mp4", "text.mp4", "tone.mp4", "truncated.mp4",
                                                   "short.mp4", "adir.mp4", "missing.mp4")]
    rows += [{"path": "nocap.mp4"}, {"path": "emptycap.mp4", "caption": "  "}]
    annotations = root / "annotations.jsonl"
    annotations.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root, annotations, expected


def test_counts_in_equal_cached_plus_failed(messy, tmp_path, tiny_cfg):
    root, annotations, expected = messy
    db = str(tmp_path / "m.duckdb")
    con = open_manifest(db)
    summary = import_folder(con, root, annotations, dataset="messy", default_split="train")
    con.close()
    n_rows = 17
    assert summary.n_in == n_rows
    sampling = SamplingConfig(num_frames=4)
    x_encoder = tiny_cfg.x_encoder.__class__(**{**tiny_cfg.x_encoder.__dict__, "num_frames": 4})
    cfg = PreprocessConfig(manifest=db, dataset="messy", split="train", x_encoder=x_encoder, sampling=sampling,
                           cache=CacheConfig(root=str(tmp_path / "cache"), format="webdataset", shard_size=3))
    result = run(cfg)
    # Everything imported goes to the cache or to a decode failure; nothing is lost.
    assert summary.n_imported == result.n_in
    assert result.n_in == result.n_cached_sources + result.n_failed_sources
    assert n_rows == result.n_cached_sources + result.n_failed_sources + summary.n_failed
    assert sorted(result.cached_source_ids) == sorted(["good0", "good1", "good2", "good3", "good4", "odd", "vfr", "still"])
    assert len(list(TokenShardDataset(result.cache_dir))) == 8

    con = open_manifest(db)
    failures = {Path(f["path"]).name: f for f in list_failures(con)}
    con.close()
    assert {name: f["stage"] for name, f in failures.items()} == expected
    assert "0 bytes" in failures["zero.mp4"]["error"]
    assert "no video stream" in failures["tone.mp4"]["error"]
    assert "too short" in failures["short.mp4"]["error"]
    assert "missing caption" in failures["nocap.mp4"]["error"]
    assert "empty caption" in failures["emptycap.mp4"]["error"]
    assert "No such file" in failures["missing.mp4"]["error"]

    again = run(cfg)  # nothing changed: the cache is reused, the counts are the same
    assert again.reused and again.n_cached_sources == 8 and again.n_failed_sources == result.n_failed_sources


UNREADABLE = """
import json, sys
from preprocessing.encode import ClipRef
from preprocessing.pipeline import decode_item
from preprocessing.sampling import SamplingConfig
out = {}
for name in sys.argv[1:]:
    samples, failure = decode_item(ClipRef(name, name, "x"), SamplingConfig(num_frames=2), size=32, num_frames=2)
    out[name] = {"samples": len(samples), "stage": failure and failure.stage, "error": failure and failure.error}
print(json.dumps(out))
"""


def test_unreadable_file_is_a_failure(tmp_path):
    """A file without read permission fails at decode with the reason, and a readable one beside it
    does not. Root reads any file, so under root the check runs in a child without the capabilities
    that override file permissions (setpriv: CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH dropped)."""
    import shutil
    import subprocess
    import sys

    locked = make_h264(tmp_path / "locked.mp4", 1.0)
    readable = make_h264(tmp_path / "readable.mp4", 1.0)
    locked.chmod(0)
    command = [sys.executable, "-c", UNREADABLE, str(locked), str(readable)]
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.fail("setpriv (util-linux) is needed to drop root's file-permission override")
        command = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", *command]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=Path(__file__).parent.parent)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out[str(readable)] == {"samples": 1, "stage": None, "error": None}
    assert out[str(locked)]["samples"] == 0 and out[str(locked)]["stage"] == "decode"
    assert "Permission denied" in out[str(locked)]["error"]
