"""The MLflow UI (started by infra/up.sh) in headless Chromium: a run's page and the compare-runs page.

Keeps screenshots as test artifacts: tests/artifacts/mlflow_ui_run.png and mlflow_compare.png
(override the folder with $VLJEPA_TEST_ARTIFACTS).
"""

from __future__ import annotations

import json
import subprocess
import urllib.parse
from pathlib import Path

import pytest

from tests.browser import dump_dom, dump_dom_until, require_chromium, screenshot

pytestmark = pytest.mark.services
ROOT = Path(__file__).resolve().parents[1]
METRICS = {"eval/retrieval/t2v_r1": 0.625, "eval/classification/top1": 0.4, "eval/captioning/cider": 1.25,
           "eval/world_prediction/accuracy": 0.5, "eval_chance/world_prediction/accuracy": 0.25}


@pytest.fixture(scope="module")
def mlflow_service(services_env):
    require_chromium()
    return f"http://127.0.0.1:{services_env['VLJEPA_MLFLOW_PORT']}", services_env


def test_evaluate_deployment_is_created(mlflow_service):
    _, env = mlflow_service
    vljepa = ROOT / ".venv" / "bin" / "vljepa"
    subprocess.run([str(vljepa), "deploy", "--only", "evaluate", "--work-pool", env["VLJEPA_WORK_POOL"]], cwd=ROOT,
                   env=env, check=True, timeout=180)
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

    dom = dump_dom(url)
    assert "evaluate-ui-check" in dom  # the run's name on its page
    for key in ("eval/retrieval/t2v_r1", "eval/captioning/cider"):
        assert key in dom, f"metric {key} not shown on {url}"
    screenshot(url, "mlflow_ui_run.png")


def compare_runs_url(base: str, run_ids: list[str], experiment_ids: list[str]) -> str:
    """MLflow 3.17's compare-runs route (hash-routed SPA), as its own UI builds it
    (``Routes.getCompareRunPageRoute``: ``#/compare-runs?runs=[...]&experiments=[...]``)."""
    query = urllib.parse.urlencode({"runs": json.dumps(run_ids), "experiments": json.dumps(experiment_ids)})
    return f"{base}/#/compare-runs?{query}"


def test_mlflow_compare_runs_page_shows_both_runs_and_their_differing_params(mlflow_service):
    import mlflow

    base, _ = mlflow_service
    runs = {"compare-infonce": {"train.loss": "infonce", "train.lr": "0.0003", "preset": "tiny"},
            "compare-l2": {"train.loss": "l2", "train.lr": "0.0003", "preset": "tiny"}}
    run_ids = []
    mlflow.set_tracking_uri(base)
    try:
        experiment_id = mlflow.create_experiment("vljepa-ui-compare")
        for i, (name, params) in enumerate(runs.items()):
            with mlflow.start_run(experiment_id=experiment_id, run_name=name) as run:
                mlflow.log_params(params)
                mlflow.log_metrics({"test/t2v_r1": 0.5 + 0.1 * i, "train/loss": 2.0 - 0.5 * i})
            run_ids.append(run.info.run_id)
    finally:
        mlflow.set_tracking_uri(None)
    url = compare_runs_url(base, run_ids, [experiment_id])

    def rendered(dom: str) -> bool:
        return all(name in dom for name in runs) and "train.loss" in dom

    dom = dump_dom_until(url, rendered)
    assert "Comparing 2 Runs" in dom, f"{url} is not the compare page"
    for name in runs:
        assert name in dom, f"run {name} not on the compare page"
    # the param that differs, with both values, in the parameters table (cells hold just the value)
    assert "train.loss" in dom
    assert ">infonce<" in dom and ">l2<" in dom, "the differing train.loss values are not shown"
    assert "test/t2v_r1" in dom  # the metrics table
    screenshot(url, "mlflow_compare.png", window="1400,1200")
