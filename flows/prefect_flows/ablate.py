"""Flow ``ablate`` (deployments ``ablate/<sweep>``, one per sweep of ``vljepa.ablations``): ``flows.ablate``.

Its steps become tasks (I/O with retries); the flow run gets a markdown artifact with the summary
table and the MLflow compare link.
"""

from __future__ import annotations

from typing import Literal

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from flows.ablate import EXPERIMENT_PREFIX, run_sweep
from flows.prefect_flows.tasks import as_task
from flows.resolve import RunConfig, length_overrides

SweepName = Literal["loss", "loss-trainable", "y-lr", "depth", "attention", "init", "y-encoder"]


@flow(name="ablate", log_prints=True)
def ablate(sweep: SweepName = "loss", preset: Literal["small", "tiny", "paper"] = "small",
           variants: list[str] | None = None, launcher: Literal["local", "inline", "slurm"] = "local",
           overrides: list[str] | None = None, n_videos: int | None = None, epochs: float | None = None,
           max_steps: int | None = None, y_encoder_paths: dict[str, str] | None = None, state_dir: str | None = None,
           tracking_uri: str | None = None) -> dict:
    """One of the paper's ablation sweeps: train every variant (local jobs one after another, or a
    Slurm job array), evaluate on the test split, one MLflow run per variant + a summary run.

    Args:
        sweep: loss | loss-trainable | y-lr | depth | attention | init | y-encoder (see ``vljepa/ablations.py``).
        variants: a subset of the sweep's variants (the default variant always runs).
        overrides: ``KEY=VALUE`` items applied to the base config, as ``vljepa ablate --set``.
        y_encoder_paths: name -> local HF text-encoder dir, added to the ``y-encoder`` sweep.
    """
    run = RunConfig(preset=preset, launcher=launcher, state_dir=state_dir, tracking_uri=tracking_uri, progress=False,
                    overrides=length_overrides(n_videos=n_videos, epochs=epochs, max_steps=max_steps)
                    + tuple(overrides or ()))
    result = run_sweep(sweep, run, variants=variants, y_encoder_paths=y_encoder_paths,
                       flow_run_id=flow_run.get_id(), stage=as_task)
    link = (f"[compare the runs in MLflow]({result.compare_url})" if result.compare_url
            else f"MLflow experiment `{EXPERIMENT_PREFIX}{sweep}`")
    create_markdown_artifact(key=f"ablate-{sweep}", markdown=f"{result.markdown}\n\n{link}",
                             description=f"ablation sweep {sweep}: Δ points vs the default, next to the paper's")
    print(result.markdown)
    return {"sweep": result.sweep, "metrics": result.metrics(), "agreement": result.agreement,
            "summary_run_id": result.summary_run_id, "compare_url": result.compare_url, "out_dir": result.out_dir}
