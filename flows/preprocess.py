"""The preprocess stage: import a source into the manifest, then decode/sample → encode → sharded
token cache per split (the Prefect flow ``preprocess`` is ``flows/prefect_flows/preprocess.py``).

``run_preprocess(cfg)`` is the whole stage; ``import_source`` and ``encode_split`` are its two
steps, each content-addressed or idempotent (a re-run with nothing changed decodes nothing).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from flows.stage import StageWrapper, direct
from vljepa.config import XEncoderConfig

SourceKind = Literal["corpus", "folder", "video2dataset", "msrvtt"]


@dataclass(frozen=True)
class ImportCounts:
    """What a manifest import did: ``n_in == n_imported + n_skipped + n_failed``."""

    n_in: int
    n_imported: int
    n_skipped: int
    n_failed: int


def import_source(manifest: str | Path, source: str, *, kind: SourceKind = "corpus", dataset: str = "synthetic",
                  annotations: str | None = None, media_dir: str | None = None, probe: bool = True,
                  allow_outside_root: bool = False) -> ImportCounts:
    """Import ``source``: a corpus dir, a folder with ``annotations`` (CSV / JSONL), a video2dataset tar
    or folder of tars, or (msrvtt) the folder of videos an MSR-VTT-style JSON ``annotations`` describes.

    probe: False trusts a corpus's records for duration, fps and size (a corpus the generator made).
    allow_outside_root: rows may name files outside the source folder (else a recorded failure).
    """
    from preprocessing.manifest import import_corpus, open_manifest

    con = open_manifest(manifest)
    try:
        if kind == "corpus":
            summary = import_corpus(con, source, dataset=dataset, probe=probe, allow_outside_root=allow_outside_root)
        elif kind == "folder":
            from preprocessing.importers import import_folder

            if annotations is None:
                raise ValueError("kind='folder' needs annotations (a CSV or JSONL file)")
            summary = import_folder(con, source, annotations, dataset=dataset, allow_outside_root=allow_outside_root)
        elif kind == "video2dataset":
            from preprocessing.importers import import_video2dataset

            if media_dir is None:
                raise ValueError("kind='video2dataset' needs media_dir")
            tars = sorted(Path(source).glob("*.tar")) if Path(source).is_dir() else [Path(source)]
            summary = import_video2dataset(con, tars, media_dir, dataset=dataset)
        elif kind == "msrvtt":
            from preprocessing.importers import import_msrvtt

            if annotations is None:
                raise ValueError("kind='msrvtt' needs annotations (the MSR-VTT-style JSON)")
            summary = import_msrvtt(con, annotations, source, dataset=dataset, allow_outside_root=allow_outside_root)
        else:
            raise ValueError(f"kind must be corpus, folder, video2dataset or msrvtt, got {kind!r}")
    finally:
        con.close()
    return ImportCounts(n_in=summary.n_in, n_imported=summary.n_imported, n_skipped=summary.n_skipped,
                        n_failed=summary.n_failed)


def encode_split(manifest: str | Path, *, dataset: str, split: str, x_encoder: XEncoderConfig, cache,
                 sampling=None, engine: str = "local", ray_address: str | None = None, decode_workers: int = 2,
                 progress: bool = False):
    """Decode, sample, encode and cache one split; records the cache and failures in the manifest.

    Args:
        cache: ``preprocessing.pipeline.CacheConfig`` (root, format, shard size).
        sampling: ``preprocessing.sampling.SamplingConfig`` (default: uniform, the encoder's frames).
    Returns ``preprocessing.pipeline.PreprocessResult``.
    """
    from flows.env import ray_address as ray_address_from_env
    from preprocessing.ray_pipeline import RayConfig
    from preprocessing.sampling import SamplingConfig
    from preprocessing.stage import PreprocessConfig, run

    cfg = PreprocessConfig(manifest=str(manifest), dataset=dataset, split=split, x_encoder=x_encoder, cache=cache,
                           sampling=sampling or SamplingConfig(), engine=engine,  # type: ignore[arg-type]
                           ray=RayConfig(address=ray_address or ray_address_from_env()), decode_workers=decode_workers, progress=progress)
    return run(cfg)


@dataclass(frozen=True, kw_only=True)
class PreprocessJob:
    """One preprocess run: a source into the manifest, then the token cache of each split."""

    manifest: str
    source: str
    cache_root: str
    x_encoder: XEncoderConfig
    kind: SourceKind = "corpus"
    dataset: str = "synthetic"
    annotations: str | None = None
    media_dir: str | None = None
    allow_outside_root: bool = False  # rows may name files outside the source folder
    splits: tuple[str, ...] = ("train", "val", "test")
    cache_format: Literal["parquet", "webdataset"] = "parquet"
    shard_size: int | None = None  # None: preprocessing.pipeline.CacheConfig's default
    sampling: object = None  # preprocessing.sampling.SamplingConfig; None: uniform, the encoder's frames
    engine: Literal["local", "ray"] = "local"
    ray_address: str | None = None
    decode_workers: int = 2
    progress: bool = False


@dataclass
class PreprocessSummary:
    imported: ImportCounts
    caches: dict[str, object] = field(default_factory=dict)  # split -> PreprocessResult
    empty: list[str] = field(default_factory=list)  # splits the dataset has no clip of (nothing to cache)


def cache_config(job: PreprocessJob):
    from preprocessing.pipeline import CacheConfig

    extra = {"shard_size": job.shard_size} if job.shard_size is not None else {}
    return CacheConfig(root=job.cache_root, format=job.cache_format, **extra)


def run_preprocess(job: PreprocessJob, *, stage: StageWrapper = direct) -> PreprocessSummary:
    """Import ``job.source``, then cache frozen-encoder tokens of each split.

    ``stage(name, fn, io)`` wraps each step (``flows.stage``; the Prefect flow makes them tasks).
    """
    imported = stage("import", import_source, True)(job.manifest, job.source, kind=job.kind, dataset=job.dataset,
                                                  annotations=job.annotations, media_dir=job.media_dir,
                                                  allow_outside_root=job.allow_outside_root)
    summary = PreprocessSummary(imported=imported)
    from flows.loaders import dataset_profile

    clips = {row["split"]: row["n_clips"] for row in dataset_profile(job.manifest, job.dataset)}  # one query
    for split in job.splits:
        if not clips.get(split):
            summary.empty.append(split)
            continue
        encode = stage(f"tokens-{split}", encode_split, True)
        summary.caches[split] = encode(job.manifest, dataset=job.dataset, split=split, x_encoder=job.x_encoder,
                                       cache=cache_config(job), sampling=job.sampling, engine=job.engine,
                                       ray_address=job.ray_address, decode_workers=job.decode_workers,
                                       progress=job.progress)
    return summary


def preprocess_job(run, source: str, *, kind: SourceKind = "corpus", dataset: str = "synthetic",
                   annotations: str | None = None, media_dir: str | None = None,
                   splits: tuple[str, ...] = ("train", "val", "test"), manifest: str | None = None,
                   cache_root: str | None = None, cache_format: Literal["parquet", "webdataset"] = "parquet",
                   shard_size: int | None = None, sampling_strategy: Literal["uniform", "fps", "sliding"] = "uniform",
                   ray_address: str | None = None, allow_outside_root: bool = False,
                   progress: bool = False) -> PreprocessJob:
    """The ``PreprocessJob`` of a ``flows.resolve.RunConfig`` (its x-encoder, state dir and engine): what
    ``vljepa preprocess`` and the ``preprocess`` flow run."""
    from preprocessing.sampling import SamplingConfig

    cfg, layout = run.model_config(), run.layout()
    frames = cfg.x_encoder.num_frames
    return PreprocessJob(manifest=manifest or str(layout.manifest), source=source, kind=kind,
                         cache_root=cache_root or str(layout.shard_cache), x_encoder=cfg.x_encoder, dataset=dataset,
                         annotations=annotations, media_dir=media_dir, allow_outside_root=allow_outside_root,
                         splits=tuple(splits), cache_format=cache_format, shard_size=shard_size, engine=run.engine,
                         ray_address=ray_address, progress=progress,
                         sampling=SamplingConfig(strategy=sampling_strategy, num_frames=frames, window=frames))


def cache_summary(result) -> dict:
    """One split's ``preprocessing.pipeline.PreprocessResult`` as JSON-able counts (flow result, ``--json``)."""
    return {"cache_key": result.cache_key, "cache_dir": str(result.cache_dir), "reused": result.reused,
            "n_in": result.n_in, "n_cached": result.n_cached_sources, "n_failed": result.n_failed_sources,
            "n_samples": result.n_samples, "n_reused_clips": result.n_reused_sources}


def summary_lines(summary: PreprocessSummary) -> list[str]:
    """What a preprocess run did, for people: the import, then per split cached / failed by reason."""
    from collections import Counter

    from preprocessing.manifest import failure_reason

    imported = summary.imported
    lines = [f"import: {imported.n_in} rows: {imported.n_imported} imported, {imported.n_skipped} unchanged, "
             f"{imported.n_failed} failed" + (" (`vljepa data failures`)" if imported.n_failed else "")]
    for split, result in summary.caches.items():
        how = ("reused (nothing changed)" if result.reused else
               f"{result.seconds:.0f} s" + (f", {result.n_reused_sources} clips copied from other caches"
                                            if result.n_reused_sources else ""))
        lines.append(f"tokens {split}: {result.n_in} clips: {result.n_cached_sources} cached ({result.n_samples} "
                     f"samples), {result.n_failed_sources} failed; {how}; {result.cache_dir}")
        reasons = Counter(failure_reason(f.error) for f in result.failures)
        lines += [f"    {n:>5} x {reason}" for reason, n in reasons.most_common()]
    lines += [f"tokens {split}: no clip of the dataset is in this split (nothing to cache)" for split in summary.empty]
    return lines
