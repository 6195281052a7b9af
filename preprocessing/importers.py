"""Importers into the DuckDB manifest beyond the generated corpus.

- ``import_folder``: a folder of videos/images plus a CSV or JSONL of annotations. Each row
  needs ``path`` (or ``video`` / ``file``; relative to the folder) and ``caption`` (or
  ``text``); optional ``clip_id`` (default: the path without its suffix), ``split`` (default
  ``train``), ``label``, ``question`` + ``answer``.
- ``import_video2dataset``: WebDataset tars as video2dataset writes them: per key
  ``<key>.mp4`` plus ``<key>.txt`` (the caption) and/or ``<key>.json`` (``caption`` field).
  The videos are extracted once into ``media_dir/<tar stem>/<key>.mp4`` (temp + rename).

Both record every bad row (missing file, unreadable or non-video file, missing or empty
caption) in ``failures`` at stage ``import`` and go on: n_in = imported + skipped + failed.
"""

from __future__ import annotations

import csv
import json
import os
import tarfile
from pathlib import Path
from typing import Any

import duckdb

from preprocessing.manifest import ImportSummary, _Record, _read_records, import_records
from vljepa.files import atomic_write_bytes

_PATH_KEYS = ("path", "video", "file")
_CAPTION_KEYS = ("caption", "text")


def _first(row: dict[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        if row.get(key) not in (None, ""):
            return row[key]
    return None


def _normalise(row: dict[str, Any], default_split: str) -> dict[str, Any]:
    """A CSV/JSONL row as a corpus-style record (clip_id, path, split, caption, label, qa)."""
    path = _first(row, _PATH_KEYS)
    if path is None:
        raise KeyError("path")
    record: dict[str, Any] = {
        "clip_id": str(row.get("clip_id") or Path(str(path)).with_suffix("").as_posix()),
        "path": str(path),
        "split": str(row.get("split") or default_split),
        "caption": _first(row, _CAPTION_KEYS),
    }
    if row.get("label") not in (None, ""):
        record["label"] = str(row["label"])
    if row.get("qa"):
        record["qa"] = row["qa"]
    elif row.get("question") not in (None, "") and row.get("answer") not in (None, ""):
        record["qa"] = [{"question": row["question"], "answer": row["answer"]}]
    return record


def _rows(annotations: Path) -> list[_Record]:
    if annotations.suffix.lower() == ".csv":
        with open(annotations, newline="", encoding="utf-8", errors="surrogateescape") as handle:
            return [_Record(f"{annotations}:{n}", row, None) for n, row in enumerate(csv.DictReader(handle), start=2)]
    return list(_read_records(annotations))


def import_folder(con: duckdb.DuckDBPyConnection, folder: str | os.PathLike, annotations: str | os.PathLike,
                  *, dataset: str, default_split: str = "train", probe: bool = True,
                  allow_outside_root: bool = False) -> ImportSummary:
    """Import the files of ``folder`` described by a CSV or JSONL ``annotations`` file.

    allow_outside_root: rows may name files outside ``folder`` (by default such a row is a recorded
    failure, "outside the dataset folder", and its file is never opened).
    """
    folder = Path(folder).resolve()
    annotations = Path(annotations).resolve()  # failures name its lines: absolute, as the files are
    if not annotations.is_file():
        raise FileNotFoundError(f"annotations file {annotations} not found")
    items = []
    for item in _rows(annotations):
        if item.error is not None or item.data is None:
            items.append(item)
            continue
        try:
            items.append(_Record(item.where, _normalise(dict(item.data), default_split), None))
        except KeyError as err:
            items.append(_Record(item.where, None, f"row has no {'/'.join(_PATH_KEYS)} column ({err})"))
    return import_records(con, folder, items, dataset=dataset, probe=probe, origin=str(annotations),
                          require_caption=True, allow_outside_root=allow_outside_root)


def _extract(data: bytes, target: Path) -> None:
    if target.is_file() and target.stat().st_size == len(data) and target.read_bytes() == data:
        return
    atomic_write_bytes(target, data)


def import_video2dataset(con: duckdb.DuckDBPyConnection, tars: list[str | os.PathLike], media_dir: str | os.PathLike,
                         *, dataset: str, split: str = "train", probe: bool = True) -> ImportSummary:
    """Import video2dataset WebDataset tars (``<key>.mp4`` + ``.txt`` / ``.json``)."""
    media_dir = Path(media_dir).resolve()
    items: list[_Record] = []
    for tar_path in map(Path, tars):
        groups: dict[str, dict[str, bytes]] = {}
        with tarfile.open(tar_path) as tar:
            for member in tar:
                if not member.isfile():
                    continue
                key, _, ext = member.name.partition(".")
                handle = tar.extractfile(member)
                if handle is not None:
                    groups.setdefault(key, {})[ext] = handle.read()
        for key, parts in sorted(groups.items()):
            where = f"{tar_path}:{key}"
            video_ext = next((e for e in ("mp4", "webm", "mkv", "avi") if e in parts), None)
            if video_ext is None:
                items.append(_Record(where, None, f"key {key} has no video ({sorted(parts)})"))
                continue
            rel = Path(tar_path.stem) / f"{Path(key).name}.{video_ext}"
            _extract(parts[video_ext], media_dir / rel)
            meta: dict[str, Any] = {}
            if "json" in parts:
                try:
                    meta = json.loads(parts["json"])
                except json.JSONDecodeError as err:
                    items.append(_Record(where, None, f"malformed JSON: {err}"))
                    continue
            caption = parts["txt"].decode("utf-8", "replace") if "txt" in parts else meta.get("caption")
            record = {"clip_id": f"{tar_path.stem}/{key}", "path": rel.as_posix(), "split": split, "caption": caption}
            items.append(_Record(where, record, None))
    return import_records(con, media_dir, items, dataset=dataset, probe=probe,
                          origin=", ".join(map(str, tars)), require_caption=True)
