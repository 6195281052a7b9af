"""MLflow tracking of a training job, from inside the job (rank 0): the ``log_step`` callback.

Per step: loss, lr, grad-norm, samples/s (batched, flushed every ``FLUSH_EVERY`` steps);
validation metrics as ``val/*``; params = the resolved config (flattened) + system info; the
config JSON, the train summary and a loss-curve plot as artifacts. Runs of one sweep share an
experiment and carry the same ``sweep`` tag, so the MLflow compare view lines them up.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from flows.env import job_environment
from flows.tracking import ensure_experiment, flatten, loss_curve_png
from vljepa.config import VLJepaConfig

FLUSH_EVERY = 20  # steps of metrics per MLflow request


@dataclass(frozen=True, kw_only=True)
class TrackingSpec:
    """Where and under which names a training job logs (plain values: it pickles for submitit)."""

    tracking_uri: str
    experiment: str = "vljepa-train"
    run_name: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    artifact_root: str | None = None  # for a SQLite store: where artifacts live


def sweep_tracking(base: TrackingSpec, sweep: str, run_name: str, **tags: str) -> TrackingSpec:
    """The spec of one run of a sweep: the sweep's experiment, shared ``sweep`` tag, own name."""
    return TrackingSpec(tracking_uri=base.tracking_uri, experiment=f"{base.experiment}/{sweep}", run_name=run_name,
                        tags={**base.tags, "sweep": sweep, **tags}, artifact_root=base.artifact_root)


def system_info(world_size: int | None = None) -> dict[str, str]:
    import torch

    info = {"sys.host": socket.gethostname(), "sys.python": platform.python_version(), "sys.torch": torch.__version__,
            "sys.cpu_count": str(os.cpu_count()), "sys.torch_threads": str(torch.get_num_threads()),
            "sys.cuda": str(torch.cuda.is_available()), "sys.platform": platform.platform()}
    if torch.cuda.is_available():
        info["sys.gpu"] = torch.cuda.get_device_name(0)
        info["sys.gpu_count"] = str(torch.cuda.device_count())
    if world_size is not None:
        info["sys.world_size"] = str(world_size)
    info.update(job_environment())
    return info


def _previous_run(client: Any, tracking_uri: str, run_id_file: Path | None) -> str | None:
    """The run id recorded in ``run_id_file`` if that run is in ``client``'s store, else None."""
    if run_id_file is None or not run_id_file.is_file():
        return None
    recorded = json.loads(run_id_file.read_text())
    if recorded.get("tracking_uri") != tracking_uri:
        return None
    try:
        return client.get_run(recorded["run_id"]).info.run_id
    except Exception:  # deleted, or another store: start a new run
        return None


class MlflowTracker:
    """One MLflow run; ``log_step(step, metrics)`` is the training loop's callback."""

    def __init__(self, client: Any, run_id: str, cfg: VLJepaConfig) -> None:
        self.client, self.run_id, self.cfg = client, run_id, cfg
        self.history: list[dict[str, float]] = []
        self._pending: list[Any] = []

    @classmethod
    def start(cls, spec: TrackingSpec, cfg: VLJepaConfig, *, extra_params: dict[str, Any] | None = None,
              world_size: int | None = None, run_id_file: Path | None = None) -> "MlflowTracker":
        """A new run; or, where ``run_id_file`` names a run of this tracking store, that run again
        (a job requeued by Slurm, or resumed by hand, goes on logging into the run it started)."""
        import mlflow
        from mlflow.tracking import MlflowClient

        from flows.tracking_store import use_tracking
        use_tracking(spec.tracking_uri)
        client = MlflowClient(spec.tracking_uri)
        previous = _previous_run(client, spec.tracking_uri, run_id_file)
        if previous is not None:
            client.update_run(previous, status="RUNNING")
            client.set_tag(previous, "resumed", "true")
            return cls(client, previous, cfg)
        root = Path(spec.artifact_root) if spec.artifact_root else None
        experiment_id = ensure_experiment(spec.experiment, root if spec.tracking_uri.startswith("sqlite") else None)
        tags = {"stage": cfg.train.stage, "phase": cfg.train.phase, "preset": cfg.preset, **spec.tags}
        run = client.create_run(experiment_id, run_name=spec.run_name, tags=tags)
        tracker = cls(client, run.info.run_id, cfg)
        if run_id_file is not None:
            run_id_file.parent.mkdir(parents=True, exist_ok=True)
            run_id_file.write_text(json.dumps({"tracking_uri": spec.tracking_uri, "run_id": run.info.run_id}))
        params = flatten("", cfg.to_dict(), {})
        params.update(system_info(world_size))
        params.update({k: str(v) for k, v in (extra_params or {}).items()})
        from mlflow.entities import Param

        items = [Param(k, v[:6000]) for k, v in params.items()]
        for start in range(0, len(items), 90):
            client.log_batch(tracker.run_id, params=items[start : start + 90])
        client.log_dict(tracker.run_id, cfg.to_dict(), "config.json")
        return tracker

    def log_step(self, step: int, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        validation = all(k.startswith("val/") for k in metrics)  # validation rows come named val/*
        if not validation:
            self.history.append(dict(metrics))
        prefix = "" if validation else "train/"
        self._pending += [Metric(f"{prefix}{k}", float(v), now, step) for k, v in metrics.items()]
        if len(self._pending) >= FLUSH_EVERY * 5:
            self.flush()

    def flush(self) -> None:
        for start in range(0, len(self._pending), 900):
            self.client.log_batch(self.run_id, metrics=self._pending[start : start + 900])
        self._pending = []

    def finish(self, summary: Any, *, status: str = "FINISHED") -> None:
        """Flush metrics; log the summary and loss curve (the whole run's, resumed steps included)."""
        self.flush()
        if summary is not None:
            history = summary.history or self.history
            record = asdict(summary) if hasattr(summary, "__dataclass_fields__") else dict(summary)
            record.pop("history", None)
            self.client.log_dict(self.run_id, record, "train_summary.json")
            if history:
                with tempfile.TemporaryDirectory() as tmp:
                    png = loss_curve_png(history, Path(tmp) / "loss_curve.png",
                                         f"VL-JEPA {self.cfg.preset}: {self.cfg.train.stage} loss")
                    self.client.log_artifact(self.run_id, str(png))
            self.client.log_text(self.run_id, json.dumps(summary.validation or [], indent=2), "validation.json")
        self.client.set_terminated(self.run_id, status=status)
