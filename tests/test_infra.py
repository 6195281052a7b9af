"""infra/up.sh and infra/down.sh: local services on 127.0.0.1, started and stopped by PID.

Each test uses its own state dir and free ports, so it neither sees nor touches services a
developer has running from the repo's .vljepa/.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.services
ROOT = Path(__file__).resolve().parents[1]
SERVICES = {"prefect-server", "prefect-worker", "mlflow"}

if not (ROOT / ".venv" / "bin" / "prefect").exists():  # the scripts run the venv's CLIs
    pytest.skip("no .venv with prefect: run infra/setup.sh first", allow_module_level=True)


def _free_ports(count: int) -> list[int]:
    """Distinct ports that nothing listens on right now (all sockets held open together)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _env(state: Path, prefect_port: int, mlflow_port: int, **extra: str) -> dict[str, str]:
    # Drop what a developer's `source infra/env.sh` exported (PREFECT_HOME, PREFECT_API_URL,
    # ...): env.sh keeps already-set values, which would point at the default services.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PREFECT_", "MLFLOW_", "VLJEPA_", "RAY_"))}
    env.update(VLJEPA_STATE_DIR=str(state), VLJEPA_PREFECT_PORT=str(prefect_port),
               VLJEPA_MLFLOW_PORT=str(mlflow_port), **extra)
    return env


def _run(script: str, env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(ROOT / "infra" / script), *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def _output(result: subprocess.CompletedProcess) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"


def _pids(state: Path) -> dict[str, int]:
    return {f.stem: int(f.read_text().split()[0]) for f in (state / "run").glob("*.pid")}


def _proc_stat(pid: int) -> list[str] | None:
    """Fields 3.. of /proc/PID/stat (state, ppid, pgrp, session, ...), or None if no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return text[text.rindex(")") + 2:].split()


def _alive(pid: int) -> bool:
    fields = _proc_stat(pid)
    return fields is not None and fields[0] != "Z"  # a zombie has exited; only init has to reap it


def _session_members(session: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _proc_stat(int(entry.name))
            if fields and fields[0] != "Z" and fields[3] == str(session):
                members.append(int(entry.name))
    return members


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _listen_addresses(port: int) -> set[str]:
    """Local addresses (hex, as in /proc/net/tcp*) of the sockets listening on PORT."""
    addresses = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, _, state = line.split()[1:4]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                addresses.add(address)
    return addresses


def _http(url: str, body: dict | None = None) -> tuple[int, str]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=10) as response:
        return response.status, response.read().decode()


@pytest.mark.slow  # ~30 s: the services twice; every session that uses them runs up.sh and down.sh once
@pytest.mark.timeout(600)
def test_up_twice_then_down(tmp_path):
    state = tmp_path / "state"
    prefect_port, mlflow_port = _free_ports(2)
    env = _env(state, prefect_port, mlflow_port)
    api = f"http://127.0.0.1:{prefect_port}/api"
    try:
        up = _run("up.sh", env)
        assert up.returncode == 0, _output(up)
        assert f"http://127.0.0.1:{prefect_port}" in up.stdout and f"http://127.0.0.1:{mlflow_port}" in up.stdout

        assert _http(f"{api}/health") == (200, "true")
        assert _http(f"http://127.0.0.1:{mlflow_port}/health") == (200, "OK")
        # Both servers listen on loopback only (127.0.0.1 is 0100007F in /proc/net/tcp).
        assert _listen_addresses(prefect_port) == {"0100007F"}
        assert _listen_addresses(mlflow_port) == {"0100007F"}
        # Their databases live in the state dir.
        assert (state / "prefect" / "prefect.db").is_file()
        assert (state / "mlflow" / "mlflow.db").is_file()

        _, pool = _http(f"{api}/work_pools/local-pool")
        assert json.loads(pool)["type"] == "process"
        _, workers = _http(f"{api}/work_pools/local-pool/workers/filter", {})
        assert [(w["name"], w["status"]) for w in json.loads(workers)] == [("vljepa-local-worker", "ONLINE")]

        pids = _pids(state)
        assert set(pids) == SERVICES
        assert all(_alive(pid) for pid in pids.values()), pids
        # Each service leads its own session, so down.sh can find all of its processes.
        assert all(_proc_stat(pid)[3] == str(pid) for pid in pids.values())

        again = _run("up.sh", env, timeout=120)
        assert again.returncode == 0, _output(again)
        assert again.stdout.count("already running") == 3, again.stdout
        assert _pids(state) == pids

        down = _run("down.sh", env, timeout=120)
        assert down.returncode == 0, _output(down)
        assert not any(_alive(pid) for pid in pids.values())
        assert not any(_session_members(pid) for pid in pids.values())
        assert not _port_open(prefect_port) and not _port_open(mlflow_port)
        assert _pids(state) == {}

        quiet = _run("down.sh", env, timeout=60)
        assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")
    finally:
        _run("down.sh", env, timeout=120)


@pytest.mark.timeout(120)
def test_up_refuses_a_port_taken_by_another_process(tmp_path):
    state = tmp_path / "state"
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        taken = listener.getsockname()[1]
        (mlflow_port,) = _free_ports(1)
        env = _env(state, taken, mlflow_port)
        try:
            up = _run("up.sh", env, timeout=60)
            assert up.returncode != 0, _output(up)
            assert f"port {taken}" in up.stderr
            assert _pids(state) == {}  # the clash is found before anything starts
            assert not _port_open(mlflow_port)
        finally:
            _run("down.sh", env, timeout=60)


@pytest.mark.timeout(120)
def test_down_stops_what_its_pid_files_record_and_nothing_else(tmp_path):
    state = tmp_path / "state"
    (state / "run").mkdir(parents=True)
    env = _env(state, *_free_ports(2))
    # Two stand-ins in sessions of their own, like up.sh's services. The first is recorded
    # as up.sh records (PID, start time, port); the second PID file has a start time that
    # does not match, as after the service died and its PID went to another process.
    # (env --default-signal=INT: SIGINT may be ignored in the environment pytest runs in.)
    sleeper = ["env", "--default-signal=INT", "sleep", "300"]
    ours = subprocess.Popen(sleeper, start_new_session=True)
    foreign = subprocess.Popen(sleeper, start_new_session=True)
    try:
        start_time = _proc_stat(ours.pid)[19]
        (state / "run" / "mlflow.pid").write_text(f"{ours.pid} {start_time} 1\n")
        (state / "run" / "prefect-server.pid").write_text(f"{foreign.pid} 12345 1\n")

        down = _run("down.sh", env, timeout=60)
        assert down.returncode == 0, _output(down)
        assert ours.wait(timeout=10) == -signal.SIGINT
        assert foreign.poll() is None, "down.sh signalled a process it did not start"
        assert _pids(state) == {}
        assert down.stdout == f"mlflow: stopped (pid {ours.pid})\n"
    finally:
        for process in (ours, foreign):
            process.kill()
            process.wait()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_up_with_ray_starts_a_head_that_down_stops(tmp_path):
    state = tmp_path / "state"
    prefect_port, mlflow_port, ray_port = _free_ports(3)
    env = _env(state, prefect_port, mlflow_port, VLJEPA_RAY_PORT=str(ray_port))
    try:
        up = _run("up.sh", env, "--ray")
        assert up.returncode == 0, _output(up)
        pids = _pids(state)
        assert set(pids) == SERVICES | {"ray"}
        code = ("import ray; ray.init(address=%r); "
                "print(ray.get(ray.remote(lambda: 6 * 7).remote()), ray.cluster_resources()['CPU'])")
        # A client as a user runs it: in a shell that sourced infra/env.sh (Ray's auth mode with it).
        sourced = subprocess.run(["bash", "-c", "source infra/env.sh && echo $RAY_AUTH_MODE"], env=env, cwd=ROOT,
                                 capture_output=True, text=True, check=True).stdout.strip()
        client = subprocess.run([sys.executable, "-c", code % f"127.0.0.1:{ray_port}"],
                                env={**env, "RAY_AUTH_MODE": sourced}, capture_output=True, text=True, timeout=120)
        assert client.stdout.split()[-2:] == ["42", "2.0"], _output(client)

        down = _run("down.sh", env, timeout=120)
        assert down.returncode == 0, _output(down)
        assert "ray: stopped" in down.stdout and "SIGKILL" not in down.stdout
        assert not _session_members(pids["ray"])  # raylet, GCS and the Ray workers
        assert not _port_open(ray_port)
    finally:
        _run("down.sh", env, timeout=120)
