"""MLflow model registry: idempotent registration, the ``candidate`` alias, champion promotion.

Rules:
- One registered version per (run, model kind): a version carries the tags ``vljepa.run_id`` and
  ``vljepa.kind``; registering again for the same run and kind returns the existing version
  (and does not even log the model again).
- The newest registration gets the alias ``candidate``.
- ``champion`` moves to a version only when its run beats the champion's run on the configured
  metric (or there is no champion yet, or the champion's run lacks the metric).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

CANDIDATE_ALIAS = "candidate"
CHAMPION_ALIAS = "champion"


@dataclass(frozen=True)
class Registration:
    name: str
    version: str
    run_id: str
    created: bool  # False when an existing version for this run and kind was re-used


def find_version(client, name: str, run_id: str, kind: str):
    """The registered version of ``name`` made from ``run_id`` with ``kind``, or None."""
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        return None
    for version in client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'"):
        if version.tags.get("vljepa.kind") == kind:
            return version
    return None


def register_run_model(client, *, name: str, run_id: str, kind: str, log_model: Callable[[], str]) -> Registration:
    """Register the model of ``run_id`` once; ``log_model()`` (called inside the run) logs it and returns its URI."""
    import mlflow

    existing = find_version(client, name, run_id, kind)
    if existing is None:
        active = mlflow.active_run()
        if active is not None and active.info.run_id == run_id:
            uri = log_model()
        else:
            with mlflow.start_run(run_id=run_id):
                uri = log_model()
        version = mlflow.register_model(uri, name, tags={"vljepa.run_id": run_id, "vljepa.kind": kind})
        number, created = str(version.version), True
    else:
        number, created = str(existing.version), False
    client.set_registered_model_alias(name, CANDIDATE_ALIAS, number)
    return Registration(name=name, version=number, run_id=run_id, created=created)


@dataclass(frozen=True)
class Promotion:
    promoted: bool
    champion_version: str
    metric: str
    candidate_value: float | None
    champion_value: float | None
    reason: str


def promote_if_better(client, *, name: str, version: str, metric: str, greater_is_better: bool = True) -> Promotion:
    """Give ``version`` the alias ``champion`` if its run's ``metric`` beats the current champion's."""
    from mlflow.exceptions import MlflowException

    candidate = client.get_model_version(name, version)
    value = client.get_run(candidate.run_id).data.metrics.get(metric)
    if value is None:
        raise KeyError(f"run {candidate.run_id} has no metric {metric!r}: cannot compare it with the champion")
    try:
        champion = client.get_model_version_by_alias(name, CHAMPION_ALIAS)
    except MlflowException:
        champion = None
    if champion is None:
        client.set_registered_model_alias(name, CHAMPION_ALIAS, version)
        return Promotion(True, version, metric, value, None, "no champion yet")
    if str(champion.version) == str(version):
        return Promotion(False, version, metric, value, value, "already champion")
    best = client.get_run(champion.run_id).data.metrics.get(metric)
    better = best is None or (value > best if greater_is_better else value < best)
    if better:
        client.set_registered_model_alias(name, CHAMPION_ALIAS, version)
        return Promotion(True, version, metric, value, best,
                         "champion lacks the metric" if best is None else "beats the champion")
    return Promotion(False, str(champion.version), metric, value, best, "does not beat the champion")


__all__ = ["CANDIDATE_ALIAS", "CHAMPION_ALIAS", "Registration", "Promotion", "find_version",
           "register_run_model", "promote_if_better"]
