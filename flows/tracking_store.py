"""A local SQLite tracking store that a kill cannot leave half-made.

MLflow creates a new SQLite store in place, through some fifty schema migrations. A process killed
in between leaves tables without the final revision, and every later open fails with
``sqlite3.OperationalError: table datasets already exists``. ``use_tracking`` (every flow calls it
instead of ``mlflow.set_tracking_uri``) and ``infra/up.sh`` (before the MLflow server opens the
store) run ``ensure_sqlite_store`` first:

- a missing store is built under a temporary name and renamed into place, so a kill leaves at most
  a temporary file (removed by the next call). It is a copy of an empty store at MLflow's head revision
  that the first build migrates once per MLflow version into the user cache (``$VLJEPA_CACHE``, else
  ``~/.cache/vljepa``; ``mlflow-store-<version>-<revision>.db``): the migrations take ~3 s, a copy
  milliseconds. The copy holds no experiment: MLflow adds its ``Default`` one, with this store's artifact
  location, when it first opens it, as it does after its own migrations;
- a store whose schema is not MLflow's head revision and that holds no run is moved aside
  (``mlflow.db.broken-<time>``) and rebuilt, and the log says so;
- a store with runs at an older revision is left alone: that is an upgrade (``mlflow db upgrade``),
  and MLflow's own error says so.

    python -m flows.tracking_store sqlite:///path/to/mlflow.db     # what infra/up.sh runs
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import sqlite3
import sys
import time
from collections.abc import Iterator
from pathlib import Path

PREFIX = "sqlite:///"


def _state(path: Path) -> tuple[str | None, int]:
    """(alembic revision or None, number of runs) of an existing SQLite file."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        try:
            row = con.execute("SELECT version_num FROM alembic_version").fetchone()
            revision = row[0] if row else None
        except sqlite3.DatabaseError:
            revision = None
        try:
            runs = int(con.execute("SELECT count(*) FROM runs").fetchone()[0])
        except sqlite3.DatabaseError:
            runs = 0
        return revision, runs
    finally:
        con.close()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One process at a time checks and builds the store (ranks and flows start together)."""
    with open(path.with_name(f".{path.name}.lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _migrate(path: Path) -> None:
    """MLflow's own migrations into the SQLite file ``path`` (new or empty)."""
    import sqlalchemy
    from mlflow.store.db.utils import _initialize_tables

    engine = sqlalchemy.create_engine(f"{PREFIX}{path}")
    try:
        _initialize_tables(engine)
    finally:
        engine.dispose()


def empty_store(head: str) -> Path:
    """The user cache's empty store at revision ``head``, migrated the first time it is asked for (an atomic
    write: processes that build it at once each write their own temporary; the last rename wins)."""
    import mlflow

    from flows.env import user_cache_dir
    from vljepa.files import atomic_path, remove_stale_temps

    path = user_cache_dir() / f"mlflow-store-{mlflow.__version__}-{head}.db"
    if not (path.is_file() and _state(path) == (head, 0)):
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path.parent, path.name)  # what a killed build left
        with atomic_path(path) as tmp:
            _migrate(tmp)
    return path


def _build(path: Path, head: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    tmp.touch()  # from here on a kill leaves this temporary file and nothing under the store's name
    try:
        template = empty_store(head)
    except OSError as err:  # no writable user cache (a read-only home on a cluster node): migrate here
        print(f"[tracking] no empty store in the user cache ({err}); migrating {path.name} in place",
              file=sys.stderr, flush=True)
        _migrate(tmp)
    else:
        shutil.copyfile(template, tmp)
    os.replace(tmp, path)


def ensure_sqlite_store(tracking_uri: str) -> str | None:
    """Make ``tracking_uri``'s SQLite store whole (see the module docstring); what was done, or None."""
    if not tracking_uri.startswith(PREFIX):
        return None  # a tracking server, or another backend: not ours to build
    path = Path(tracking_uri[len(PREFIX):])
    if str(path) in ("", ":memory:"):
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    from mlflow.store.db.utils import _get_latest_schema_revision

    head = _get_latest_schema_revision()
    with _locked(path):
        for stale in path.parent.glob(f".{path.name}.*.tmp"):
            stale.unlink(missing_ok=True)  # what a killed build left
        if not path.exists():
            _build(path, head)
            return f"created tracking store {path}"
        revision, runs = _state(path)
        if revision == head or runs:
            return None
        broken = path.with_name(f"{path.name}.broken-{time.strftime('%Y%m%d-%H%M%S')}")
        os.replace(path, broken)
        _build(path, head)
        note = (f"tracking store {path} was half-made (schema {revision or 'none'}, MLflow's is {head}; no runs, "
                f"likely a kill during its creation): moved to {broken.name} and rebuilt")
        print(f"[tracking] {note}", file=sys.stderr, flush=True)
        return note


def use_tracking(tracking_uri: str) -> None:
    """``mlflow.set_tracking_uri``, after ``ensure_sqlite_store``."""
    import mlflow

    ensure_sqlite_store(tracking_uri)
    mlflow.set_tracking_uri(tracking_uri)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    print(ensure_sqlite_store(sys.argv[1]) or f"tracking store {sys.argv[1]}: whole")
