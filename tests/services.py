"""Local services for a test module: infra/up.sh on free ports and a temporary state dir, then down.sh."""

from __future__ import annotations

import os
import socket
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[1]
PREFIXES = ("PREFECT_", "MLFLOW_", "VLJEPA_")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def local_services(state: Path, extra: dict[str, str] | None = None) -> Iterator[dict[str, str]]:
    """Start the services; yield the environment (with PREFECT_API_URL, MLFLOW_TRACKING_URI, ... as
    infra/env.sh derives them) for subprocesses that talk to them; stop them on exit. ``extra``
    goes into the services' environment (the worker's flow runs see it: SLURM_CONF, say)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(PREFIXES)}
    env.update(extra or {})
    env.update(VLJEPA_STATE_DIR=str(state), VLJEPA_PREFECT_PORT=str(free_port()), VLJEPA_MLFLOW_PORT=str(free_port()))
    if os.environ.get("VLJEPA_CACHE"):
        env["VLJEPA_CACHE"] = os.environ["VLJEPA_CACHE"]
    subprocess.run(["bash", "infra/up.sh"], cwd=ROOT, env=env, check=True, timeout=300)
    out = subprocess.run(["bash", "-c", "source infra/env.sh && env"], cwd=ROOT, env=env, check=True,
                         capture_output=True, text=True).stdout
    env.update(dict(line.split("=", 1) for line in out.splitlines() if line.startswith(PREFIXES)))
    try:
        yield env
    finally:
        subprocess.run(["bash", "infra/down.sh"], cwd=ROOT, env=env, timeout=120)


SLURM_TOOLS = ("munged", "mungekey", "mariadbd", "mariadb-install-db", "slurmdbd", "slurmctld", "slurmd", "sbatch",
               "sacct", "scontrol")


def slurm_unavailable() -> str | None:
    """Why infra/slurm-up.sh cannot start a cluster here (None: it can)."""
    import shutil

    missing = [tool for tool in SLURM_TOOLS if shutil.which(tool) is None]
    if missing:
        return f"Slurm not installed ({', '.join(missing)} missing): run infra/setup.sh"
    if os.geteuid() != 0:
        return "infra/slurm-up.sh needs root (slurmd starts jobs as their user)"
    return None


@contextmanager
def local_slurm(state: Path) -> Iterator[dict[str, str]]:
    """Start infra/slurm-up.sh's one-node cluster in ``state`` on free ports; yield the environment
    for its clients (SLURM_CONF, no other SLURM_*); stop it on exit."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "VLJEPA_"))}
    env.update(VLJEPA_STATE_DIR=str(state), VLJEPA_SLURMCTLD_PORT=str(free_port()),
               VLJEPA_SLURMD_PORT=str(free_port()), VLJEPA_SLURMDBD_PORT=str(free_port()),
               VLJEPA_MARIADB_PORT=str(free_port()))
    try:
        subprocess.run(["bash", "infra/slurm-up.sh"], cwd=ROOT, env=env, check=True, timeout=300)
        yield {"SLURM_CONF": str(state / "slurm" / "etc" / "slurm.conf")}
    finally:
        subprocess.run(["bash", "infra/slurm-down.sh"], cwd=ROOT, env=env, timeout=120)
