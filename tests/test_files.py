"""vljepa.files: golden hashes and keys (caches and model directories are named by them) and atomic writes."""

from __future__ import annotations

import ast
import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import vljepa.files as files
from vljepa.files import (
    KEY_PATTERN,
    atomic_dir,
    atomic_path,
    atomic_write,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    canonical_json,
    canonical_sha256,
    content_key,
    content_key_sha256,
    file_sha256,
    is_key,
    temp_glob,
    temp_writer_pid,
)

CONFIG = {"encoder": "tiny-vit", "num_frames": 4, "size": 64, "source_hashes": ["ab", "cd"]}


# -- golden values: computed with the code these functions replaced (flows/stages.py content_key,
# preprocessing/cache.py cache_key / canonical_json / file_sha256); a change renames every cache.


def test_content_key_golden():
    assert content_key("a", "b") == "7e18f737311b"
    assert content_key("a", "b") == hashlib.sha256(b"a\nb").hexdigest()[:12]  # independent reference
    assert content_key("é") == "4a99557e4033"  # utf-8
    assert content_key("a", "b") != content_key("ab") != content_key("b", "a")
    assert content_key_sha256("a", "b") == hashlib.sha256(b"a\nb").hexdigest()
    assert content_key_sha256("x") == hashlib.sha256(b"x").hexdigest()  # one part: the text's sha256


def test_canonical_sha256_golden_and_sensitive():
    assert canonical_sha256(CONFIG) == "c1cd426918e935656ee92127761554b2ec92fb00ae3620141e26ad7c86fe8c64"
    expected = hashlib.sha256(json.dumps(CONFIG, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    assert canonical_sha256(CONFIG) == expected
    assert canonical_sha256(dict(reversed(list(CONFIG.items())))) == canonical_sha256(CONFIG)
    assert canonical_sha256({**CONFIG, "size": 65}) != canonical_sha256(CONFIG)
    assert canonical_sha256({**CONFIG, "size": 64.0}) != canonical_sha256(CONFIG)  # 64 and 64.0 differ
    assert canonical_sha256({**CONFIG, "source_hashes": ["cd", "ab"]}) != canonical_sha256(CONFIG)
    assert canonical_sha256({**CONFIG, "extra": None}) != canonical_sha256(CONFIG)


def test_canonical_json_golden():
    nested = {"b": [1, 2.5, {"z": None, "a": True}], "a": {"y": "é", "x": Path("/p/q")},
              "n": np.int64(3), "f": np.float32(0.5)}
    assert canonical_json(nested) == '{"a":{"x":"/p/q","y":"é"},"b":[1,2.5,{"a":true,"z":null}],"f":0.5,"n":3}'
    assert canonical_sha256(nested) == "e8028e82e7518545ef45ddd7969b4ca7eb0606f8b7cd2e7116e64fd4c4bd2a55"

    @dataclass(frozen=True)
    class Preset:
        size: int

    assert canonical_json({"p": Preset(size=3)}) == canonical_json({"p": {"size": 3}})
    with pytest.raises(TypeError, match="object"):
        canonical_json({"f": object()})
    with pytest.raises(ValueError):
        canonical_json({"x": float("nan")})


def test_file_sha256_matches_hashlib(tmp_path):
    data = bytes(range(256)) * 40 + b"tail"  # 10,244 bytes: eleven chunks of 1000
    (tmp_path / "f.bin").write_bytes(data)
    assert file_sha256(tmp_path / "f.bin", chunk=1000) == hashlib.sha256(data).hexdigest()
    assert file_sha256(tmp_path / "f.bin") == "2949a0b13bda31266e582cfb3d63e8f27394bb90ceb94efb1fbbd250f9fbfc31"
    (tmp_path / "empty").write_bytes(b"")
    assert file_sha256(tmp_path / "empty") == hashlib.sha256(b"").hexdigest()


def test_keys():
    assert is_key(canonical_sha256(CONFIG)) and is_key(content_key("a"))
    for bad in ("../../etc/passwd", "ABCDEF12", "abc", "abcdef12\n", ""):
        assert not is_key(bad), bad
    assert KEY_PATTERN.match("0123abcd")


# -- atomic writes ---------------------------------------------------------------------------------


def test_atomic_write_failure_keeps_the_old_file_and_no_temporary(tmp_path):
    target = atomic_write_bytes(tmp_path / "f.bin", b"old")

    def half_then_fail(handle):
        handle.write(b"new but only half")
        handle.flush()
        raise KeyboardInterrupt("killed mid-write")

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, half_then_fail)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]

    assert atomic_write(target, lambda handle: handle.write(b"new")) == target
    assert target.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_atomic_write_of_a_new_file_that_fails_leaves_nothing(tmp_path):
    with pytest.raises(ValueError):
        atomic_write(tmp_path / "sub" / "f.bin", lambda handle: (_ for _ in ()).throw(ValueError("bad")))
    assert list((tmp_path / "sub").iterdir()) == []


def test_atomic_text_and_json(tmp_path):
    assert atomic_write_text(tmp_path / "t.txt", "héllo\n").read_bytes() == "héllo\n".encode()
    value = {"b": 1, "a": [Path("/x"), np.int32(2)]}
    path = atomic_write_json(tmp_path / "v.json", value)
    # The format the sharded caches' index.json has always had.
    assert path.read_text() == json.dumps({"a": ["/x", 2], "b": 1}, indent=2, sort_keys=True) + "\n"
    assert atomic_write_json(tmp_path / "c.json", {"b": 1, "a": 2}, indent=None, sort_keys=False).read_text() \
        == '{"b": 1, "a": 2}\n'
    with pytest.raises(ValueError):
        atomic_write_json(tmp_path / "v.json", {"x": float("inf")})
    assert json.loads(path.read_text()) == {"a": ["/x", 2], "b": 1}


def test_atomic_path_for_writers_that_take_a_name(tmp_path):
    target = tmp_path / "m.bin"
    with atomic_path(target) as temp:
        assert temp.parent == tmp_path and temp.name.startswith(".")
        temp.write_bytes(b"whole")
        assert not target.exists()  # nothing under the final name until the block ends
    assert target.read_bytes() == b"whole"
    with pytest.raises(RuntimeError), atomic_path(target) as temp:
        temp.write_bytes(b"half")
        raise RuntimeError("writer failed")
    assert target.read_bytes() == b"whole" and [p.name for p in tmp_path.iterdir()] == ["m.bin"]


def test_atomic_dir_replaces_whole_or_not_at_all(tmp_path):
    final = tmp_path / "model"
    with atomic_dir(final) as tmp:
        (tmp / "a.txt").write_text("1")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "b.txt").write_text("2")
        assert not final.exists()
    assert (final / "a.txt").read_text() == "1" and (final / "sub" / "b.txt").read_text() == "2"

    with pytest.raises(KeyboardInterrupt), atomic_dir(final) as tmp:
        (tmp / "a.txt").write_text("half")
        raise KeyboardInterrupt
    assert (final / "a.txt").read_text() == "1"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]

    with atomic_dir(final) as tmp:
        (tmp / "c.txt").write_text("3")
    assert sorted(p.name for p in final.iterdir()) == ["c.txt"]  # replaced, not merged
    assert [p.name for p in tmp_path.iterdir()] == ["model"]

    with atomic_dir(final, overwrite=False) as tmp:  # another writer got there first: it wins
        (tmp / "d.txt").write_text("4")
    assert sorted(p.name for p in final.iterdir()) == ["c.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_a_killed_writers_temporary_is_found_and_attributed(tmp_path):
    orphan = files._temp_path(tmp_path / "clip_000001.mp4")  # what a kill -9 mid-write leaves
    orphan.write_bytes(b"half")
    (tmp_path / "clip_000002.mp4").write_bytes(b"whole")
    assert list(tmp_path.glob(temp_glob("clip_*.mp4"))) == [orphan]
    assert list(tmp_path.glob("clip_*.mp4")) == [tmp_path / "clip_000002.mp4"]  # never taken for a clip
    assert temp_writer_pid(orphan) == os.getpid()
    assert temp_writer_pid(tmp_path / "clip_000002.mp4") is None


def test_files_imports_only_the_standard_library():
    tree = ast.parse(Path(files.__file__).read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module and node.level == 0}
    assert imported and imported <= set(sys.stdlib_module_names) | {"__future__"}, imported - set(sys.stdlib_module_names)


def test_remove_stale_temps_clears_dead_writers_and_keeps_live_ones(tmp_path):
    import subprocess

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    dead_pid = int(dead.stdout)  # exited and reaped: no such process now
    left = tmp_path / f".clip_1.mp4.tmp-{dead_pid}-0123abcd"
    live = tmp_path / f".clip_2.mp4.tmp-{os.getpid()}-0123abcd"
    other = tmp_path / f".notes.txt.tmp-{dead_pid}-0123abcd"  # another target's: not asked for
    for path in (left, live, other):
        path.write_text("")
    assert files.temp_writer_pid(left) == dead_pid and not files.pid_alive(dead_pid) and files.pid_alive(os.getpid())
    files.remove_stale_temps(tmp_path, "clip_*.mp4")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other.name])
