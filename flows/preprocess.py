"""Prefect flow ``preprocess`` (deployment ``preprocess/full``): import -> decode/sample ->
encode -> sharded token cache -> manifest update.

The logic lives in plain functions (``import_step``, ``encode_step``; tests call them);
the flow wraps them as tasks with retries on I/O and ``cache_policy=NO_CACHE`` (the stages are
content-addressed themselves: a re-run with nothing changed does no decoding or encoding).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

REPO_ROOT = Path(__file__).resolve().parent.parent


def import_step(manifest: str, source: str, *, kind: str = "corpus", dataset: str = "synthetic",
                annotations: str | None = None, media_dir: str | None = None) -> dict[str, int]:
    """Import ``source`` (a corpus dir, a folder with ``annotations``, or a video2dataset tar)."""
    from preprocessing.manifest import import_corpus, open_manifest

    con = open_manifest(manifest)
    try:
        if kind == "corpus":
            summary = import_corpus(con, source, dataset=dataset)
        elif kind == "folder":
            from preprocessing.importers import import_folder

            if annotations is None:
                raise ValueError("kind='folder' needs annotations (a CSV or JSONL file)")
            summary = import_folder(con, source, annotations, dataset=dataset)
        elif kind == "video2dataset":
            from preprocessing.importers import import_video2dataset

            if media_dir is None:
                raise ValueError("kind='video2dataset' needs media_dir")
            summary = import_video2dataset(con, [source], media_dir, dataset=dataset)
        else:
            raise ValueError(f"kind must be corpus, folder or video2dataset, got {kind!r}")
    finally:
        con.close()
    return {"n_in": summary.n_in, "n_imported": summary.n_imported, "n_skipped": summary.n_skipped,
            "n_failed": summary.n_failed}


def encode_step(manifest: str, *, dataset: str, split: str, x_encoder: dict[str, Any], cache_root: str,
                cache_format: str = "parquet", shard_size: int = 256, sampling: dict[str, Any] | None = None,
                engine: str = "local", ray_address: str | None = None, decode_workers: int = 2) -> dict[str, Any]:
    """Decode, sample, encode and cache one split; records the cache and failures in the manifest."""
    from preprocessing.pipeline import CacheConfig
    from preprocessing.ray_pipeline import RayConfig
    from preprocessing.sampling import SamplingConfig
    from preprocessing.stage import PreprocessConfig, run
    from vljepa.config import XEncoderConfig

    cfg = PreprocessConfig(
        manifest=manifest, dataset=dataset, split=split, x_encoder=XEncoderConfig(**x_encoder),
        cache=CacheConfig(root=cache_root, format=cache_format, shard_size=shard_size),  # type: ignore[arg-type]
        sampling=SamplingConfig(**(sampling or {})), engine=engine,  # type: ignore[arg-type]
        ray=RayConfig(address=ray_address), decode_workers=decode_workers,
    )
    result = run(cfg)
    return {"split": split, "cache_key": result.cache_key, "cache_dir": str(result.cache_dir),
            "reused": result.reused, "n_in": result.n_in, "n_cached": result.n_cached_sources,
            "n_failed": result.n_failed_sources, "n_samples": result.n_samples, "n_frames": result.n_frames,
            "seconds": result.seconds}


def _io_task(fn, name: str):
    return task(fn, name=name, retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)


@flow(name="preprocess", log_prints=True)
def preprocess(manifest: str, source: str, cache_root: str, x_encoder: dict[str, Any], *,
               kind: str = "corpus", dataset: str = "synthetic", annotations: str | None = None,
               media_dir: str | None = None, splits: list[str] | None = None, cache_format: str = "parquet",
               shard_size: int = 256, sampling: dict[str, Any] | None = None, engine: str = "local",
               ray_address: str | None = None) -> dict[str, Any]:
    """Import ``source`` into ``manifest`` and cache frozen-encoder tokens of each split."""
    imported = _io_task(import_step, "import")(manifest, source, kind=kind, dataset=dataset,
                                               annotations=annotations, media_dir=media_dir)
    print(f"import: {imported}")
    caches = {}
    for split in splits or ["train", "val", "test"]:
        caches[split] = _io_task(encode_step, f"tokens-{split}")(
            manifest, dataset=dataset, split=split, x_encoder=x_encoder, cache_root=cache_root,
            cache_format=cache_format, shard_size=shard_size, sampling=sampling, engine=engine,
            ray_address=ray_address)
        print(f"tokens {split}: {caches[split]}")
    return {"import": imported, "caches": caches}


def deploy_preprocess(work_pool: str = "local-pool", parameters: dict[str, Any] | None = None) -> str:
    """Register deployment ``preprocess/full`` on ``work_pool``; returns its name."""
    deployable = preprocess.from_source(source=str(REPO_ROOT), entrypoint="flows/preprocess.py:preprocess")
    deployable.deploy(name="full", work_pool_name=work_pool, parameters=parameters or {},
                      description="Import, decode/sample, encode and cache frozen tokens.", print_next_steps=False)
    return "preprocess/full"


def encoder_dict(x_encoder_cfg: Any) -> dict[str, Any]:
    """An XEncoderConfig as the JSON-able dict the flow takes."""
    return dataclasses.asdict(x_encoder_cfg)
