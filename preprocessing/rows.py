"""Annotation rows: what one may make the importer do (valid text only, files inside the dataset
only), and the manifest rows it becomes.

- **Text.** JSON can hold a lone surrogate (``"\\udcff"``: what ``surrogateescape`` makes of a
  byte that is not UTF-8). It is not valid UTF-8, so hashing or storing the row fails. Every
  string of a row is made valid (each lone surrogate becomes U+FFFD), and the row says so.
- **Paths.** A row's path is resolved against the dataset folder, symlinks included, before
  anything opens it: a path that lands outside the folder (``../../etc/hostname``,
  ``/etc/passwd``, a symlink to elsewhere) is a recorded failure, unless the user allows it
  (``allow_outside_root``, ``--allow-outside-root``). Special files (FIFOs, devices, sockets),
  which would block or stream forever when read, fail before they are opened.
"""

from __future__ import annotations

import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vljepa.files import canonical_json


class OutsideRoot(ValueError):
    """A row's file resolves outside the dataset folder."""


@dataclass(frozen=True)
class ImportOrigin:
    """How an annotation file was imported: what ``preprocessing.retry`` re-imports its failed rows with."""

    kind: str  # corpus, folder, video2dataset, msrvtt
    dataset: str
    root: str
    options: str = "{}"  # JSON: the importer's other arguments


def valid_text(text: str) -> str:
    """``text`` with every lone surrogate replaced by U+FFFD (valid pairs are kept)."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def clean_row(value: Any) -> tuple[Any, int]:
    """(value with every string made valid UTF-8, how many strings changed): keys, lists, nesting."""
    if isinstance(value, str):
        fixed = valid_text(value)
        return fixed, int(fixed != value)
    if isinstance(value, Mapping):
        out, changed = {}, 0
        for key, item in value.items():
            fixed_key, n_key = clean_row(key)
            out[fixed_key], n_item = clean_row(item)
            changed += n_key + n_item
        return out, changed
    if isinstance(value, list):
        items = [clean_row(item) for item in value]
        return [item for item, _ in items], sum(n for _, n in items)
    return value, 0


def media_path(base_dir: Path, relative: object, *, allow_outside_root: bool = False) -> Path:
    """The absolute, symlink-free path of a row's file, confined to ``base_dir`` (already resolved).

    Raises OutsideRoot for a path outside the folder (unless allowed) and OSError for a special
    file; neither opens the file (``resolve`` reads links, ``lstat``/``stat`` read metadata).
    """
    text = valid_text(str(relative))
    if "\x00" in text:
        raise ValueError(f"path {text!r} holds a NUL byte")
    try:
        path = (base_dir / text).resolve()
    except RuntimeError as err:  # Python < 3.13: a symlink loop (3.13 raises OSError)
        raise OSError(f"cannot resolve {text!r}: {err}") from err
    if not allow_outside_root and not path.is_relative_to(base_dir):
        raise OutsideRoot(f"outside the dataset folder: {text!r} resolves to {path}, not under {base_dir} "
                          "(pass --allow-outside-root to import files from elsewhere)")
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return path  # reported as missing by whoever opens it, as before
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise OSError(f"not a regular file (a FIFO, device or socket): {path}")
    return path


def check_caption(record: Mapping[str, Any]) -> None:
    caption = record.get("caption")
    if caption is None:
        raise ValueError("missing caption")
    if not str(caption).strip():
        raise ValueError("empty caption")


def annotation_rows(source_id: str, record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The rows of `annotations` for one corpus record, with every parameter of insert_annotation."""
    rows: list[dict[str, Any]] = []

    def add(task: str, idx: int, **values: Any) -> None:
        row = dict(source_id=source_id, task=task, idx=idx, text=None, question=None,
                   answer=None, label=None, start_s=None, end_s=None, attributes=None)
        row.update(values)
        rows.append(row)

    if record.get("caption") is not None:
        add("caption", 0, text=str(record["caption"]))
    if record.get("label") is not None:
        add("classification", 0, label=str(record["label"]))
    for idx, event in enumerate(record.get("events") or []):
        start, end = float(event["start"]), float(event["end"])
        if not start <= end:
            raise ValueError(f"event {idx} ends before it starts ({start} > {end})")
        rest = {k: v for k, v in event.items() if k not in ("start", "end", "caption")}
        add("event", idx, text=event.get("caption"), start_s=start, end_s=end,
            attributes=canonical_json(rest) if rest else None)
    qas = record.get("qa") or []
    if not isinstance(qas, list) or not all(isinstance(qa, Mapping) and {"question", "answer"} <= set(qa) for qa in qas):
        raise ValueError(f"qa must be a list of {{\"question\": ..., \"answer\": ...}} objects, got {qas!r:.80}")
    for idx, qa in enumerate(qas):
        add("vqa", idx, question=str(qa["question"]), answer=str(qa["answer"]))
    return rows


def optional_field(record: Mapping[str, Any], key: str, kind: type) -> Any:
    value = record.get(key)
    return None if value is None else kind(value)
