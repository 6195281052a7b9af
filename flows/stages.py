"""The pretraining pipeline as plain, in-process stage functions.

Prefect tasks (``flows/pretrain.py``), the ``vljepa run`` CLI and the tests all call these; none
of them needs a Prefect server. Every stage is content-addressed or idempotent so a re-run with
nothing changed does no work twice.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from vljepa.config import VLJepaConfig, get_preset, replace

REPO_ROOT = Path(__file__).resolve().parents[1]
# ``stage(name, fn, io)`` wraps one step of a flow: ``direct`` calls it as is; the Prefect flows
# pass ``flows.tasks.as_task``, which makes it a task (with retries when ``io``).
StageWrapper = Callable[[str, Callable[..., Any], bool], Callable[..., Any]]


def direct(name: str, fn: Callable[..., Any], io: bool) -> Callable[..., Any]:
    return fn


def content_key(*parts: str) -> str:
    """A short content address: the first 12 hex digits of the SHA-256 of the parts, one per line."""
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]
SPLITS = ("train", "val", "test")


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """One run of the pretraining pipeline: which preset, where state lives, how to launch."""

    preset: str = "small"
    config_path: str | None = None  # a full VLJepaConfig JSON (`vljepa config --preset paper`); overrides preset
    n_videos: int | None = None  # override the preset's corpus size
    epochs: float | None = None  # override the preset's training length
    max_steps: int | None = None
    launcher: Literal["inline", "local", "slurm"] = "local"  # "local": a submitit subprocess
    engine: Literal["local", "ray"] = "local"  # preprocessing engine (ray: Ray Data; RAY_ADDRESS for a cluster)
    phase: Literal["image", "video"] | None = None  # one stage-1 phase alone; None: image then video, chained
    state_dir: str | None = None  # default: $VLJEPA_STATE_DIR or <repo>/.vljepa
    tracking_uri: str | None = None  # default: $MLFLOW_TRACKING_URI or SQLite under state_dir
    experiment: str = "vljepa-pretrain"
    registered_model: str = "vljepa"
    progress: bool = True

    def model_config(self) -> VLJepaConfig:
        """The preset (or config file) with this run's phase recipe and overrides applied."""
        return self.phase_config(self.phase) if self.phase is not None else self._overrides(self._base())

    def phase_config(self, phase: str, init_from: str | None = None) -> VLJepaConfig:
        """One stage-1 phase's config (``vljepa.config.RECIPES``), with this run's overrides."""
        from vljepa.config import stage_config

        return self._overrides(stage_config(self._base(), "pretrain", phase, init_from=init_from))  # type: ignore[arg-type]

    def _base(self) -> VLJepaConfig:
        if self.config_path:
            return VLJepaConfig.from_json(Path(self.config_path).read_text())
        return get_preset(self.preset)

    def _overrides(self, cfg: VLJepaConfig) -> VLJepaConfig:
        changes: dict[str, object] = {}
        if self.n_videos is not None:
            changes["data.n_videos"] = self.n_videos
        if self.epochs is not None:
            changes["train.epochs"] = self.epochs
        if self.max_steps is not None:
            changes["train.max_steps"] = self.max_steps
        return replace(cfg, **changes) if changes else cfg

    def state_path(self) -> Path:
        root = self.state_dir or os.environ.get("VLJEPA_STATE_DIR") or str(REPO_ROOT / ".vljepa")
        return Path(root).expanduser().resolve()

    def resolved_tracking_uri(self) -> str:
        if self.tracking_uri:
            return self.tracking_uri
        if os.environ.get("MLFLOW_TRACKING_URI"):
            return os.environ["MLFLOW_TRACKING_URI"]
        db = self.state_path() / "mlflow" / "mlflow.db"
        db.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{db}"


# ---------------------------------------------------------------------------------------------
# Stage 1: data


def prepare_corpus(cfg: VLJepaConfig, state_dir: Path, *, progress: bool = True) -> Path:
    """Generate the procedural corpus (idempotent) and return its directory."""
    from preprocessing.corpus import CorpusConfig, generate_corpus

    corpus_cfg = CorpusConfig(n_videos=cfg.data.n_videos, seed=cfg.data.seed)
    out = state_dir / "data" / f"synthetic-{corpus_cfg.config_hash()[:12]}"
    if not cfg.data.generate:
        out = Path(cfg.data.corpus_dir)
        if not (out / "annotations.jsonl").is_file():
            raise FileNotFoundError(f"{out}/annotations.jsonl missing and data.generate is False")
        return out
    generate_corpus(corpus_cfg, out, progress=progress)
    return out


def import_manifest(db_path: Path, corpus_dir: Path) -> dict[str, int]:
    """Import the corpus into the DuckDB manifest; returns the import counts."""
    from preprocessing.manifest import import_corpus, open_manifest

    con = open_manifest(db_path)
    try:
        summary = import_corpus(con, corpus_dir)
    finally:
        con.close()
    return {"n_in": summary.n_in, "n_imported": summary.n_imported, "n_skipped": summary.n_skipped,
            "n_failed": summary.n_failed}


@dataclass
class SplitCache:
    split: str
    cache_key: str
    path: str
    reused: bool
    n_samples: int
    n_failed: int


def cache_split_tokens(cfg: VLJepaConfig, db_path: Path, state_dir: Path, split: str, *,
                       progress: bool = True, engine: str = "local", ray_address: str | None = None) -> SplitCache:
    """Decode, sample and encode one split with the frozen x-encoder into a sharded Parquet cache.

    This is the ``preprocess`` flow's encode step (``flows/preprocess.py``): content-addressed
    (a re-run with nothing changed re-uses the cache), failures recorded in the manifest,
    ``engine="ray"`` for a Ray Data pipeline. The cache directory is what training reads.
    """
    import dataclasses

    from flows.preprocess import encode_step

    out = encode_step(str(db_path), dataset="synthetic", split=split, x_encoder=dataclasses.asdict(cfg.x_encoder),
                      cache_root=str(state_dir / "cache" / "shards"), cache_format="parquet", shard_size=512,
                      sampling={"strategy": "uniform", "num_frames": cfg.x_encoder.num_frames},
                      engine=engine, ray_address=ray_address, decode_workers=cfg.data.decode_workers)
    if out["n_samples"] == 0:
        raise RuntimeError(f"no sample of split {split!r} could be cached ({out['n_failed']} failed): see "
                           f"`vljepa data failures --manifest {db_path}`")
    return SplitCache(split=split, cache_key=out["cache_key"], path=out["cache_dir"], reused=bool(out["reused"]),
                      n_samples=int(out["n_samples"]), n_failed=int(out["n_failed"]))


@dataclass
class PreparedData:
    """What every training flow starts from: the manifest, the corpus and the cached splits."""

    db_path: Path
    corpus_dir: Path
    caches: dict[str, SplitCache]

    def spec(self) -> "TrainDataSpec":
        return TrainDataSpec(db_path=str(self.db_path), train_cache=self.caches["train"].path)


def prepare_data(run: RunConfig, cfg: VLJepaConfig | None = None, splits: tuple[str, ...] = ("train", "test")) -> PreparedData:
    """corpus → manifest → frozen tokens of ``splits``: the first stages of ``pretrain/full`` in one
    call (each content-addressed: a re-run reuses them), for the ``compare`` and ``ablate`` flows."""
    cfg = cfg or run.model_config()
    state = run.state_path()
    state.mkdir(parents=True, exist_ok=True)
    db_path = state / "manifest.duckdb"
    corpus_dir = prepare_corpus(cfg, state, progress=run.progress)
    import_manifest(db_path, corpus_dir)
    caches = {split: cache_split_tokens(cfg, db_path, state, split, progress=run.progress, engine=run.engine)
              for split in splits}
    return PreparedData(db_path=db_path, corpus_dir=corpus_dir, caches=caches)


def load_split(db_path: Path, cache_path: str, split: str):
    """Join a split's cached tokens with its captions and labels from the manifest."""
    from preprocessing.cache import read_token_cache
    from preprocessing.manifest import open_manifest, split_rows
    from vljepa.data import TokenTextDataset

    cache = read_token_cache(cache_path)
    con = open_manifest(db_path)
    try:
        rows = {r["source_id"]: r for r in split_rows(con, split)}
    finally:
        con.close()
    missing = [sid for sid in cache.sample_ids if sid not in rows]
    if missing:
        raise KeyError(f"{len(missing)} cached samples are not in split {split!r}, e.g. {missing[:3]}")
    return TokenTextDataset(sample_ids=list(cache.sample_ids), tokens=cache.tokens,
                            texts=[rows[s]["caption"] for s in cache.sample_ids],
                            labels=[rows[s]["label"] for s in cache.sample_ids])


# ---------------------------------------------------------------------------------------------
# Stage 2: training (the function a submitit job runs; launching is in flows/launch.py)

CLASSIFICATION_QUERY = "what object is this?"


@dataclass
class TrainSummary:
    checkpoint_dir: str
    history: list[dict[str, float]] = field(default_factory=list)
    steps: int = 0
    samples_seen: int = 0
    seconds: float = 0.0
    resumed_from: int | None = None
    validation: list[dict[str, float]] = field(default_factory=list)
    mlflow_run_id: str | None = None
    reused: bool = False  # found already trained (content-addressed), not trained by this call


@dataclass(frozen=True, kw_only=True)
class TrainDataSpec:
    """Where a training job's data is: plain strings, so it pickles for submitit."""

    db_path: str
    train_cache: str
    val_cache: str | None = None  # validation split's token cache: retrieval R@1 picks the best checkpoint
    corpus_dir: str | None = None  # for the label set of validation classification
    mix: str | None = None  # SFT: a named DuckDB mix (preprocessing.mix); None = the default SFT samples
    n_draws: int | None = None  # draws from the mix (default: one per available sample)
    dataset: str = "synthetic"


def load_sft_split(db_path: Path, cache_path: str, split: str, *, mix: str | None = None,
                   n_draws: int | None = None, seed: int = 0, dataset: str = "synthetic"):
    """SFT samples (query, target) over a split's cached tokens.

    Default: every VQA pair, caption (query-free) and class label of the split's cached clips
    (``sql/sft_annotations.sql``). With ``mix``: ``n_draws`` seeded draws of that named
    DuckDB mix (``preprocessing.mix.draw``), in draw order.
    """
    from preprocessing.cache import read_token_cache
    from preprocessing.manifest import open_manifest
    from vljepa.data import QueryTargetDataset

    cache = read_token_cache(cache_path)
    row_of = {sid: i for i, sid in enumerate(cache.sample_ids)}
    con = open_manifest(db_path)
    try:
        from preprocessing.manifest import load_sql

        result = con.execute(load_sql("sft_annotations"), {"split": split, "dataset": dataset,
                                                   "classification_query": CLASSIFICATION_QUERY})
        rows = {(r[0], r[1], r[2]): (r[3], r[4]) for r in result.fetchall()}
        if mix is not None:
            from preprocessing.mix import draw

            keys = [(d.source_id, d.task, d.idx) for d in draw(con, mix, n_draws or len(rows), seed=seed)]
        else:
            keys = list(rows)
    finally:
        con.close()
    missing = [k for k in keys if k not in rows]
    if missing:
        raise KeyError(f"{len(missing)} drawn samples are not SFT annotations of split {split!r}, e.g. {missing[:3]}")
    keys = [k for k in keys if k[0] in row_of and rows[k][1]]  # clips that failed to encode are skipped
    if not keys:
        raise ValueError(f"no SFT samples for split {split!r} in cache {cache_path}")
    return QueryTargetDataset(sample_ids=[f"{s}/{t}/{i}" for s, t, i in keys], tokens=cache.tokens,
                              token_row=np.array([row_of[k[0]] for k in keys]), queries=[rows[k][0] for k in keys],
                              texts=[rows[k][1] for k in keys], tasks=[k[1] for k in keys])


def load_live_split(cfg: VLJepaConfig, db_path: Path, split: str):
    """``train.mode = "live"``: decoded frames of a split for the frozen x-encoder in the loop."""
    import torch

    from preprocessing.decode import decode_frames, frames_to_tensor
    from preprocessing.manifest import open_manifest, split_rows
    from vljepa.data import LiveFrames
    from vljepa.encoders import build_x_encoder

    encoder = build_x_encoder(cfg.x_encoder)
    con = open_manifest(db_path)
    try:
        rows = split_rows(con, split)
    finally:
        con.close()
    spec = encoder.spec
    frames = [frames_to_tensor(decode_frames(r["path"], num_frames=spec.num_frames, size=spec.image_size).frames,
                               spec.mean, spec.std) for r in rows]
    return LiveFrames(frames=torch.stack(frames), texts=[r["caption"] for r in rows], encode=encoder.encode)


def load_training_data(cfg: VLJepaConfig, spec: TrainDataSpec):
    """The ``TrainData`` source for ``cfg.train.stage`` / ``cfg.train.mode``."""
    if cfg.train.stage == "sft":
        return load_sft_split(Path(spec.db_path), spec.train_cache, "train", mix=spec.mix, n_draws=spec.n_draws,
                              seed=cfg.train.seed, dataset=spec.dataset)
    if cfg.train.mode == "live":
        return load_live_split(cfg, Path(spec.db_path), "train")
    return load_split(Path(spec.db_path), spec.train_cache, "train")


def validator(spec: TrainDataSpec):
    """``validate(model)``: retrieval and classification on the val split (None without a val cache)."""
    if spec.val_cache is None:
        return None
    from vljepa.evaluate import evaluate

    data = load_split(Path(spec.db_path), spec.val_cache, "val")
    labels = json.loads((Path(spec.corpus_dir) / "corpus.json").read_text())["labels"] if spec.corpus_dir else None

    def validate(model) -> dict[str, float]:
        return evaluate(model, data, label_set=labels).metrics

    return validate


def run_training(cfg_json: str, spec: TrainDataSpec, out_dir: str, *, progress: bool = True,
                 tracking=None) -> TrainSummary:
    """One training job: set up torch.distributed (torchrun / submitit / single), train, track.

    ``tracking`` is a ``flows.train_tracker.TrackingSpec`` (MLflow) or None.
    """
    from vljepa.distributed import init_distributed, resolve_env, shutdown
    from vljepa.train import train

    cfg = VLJepaConfig.from_json(cfg_json)
    dist = init_distributed(resolve_env())
    tracker = None
    try:
        data = load_training_data(cfg, spec)
        if tracking is not None and dist.is_main:
            from flows.train_tracker import MlflowTracker

            tracker = MlflowTracker.start(tracking, cfg, extra_params={"data.n_train": len(data)},
                                          world_size=dist.world_size)
        result = train(cfg, data, out_dir, progress=progress and dist.is_main, validate=validator(spec), dist=dist,
                       log_step=tracker.log_step if tracker else None)
        summary = TrainSummary(checkpoint_dir=str(result.checkpoint_dir), history=result.history, steps=result.steps,
                               samples_seen=result.samples_seen, seconds=result.seconds,
                               resumed_from=result.resumed_from, validation=result.validation,
                               mlflow_run_id=tracker.run_id if tracker else None)
        if tracker is not None:
            tracker.finish(summary, status="FINISHED")
        return summary
    except BaseException:
        if tracker is not None:
            tracker.finish(None, status="FAILED")
        raise
    finally:
        shutdown(dist)


def train_from_cache(cfg_json: str, db_path: str, train_cache: str, out_dir: str, progress: bool = True) -> TrainSummary:
    """Train on a cached split; arguments are plain strings so the call pickles for submitit."""
    return run_training(cfg_json, TrainDataSpec(db_path=db_path, train_cache=train_cache), out_dir, progress=progress)


def launch_training(cfg: VLJepaConfig, run: RunConfig, db_path: Path, train_cache: str, out_dir: Path) -> TrainSummary:
    """Run ``run_training`` inline or as a submitit job (local subprocess here, Slurm on a cluster)."""
    from flows.launch import launch

    spec = TrainDataSpec(db_path=str(db_path), train_cache=train_cache)
    return launch(cfg, spec, out_dir, launcher=run.launcher, folder=run.state_path() / "submitit",
                  progress=run.progress).result()


# ---------------------------------------------------------------------------------------------
# Stage 3: evaluation


def evaluate_checkpoint(checkpoint_dir: str, db_path: Path, test_cache: str, corpus_dir: Path) -> dict:
    """Retrieval and classification on the held-out test split; returns metrics and chance levels."""
    from vljepa.evaluate import evaluate
    from vljepa.train import load_checkpoint

    model = load_checkpoint(checkpoint_dir)
    data = load_split(db_path, test_cache, "test")
    labels = json.loads((corpus_dir / "corpus.json").read_text())["labels"]
    result = evaluate(model, data, label_set=labels)
    return {"metrics": result.metrics, "chance": result.chance, "n_test": result.n_samples}
