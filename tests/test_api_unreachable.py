"""Jobs run with the Prefect API unreachable (PREFECT_API_URL leaking into Slurm/Ray workers).

A Prefect worker starts each flow run with PREFECT_API_URL and PREFECT__FLOW_RUN_ID set; submitit
and Ray pass that environment on to training jobs and Ray workers, which on a cluster often
cannot reach the API (another network, a login-node-only server). Neither may need it.

Each case runs in a subprocess whose environment points PREFECT_API_URL at a local port with
nothing listening. A ``sitecustomize`` on PYTHONPATH installs an audit hook in every Python
process started from it (the driver, submitit's job, Ray's workers) that records each attempt to
connect to that port, with its stack, so a test failure says which code tried to reach the API.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

SITECUSTOMIZE = '''
import atexit, json, os, sys, traceback

_port = int(os.environ["VLJEPA_TEST_DEAD_PORT"])
_log = os.environ["VLJEPA_TEST_PROBE_LOG"]


def _write(record):
    with open(_log, "a") as f:
        f.write(record + "\\n")


def _hook(event, args):
    if event == "socket.connect" and isinstance(args[1], tuple) and len(args[1]) >= 2 and args[1][1] == _port:
        _write(json.dumps({"kind": "connect", "pid": os.getpid(), "argv": sys.argv[:3],
                           "stack": "".join(traceback.format_stack(limit=25)[:-1])}))


sys.addaudithook(_hook)
# On exit: was prefect imported in this process? (importing it is not an API call; this is context.)
atexit.register(lambda: _write(json.dumps({"kind": "exit", "pid": os.getpid(), "argv": sys.argv[:3],
                                           "prefect_imported": "prefect" in sys.modules})))
'''

TRAIN_SCRIPT = '''
import json, sys
from pathlib import Path
from flows.launch import launch
from flows.job import TrainDataSpec
from flows.train_tracker import TrackingSpec
from vljepa.config import get_preset, replace

tmp = Path(sys.argv[1])
cfg = replace(get_preset("tiny"), **{"train.max_steps": 3, "train.checkpoint_every": 2, "train.num_threads": 1})
spec = TrainDataSpec(db_path=str(tmp / "manifest.duckdb"), train_cache=str(tmp / "tokens.parquet"))
tracking = TrackingSpec(tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}", artifact_root=str(tmp / "artifacts"))
launched = launch(cfg, spec, tmp / "run", launcher="local", folder=tmp / "submitit", progress=False,
                  tracking=tracking)
summary = launched.wait(emit=lambda line: None, poll_s=0.5)
print(json.dumps({"steps": summary.steps, "job_id": launched.job_id, "mlflow_run_id": summary.mlflow_run_id}))
'''

RAY_SCRIPT = '''
import json, sys
from pathlib import Path
import ray
from preprocessing.encode import ClipRef
from preprocessing.pipeline import CacheConfig
from preprocessing.ray_pipeline import RayConfig, ensure_ray, run_ray
from preprocessing.sampling import SamplingConfig
from vljepa.config import get_preset
from vljepa.encoders import build_x_encoder
from vljepa.files import file_sha256

tmp = Path(sys.argv[1])
cfg = get_preset("tiny").x_encoder
clips = [ClipRef(p.stem, str(p), file_sha256(p)) for p in sorted((tmp / "videos").glob("*.mp4"))]
ensure_ray(RayConfig(num_cpus=2))
result = run_ray(build_x_encoder(cfg), cfg, clips, SamplingConfig(num_frames=cfg.num_frames),
                 CacheConfig(root=str(tmp / "cache"), shard_size=4),
                 RayConfig(decode_concurrency=2, encode_actors=1, batch_size=4))
ray.shutdown()
print(json.dumps({"n_in": result.n_in, "n_cached": result.n_cached_sources, "n_samples": result.n_samples,
                  "cache_dir": str(result.cache_dir)}))
'''


def dead_port() -> int:
    """A local port with nothing listening (bound then released; nothing else binds it in between,
    barring a race with another process on this machine)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0, f"port {port} answers"
    return port


def run_unreachable(script: str, tmp: Path, timeout: float) -> tuple[dict, list[dict]]:
    """Run ``script tmp`` with an unreachable Prefect API; (its JSON output, probe records)."""
    site = tmp / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    port, log = dead_port(), tmp / "probe.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "RAY_ADDRESS"))}
    env.update(PREFECT_API_URL=f"http://127.0.0.1:{port}/api", PREFECT__FLOW_RUN_ID=str(uuid.uuid4()),
               PYTHONPATH=os.pathsep.join([str(site), str(ROOT)]), VLJEPA_TEST_DEAD_PORT=str(port),
               VLJEPA_TEST_PROBE_LOG=str(log), RAY_USAGE_STATS_ENABLED="0",
               MLFLOW_TRACKING_URI=f"sqlite:///{tmp / 'mlflow.db'}")
    done = subprocess.run([sys.executable, "-c", script, str(tmp)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)
    records = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    assert done.returncode == 0, f"job failed with the Prefect API unreachable:\n{done.stderr[-4000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1]), records


def assert_no_api_calls(records: list[dict]) -> None:
    connects = [r for r in records if r["kind"] == "connect"]
    assert not connects, "a process tried to reach the Prefect API:\n" + "\n".join(
        f"pid {r['pid']} {r['argv']}:\n{r['stack']}" for r in connects[:3])


def write_tiny_training_data(tmp: Path, n: int = 16) -> None:
    """A manifest of ``n`` train clips (stand-in files, not probed) and a random token cache."""
    from preprocessing.cache import write_token_cache
    from preprocessing.manifest import import_corpus, open_manifest

    corpus = tmp / "corpus"
    (corpus / "videos").mkdir(parents=True)
    colours, shapes = ["red", "green", "blue", "white"], ["circle", "square", "star", "cube"]
    records = []
    for i in range(n):
        colour, shape = colours[i % 4], shapes[(i // 4) % 4]
        (corpus / "videos" / f"clip_{i:06d}.mp4").write_bytes(f"stand-in {i}".encode())
        records.append({"clip_id": f"clip_{i:06d}", "path": f"videos/clip_{i:06d}.mp4", "split": "train",
                        "duration": 1.0, "fps": 10, "width": 64, "height": 48,
                        "caption": f"a {colour} {shape} moves left", "label": f"{colour} {shape}"})
    (corpus / "annotations.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    (corpus / "corpus.json").write_text(json.dumps({"labels": [f"{c} {s}" for c in colours for s in shapes]}))
    con = open_manifest(tmp / "manifest.duckdb")
    assert import_corpus(con, corpus, probe=False).n_imported == n
    con.close()
    rng = np.random.default_rng(0)
    write_token_cache(tmp / "tokens.parquet", sample_ids=[r["clip_id"] for r in records],
                      tokens=rng.standard_normal((n, 8, 32)).astype(np.float16), timestamps=np.zeros((n, 2)),
                      encoder_id="tiny", metadata={})


def test_submitit_training_job_completes_with_the_prefect_api_unreachable(tmp_path):
    write_tiny_training_data(tmp_path)
    out, records = run_unreachable(TRAIN_SCRIPT, tmp_path, timeout=240)
    assert out["steps"] == 3 and out["job_id"] != "inline"
    assert (tmp_path / "run" / "model.safetensors").is_file()
    assert out["mlflow_run_id"]  # tracking (to SQLite) worked too
    # the audit hook ran in the submitit job's process, not only in the launching one
    exits = [r for r in records if r["kind"] == "exit"]
    assert any("submitit" in " ".join(r["argv"]) for r in exits), exits
    assert_no_api_calls(records)


@pytest.mark.slow  # ~30 s (a Ray of its own); the submitit case above is the default tier's
def test_ray_preprocessing_completes_with_the_prefect_api_unreachable(tmp_path):
    pytest.importorskip("ray")
    from tests.media import make_h264

    (tmp_path / "videos").mkdir()
    for i in range(3):
        make_h264(tmp_path / "videos" / f"c{i}.mp4", 1.0 + 0.3 * i)
    out, records = run_unreachable(RAY_SCRIPT, tmp_path, timeout=240)
    assert out["n_in"] == 3 == out["n_cached"] and out["n_samples"] >= 3
    assert (Path(out["cache_dir"]) / "index.json").is_file()
    exits = [r for r in records if r["kind"] == "exit"]
    assert len({r["pid"] for r in exits}) > 1, "the audit hook did not reach Ray's worker processes"
    assert_no_api_calls(records)


CLIENT_SCRIPT = '''
import asyncio, json
from prefect.client.orchestration import get_client


async def main():
    async with get_client() as client:
        try:
            await client.hello()
        except Exception as exc:
            return type(exc).__name__


print(json.dumps({"error": asyncio.run(main())}))
'''


def test_the_probe_catches_a_process_that_calls_the_api(tmp_path):
    """Control: a Prefect client call in the subprocess is recorded, with a stack (for an async
    client, the stack of the connecting task: asyncio/anyio frames, not the caller's)."""
    out, records = run_unreachable(CLIENT_SCRIPT, tmp_path, timeout=120)
    assert out["error"]  # the API is unreachable
    with pytest.raises(AssertionError, match="tried to reach the Prefect API"):
        assert_no_api_calls(records)
    assert any("create_connection" in r["stack"] for r in records if r["kind"] == "connect")
