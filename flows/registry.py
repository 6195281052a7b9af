"""MLflow model registry: idempotent registration, the ``candidate`` alias, champion promotion.

Rules:
- One registered version per (run, model kind): a version carries the tags ``vljepa.run_id`` and
  ``vljepa.kind``; registering again for the same run and kind returns the existing version
  (and does not even log the model again).
- The newest registration gets the alias ``candidate``.
- ``champion`` moves to a version only when its run beats the champion's run on the configured
  metric (or there is no champion yet, or the champion's run lacks the metric).
- Versions are compared only on the same test set: a version carries ``vljepa.eval_key`` (the
  content key of the test tokens it was evaluated on: dataset, split, clips, encoder), and neither
  alias moves from a version with one key to a version with another. A tiny model that scores 1.0
  on its 4-clip test split never takes ``candidate`` or ``champion`` from a ``small`` model; it is
  registered, and the log says which aliases stayed where and why (give it a registered model of
  its own to compare such models with each other).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

CANDIDATE_ALIAS = "candidate"
CHAMPION_ALIAS = "champion"
EVAL_KEY_TAG = "vljepa.eval_key"


def _alias_version(client, name: str, alias: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def _other_test_set(holder, eval_key: str | None) -> str | None:
    """Why ``holder`` (the version an alias points at) may not be compared with a version
    evaluated on ``eval_key``; None when it may (same key, or either has none: older versions)."""
    theirs = None if holder is None else holder.tags.get(EVAL_KEY_TAG)
    if theirs is None or eval_key is None or theirs == eval_key:
        return None
    return (f"version {holder.version} was evaluated on another test set (eval key {theirs[:12]}, "
            f"this one {eval_key[:12]})")


@dataclass(frozen=True)
class Registration:
    name: str
    version: str
    run_id: str
    created: bool  # False when an existing version for this run and kind was re-used
    candidate: bool = True  # the alias ``candidate`` points at this version now
    note: str = ""  # why ``candidate`` stayed where it was


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


def register_run_model(client, *, name: str, run_id: str, kind: str, log_model: Callable[[], str],
                       eval_key: str | None = None) -> Registration:
    """Register the model of ``run_id`` once; ``log_model()`` (called inside the run) logs it and returns its URI.

    eval_key: the test set it was evaluated on (tag ``vljepa.eval_key``); ``candidate`` moves to it
    unless the current candidate was evaluated on another test set.
    """
    import mlflow

    existing = find_version(client, name, run_id, kind)
    if existing is None:
        active = mlflow.active_run()
        if active is not None and active.info.run_id == run_id:
            uri = log_model()
        else:
            with mlflow.start_run(run_id=run_id):
                uri = log_model()
        tags = {"vljepa.run_id": run_id, "vljepa.kind": kind, **({EVAL_KEY_TAG: eval_key} if eval_key else {})}
        version = mlflow.register_model(uri, name, tags=tags)
        number, created = str(version.version), True
    else:
        number, created = str(existing.version), False
    holder = _alias_version(client, name, CANDIDATE_ALIAS)
    blocked = None if holder is not None and str(holder.version) == number else _other_test_set(holder, eval_key)
    if blocked:
        return Registration(name=name, version=number, run_id=run_id, created=created, candidate=False,
                            note=f"{CANDIDATE_ALIAS} stays at version {holder.version}: {blocked}")
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
    candidate = client.get_model_version(name, version)
    value = client.get_run(candidate.run_id).data.metrics.get(metric)
    if value is None:
        raise KeyError(f"run {candidate.run_id} has no metric {metric!r}: cannot compare it with the champion")
    champion = _alias_version(client, name, CHAMPION_ALIAS)
    blocked = None if champion is None or str(champion.version) == str(version) else (
        _other_test_set(champion, candidate.tags.get(EVAL_KEY_TAG)))
    if blocked:
        return Promotion(False, str(champion.version), metric, value, None, f"not compared: {blocked}")
    if champion is None:
        client.set_registered_model_alias(name, CHAMPION_ALIAS, version)
        return Promotion(True, version, metric, value, None, "no champion yet")
    if str(champion.version) == str(version):
        return Promotion(False, version, metric, value, value, "already champion")
    best = client.get_run(champion.run_id).data.metrics.get(metric)
    better = best is None or (value > best if greater_is_better else value < best)
    if better:
        client.set_registered_model_alias(name, CHAMPION_ALIAS, version)
        return Promotion(True, version, metric, value, best, "champion lacks the metric" if best is None else
                         f"{metric} {value:.4f} beats the champion's {best:.4f}")
    how = "ties" if value == best else "is worse than"
    return Promotion(False, str(champion.version), metric, value, best,
                     f"{metric} {value:.4f} {how} the champion's {best:.4f}")


__all__ = ["CANDIDATE_ALIAS", "CHAMPION_ALIAS", "EVAL_KEY_TAG", "Registration", "Promotion", "find_version",
           "register_run_model", "promote_if_better"]
