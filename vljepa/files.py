"""Small file utilities, one copy each: atomic writes, content hashes and content keys.

This is the bottom of the one-way import graph: ``vljepa``, ``preprocessing`` and ``flows``
import from here, and this module imports only the standard library.

Atomic writes go to a hidden temporary name beside the target, ``.<name>.tmp-<pid>-<8 hex>``
(a glob of the real names never picks one up), are fsync'ed, and are renamed onto the target
with ``os.replace``: a reader sees the old file or the new one, never half of one. On an error
the temporary is removed; a process killed outright leaves it behind, hidden, and
``temp_glob`` / ``temp_writer_pid`` let its owner find and clear it.

Caches and model directories are content-addressed by ``canonical_sha256`` and
``content_key``: their output must never change, and ``tests/test_files.py`` pins golden values.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import shutil
import sys
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path, PurePath
from typing import Any, BinaryIO

_TEMP_MARK = ".tmp-"
_TEMP_NAME = re.compile(r"^\.(?P<name>.+)" + re.escape(_TEMP_MARK) + r"(?P<pid>\d+)-[0-9a-f]{8}$")

KEY_PATTERN = re.compile(r"^[0-9a-f]{8,128}$")
"""What a content key looks like: 8 to 128 lowercase hex digits (a cache directory's name)."""


# -- temporary names -----------------------------------------------------------------------------


def _temp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}{_TEMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}")


def temp_glob(name_glob: str = "*") -> str:
    """The glob of the temporaries left by atomic writes of targets matching ``name_glob``.

    E.g. ``directory.glob(temp_glob("clip_*.mp4"))`` finds what killed writers of clips left.
    """
    return f".{name_glob}{_TEMP_MARK}*"


def temp_writer_pid(path: str | os.PathLike) -> int | None:
    """The id of the process that made the temporary ``path``, or None if it is not one of ours."""
    match = _TEMP_NAME.match(Path(path).name)
    return int(match["pid"]) if match else None


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (one of another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(directory: str | os.PathLike, name_glob: str = "*") -> None:
    """Remove the temporaries that killed atomic writes of ``name_glob`` left in ``directory``: each one whose
    writer is not running (a live writer's is left to it)."""
    for stale in Path(directory).glob(temp_glob(name_glob)):
        pid = temp_writer_pid(stale)
        if pid is None or not pid_alive(pid):
            stale.unlink(missing_ok=True)


def _fsync_file(path: Path) -> None:
    # fsync flushes the file, not the descriptor: a fresh read-only one reaches the data another wrote.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (best effort: some filesystems refuse)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


# -- atomic files --------------------------------------------------------------------------------


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write one file to; on success fsync it and rename it
    onto ``path``, on an error remove it.

    For writers that take a file name (``safetensors.torch.save_file``, ffmpeg); those that take a
    file object use ``atomic_write``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = _temp_path(path)
    try:
        yield temp
        _fsync_file(temp)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write(file)`` on a binary file open on a temporary beside ``path``, flush and fsync
    it, then rename it onto ``path``; the temporary is removed on an error. Returns ``path``."""
    path = Path(path)
    with atomic_path(path) as temp, open(temp, "wb") as handle:
        write(handle)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see ``atomic_write``)."""
    return atomic_write(path, lambda handle: handle.write(data))


def atomic_write_text(path: str | os.PathLike, text: str, *, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (see ``atomic_write``)."""
    return atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: str | os.PathLike, obj: object, **json_kwargs: Any) -> Path:
    """Write ``obj`` as JSON plus a final newline to ``path`` atomically.

    json_kwargs: passed to ``json.dumps`` over these defaults: ``indent=2, sort_keys=True,
        allow_nan=False`` and the encoder of ``canonical_json`` for dataclasses, paths and
        numpy scalars.
    """
    options: dict[str, Any] = {"indent": 2, "sort_keys": True, "allow_nan": False, "default": _json_default}
    options.update(json_kwargs)
    return atomic_write_text(path, json.dumps(obj, **options) + "\n")


# -- atomic directories --------------------------------------------------------------------------


@contextlib.contextmanager
def atomic_dir(final_dir: str | os.PathLike, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a fresh temporary directory beside ``final_dir`` to build it in; on success fsync its
    files and rename it to ``final_dir``, on an error remove it.

    overwrite: replace an existing ``final_dir`` (the old one is renamed aside first, so a reader
        sees the old directory, none for an instant, or the new one, never a half-deleted one); if
        False an existing ``final_dir`` wins (another process built it first) and the new one is
        discarded.
    """
    final = Path(final_dir)
    final.parent.mkdir(parents=True, exist_ok=True)
    temp = _temp_path(final)
    temp.mkdir()
    try:
        yield temp
        for directory, _, names in os.walk(temp):
            for name in names:
                _fsync_file(Path(directory, name))
            _fsync_dir(Path(directory))
        if not final.exists():
            os.replace(temp, final)
        elif not overwrite:
            _remove(temp)
        else:
            aside = _temp_path(final)
            os.replace(final, aside)
            try:
                os.replace(temp, final)
            except BaseException:
                os.replace(aside, final)
                raise
            _remove(aside)
    except BaseException:
        _remove(temp)
        raise
    _fsync_dir(final.parent)


# -- hashes and keys -----------------------------------------------------------------------------


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """sha256 hex digest of a file's bytes, read ``chunk`` bytes at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _json_default(value: object) -> object:
    """JSON for the few non-JSON types a config holds; anything else is an error."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, PurePath):
        return value.as_posix()
    if isinstance(value, Mapping):
        return dict(value)
    numpy = sys.modules.get("numpy")  # a numpy scalar implies numpy is loaded; never import it here
    if numpy is not None and isinstance(value, numpy.generic):
        return value.item()
    raise TypeError(f"canonical_json cannot encode a {type(value).__name__}: {value!r}")


def canonical_json(value: object) -> str:
    """JSON with sorted keys and no whitespace, so equal configs give equal text.

    Dataclasses become dicts, paths POSIX strings, numpy scalars Python numbers; NaN, infinity
    and any other type are errors.
    """
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
        allow_nan=False, default=_json_default,
    )


def canonical_sha256(value: object) -> str:
    """sha256 hex digest of ``canonical_json(value)``: the content key of a config (key order does
    not matter; 64 and 64.0 differ). Token-cache directories are named by it."""
    return hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()


def content_key_sha256(*parts: str) -> str:
    """sha256 hex digest (64 digits) of the parts joined one per line."""
    return hashlib.sha256("\n".join(parts).encode("utf-8")).hexdigest()


def content_key(*parts: str) -> str:
    """A short content address: the first 12 hex digits of ``content_key_sha256(*parts)``.
    Model directories are named by it."""
    return content_key_sha256(*parts)[:12]


def is_key(text: str) -> bool:
    """Whether ``text`` looks like a content key (``KEY_PATTERN``), i.e. is safe as a directory name."""
    return KEY_PATTERN.fullmatch(text) is not None
