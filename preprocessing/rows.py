"""What an annotation row may make the importer do: valid text only, files inside the dataset only.

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
from pathlib import Path
from typing import Any


class OutsideRoot(ValueError):
    """A row's file resolves outside the dataset folder."""


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
