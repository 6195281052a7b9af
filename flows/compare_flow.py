"""Prefect flow ``compare`` (deployment ``compare/vlm-vs-jepa``): VL-JEPA vs a token VLM trained alike.

A thin wrapper around ``flows.compare.run_compare`` (paper §4.2, Fig. 3): its steps become tasks
and the flow run gets a markdown artifact with the table and the figure's path.
"""

from __future__ import annotations

from typing import Literal

from prefect import flow

from flows.compare import run_compare
from flows.stages import REPO_ROOT, RunConfig
from flows.tasks import as_task


@flow(name="compare", log_prints=True)
def compare(preset: Literal["small", "tiny", "paper"] = "small", points: int = 5,
            vlm_vocab: Literal["cut", "full"] = "cut", launcher: Literal["local", "inline", "slurm"] = "local",
            n_videos: int | None = None, epochs: float | None = None, max_steps: int | None = None,
            state_dir: str | None = None, tracking_uri: str | None = None) -> dict:
    """Train VL-JEPA and a token-generating VLM on the same tokens, LM layers, data, batch size and
    schedule; evaluate both at ``points`` log-spaced numbers of samples seen; plot and log to MLflow.

    Args:
        vlm_vocab: the VLM's output vocabulary: the training texts' tokens (as the y-decoder's) or all.
    """
    from prefect.artifacts import create_markdown_artifact
    from prefect.runtime import flow_run

    run = RunConfig(preset=preset, launcher=launcher, n_videos=n_videos, epochs=epochs, max_steps=max_steps,
                    state_dir=state_dir, tracking_uri=tracking_uri, progress=False)
    result = run_compare(run, points=points, vlm_vocab=vlm_vocab, flow_run_id=flow_run.get_id(), stage=as_task)
    create_markdown_artifact(key="vlm-vs-jepa", markdown=f"{result.markdown}\n\nFigure: `{result.out_dir}/compare.png`; "
                             f"MLflow experiment `vljepa-compare`, runs {result.mlflow_run_ids}",
                             description="VL-JEPA vs token VLM: sample efficiency and inference cost")
    print(result.markdown)
    return {"points": result.points, "curves": result.curves, "cost": result.cost, "params": result.params,
            "out_dir": result.out_dir, "mlflow_run_ids": result.mlflow_run_ids}


def deploy_compare(work_pool: str = "local-pool") -> str:
    source = compare.from_source(source=str(REPO_ROOT), entrypoint="flows/compare_flow.py:compare")
    source.deploy(name="vlm-vs-jepa", work_pool_name=work_pool, parameters={"preset": "small"},
                  description="VL-JEPA vs a token-generating VLM trained alike (paper Fig. 3).", print_next_steps=False)
    return "compare/vlm-vs-jepa"
