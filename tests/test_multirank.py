"""Multi-rank training as users run it: the README's ``--nproc 2`` command, word for word, in a
subprocess, then a 3-rank job, both through the submitit local launcher on the real manifest of a
state dir (no in-process shortcut: each rank is its own process and opens what it needs itself).

Every rank used to open the DuckDB manifest read-write and die on its lock; ranks now read the
streamed plan written before the launch and open the manifest read-only (validation data).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def readme_command(pattern: str) -> list[str]:
    """The README's command line that contains ``pattern`` (its trailing comment dropped)."""
    for line in (REPO / "README.md").read_text().splitlines():
        if pattern in line and line.lstrip().startswith("vljepa "):
            return shlex.split(line.split("#")[0])
    raise AssertionError(f"no README command with {pattern!r}")


@pytest.fixture(scope="module")
def state(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("multirank")
    return {**os.environ, "VLJEPA_STATE_DIR": str(root / "state"), "MLFLOW_TRACKING_URI": f"sqlite:///{root}/mlflow.db",
            "PYTHONPATH": str(REPO)}


def vljepa(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    assert args[0] == "vljepa"
    entry = "from flows.cli import main; import sys; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", entry, *args[1:]], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=900)


def report(out: subprocess.CompletedProcess) -> dict:
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    return json.loads(out.stdout[out.stdout.index("{"):])


def test_the_readmes_two_rank_command_trains_and_finishes(state):
    command = readme_command("--nproc 2")
    assert command == ["vljepa", "train", "--stage", "pretrain", "--preset", "tiny", "--launcher", "local",
                       "--nproc", "2"]
    summary = report(vljepa(command, state))
    # Seeded, 2 gloo ranks over the same global batch: golden values (10 steps: 1.5 epochs of the
    # stills + videos mix at batch 8).
    assert summary["steps"] == 10 and summary["final_loss"] == pytest.approx(1.924958348274231, rel=1e-5)
    ranks = {p.name.split("_")[1] for p in Path(state["VLJEPA_STATE_DIR"], "submitit").rglob("*_log.out")}
    assert ranks >= {"0", "1"}  # two submitit tasks, one per rank
    run_dir = Path(summary["checkpoint_dir"])
    saved = json.loads((run_dir / "train_summary.json").read_text())
    assert saved["data"]["loader"] == "stream" and set(saved["data"]["drawn"]) == {"stills", "videos"}
    logs = "".join(p.read_text() for p in Path(state["VLJEPA_STATE_DIR"], "submitit").rglob("*_0_log.err"))
    assert "Conflicting lock" not in logs


@pytest.mark.slow
def test_a_three_rank_job_on_the_same_manifest(state, tmp_path):
    # the tiny preset's global batch of 8 does not split over 3 ranks: the batch policy trains at 6
    out = vljepa(["vljepa", "train", "--stage", "pretrain", "--preset", "tiny", "--launcher", "local", "--nproc", "3",
                  "--out", str(tmp_path / "three")], state)
    summary = report(out)
    saved = json.loads((tmp_path / "three" / "train_summary.json").read_text())
    assert saved["batch_size"] == {"configured": 8, "effective": 6}
    assert summary["steps"] >= 1 and sum(saved["data"]["drawn"].values()) == summary["steps"] * 6
