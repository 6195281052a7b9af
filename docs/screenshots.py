"""The README's UI screenshots, taken from real runs of the pipeline with headless Chromium.

    source infra/env.sh          # the services of the state dir that ran the main job
    .venv/bin/python docs/screenshots.py [--runs 2]

Writes ``docs/prefect_flow_run.png`` (the newest completed ``pretrain/full`` flow run, or the one
``--flow-run NAME`` names) and
``docs/mlflow_compare_page.png`` (MLflow's compare page of the newest ``--runs`` runs of the
``vljepa-pretrain`` experiment), and prints which runs they show, for the README's caption.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path

DOCS = Path(__file__).resolve().parent
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
         "--hide-scrollbars"]


def shoot(url: str, out: Path, *, budget_ms: int = 30_000, window: str = "1400,1000") -> None:
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        subprocess.run(["chromium", *FLAGS, f"--user-data-dir={profile}", f"--window-size={window}",
                        f"--virtual-time-budget={budget_ms}", f"--screenshot={out}", url],
                       check=True, capture_output=True, timeout=180)
    if not out.is_file() or out.stat().st_size < 10_000:
        raise RuntimeError(f"chromium wrote no real screenshot of {url}")


def newest_flow_run(api: str, name: str | None = None) -> dict:
    runs_filter: dict = {"state": {"type": {"any_": ["COMPLETED"]}}}
    if name:
        runs_filter["name"] = {"any_": [name]}
    body = json.dumps({"flows": {"name": {"any_": ["pretrain"]}}, "flow_runs": runs_filter,
                       "sort": "START_TIME_DESC", "limit": 1}).encode()
    request = urllib.request.Request(f"{api}/flow_runs/filter", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    runs = json.loads(urllib.request.build_opener(urllib.request.ProxyHandler({})).open(request, timeout=10).read())
    if not runs:
        raise SystemExit("no completed pretrain flow run on this Prefect server: run `bash infra/run-main.sh` first")
    return runs[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=2, help="MLflow runs on the compare page (newest first)")
    parser.add_argument("--flow-run", default=None, help="the flow run's name (default: the newest completed)")
    args = parser.parse_args(argv)
    import mlflow
    from mlflow.tracking import MlflowClient

    api, mlflow_url = os.environ.get("PREFECT_API_URL"), os.environ.get("MLFLOW_TRACKING_URI", "")
    if not api or not mlflow_url.startswith("http"):
        raise SystemExit("source infra/env.sh first (PREFECT_API_URL and an http MLFLOW_TRACKING_URI)")
    flow_run = newest_flow_run(api, args.flow_run)
    shoot(f"{api.removesuffix('/api')}/runs/flow-run/{flow_run['id']}", DOCS / "prefect_flow_run.png")
    mlflow.set_tracking_uri(mlflow_url)
    experiment = MlflowClient().get_experiment_by_name("vljepa-pretrain")
    runs = MlflowClient().search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"],
                                      max_results=args.runs)
    query = urllib.parse.urlencode({"runs": json.dumps([r.info.run_id for r in runs]),
                                    "experiments": json.dumps([experiment.experiment_id])})
    shoot(f"{mlflow_url.rstrip('/')}/#/compare-runs?{query}", DOCS / "mlflow_compare_page.png", window="1400,1200")
    print(json.dumps({"flow_run": flow_run["name"], "flow_run_id": flow_run["id"],
                      "mlflow_runs": [{"name": r.info.run_name, "id": r.info.run_id,
                                       "preset": r.data.tags.get("preset")} for r in runs]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
