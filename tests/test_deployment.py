"""`prefect deployment run pretrain/full` against local services started by infra/up.sh.

The tiny preset keeps it to about a minute; the small preset is the main job (README).
"""

import json
import subprocess
import urllib.request
from pathlib import Path

import pytest

from tests.services import local_services

pytestmark = pytest.mark.services
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    with local_services(tmp_path_factory.mktemp("services")) as env:
        yield env


def test_deployment_run_completes_and_registers_a_model(services):
    env = services
    venv = ROOT / ".venv" / "bin"
    subprocess.run([str(venv / "python"), "-m", "flows.deploy"], cwd=ROOT, env=env, check=True, timeout=120)
    run = subprocess.run(
        [str(venv / "prefect"), "deployment", "run", "pretrain/full", "--param", "preset=tiny",
         "--param", "launcher=local", "--watch", "--watch-timeout", "600"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=700,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "Completed" in run.stdout

    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    client = MlflowClient()
    version = client.get_model_version_by_alias("vljepa", "candidate")
    logged = client.get_run(version.run_id)
    assert logged.data.params["preset"] == "tiny"
    assert "test/t2v_r1" in logged.data.metrics
    assert logged.data.tags.get("prefect.flow_run_id")
    # The Prefect API knows the flow run, and it completed.
    request = urllib.request.Request(
        f"{env['PREFECT_API_URL']}/flow_runs/{logged.data.tags['prefect.flow_run_id']}")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    flow_run = json.loads(opener.open(request, timeout=10).read())
    assert flow_run["state"]["type"] == "COMPLETED"

    report = subprocess.run([str(venv / "python"), "-m", "flows.report"], cwd=ROOT, env=env,
                            capture_output=True, text=True, check=True, timeout=120)
    assert "test/t2v_r1" in report.stdout and "MLflow UI" in report.stdout


def test_sft_deployment_continues_from_the_stage1_model(services):
    """sft/full through the worker and the submitit launcher, from the checkpoint pretrain/full left."""
    env = services
    venv = ROOT / ".venv" / "bin"
    state = Path(env["VLJEPA_STATE_DIR"])
    checkpoints = sorted(p for p in (state / "checkpoints").glob("pretrain-tiny-*") if (p / "model.safetensors").is_file())
    assert checkpoints, "run after test_deployment_run_completes_and_registers_a_model"
    run = subprocess.run(
        [str(venv / "prefect"), "deployment", "run", "sft/full", "--param", "preset=tiny",
         "--param", f"init_from={checkpoints[-1]}", "--param", "max_steps=3", "--watch", "--watch-timeout", "600"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=700,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "Completed" in run.stdout
