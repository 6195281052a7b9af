"""Importers into the DuckDB manifest beyond the generated corpus.

- ``import_folder``: a folder of videos/images plus a CSV or JSONL of annotations. Each row
  needs ``path`` (or ``video`` / ``file``; relative to the folder) and ``caption`` (or
  ``text``); optional ``clip_id`` (default: the path without its suffix), ``split`` (default
  ``hash_split`` of the clip id), ``label``, ``question`` + ``answer``.
- ``import_video2dataset``: WebDataset tars as video2dataset writes them: per key
  ``<key>.mp4`` plus ``<key>.txt`` (the caption) and/or ``<key>.json`` (``caption`` field).
  The videos are extracted once into ``media_dir/<tar stem>/<key>.mp4`` (temp + rename).
- ``import_msrvtt``: an MSR-VTT-style JSON (``videos``: ``video_id``, optional ``split``;
  ``sentences``: ``video_id``, ``caption``, ``sen_id``) beside a folder of ``<video_id>.mp4``.
  A clip's caption is its first sentence (lowest ``sen_id``): the manifest holds one caption a clip.

A row without a split gets ``hash_split(clip_id)``: a fixed function of the id alone, so adding
clips never moves the old ones (80 % train, 10 % val, 10 % test).

Both record every bad row (missing file, unreadable or non-video file, missing or empty
caption) in ``failures`` at stage ``import`` and go on: n_in = imported + skipped + failed.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import tarfile
from collections.abc import Collection
from pathlib import Path
from typing import Any

import duckdb

from preprocessing.manifest import ImportSummary, _Record, _read_records, import_records
from preprocessing.rows import ImportOrigin
from vljepa.files import atomic_write_bytes

_PATH_KEYS = ("path", "video", "file")
_CAPTION_KEYS = ("caption", "text")
SPLIT_FRACTIONS = (("train", 0.8), ("val", 0.1), ("test", 0.1))
_SPLIT_NAMES = {"validate": "val", "validation": "val", "valid": "val", "dev": "val"}  # MSR-VTT, HF datasets


def hash_split(clip_id: str) -> str:
    """The split of a clip whose annotations name none: from sha256 of its id alone (stable as data is added)."""
    point = int.from_bytes(hashlib.sha256(clip_id.encode("utf-8", "surrogatepass")).digest()[:8], "big") / 2.0**64
    total = 0.0
    for split, fraction in SPLIT_FRACTIONS:
        total += fraction
        if point < total:
            return split
    return SPLIT_FRACTIONS[-1][0]


def split_name(value: object) -> str:
    """A split as the manifest names it (``validate`` -> ``val``)."""
    name = str(value).strip()
    return _SPLIT_NAMES.get(name.lower(), name)


def _first(row: dict[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        if row.get(key) not in (None, ""):
            return row[key]
    return None


def _normalise(row: dict[str, Any], default_split: str | None) -> dict[str, Any]:
    """A CSV/JSONL row as a corpus-style record (clip_id, path, split, caption, label, qa)."""
    path = _first(row, _PATH_KEYS)
    if path is None:
        raise KeyError("path")
    clip_id = str(row.get("clip_id") or Path(str(path)).with_suffix("").as_posix())
    split = row.get("split") or default_split
    record: dict[str, Any] = {
        "clip_id": clip_id,
        "path": str(path),
        "split": split_name(split) if split else hash_split(clip_id),
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
                  *, dataset: str, default_split: str | None = None, probe: bool = True,
                  allow_outside_root: bool = False, only: Collection[str] | None = None) -> ImportSummary:
    """Import the files of ``folder`` described by a CSV or JSONL ``annotations`` file.

    default_split: the split of rows that name none; None: ``hash_split`` of the clip id.
    allow_outside_root: rows may name files outside ``folder`` (by default such a row is a recorded
    failure, "outside the dataset folder", and its file is never opened).
    only: import just these rows (their ``file:line``): ``vljepa data failures --retry``.
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
    how = ImportOrigin("folder", dataset, str(folder), json.dumps({
        "default_split": default_split, "probe": probe, "allow_outside_root": allow_outside_root}))
    return import_records(con, folder, items, dataset=dataset, probe=probe, origin=str(annotations),
                          require_caption=True, allow_outside_root=allow_outside_root, how=how, only=only)


def _extract(data: bytes, target: Path) -> None:
    if target.is_file() and target.stat().st_size == len(data) and target.read_bytes() == data:
        return
    atomic_write_bytes(target, data)


def import_video2dataset(con: duckdb.DuckDBPyConnection, tars: list[str | os.PathLike], media_dir: str | os.PathLike,
                         *, dataset: str, split: str | None = None, probe: bool = True,
                         only: Collection[str] | None = None) -> ImportSummary:
    """Import video2dataset WebDataset tars (``<key>.mp4`` + ``.txt`` / ``.json``), tar by tar.

    split: every key's split; None: a ``split`` field of the key's JSON, else ``hash_split`` of the clip id.
    only: import just these keys (their ``tar:key``): ``vljepa data failures --retry``."""
    media_dir = Path(media_dir).resolve()
    total = ImportSummary(n_in=0, n_imported=0, n_skipped=0, n_failed=0, failed=())
    for tar_path in (Path(t).resolve() for t in tars):
        items: list[_Record] = []
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
            clip_id = f"{tar_path.stem}/{key}"
            given = split or (meta.get("split") if isinstance(meta, dict) else None)
            record = {"clip_id": clip_id, "path": rel.as_posix(), "caption": caption,
                      "split": split_name(given) if given else hash_split(clip_id)}
            items.append(_Record(where, record, None))
        how = ImportOrigin("video2dataset", dataset, str(media_dir), json.dumps({"split": split, "probe": probe}))
        one = import_records(con, media_dir, items, dataset=dataset, probe=probe, origin=str(tar_path),
                             require_caption=True, how=how, only=only)
        total = ImportSummary(n_in=total.n_in + one.n_in, n_imported=total.n_imported + one.n_imported,
                              n_skipped=total.n_skipped + one.n_skipped, n_failed=total.n_failed + one.n_failed,
                              failed=total.failed + one.failed)
    return total


def import_msrvtt(con: duckdb.DuckDBPyConnection, annotations: str | os.PathLike, video_dir: str | os.PathLike,
                  *, dataset: str, probe: bool = True, allow_outside_root: bool = False,
                  only: Collection[str] | None = None) -> ImportSummary:
    """Import an MSR-VTT-style JSON (``videos`` + ``sentences``) over ``video_dir/<video_id>.<ext>``.

    Each video is one row (failures name ``<json>:videos[i]``); its caption is its first sentence
    by ``sen_id``; its split is the video's ``split`` (``validate`` -> ``val``) or ``hash_split``.
    """
    annotations, video_dir = Path(annotations).resolve(), Path(video_dir).resolve()
    meta = json.loads(annotations.read_text(encoding="utf-8", errors="surrogateescape"))
    if not isinstance(meta, dict) or not isinstance(meta.get("videos"), list):
        raise ValueError(f"{annotations}: an MSR-VTT-style JSON needs a 'videos' list (and 'sentences')")
    first: dict[str, tuple[float, str]] = {}
    for sentence in meta.get("sentences") or []:
        if isinstance(sentence, dict) and "video_id" in sentence and sentence.get("caption") is not None:
            order = float(sentence.get("sen_id", 0))
            vid = str(sentence["video_id"])
            if vid not in first or order < first[vid][0]:
                first[vid] = (order, str(sentence["caption"]))
    files = {p.stem: p.name for p in sorted(video_dir.iterdir()) if p.is_file()} if video_dir.is_dir() else {}
    items: list[_Record] = []
    for index, video in enumerate(meta["videos"]):
        where = f"{annotations}:videos[{index}]"
        if not isinstance(video, dict) or "video_id" not in video:
            items.append(_Record(where, None, "expected an object with a video_id"))
            continue
        vid = str(video["video_id"])
        record: dict[str, Any] = {"clip_id": vid, "path": files.get(vid, f"{vid}.mp4"),
                                  "split": split_name(video["split"]) if video.get("split") else hash_split(vid),
                                  "caption": first.get(vid, (0.0, None))[1]}
        if video.get("label") not in (None, ""):
            record["label"] = str(video["label"])
        items.append(_Record(where, record, None))
    how = ImportOrigin("msrvtt", dataset, str(video_dir), json.dumps({"probe": probe,
                                                                       "allow_outside_root": allow_outside_root}))
    return import_records(con, video_dir, items, dataset=dataset, probe=probe, origin=str(annotations),
                          require_caption=True, allow_outside_root=allow_outside_root, how=how, only=only)
