"""Re-import only the rows that failed at import (``vljepa data failures --retry``).

A failure at stage ``import`` names its row: a failure keyed by the row's annotation line
(``file:line``, ``tar:key``, ``json:videos[i]``) is that row, and one keyed by the row's media
file ends with ``[file:line]``. Each annotation file's importer, folder, dataset and options
were recorded when it was imported (``import_origins``), so a retry re-reads just those rows
with the same importer: the rows that imported are not read, hashed or probed again. A row is
found again by its line: fix rows in place; after inserting or deleting lines, import the whole
file again instead.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import duckdb

from preprocessing.manifest import IMPORT_STAGE, ImportSummary, list_failures, load_sql

_ROW_SUFFIX = re.compile(r"\[([^\[\]]+)\]$")


def failed_row(failure: dict) -> str:
    """The annotation row (``file:line`` or alike) a failure at import names."""
    found = _ROW_SUFFIX.search(str(failure["error"]))
    return found.group(1) if found else str(failure["path"])


@dataclass
class RetrySummary:
    """What a retry did: per annotation file, the import of its failed rows; rows no import claims."""

    by_origin: dict[str, ImportSummary] = field(default_factory=dict)
    orphans: list[str] = field(default_factory=list)  # failed rows of files with no recorded import

    def lines(self) -> list[str]:
        if not self.by_origin and not self.orphans:
            return ["retry: no import failure to retry"]
        out = [f"retry {origin}: {s.n_in} failed row(s) read again: {s.n_imported} imported, "
               f"{s.n_skipped} unchanged, {s.n_failed} still failing" for origin, s in self.by_origin.items()]
        if self.orphans:
            out.append(f"retry: {len(self.orphans)} failed row(s) come from files imported before imports were "
                       "recorded: import those files again (`vljepa data import ...`)")
        return out


def retry_import_failures(con: duckdb.DuckDBPyConnection) -> RetrySummary:
    """Clear each import failure and import its row again with its file's recorded importer."""
    origins = {row[0]: row for row in con.execute(load_sql("select_import_origins"), {"kind": None}).fetchall()}
    wanted: dict[str, set[str]] = {}
    cleared: dict[str, list[str]] = {}
    summary = RetrySummary()
    for failure in list_failures(con, IMPORT_STAGE):
        row = failed_row(failure)
        origin = next((o for o in origins if row.startswith(f"{o}:")), None)
        if origin is None:
            summary.orphans.append(row)
            continue
        wanted.setdefault(origin, set()).add(row)
        cleared.setdefault(origin, []).append(str(failure["path"]))
    for origin, rows in wanted.items():
        for path in cleared[origin]:  # a row that fails again is recorded again, under its current key
            con.execute(load_sql("clear_failure"), {"path": path, "stage": IMPORT_STAGE})
        summary.by_origin[origin] = _reimport(con, origins[origin], rows)
    return summary


def _reimport(con: duckdb.DuckDBPyConnection, origin_row: tuple, rows: set[str]) -> ImportSummary:
    origin, kind, dataset, root, options_json = origin_row
    options = json.loads(options_json)
    if kind == "corpus":
        from preprocessing.manifest import import_corpus

        return import_corpus(con, root, dataset=dataset, only=rows, **options)
    if kind == "folder":
        from preprocessing.importers import import_folder

        return import_folder(con, root, origin, dataset=dataset, only=rows, **options)
    if kind == "msrvtt":
        from preprocessing.importers import import_msrvtt

        return import_msrvtt(con, origin, root, dataset=dataset, only=rows, **options)
    if kind == "video2dataset":
        from preprocessing.importers import import_video2dataset

        return import_video2dataset(con, [origin], root, dataset=dataset, only=rows, **options)
    raise ValueError(f"import_origins holds an unknown importer {kind!r} for {origin}")
