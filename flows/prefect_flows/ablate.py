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
from flows.resolve import Launcher, Preset, RunConfig, length_overrides

SweepName = Literal["pretraining", "y-lr", "loss", "predictor", "y-encoder"]


@flow(name="ablate", log_prints=True)
def ablate(sweep: SweepName = "loss", preset: Preset = "small",
           variants: list[str] | None = None, launcher: Launcher = "local",
           samples: int | None = None, batch_size: int | None = None, seeds: list[int] | None = None,
           overrides: list[str] | None = None, n_videos: int | None = None,
           y_encoder_paths: dict[str, str] | None = None, state_dir: str | None = None,
           tracking_uri: str | None = None) -> dict:
    """One of the paper's ablations on its protocol (Table 5): SFT-stage data, constant lr, a fixed
    sample budget, every variant with each seed (local jobs one after another, or one Slurm job
    array); evaluated on the test split; one MLflow run per (variant, seed) + a summary run.

    Args:
        sweep: pretraining (a) | y-lr (b) | loss (c) | predictor (d) | y-encoder (e) (``vljepa/ablations.py``).
        variants: a subset of the sweep's variants (the default variant always runs).
        samples, batch_size, seeds: the protocol (default: the preset's, ``vljepa.ablations.PROTOCOLS``).
        overrides: ``KEY=VALUE`` items applied to the base config, as ``vljepa ablate --set``.
        y_encoder_paths: name -> local HF text-encoder dir, added to the ``y-encoder`` sweep.
    """
    import dataclasses

    from vljepa.ablations import PROTOCOLS

    run = RunConfig(preset=preset, launcher=launcher, state_dir=state_dir, tracking_uri=tracking_uri, progress=False,
                    overrides=length_overrides(n_videos=n_videos) + tuple(overrides or ()))
    changes = {k: v for k, v in (("samples", samples), ("batch_size", batch_size),
                                 ("seeds", tuple(seeds) if seeds else None)) if v is not None}
    protocol = dataclasses.replace(PROTOCOLS[preset], **changes)
    result = run_sweep(sweep, run, variants=variants, y_encoder_paths=y_encoder_paths, protocol=protocol,
                       flow_run_id=flow_run.get_id(), stage=as_task)
    link = (f"[compare the runs in MLflow]({result.compare_url})" if result.compare_url
            else f"MLflow experiment `{EXPERIMENT_PREFIX}{sweep}`")
    create_markdown_artifact(key=f"ablate-{sweep}", markdown=f"{result.markdown}\n\n{link}",
                             description=f"ablation sweep {sweep}: Δ points vs the default, next to the paper's")
    print(result.markdown)
    return {"sweep": result.sweep, "runs": [{"variant": r.variant, "seed": r.seed, "metrics": r.metrics}
                                            for r in result.runs],
            "summary_run_id": result.summary_run_id, "compare_url": result.compare_url, "out_dir": result.out_dir}
