"""The local SQLite tracking store survives a kill during its creation (flows/tracking_store.py)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from flows.tracking_store import _migrate, empty_store, ensure_sqlite_store

ROOT = Path(__file__).resolve().parent.parent

# Builds the store through ensure_sqlite_store, but SIGKILLs itself once MLflow's first tables exist
# and before its migrations ran: where a kill in `vljepa run`'s first MLflow call would land.
KILL_INSIDE_BUILD = """
import os, signal, sys
from mlflow.store.db import utils
def create_then_die(engine):
    utils.InitialBase.metadata.create_all(engine)
    os.kill(os.getpid(), signal.SIGKILL)
utils._initialize_tables = create_then_die
from flows.tracking_store import _migrate, empty_store, ensure_sqlite_store
ensure_sqlite_store(sys.argv[1])
"""


def _experiments(uri: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", "import sys, mlflow; mlflow.set_tracking_uri(sys.argv[1]); "
                          "print([e.name for e in mlflow.MlflowClient().search_experiments()])", uri],
                         capture_output=True, text=True, timeout=300)
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    return out.stdout.strip().splitlines()[-1:]


def _half_migrated(uri: str, *, with_run: bool) -> Path:
    """A store whose tables run ahead of its recorded schema revision, as a kill mid-migration leaves
    it (Python's sqlite3 commits DDL as it goes): every later open of MLflow fails."""
    code = ("import sys, mlflow; mlflow.set_tracking_uri(sys.argv[1]); c = mlflow.MlflowClient(); "
            "c.search_experiments()" + ("; c.create_run('0')" if with_run else ""))
    subprocess.run([sys.executable, "-c", code, uri], check=True, capture_output=True, timeout=300)
    path = Path(uri.removeprefix("sqlite:///"))
    con = sqlite3.connect(path)
    con.execute("UPDATE alembic_version SET version_num = '3500859a5d39'")  # before the datasets tables
    con.commit()
    con.close()
    return path


def test_a_kill_inside_the_first_creation_leaves_nothing_half_made(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow/mlflow.db"
    # An empty user cache: this first build migrates the empty store there, and the kill lands inside it.
    env = {**os.environ, "VLJEPA_CACHE": str(tmp_path / "cache")}
    out = subprocess.run([sys.executable, "-c", KILL_INSIDE_BUILD, uri], cwd=ROOT, env=env, capture_output=True,
                         timeout=300)
    assert out.returncode == -signal.SIGKILL, out.stderr[-2000:]
    assert not (tmp_path / "mlflow" / "mlflow.db").exists()  # the half-built file has a temporary name
    assert list((tmp_path / "mlflow").glob(".mlflow.db.*.tmp"))
    assert not list((tmp_path / "cache").glob("mlflow-store-*.db"))  # nor is the cache's empty store there
    assert ensure_sqlite_store(uri) == f"created tracking store {tmp_path}/mlflow/mlflow.db"
    assert not list((tmp_path / "mlflow").glob(".mlflow.db.*.tmp"))
    assert _experiments(uri) == ["['Default']"]
    assert ensure_sqlite_store(uri) is None  # whole: nothing to do


def test_a_half_migrated_store_without_runs_is_rebuilt_and_the_log_says_so(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    path = _half_migrated(uri, with_run=False)
    with pytest.raises(RuntimeError, match="out-of-date database schema"):
        _experiments(uri)  # what every re-run met before
    note = ensure_sqlite_store(uri)
    assert note is not None and "half-made" in note and "rebuilt" in note
    assert "half-made" in capsys.readouterr().err
    assert _experiments(uri) == ["['Default']"]
    assert len(list(tmp_path.glob("mlflow.db.broken-*"))) == 1  # kept, not deleted
    assert path.is_file()


def test_a_store_with_runs_is_never_rebuilt(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    path = _half_migrated(uri, with_run=True)
    before = path.read_bytes()
    assert ensure_sqlite_store(uri) is None  # an upgrade is the user's call (mlflow db upgrade)
    assert path.read_bytes() == before and not list(tmp_path.glob("mlflow.db.broken-*"))


def test_other_backends_are_not_touched():
    assert ensure_sqlite_store("http://127.0.0.1:5000") is None


def _schema(path: Path) -> list[tuple]:
    """Every table, index and row of a store; each statement's lines sorted: MLflow's migrations write the
    runs table's CHECK constraints in a different order from one build to the next (a set's order)."""
    con = sqlite3.connect(path)
    try:
        tables = sorted((kind, name, sorted((sql or "").replace(",", "").splitlines()))
                        for kind, name, sql in con.execute("SELECT type, name, sql FROM sqlite_master"))
        rows = {name: sorted(con.execute(f'SELECT * FROM "{name}"')) for kind, name, _ in tables if kind == "table"}
        return [*tables, *sorted(rows.items())]
    finally:
        con.close()


def test_new_stores_are_copies_of_one_migrated_empty_store(tmp_path, monkeypatch):
    """The first store migrates the user cache's empty store; the next copies it. Each equals a store built
    by MLflow's migrations, table by table and row by row, and MLflow opens it with its Default experiment."""
    from mlflow.store.db.utils import _get_latest_schema_revision

    monkeypatch.setenv("VLJEPA_CACHE", str(tmp_path / "cache"))
    migrated = tmp_path / "migrated.db"
    _migrate(migrated)
    first, second = f"sqlite:///{tmp_path}/a/mlflow.db", f"sqlite:///{tmp_path}/b/mlflow.db"
    assert ensure_sqlite_store(first) is not None
    template = empty_store(_get_latest_schema_revision())
    assert template.parent == tmp_path / "cache" and template.is_file()
    made = template.stat().st_mtime_ns
    assert ensure_sqlite_store(second) is not None
    assert template.stat().st_mtime_ns == made  # copied, not migrated again
    for uri in (first, second):
        assert _schema(Path(uri[len("sqlite:///"):])) == _schema(migrated)
    assert _schema(template) == _schema(migrated)
    assert _experiments(second) == ["['Default']"]


def test_a_damaged_empty_store_in_the_cache_is_migrated_again(tmp_path, monkeypatch):
    from mlflow.store.db.utils import _get_latest_schema_revision

    monkeypatch.setenv("VLJEPA_CACHE", str(tmp_path / "cache"))
    template = empty_store(_get_latest_schema_revision())
    template.write_bytes(b"not a database")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    assert ensure_sqlite_store(uri) == f"created tracking store {tmp_path}/mlflow.db"
    assert _experiments(uri) == ["['Default']"]
    migrated = tmp_path / "migrated.db"
    _migrate(migrated)
    assert _schema(template) == _schema(migrated)


def test_without_a_writable_user_cache_the_store_is_migrated_in_place(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")  # the cache path is a file: nothing can be made under it
    monkeypatch.setenv("VLJEPA_CACHE", str(blocker))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    assert ensure_sqlite_store(uri) == f"created tracking store {tmp_path}/mlflow.db"
    assert "migrating mlflow.db in place" in capsys.readouterr().err
    assert not list(tmp_path.glob(".mlflow.db.*.tmp"))
    assert _experiments(uri) == ["['Default']"]
