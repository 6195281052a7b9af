"""The Prefect side of ``flows.stage.StageWrapper``: one step of a flow as a Prefect task."""

from __future__ import annotations

from typing import Any, Callable

from prefect import task
from prefect.cache_policies import NO_CACHE


def as_task(name: str, fn: Callable[..., Any], io: bool) -> Callable[..., Any]:
    """``fn`` as a task named ``name``; I/O steps (ffmpeg, files, DuckDB, MLflow) get retries.

    Steps are content-addressed themselves, so Prefect's input-hash caching is off.
    """
    return task(fn, name=name, retries=2 if io else 0, retry_delay_seconds=5, cache_policy=NO_CACHE)
