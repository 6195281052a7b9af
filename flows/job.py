"""The body of a training job: the function that runs inline, in a local submitit subprocess and
as a Slurm task (``flows.launch`` wraps it; it imports nothing from there).

``run_training(cfg_json, spec, out_dir)`` sets up torch.distributed from the launcher's
environment, loads the data named by ``spec``, trains (``vljepa.train.train``, which resumes from
the run directory's newest checkpoint) and tracks the run in MLflow on rank 0.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from flows.loaders import corpus_labels, load_live_split, load_sft_split, load_split
from vljepa.config import VLJepaConfig


@dataclass
class TrainSummary:
    """What a training job returns (and ``train_summary.json`` beside the model holds)."""

    checkpoint_dir: str
    history: list[dict[str, float]] = field(default_factory=list)
    steps: int = 0
    samples_seen: int = 0
    seconds: float = 0.0
    resumed_from: int | None = None
    validation: list[dict[str, float]] = field(default_factory=list)
    mlflow_run_id: str | None = None
    reused: bool = False  # found already trained (content-addressed), not trained by this call
    data: dict = field(default_factory=dict)  # loader, samples drawn per component, bad data skipped

    @property
    def final_loss(self) -> float | None:
        return self.history[-1]["loss"] if self.history else None

    @classmethod
    def load(cls, model_dir: str | Path) -> "TrainSummary | None":
        """The summary of a finished model directory (``model.safetensors`` + ``train_summary.json``), or None."""
        model_dir = Path(model_dir)
        done = model_dir / "train_summary.json"
        if not ((model_dir / "model.safetensors").is_file() and done.is_file()):
            return None
        saved = json.loads(done.read_text())
        return cls(checkpoint_dir=str(model_dir), history=saved.get("history", []), steps=saved["steps"],
                   samples_seen=saved["samples_seen"], seconds=saved["seconds"], reused=True,
                   data=saved.get("data", {}))


@dataclass(frozen=True, kw_only=True)
class TrainDataSpec:
    """Where a training job's data is: plain strings, so it pickles for submitit."""

    db_path: str
    train_cache: str | None = None  # in-memory training on one split's cache (ablations, comparison)
    plan: object = None  # preprocessing.stream.StreamPlan: the phase's streamed mix (flows.phase_data)
    val_cache: str | None = None  # validation split's token cache: retrieval R@1 picks the best checkpoint
    corpus_dir: str | None = None  # for the label set of validation classification
    mix: str | None = None  # SFT: a named DuckDB mix (preprocessing.mix); None = the default SFT samples
    dataset: str = "synthetic"


def load_training_data(cfg: VLJepaConfig, spec: TrainDataSpec):
    """The training data of a job: the streamed mix of ``spec.plan`` (read shard by shard; frames decoded
    in the DataLoader workers and encoded in the loop when ``train.mode = "live"``), else one split's
    cache in memory for ``cfg.train.stage`` / ``cfg.train.mode``."""
    if spec.plan is not None:
        from preprocessing.stream import StreamData, load_items

        encode = None
        if spec.plan.frames is not None:  # type: ignore[attr-defined]
            from vljepa.encoders import build_x_encoder

            encode = build_x_encoder(cfg.x_encoder).encode
        t = cfg.train
        return StreamData(spec.plan, load_items(spec.plan), num_workers=t.num_workers,  # type: ignore[arg-type]
                          shuffle_buffer=t.shuffle_buffer, resampled=t.resampled, skip_bad=t.skip_bad_samples,
                          encode=encode)
    if spec.train_cache is None:
        raise ValueError("TrainDataSpec needs a plan (streamed) or a train_cache (in memory)")
    if cfg.train.stage == "sft":
        return load_sft_split(spec.db_path, spec.train_cache, "train", mix=spec.mix,
                              seed=cfg.train.seed, dataset=spec.dataset)
    if cfg.train.mode == "live":
        return load_live_split(cfg, spec.db_path, "train")
    return load_split(spec.db_path, spec.train_cache, "train")


def validator(spec: TrainDataSpec):
    """``validate(model)``: retrieval and classification on the val split (None without a val cache)."""
    if spec.val_cache is None:
        return None
    from vljepa.evaluate import evaluate

    data = load_split(spec.db_path, spec.val_cache, "val")
    labels = corpus_labels(spec.corpus_dir) if spec.corpus_dir else None

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

            from vljepa.feed import n_samples

            tracker = MlflowTracker.start(tracking, cfg, extra_params={"data.n_train": n_samples(data)},
                                          world_size=dist.world_size, run_id_file=Path(out_dir) / "mlflow_run.json")
        result = train(cfg, data, out_dir, progress=progress and dist.is_main, validate=validator(spec), dist=dist,
                       log_step=tracker.log_step if tracker else None)
        summary = TrainSummary(checkpoint_dir=str(result.checkpoint_dir), history=result.history, steps=result.steps,
                               samples_seen=result.samples_seen, seconds=result.seconds,
                               resumed_from=result.resumed_from, validation=result.validation,
                               mlflow_run_id=tracker.run_id if tracker else None, data=result.data)
        if tracker is not None:
            tracker.finish(summary, status="FINISHED")
        return summary
    except BaseException:
        if tracker is not None:
            tracker.finish(None, status="FAILED")
        raise
    finally:
        shutdown(dist)
