"""The state directory and the environment: the one module of the harness that reads either.

Everything the pipeline keeps lives under one state directory (``--state-dir``, else
``$VLJEPA_STATE_DIR``, else ``<repo>/.vljepa``); MLflow tracking goes to ``--tracking-uri``, else
``$MLFLOW_TRACKING_URI``, else a SQLite file in the state directory. Every other module receives a
``StateLayout`` (or the paths it names) as an argument, the way open_clip's ``ClipLoss`` receives
``rank``: nothing else spells ``manifest.duckdb`` or reads ``os.environ``.

Layout of a state directory::

    manifest.duckdb          the DuckDB manifest (sources, annotations, splits, caches, mixes)
    data/                    generated corpora (content-addressed)
    cache/shards/<key>/      frozen-encoder token caches (content-addressed)
    models/<phase>-<key>/    stage-1 models of the main job (content-addressed)
    runs/                    ``vljepa train`` run directories (resumable)
    ablations/ compare/      the ablation sweeps and the controlled comparison
    submitit/                submitit job folders (logs, pickles)
    mlflow/mlflow.db         the default MLflow store, artifacts in mlflow/artifacts/
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
STATE_DIR_VAR = "VLJEPA_STATE_DIR"
TRACKING_URI_VAR = "MLFLOW_TRACKING_URI"
MANIFEST_NAME = "manifest.duckdb"


def default_state_dir() -> Path:
    """``$VLJEPA_STATE_DIR`` or ``<repo>/.vljepa``, absolute."""
    return Path(os.environ.get(STATE_DIR_VAR) or REPO_ROOT / ".vljepa").expanduser().resolve()


@dataclass(frozen=True)
class StateLayout:
    """Paths under one state directory, and where MLflow tracking goes."""

    root: Path
    tracking_uri_override: str | None = None

    @classmethod
    def resolve(cls, state_dir: str | os.PathLike | None = None, tracking_uri: str | None = None) -> "StateLayout":
        """The layout for ``state_dir`` (default ``default_state_dir()``) and ``tracking_uri``."""
        root = Path(state_dir).expanduser().resolve() if state_dir else default_state_dir()
        return cls(root=root, tracking_uri_override=tracking_uri or os.environ.get(TRACKING_URI_VAR) or None)

    def ensure(self) -> "StateLayout":
        self.root.mkdir(parents=True, exist_ok=True)
        return self

    @property
    def manifest(self) -> Path:
        return self.root / MANIFEST_NAME

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def shard_cache(self) -> Path:
        return self.root / "cache" / "shards"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def ablations(self) -> Path:
        return self.root / "ablations"

    @property
    def compare(self) -> Path:
        return self.root / "compare"

    @property
    def submitit(self) -> Path:
        return self.root / "submitit"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.root / "mlflow" / "artifacts"

    @property
    def tracking_uri(self) -> str:
        """The explicit URI, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///<state>/mlflow/mlflow.db``."""
        if self.tracking_uri_override:
            return self.tracking_uri_override
        db = self.root / "mlflow" / "mlflow.db"
        db.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{db}"

    @property
    def artifact_root(self) -> Path | None:
        """Where a local SQLite store keeps artifacts (a tracking server has its own root: None)."""
        return self.mlflow_artifacts if self.tracking_uri.startswith("sqlite") else None


def user_cache_dir() -> Path:
    """What the project keeps per user, across state directories: ``$VLJEPA_CACHE`` or ``~/.cache/vljepa``
    (converted weights, ``vljepa.weights.cache_root``; the empty MLflow store, ``flows.tracking_store``)."""
    return Path(os.environ.get("VLJEPA_CACHE") or Path.home() / ".cache" / "vljepa").expanduser()


def prefect_ui_url() -> str | None:
    """The Prefect UI that ``infra/env.sh`` exports, if any."""
    return os.environ.get("PREFECT_UI_URL") or None


def ray_address() -> str | None:
    """A Ray cluster to preprocess on (``RAY_ADDRESS``); None starts a local Ray."""
    return os.environ.get("RAY_ADDRESS") or None


def job_environment() -> dict[str, str]:
    """Scheduler facts recorded with a training run (Slurm job id and nodes, submitit executor)."""
    return {f"sys.{var.lower()}": os.environ[var] for var in ("SLURM_JOB_ID", "SLURM_JOB_NODELIST", "SUBMITIT_EXECUTOR")
            if os.environ.get(var)}
