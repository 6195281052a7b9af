"""`prefect deployment run pretrain/full` against local services started by infra/up.sh.

The tiny preset keeps it to about a minute; the small preset is the main job (README).
"""

import json
import subprocess
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.services
ROOT = Path(__file__).resolve().parents[1]


def run_deployment(env: dict[str, str], name: str, **params: str) -> subprocess.CompletedProcess:
    """`prefect deployment run NAME --param k=v ... --watch`; asserts the flow run completed."""
    args = [str(ROOT / ".venv" / "bin" / "prefect"), "deployment", "run", name]
    for key, value in params.items():
        args += ["--param", f"{key}={value}"]
    run = subprocess.run([*args, "--watch", "--watch-timeout", "600"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=700)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "Completed" in run.stdout
    return run


@pytest.fixture(scope="module")
def pretrained(services_env):
    """``vljepa deploy``, then ``prefect deployment run pretrain/full`` (tiny, the local launcher) through the
    worker, once for this module: every test here reads what that run left, whichever tier selects it."""
    subprocess.run([str(ROOT / ".venv" / "bin" / "vljepa"), "deploy"], cwd=ROOT, env=services_env, check=True,
                   timeout=120)
    run_deployment(services_env, "pretrain/full", preset="tiny", launcher="local")
    return services_env


def test_deployment_run_completes_and_registers_a_model(pretrained):
    env = pretrained
    venv = ROOT / ".venv" / "bin"

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

    report = subprocess.run([str(venv / "vljepa"), "report"], cwd=ROOT, env=env,
                            capture_output=True, text=True, check=True, timeout=120)
    assert "test/t2v_r1" in report.stdout and "MLflow UI" in report.stdout


@pytest.mark.slow
def test_sft_deployment_continues_from_the_stage1_model(pretrained):
    """sft/full through the worker and the submitit launcher, from the VL-JEPA_BASE that pretrain/full
    left in the state dir (the deployment's default ``init_from="base"``)."""
    env = pretrained
    state = Path(env["VLJEPA_STATE_DIR"])
    base = sorted(p for p in (state / "models").glob("pretrain-video-tiny-*") if (p / "model.safetensors").is_file())
    assert base, "pretrain/full left no VL-JEPA_BASE in the state dir"
    run_deployment(env, "sft/full", preset="tiny", max_steps="3")
    sft_configs = list((state / "runs").rglob("config.json"))
    assert any(json.loads(p.read_text())["train"]["init_from"] == str(base[-1]) for p in sft_configs), sft_configs


def test_prefect_ui_shows_the_completed_flow_run(pretrained):
    """The Prefect UI's flow-run page (headless Chromium) for the module's pretrain/full run:
    its name, the Completed state badge, the flow `pretrain`, its task runs; screenshot kept as
    tests/artifacts/prefect_flow_run.png. The UI uses history routing (/runs/flow-run/<id>, served
    by the Prefect server) and renders client-side after fetching from the API."""
    import re

    from mlflow.tracking import MlflowClient

    from tests.browser import dump_dom_until, require_chromium, screenshot

    require_chromium()
    env = pretrained
    # The flow run id of the module's pretrain/full run: the MLflow run of the pretrain flow carries it.
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = [r for r in client.search_runs(experiments, filter_string="tags.stage = 'pretrain'",
                                          order_by=["attributes.start_time DESC"])
            if r.data.tags.get("prefect.flow_run_id")]
    assert runs, "no MLflow run of the pretrain flow carries a Prefect flow run id"
    flow_run_id = runs[0].data.tags["prefect.flow_run_id"]

    api = env["PREFECT_API_URL"]
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def call(path: str, body: dict | None = None):
        request = urllib.request.Request(f"{api}{path}", data=None if body is None else json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"},
                                         method="GET" if body is None else "POST")
        return json.loads(opener.open(request, timeout=10).read())

    flow_run = call(f"/flow_runs/{flow_run_id}")
    flow = call(f"/flows/{flow_run['flow_id']}")
    task_runs = call("/task_runs/filter", {"flow_runs": {"id": {"any_": [flow_run_id]}}})
    assert flow["name"] == "pretrain" and flow_run["state"]["type"] == "COMPLETED"
    train_tasks = sorted(t["name"] for t in task_runs if t["name"].startswith("train-"))
    assert train_tasks, [t["name"] for t in task_runs]

    ui = env.get("PREFECT_UI_URL") or api.removesuffix("/api")
    url = f"{ui}/runs/flow-run/{flow_run_id}"

    def rendered(dom: str) -> bool:  # the heading, the state badge and the logs panel have loaded
        return (f"Flow Run: {flow_run['name']}" in dom and "state-badge" in dom
                and all(name in dom for name in train_tasks))

    dom = dump_dom_until(url, rendered)
    assert f"<title>Flow Run: {flow_run['name']}" in dom, f"{url} did not render the flow run page"
    assert set(re.findall(r"state-badge state--(\w+)", dom)) == {"completed"}, "the state badge is not Completed"
    assert re.search(r'state--completed"[^>]*>.{0,1000}?<span>Completed</span>', dom, re.S)
    # the flow's name, linked to the flow's page
    assert re.search(rf'href="/flows/flow/{flow["id"]}"[^>]*>.{{0,1000}}?>pretrain<', dom, re.S), \
        "the flow name pretrain is not linked on the page"
    assert f"{len(task_runs)} Task runs" in dom
    for name in train_tasks:  # task run names (in the logs panel; the run graph is a canvas)
        assert name in dom, f"task run {name} not on the page"
    screenshot(url, "prefect_flow_run.png")


def test_every_flow_has_its_deployments(pretrained):
    """`vljepa deploy` (run by the module's fixture) registered every deployment the README lists."""
    request = urllib.request.Request(f"{pretrained['PREFECT_API_URL']}/deployments/filter", data=b"{}",
                                     headers={"Content-Type": "application/json"}, method="POST")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deployments = json.loads(opener.open(request, timeout=10).read())
    flows = {f["id"]: f["name"] for f in json.loads(opener.open(urllib.request.Request(
        f"{pretrained['PREFECT_API_URL']}/flows/filter", data=b"{}", headers={"Content-Type": "application/json"},
        method="POST"), timeout=10).read())}
    names = {f"{flows[d['flow_id']]}/{d['name']}" for d in deployments}
    expected = {"pretrain/full", "pretrain/image-only", "sft/full", "preprocess/full", "evaluate/full",
                "selective-decoding/sweep", "selective-decoding/benchmark", "compare/vlm-vs-jepa"}
    expected |= {f"ablate/{s}" for s in ("pretraining", "y-lr", "loss", "predictor", "y-encoder")}
    assert expected <= names, sorted(expected - names)
    schema = next(d for d in deployments if d["name"] == "loss")["parameter_openapi_schema"]
    assert "loss" in schema["properties"]["sweep"]["enum"]
