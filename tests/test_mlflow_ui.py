"""The MLflow UI (started by infra/up.sh) shows an evaluated run and its metrics in headless Chromium.

Keeps a screenshot of the run page as a test artifact: tests/artifacts/mlflow_ui_run.png
(override the folder with $VLJEPA_TEST_ARTIFACTS).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.services import local_services

pytestmark = pytest.mark.services
ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get("VLJEPA_TEST_ARTIFACTS", ROOT / "tests" / "artifacts"))
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars"]
METRICS = {"eval/retrieval/t2v_r1": 0.625, "eval/classification/top1": 0.4, "eval/captioning/cider": 1.25,
           "eval/world_prediction/accuracy": 0.5, "eval_chance/world_prediction/accuracy": 0.25}


@pytest.fixture(scope="module")
def mlflow_service(tmp_path_factory):
    if shutil.which("chromium") is None:
        pytest.skip("Debian chromium is not installed")
    with local_services(tmp_path_factory.mktemp("ui-services")) as env:
        yield f"http://127.0.0.1:{env['VLJEPA_MLFLOW_PORT']}", env


def _chromium(url: str, *extra: str) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        return subprocess.run(["chromium", *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--window-size=1400,1000",
                               "--virtual-time-budget=20000", *extra, url],
                              capture_output=True, text=True, timeout=120)


def test_evaluate_deployment_is_created(mlflow_service):
    _, env = mlflow_service
    python = ROOT / ".venv" / "bin" / "python"
    code = "from flows.evaluate import deploy_evaluate; print(deploy_evaluate(%r))" % env["VLJEPA_WORK_POOL"]
    subprocess.run([str(python), "-c", code], cwd=ROOT, env=env, check=True, timeout=180)
    inspect = subprocess.run([str(ROOT / ".venv" / "bin" / "prefect"), "deployment", "inspect", "evaluate/full"],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert inspect.returncode == 0 and "'name': 'full'" in inspect.stdout, inspect.stdout[-2000:] + inspect.stderr[-2000:]


def test_mlflow_ui_shows_the_run_and_its_metrics(mlflow_service, tmp_path):
    import mlflow

    mlflow_service, _ = mlflow_service

    mlflow.set_tracking_uri(mlflow_service)
    try:
        experiment_id = mlflow.create_experiment("vljepa-ui-check")
        with mlflow.start_run(experiment_id=experiment_id, run_name="evaluate-ui-check") as run:
            mlflow.log_metrics(METRICS)
            mlflow.log_param("preset", "tiny")
    finally:
        mlflow.set_tracking_uri(None)
    url = f"{mlflow_service}/#/experiments/{experiment_id}/runs/{run.info.run_id}"

    dom = _chromium(url, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "evaluate-ui-check" in dom.stdout  # the run's name on its page
    for key in ("eval/retrieval/t2v_r1", "eval/captioning/cider"):
        assert key in dom.stdout, f"metric {key} not shown on {url}"

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "mlflow_ui_run.png"
    result = _chromium(url, f"--screenshot={shot}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert shot.read_bytes()[:4] == b"\x89PNG" and shot.stat().st_size > 10_000
