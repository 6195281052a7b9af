"""Flow ``preprocess`` (deployment ``full``): import → decode/sample → encode → sharded token cache →
manifest update (``flows.preprocess.run_preprocess``, its steps as tasks). The x-encoder comes from a
preset or config file through the one resolver (``overrides`` as ``--set``), never as a raw dict."""

from __future__ import annotations

from typing import Literal

from prefect import flow

from flows.prefect_flows.tasks import as_task
from flows.preprocess import cache_summary, preprocess_job, run_preprocess, summary_lines
from flows.resolve import Engine, Preset, RunConfig


@flow(name="preprocess", log_prints=True)
def preprocess(source: str, kind: Literal["corpus", "folder", "video2dataset", "msrvtt"] = "corpus",
               preset: Preset = "small", config_path: str | None = None,
               overrides: list[str] | None = None, dataset: str = "synthetic", annotations: str | None = None,
               media_dir: str | None = None, splits: list[str] | None = None, manifest: str | None = None,
               cache_root: str | None = None, cache_format: Literal["parquet", "webdataset"] = "parquet",
               shard_size: int | None = None, sampling_strategy: Literal["uniform", "fps", "sliding"] = "uniform",
               engine: Engine = "local", ray_address: str | None = None,
               allow_outside_root: bool = False, state_dir: str | None = None) -> dict:
    """Import ``source`` into the manifest and cache frozen-encoder tokens of each split.

    Args:
        preset / config_path / overrides: the config whose ``x_encoder`` encodes (``--set x_encoder.weights=DIR``).
        manifest / cache_root: default: the state dir's manifest and token cache.
        sampling_strategy: how frames are picked (``preprocessing.sampling``): uniform = the encoder's frames.
        allow_outside_root: annotation rows may name files outside the source folder.
    """
    run = RunConfig(preset=preset, config_path=config_path, overrides=tuple(overrides or ()), engine=engine,
                    state_dir=state_dir)
    job = preprocess_job(run, source, kind=kind, dataset=dataset, annotations=annotations, media_dir=media_dir,
                         splits=tuple(splits or ("train", "val", "test")), manifest=manifest, cache_root=cache_root,
                         cache_format=cache_format, shard_size=shard_size, sampling_strategy=sampling_strategy,
                         ray_address=ray_address, allow_outside_root=allow_outside_root)
    summary = run_preprocess(job, stage=as_task)
    for line in summary_lines(summary):
        print(line)
    return {"import": vars(summary.imported),
            "caches": {split: cache_summary(result) for split, result in summary.caches.items()},
            "empty_splits": summary.empty}
