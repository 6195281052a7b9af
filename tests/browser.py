"""Headless Chromium for the UI checks: the rendered DOM of a page, and screenshots kept as test artifacts.

Pages of the MLflow and Prefect UIs are single-page apps that render after fetching from their
APIs; ``--virtual-time-budget`` lets Chromium run the page's timers and requests for that many
virtual milliseconds before it dumps the DOM or takes the screenshot.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Screenshots kept after a run (override the folder with $VLJEPA_TEST_ARTIFACTS).
ARTIFACTS = Path(os.environ.get("VLJEPA_TEST_ARTIFACTS", ROOT / "tests" / "artifacts"))
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars"]


def require_chromium() -> None:
    """Skip the calling test (or fixture) where Debian's chromium is not installed."""
    if shutil.which("chromium") is None:
        pytest.skip("Debian chromium is not installed")


def chromium(url: str, *extra: str, budget_ms: int = 20_000, window: str = "1400,1000",
             timeout: float = 120) -> subprocess.CompletedProcess:
    """Run headless Chromium on ``url`` with a fresh profile; ``extra`` is e.g. ``--dump-dom``."""
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        return subprocess.run(["chromium", *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={window}",
                               f"--virtual-time-budget={budget_ms}", *extra, url],
                              capture_output=True, text=True, timeout=timeout)


def dump_dom(url: str, *, budget_ms: int = 20_000) -> str:
    """The page's DOM after ``budget_ms`` of virtual time (the SPA has fetched and rendered)."""
    result = chromium(url, "--dump-dom", budget_ms=budget_ms)
    assert result.returncode == 0, f"chromium --dump-dom {url} failed:\n{result.stderr[-2000:]}"
    return result.stdout


def dump_dom_until(url: str, ready, *, budget_ms: int = 20_000, attempts: int = 2) -> str:
    """``dump_dom``, tried again with twice the budget while ``ready(dom)`` is false; the last DOM."""
    for attempt in range(attempts):
        dom = dump_dom(url, budget_ms=budget_ms * 2**attempt)
        if ready(dom):
            break
    return dom


def screenshot(url: str, name: str, *, budget_ms: int = 20_000, window: str = "1400,1000") -> Path:
    """Save a PNG of ``url`` as ARTIFACTS/``name``; checks it is a real, non-trivial image."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / name
    result = chromium(url, f"--screenshot={shot}", budget_ms=budget_ms, window=window)
    assert result.returncode == 0, f"chromium --screenshot {url} failed:\n{result.stderr[-2000:]}"
    assert shot.read_bytes()[:4] == b"\x89PNG" and shot.stat().st_size > 10_000, f"{shot} is empty or blank"
    return shot
