"""SIGKILL the main job inside each of its stages, re-run it, and get an uninterrupted run's metrics.

One state directory is killed again and again: run k is SIGKILLed (its whole process group) as soon as
its k-th stage says it is done, so the kill lands as stage k + 1 begins (the run goes on while the test
reads the line; no clock decides where): the manifest import, still images, token caching, both training phases, evaluation, MLflow tracking (whose
first call creates the SQLite store; tests/test_tracking_store.py kills inside that creation itself)
and registration. Each re-run picks up from what the kills left, and the last one must finish with the
metrics of a run never interrupted. The corpus generation (the first stage, before any stage line is
printed) is killed first, once its first clip is on disk and before its annotations are written.
Slow (~2 min): `bash infra/test.sh -m slow`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def _argv(state: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "flows.cli", "run", "--preset", "tiny", "--launcher", "inline",
            "--state-dir", str(state), "--tracking-uri", f"sqlite:///{state}/mlflow/mlflow.db", *extra]


def _finish(state: Path) -> dict:
    done = subprocess.run(_argv(state, "--json"), cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def _kill_after(state: Path, stage: str) -> bool:
    """Run until ``stage`` says it is done (or reused), then SIGKILL the process group: as the next stage
    begins. False if the run ended first."""
    proc = subprocess.Popen(_argv(state), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            start_new_session=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith(f"[{stage}] "):
            os.killpg(proc.pid, signal.SIGKILL)
            break
    proc.wait(timeout=60)
    return proc.returncode == -signal.SIGKILL


def _kill_inside_corpus(state: Path) -> bool:
    """SIGKILL the run once the generator has written a clip but not yet its annotations (True if so)."""
    proc = subprocess.Popen(_argv(state), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    # The run prints nothing inside this stage: poll the file system for its first clip (the sleep is the
    # poll's interval; the file, not a clock, decides when the kill comes).
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if any((state / "data").glob("synthetic-*/videos/*.mp4")):
            os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait(timeout=60)
    corpus = next((state / "data").glob("synthetic-*"), None)
    return (proc.returncode == -signal.SIGKILL and corpus is not None
            and not (corpus / "annotations.jsonl").exists())


def _metrics(result: dict) -> dict:
    return {**result["metrics"], **{f"suite/{k}": v for k, v in result["suite_metrics"].items()}}


def test_a_kill_inside_any_stage_then_a_rerun_gives_the_uninterrupted_metrics(tmp_path):
    reference = _finish(tmp_path / "reference")
    state = tmp_path / "killed"
    stages = list(reference["stage_seconds"])  # in the order they ran
    killed_inside = [stages[0]] if _kill_inside_corpus(state) else []
    killed_inside += [stages[k + 1] for k in range(len(stages) - 1) if _kill_after(state, stages[k])]
    resumed = _finish(state)
    print(f"killed as each began: {killed_inside}")
    assert killed_inside == stages, killed_inside  # every stage, the corpus generation first
    assert _metrics(resumed) == _metrics(reference)
    assert resumed["train_steps"] == reference["train_steps"]
