"""How a flow's steps are run: ``stage(name, fn, io)`` wraps one step.

The plain functions of the harness (``run_pipeline``, ``run_sweep``, ``run_compare``) take a
``StageWrapper``: ``direct`` (the default, for ``vljepa run`` and the tests) calls each step as it
is; the Prefect flows pass ``flows.prefect_flows.tasks.as_task``, which makes each a task (with
retries when ``io``). So the same sequence of steps runs with and without Prefect.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

StageWrapper = Callable[[str, Callable[..., Any], bool], Callable[..., Any]]


def direct(name: str, fn: Callable[..., Any], io: bool) -> Callable[..., Any]:
    """Run the step as it is (no orchestration)."""
    return fn
