"""The data stages every training flow starts from: corpus → manifest → frozen-encoder tokens.

Each is content-addressed or idempotent: a re-run with nothing changed does no work twice.
``prepare_data`` chains them for the flows that need all three (``compare``, ``ablate``, ``train``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from flows.env import StateLayout
from flows.preprocess import ImportCounts, encode_split, import_source
from vljepa.config import VLJepaConfig


def prepare_corpus(cfg: VLJepaConfig, layout: StateLayout, *, progress: bool = True) -> Path:
    """Generate the procedural corpus (idempotent) or check the configured one; returns its directory."""
    from preprocessing.corpus import CorpusConfig, generate_corpus

    if not cfg.data.generate:
        out = Path(cfg.data.corpus_dir)
        if not (out / "annotations.jsonl").is_file():
            raise FileNotFoundError(f"{out}/annotations.jsonl missing and data.generate is False: point "
                                    "data.corpus_dir at a corpus (README, 'Pointing the pipeline at real data')")
        return out
    corpus_cfg = CorpusConfig(n_videos=cfg.data.n_videos, seed=cfg.data.seed)
    out = layout.data_dir / f"synthetic-{corpus_cfg.config_hash()[:12]}"
    generate_corpus(corpus_cfg, out, progress=progress)
    return out


def import_manifest(db_path: Path, corpus_dir: Path, *, generated: bool, dataset: str = "synthetic") -> ImportCounts:
    """Import a corpus in the generator's layout into the DuckDB manifest (idempotent).

    generated: the corpus is the one ``prepare_corpus`` generated (``data.generate``). Its records
        carry what the generator rendered (duration, fps, size: equal to ffprobe's for every clip of
        the embedded default, tested), so its clips are not probed: ~0.1 s of ffprobe a clip, most
        of this stage. Any other corpus is probed.
    """
    if generated:
        check_one_corpus(db_path, corpus_dir, dataset)
    return import_source(db_path, str(corpus_dir), kind="corpus", dataset=dataset, probe=not generated)


def check_one_corpus(db_path: Path, corpus_dir: Path, dataset: str = "synthetic") -> None:
    """Refuse a second generated corpus in one manifest: every corpus names its clips ``clip_000000``, … and
    ``sources`` is keyed by clip id, so importing it would overwrite the first one's rows and mix the splits."""
    from flows.loaders import foreign_sources
    from flows.resolve import ConfigError  # the CLI prints it as an error, without a traceback

    if not Path(db_path).is_file():
        return
    n, example = foreign_sources(db_path, dataset, corpus_dir)
    if n:
        raise ConfigError(f"{db_path} already holds another generated corpus as dataset {dataset!r} ({n} clips, e.g. "
                         f"{example}), and {corpus_dir} would overwrite its rows: generated corpora of different sizes "
                         "or seeds share clip ids, so a state dir holds one of them. Run this one with its own "
                         "--state-dir (or VLJEPA_STATE_DIR)")


@dataclass(frozen=True)
class SplitCache:
    """One split's frozen-encoder token cache."""

    split: str
    cache_key: str
    path: str
    reused: bool
    n_samples: int
    n_failed: int


def cache_split_tokens(cfg: VLJepaConfig, layout: StateLayout, split: str, *, progress: bool = True,
                       engine: str = "local", ray_address: str | None = None,
                       dataset: str = "synthetic") -> SplitCache:
    """Decode, sample and encode one split with the frozen x-encoder into a sharded Parquet cache.

    The ``preprocess`` flow's encode step (``flows.preprocess.encode_split``) with the main job's
    settings: uniform sampling of ``x_encoder.num_frames`` frames, Parquet shards of the default
    size, failures recorded in the manifest. Raises when no sample of the split could be cached.
    """
    from preprocessing.pipeline import CacheConfig
    from preprocessing.sampling import SamplingConfig

    result = encode_split(layout.manifest, dataset=dataset, split=split, x_encoder=cfg.x_encoder,
                          cache=CacheConfig(root=str(layout.shard_cache), format="parquet"),
                          sampling=SamplingConfig(strategy="uniform", num_frames=cfg.x_encoder.num_frames),
                          engine=engine, ray_address=ray_address, decode_workers=cfg.data.decode_workers,
                          progress=progress)
    if result.n_samples == 0:
        raise RuntimeError(f"no sample of split {split!r} could be cached ({result.n_failed_sources} failed): see "
                           f"`vljepa data failures --manifest {layout.manifest}`")
    return SplitCache(split=split, cache_key=result.cache_key, path=str(result.cache_dir), reused=bool(result.reused),
                      n_samples=int(result.n_samples), n_failed=int(result.n_failed_sources))


@dataclass(frozen=True)
class PreparedData:
    """What every training flow starts from: the manifest, the corpus and the cached splits."""

    db_path: Path
    corpus_dir: Path
    caches: dict[str, SplitCache]
    counts: ImportCounts

    def spec(self, *, val_cache: str | None = None, corpus_dir: str | None = None, mix: str | None = None):
        """The training job's ``flows.job.TrainDataSpec``: this data's train cache, plus the optional parts."""
        from flows.job import TrainDataSpec

        return TrainDataSpec(db_path=str(self.db_path), train_cache=self.caches["train"].path, val_cache=val_cache,
                             corpus_dir=corpus_dir, mix=mix)


def prepare_data(cfg: VLJepaConfig, layout: StateLayout, splits: tuple[str, ...] = ("train", "test"), *,
                 progress: bool = True, engine: str = "local") -> PreparedData:
    """corpus → manifest → frozen tokens of ``splits`` in one call (each content-addressed)."""
    layout.ensure()
    corpus_dir = prepare_corpus(cfg, layout, progress=progress)
    counts = import_manifest(layout.manifest, corpus_dir, generated=cfg.data.generate)
    caches = {split: cache_split_tokens(cfg, layout, split, progress=progress, engine=engine) for split in splits}
    return PreparedData(db_path=layout.manifest, corpus_dir=corpus_dir, caches=caches, counts=counts)
