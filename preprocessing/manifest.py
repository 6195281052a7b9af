"""DuckDB manifest of the data stage: sources, annotations, splits, token caches, failures.

The schema and every query live in ``sql/*.sql`` (loaded by name with ``load_sql``) and run
with bound ``$name`` parameters, never with values formatted into the SQL text.

Corpus layout read by ``import_corpus`` (written by ``preprocessing/corpus.py``)::

    corpus_dir/videos/clip_000000.mp4 ...
    corpus_dir/annotations.jsonl   one JSON object per clip: clip_id, path (relative to
                                   corpus_dir), split, duration, fps, width, height, caption,
                                   label, events [{start, end, caption, ...}], qa [{question, answer}]
    corpus_dir/corpus.json         generator config (not read here)
"""

from __future__ import annotations

import functools
from concurrent.futures import Future, ThreadPoolExecutor
import json
import os
import re
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import duckdb

from preprocessing.decode import DecodeError, VideoInfo, is_image_path, probe_video
from preprocessing.rows import (ImportOrigin, annotation_rows, check_caption, clean_row, media_path, optional_field,
                                valid_text)
from vljepa.files import canonical_sha256, file_sha256

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"
ANNOTATIONS_FILE = "annotations.jsonl"
IMPORT_STAGE = "import"
_SQL_NAME = re.compile(r"^[a-z0-9_]+$")
# Errors that mean "this one record or file is bad": recorded and skipped. Any other error of one
# row (a DuckDB error, a bug) is recorded too, with its type (import_records): one bad row never
# costs the good ones.
_RECORD_ERRORS = (DecodeError, OSError, KeyError, TypeError, ValueError)


@functools.cache
def load_sql(name: str) -> str:
    """Text of sql/<name>.sql."""
    if not _SQL_NAME.match(name):
        raise ValueError(f"SQL file names are lowercase words with underscores, got {name!r}")
    path = SQL_DIR / f"{name}.sql"
    if not path.is_file():
        raise FileNotFoundError(f"no SQL file {path} (is the repository's sql/ folder present?)")
    return path.read_text(encoding="utf-8")


def open_manifest(db_path: str | os.PathLike, *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """Connect to the manifest database at `db_path` (":memory:" works) and create its tables.

    read_only=True: for readers (data loaders, training ranks). DuckDB lets one process hold a
    file read-write, and then no other process may open it at all, but any number of processes
    may hold it read-only at once; no schema statement is run, and a missing file is an error.
    """
    if not read_only:
        if str(db_path) != ":memory:":
            Path(db_path).parent.mkdir(parents=True, exist_ok=True)
        con = duckdb.connect(str(db_path))
        con.execute(load_sql("schema"))
        return con
    if str(db_path) == ":memory:":
        raise ValueError("an in-memory manifest cannot be opened read-only: it would be empty")
    if not Path(db_path).is_file():
        raise FileNotFoundError(
            f"no manifest at {db_path}: import data first (`vljepa data --manifest {db_path} import corpus DIR`, "
            "or `vljepa run`, which imports the embedded corpus)")
    try:
        return duckdb.connect(str(db_path), read_only=True)
    except duckdb.ConnectionException as err:
        # This process already holds the file read-write (DuckDB refuses a second configuration
        # of one database in one process): share that instance; its lock is ours already.
        if "different configuration" not in str(err):
            raise
        return duckdb.connect(str(db_path))


@dataclass(frozen=True, kw_only=True)
class ImportSummary:
    """Counts of one import: n_in = n_imported + n_skipped + n_failed."""

    n_in: int  # records in annotations.jsonl (malformed lines included)
    n_imported: int  # new or changed sources written
    n_skipped: int  # already in the manifest with the same file and record
    n_failed: int  # recorded in `failures` and skipped
    failed: tuple[str, ...]  # their paths (a malformed line is "<annotations.jsonl>:<line>")


@dataclass(frozen=True)
class _Record:
    where: str  # path or "file:line", for failures
    data: Mapping[str, Any] | None
    error: str | None


def _read_records(annotations_path: Path) -> Iterator[_Record]:
    # surrogateescape: a line with bytes that are not UTF-8 is read, not fatal (rows.clean_row repairs it)
    with open(annotations_path, encoding="utf-8", errors="surrogateescape") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{annotations_path}:{line_no}"
            try:
                data = json.loads(line)
            except json.JSONDecodeError as err:
                yield _Record(where, None, f"malformed JSON: {err}")
                continue
            if not isinstance(data, dict):
                yield _Record(where, None, f"expected a JSON object, got {type(data).__name__}")
                continue
            yield _Record(where, data, None)


def _needs_import(con: duckdb.DuckDBPyConnection, media_path: Path, record: Mapping[str, Any], dataset: str) -> bool:
    """True unless the manifest already holds this record with the same file, path and split."""
    try:
        content_hash = file_sha256(media_path)
        source_id, split = str(record["clip_id"]), str(record["split"])
    except _RECORD_ERRORS:
        return True  # _import_one records the failure
    record_hash = canonical_sha256(record)
    state = con.execute(load_sql("select_source_state"), {"source_id": source_id, "dataset": dataset}).fetchall()
    return not (state and state[0] == (content_hash, str(media_path), record_hash, split))


def _import_one(
    con: duckdb.DuckDBPyConnection, media_path: Path, record: Mapping[str, Any], *, dataset: str, probe: bool,
    probed: "Future[VideoInfo] | None" = None,
) -> bool:
    """Write one record's source, annotations and split; False when it was already there."""
    source_id, split = str(record["clip_id"]), str(record["split"])
    content_hash = file_sha256(media_path)
    record_hash = canonical_sha256(record)
    state = con.execute(
        load_sql("select_source_state"), {"source_id": source_id, "dataset": dataset}
    ).fetchall()
    if state and state[0] == (content_hash, str(media_path), record_hash, split):
        return False

    kind = "image" if is_image_path(media_path) else "video"
    if probe:
        info = probed.result() if probed is not None else probe_video(media_path)
        media = dict(duration=info.duration, fps=info.fps, width=info.width,
                     height=info.height, codec=info.codec)
    else:  # trust the corpus record; codec unknown
        media = dict(duration=optional_field(record, "duration", float), fps=optional_field(record, "fps", float),
                     width=optional_field(record, "width", int), height=optional_field(record, "height", int),
                     codec=None)
    new_annotations = annotation_rows(source_id, record)

    con.begin()
    try:
        con.execute(load_sql("insert_source"), dict(
            source_id=source_id, path=str(media_path), content_hash=content_hash,
            record_hash=record_hash, kind=kind, **media,
        ))
        con.execute(load_sql("delete_annotations"), {"source_id": source_id})
        if new_annotations:
            con.executemany(load_sql("insert_annotation"), new_annotations)
        con.execute(load_sql("upsert_split"), {"source_id": source_id, "dataset": dataset, "split": split})
        con.execute(load_sql("clear_failure"), {"path": str(media_path), "stage": IMPORT_STAGE})
        con.commit()
    except BaseException:
        con.rollback()
        raise
    return True


def import_corpus(
    con: duckdb.DuckDBPyConnection,
    corpus_dir: str | os.PathLike,
    *,
    dataset: str = "synthetic",
    probe: bool = True,
    probe_workers: int = 4,
    allow_outside_root: bool = False,
    only: Collection[str] | None = None,
) -> ImportSummary:
    """Import a generated corpus (layout in the module docstring) into the manifest.

    Each clip is hashed and, with probe=True, probed with ffprobe (else its duration, fps
    and size come from the record). Idempotent: a clip whose file, path, record and split
    are unchanged is skipped; a changed one replaces its rows. A clip that cannot be read
    or probed, or whose record is malformed, is recorded in `failures` (stage 'import')
    and skipped. source_id is the record's clip_id.
    """
    corpus_dir = Path(corpus_dir).resolve()
    annotations_path = corpus_dir / ANNOTATIONS_FILE
    if not annotations_path.is_file():
        raise FileNotFoundError(f"{annotations_path} not found: is {corpus_dir} a generated corpus?")
    if only is None:
        con.execute(load_sql("clear_line_failures"), {"stage": IMPORT_STAGE, "prefix": f"{annotations_path}:"})
    how = ImportOrigin("corpus", dataset, str(corpus_dir), json.dumps({"probe": probe,
                                                                        "allow_outside_root": allow_outside_root}))
    return import_records(con, corpus_dir, list(_read_records(annotations_path)), dataset=dataset,
                          probe=probe, probe_workers=probe_workers, origin=str(annotations_path),
                          allow_outside_root=allow_outside_root, how=how, only=only)


def import_records(
    con: duckdb.DuckDBPyConnection,
    base_dir: Path,
    items: list[_Record],
    *,
    dataset: str,
    probe: bool = True,
    probe_workers: int = 4,
    origin: str = "records",
    require_caption: bool = False,
    allow_outside_root: bool = False,
    how: ImportOrigin | None = None,
    only: Collection[str] | None = None,
) -> ImportSummary:
    """Import corpus-style records (clip_id, path relative to base_dir, split, caption, label,
    events, qa) as import_corpus does; with require_caption a missing or empty caption is a
    recorded failure. origin names the records' file in duplicate-id errors.

    Row by row (``preprocessing.rows``): a row's strings are made valid UTF-8 (noted in
    ``import_notes``), its file must resolve inside ``base_dir`` (symlinks followed) unless
    ``allow_outside_root``, and any error of one row is recorded in ``failures`` under its
    file's path (or its annotation line) while the other rows go on. ``how`` is recorded as
    ``origin``'s importer (for ``--retry``); ``only``: import just the rows whose ``where`` it holds.
    """
    base_dir = Path(base_dir).resolve()
    if how is not None:
        con.execute(load_sql("upsert_import_origin"), {"origin": origin, **asdict(how)})
    if only is not None:
        items = [item for item in items if item.where in only]
    n_in = n_imported = n_skipped = 0
    failed: list[str] = []
    seen: set[str] = set()
    rows: list[tuple[str, Mapping[str, Any] | None, Path | Exception | None, int]] = []  # (where, record, path, fixed)
    for item in items:
        record, path, fixed = None, None, 0
        if item.error is None and item.data is not None:
            record, fixed = clean_row(item.data)
            if "path" in record:
                try:
                    path = media_path(base_dir, record["path"], allow_outside_root=allow_outside_root)
                except _RECORD_ERRORS as err:
                    path = err
        rows.append((valid_text(item.where), record, path, fixed))
    # ffprobe dominates import time (~0.1 s a clip): probe the clips that need importing in a
    # thread pool ahead of the sequential inserts (each probe is a subprocess).
    probes: dict[int, Future[VideoInfo]] = {}
    pool = ThreadPoolExecutor(max_workers=probe_workers) if probe else None
    if pool is not None:
        for index, (_, record, path, _) in enumerate(rows):
            try:
                needed = isinstance(path, Path) and record is not None and _needs_import(con, path, record, dataset)
            except Exception:  # the row fails below, with its own error
                needed = False
            if needed:
                probes[index] = pool.submit(probe_video, path)
    for index, ((line, record, path, fixed), item) in enumerate(zip(rows, items)):
        n_in += 1
        where = line
        try:
            if item.error is not None:
                raise ValueError(item.error)
            assert record is not None
            if isinstance(path, Path):  # failures of a clip are recorded under its file's path
                where = str(path)
            elif isinstance(path, Exception):
                raise path
            source_id = str(record["clip_id"])
            if source_id in seen:
                raise ValueError(f"clip_id {source_id!r} appears twice in {origin}")
            seen.add(source_id)
            if require_caption:
                check_caption(record)
            if path is None:
                raise KeyError("path")
            if _import_one(con, path, record, dataset=dataset, probe=probe, probed=probes.get(index)):
                n_imported += 1
            else:
                n_skipped += 1
            if fixed:
                con.execute(load_sql("upsert_import_note"), {"path": where, "note": (
                    f"{fixed} string(s) held invalid UTF-8 (lone surrogates): replaced with U+FFFD")})
        except Exception as err:  # one row's error, whatever it is, costs only that row
            message = f"record has no field {err}" if isinstance(err, KeyError) else str(err)
            if not isinstance(err, _RECORD_ERRORS):
                message = f"{type(err).__name__}: {message}"
            if where != line:  # keyed by the file: say which annotation line it came from
                message += f" [{line}]"
            record_failure(con, where, IMPORT_STAGE, message)
            failed.append(where)
    if pool is not None:
        pool.shutdown(wait=True)
    return ImportSummary(n_in=n_in, n_imported=n_imported, n_skipped=n_skipped,
                         n_failed=len(failed), failed=tuple(failed))


def split_rows(con: duckdb.DuckDBPyConnection, split: str, dataset: str = "synthetic") -> list[dict[str, Any]]:
    """Sources of one split, ordered by source_id: dicts with source_id, path (absolute),
    content_hash (sha256 of the file), kind, duration, caption and label (None where the
    clip has none)."""
    result = con.execute(load_sql("split_rows"), {"split": split, "dataset": dataset})
    columns = [c[0] for c in result.description]
    return [dict(zip(columns, row)) for row in result.fetchall()]


def record_token_cache(
    con: duckdb.DuckDBPyConnection,
    *,
    cache_key: str,
    encoder_id: str,
    config_json: str,
    path: str | os.PathLike,
    source_ids: Sequence[str],
    num_tokens: int | None = None,
) -> None:
    """Record a written token cache and the sources in it (num_tokens: tokens per sample).

    Recording a key again replaces its path, config and members (no duplicate rows). A key
    recorded before for another encoder is an error: the key must cover the encoder.
    """
    json.loads(config_json)  # must be JSON; raises ValueError otherwise
    if len(set(source_ids)) != len(source_ids):
        raise ValueError(f"source_ids of cache {cache_key} are not distinct")
    existing = con.execute(load_sql("select_token_cache"), {"cache_key": cache_key}).fetchall()
    if existing and existing[0][0] != encoder_id:
        raise ValueError(
            f"cache key {cache_key} is already recorded for encoder {existing[0][0]!r}, not "
            f"{encoder_id!r}: the key does not cover the encoder"
        )
    con.begin()
    try:
        con.execute(load_sql("upsert_token_cache"), dict(
            cache_key=cache_key, encoder_id=encoder_id, config_json=config_json,
            path=str(path), n_samples=len(source_ids), num_tokens=num_tokens,
        ))
        con.execute(load_sql("delete_cache_members"), {"cache_key": cache_key})
        if source_ids:
            con.executemany(load_sql("insert_cache_member"),
                            [{"cache_key": cache_key, "source_id": s} for s in source_ids])
        con.commit()
    except BaseException:
        con.rollback()
        raise


def record_failure(con: duckdb.DuckDBPyConnection, path: str | os.PathLike, stage: str, error: object) -> None:
    """Record that `path` failed at `stage` (keeps the latest error per path and stage)."""
    con.execute(load_sql("upsert_failure"), {"path": valid_text(str(path)), "stage": stage,
                                             "error": valid_text(str(error))})


def record_shards(con: duckdb.DuckDBPyConnection, cache_key: str, shards: Sequence[Mapping[str, Any]], *,
                  directory: str | os.PathLike, fmt: str) -> None:
    """Record the shard files of a sharded cache (index.json's "shards" list), replacing earlier rows."""
    con.begin()
    try:
        con.execute(load_sql("delete_cache_shards"), {"cache_key": cache_key})
        if shards:
            con.executemany(load_sql("insert_cache_shard"), [
                {"cache_key": cache_key, "shard_idx": i, "path": str(Path(directory) / s["name"]),
                 "format": fmt, "n_samples": int(s["n_samples"]), "bytes": int(s["bytes"])}
                for i, s in enumerate(shards)])
        con.commit()
    except BaseException:
        con.rollback()
        raise


def list_import_notes(con: duckdb.DuckDBPyConnection, prefix: str | None = None) -> list[dict[str, Any]]:
    """What the importer changed in rows it kept (invalid text replaced), of paths under ``prefix``."""
    result = con.execute(load_sql("select_import_notes"), {"prefix": prefix})
    columns = [c[0] for c in result.description]
    return [dict(zip(columns, row)) for row in result.fetchall()]


def failure_reason(error: str) -> str:
    """The kind of a recorded error, for grouping: its first clause without the annotation line,
    paths or numbers ("outside the dataset folder", "clip too short", ...); a tool's failure keeps
    the tool's last words ("ffprobe failed: Invalid data found when processing input")."""
    text = re.sub(r"\s*\[[^\]]*:\d+\]$", "", str(error))  # the "[annotations.jsonl:12]" suffix
    text = re.sub(r"^cannot decode .+?: ", "", text)  # DecodeError's "cannot decode PATH: "
    parts = [p for p in re.split(r":\s", text) if p and not p.startswith("/")]
    if not parts:
        return "unknown"
    head = parts[0].split(" (")[0] if parts[0].count("(") > parts[0].count(")") else parts[0]  # "x (y: z)"
    reason = head + (f": {parts[-1]}" if head.endswith("failed") and len(parts) > 1 else "")
    reason = re.sub(r"'[^']*'|\"[^\"]*\"|/\S+", "…", reason)  # quoted values and paths
    return re.sub(r"\d+", "N", reason).strip() or "unknown"


def list_failures(con: duckdb.DuckDBPyConnection, stage: str | None = None) -> list[dict[str, Any]]:
    """Recorded failures (all stages, or one), ordered by stage then path."""
    result = con.execute(load_sql("select_failures"), {"stage": stage})
    columns = [c[0] for c in result.description]
    return [dict(zip(columns, row)) for row in result.fetchall()]
