"""Prefect flow ``ablate`` (deployments ``ablate/<sweep>``): the paper's ablation sweeps as MLflow runs.

``run_sweep(...)`` is the in-process entry point. For one sweep of ``vljepa.ablations``: prepare
the data once (content-addressed, shared with ``pretrain/full``), train every variant (a local
submitit job each, one after the other, or all at once as a Slurm job array), evaluate each on the
held-out test split (classification, retrieval, VQA: the paper's three ablation columns), log one
MLflow run per variant into experiment ``vljepa-ablate-<sweep>`` tagged ``ablation.axis`` /
``ablation.variant``, then a summary run with the table (Δ in points against the default, next to
the paper's Δ) and a bar plot. Variants whose trained model and metrics already exist (same
config, same cached data) are reused, not retrained, and not logged twice.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flows.data import PreparedData, prepare_data
from flows.env import StateLayout
from flows.resolve import RunConfig
from flows.stage import StageWrapper, direct
from vljepa.files import content_key
from vljepa.ablations import (METRICS, Sweep, Variant, agreement, deltas, paper_delta, summary_markdown, sweeps,
                              variant_config)
from vljepa.config import VLJepaConfig

EXPERIMENT_PREFIX = "vljepa-ablate-"
SWEEP_NAMES = ("loss", "loss-trainable", "y-lr", "depth", "attention", "init", "y-encoder")
@dataclass
class VariantResult:
    variant: str
    key: str
    checkpoint_dir: str
    metrics: dict[str, float]
    train: dict[str, Any]
    reused: bool
    mlflow_run_id: str | None = None


@dataclass
class SweepResult:
    sweep: str
    axis: str
    variants: list[VariantResult] = field(default_factory=list)
    markdown: str = ""
    agreement: dict[str, dict[str, str]] = field(default_factory=dict)
    out_dir: str = ""
    summary_run_id: str | None = None
    compare_url: str | None = None

    def metrics(self) -> dict[str, dict[str, float]]:
        return {v.variant: v.metrics for v in self.variants}


def variant_key(cfg: VLJepaConfig, data: PreparedData) -> str:
    """Content address of a variant's trained model: its whole config and the training data."""
    return content_key(cfg.to_json() + data.caches["train"].cache_key)


def evaluate_variant(checkpoint_dir: str, data: PreparedData) -> dict[str, float]:
    """The paper's ablation columns on the test split: classification, retrieval, VQA (+ top-5)."""
    from flows.loaders import load_task_data, load_vocabulary
    from vljepa.evaluate import evaluate
    from vljepa.tasks import vqa
    from vljepa.checkpoint import load_checkpoint

    model = load_checkpoint(checkpoint_dir)
    labels, _ = load_vocabulary(data.corpus_dir)
    task_data = load_task_data(data.db_path, data.caches["test"].path, "test", num_frames=model.cfg.x_encoder.num_frames)
    basic = evaluate(model, task_data.dataset(), label_set=labels).metrics
    return {"classification/top1": basic["cls_top1"], "classification/top5": basic["cls_top5"],
            "retrieval/t2v_r1": basic["t2v_r1"], "retrieval/v2t_r1": basic["v2t_r1"],
            "vqa/accuracy": vqa.run(model, task_data).metrics["accuracy"]}


def train_variants(todo: list[tuple[Variant, VLJepaConfig, Path]], data: PreparedData, *, launcher: str,
                   folder: Path, progress: bool) -> None:
    """Train each (variant, config, out_dir): one local job after another, or a Slurm job array."""
    from flows.launch import launch, launch_array

    spec = data.spec()
    if launcher == "slurm" and todo:
        for job in launch_array([(cfg, spec, out) for _, cfg, out in todo], folder=folder):
            job.result()
        return
    for i, (variant, cfg, out) in enumerate(todo):
        print(f"[ablate] training variant {variant.name!r} ({i + 1}/{len(todo)}) -> {out}", flush=True)
        launch(cfg, spec, out, launcher=launcher, folder=folder, progress=progress).result()  # type: ignore[arg-type]


def run_sweep(sweep_name: str, run: RunConfig, *, variants: list[str] | None = None,
              y_encoder_paths: dict[str, str] | None = None, flow_run_id: str | None = None,
              log_to_mlflow: bool = True, stage: StageWrapper = direct) -> SweepResult:
    """Train, evaluate and log every variant of one sweep; write and log the summary.

    ``stage(name, fn, io)`` wraps each step (the Prefect flow makes them tasks, I/O with retries).
    """
    base = run.model_config()
    all_sweeps = sweeps(base, y_encoder_paths=y_encoder_paths)
    if sweep_name not in all_sweeps:
        raise KeyError(f"unknown sweep {sweep_name!r} for preset {base.preset!r}; choose one of {sorted(all_sweeps)}")
    sweep = all_sweeps[sweep_name].select(variants)
    layout = run.layout()
    data = stage("prepare-data", prepare_data, True)(base, layout, progress=run.progress, engine=run.engine)
    root = layout.ablations / sweep.name
    root.mkdir(parents=True, exist_ok=True)
    planned = []
    for variant in sweep.variants:
        cfg = variant_config(base, variant, sweep)
        key = variant_key(cfg, data)
        # Models are addressed by content alone, so the default (in every sweep) trains once.
        planned.append((variant, cfg, layout.ablations / "models" / key, key))
    todo = [(v, c, out) for v, c, out, _ in planned if not (out / "model.safetensors").is_file()]
    reused = {v.name for v, _, out, _ in planned if (out / "model.safetensors").is_file()}
    if reused:
        print(f"[ablate] reusing trained variants {sorted(reused)}", flush=True)
    stage("train-variants", train_variants, False)(todo, data, launcher=run.launcher,
                                                   folder=layout.submitit, progress=run.progress)
    result = stage("evaluate-variants", evaluate_variants, False)(sweep, planned, data, reused, str(root))
    if log_to_mlflow:
        stage("log-to-mlflow", log_sweep, True)(sweep, result, run, flow_run_id=flow_run_id)
    return result


def evaluate_variants(sweep: Sweep, planned: list, data: PreparedData, reused: set[str], root: str) -> SweepResult:
    """Metrics of every variant (cached beside each model, keyed by the test cache) + the summary files."""
    out_root = Path(root)
    result = SweepResult(sweep=sweep.name, axis=sweep.axis, out_dir=root)
    for variant, _, out, key in planned:
        metrics_file = out / "ablation_metrics.json"
        cached = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
        if cached.get("test_cache") != data.caches["test"].cache_key:
            cached = {"test_cache": data.caches["test"].cache_key, "metrics": evaluate_variant(str(out), data)}
            metrics_file.write_text(json.dumps(cached, indent=2))
        summary = json.loads((out / "train_summary.json").read_text())
        result.variants.append(VariantResult(variant=variant.name, key=key, checkpoint_dir=str(out),
                                             metrics=cached["metrics"], train=summary, reused=variant.name in reused))
    results = result.metrics()
    result.markdown = summary_markdown(sweep, results)
    result.agreement = agreement(sweep, results)
    (out_root / "summary.md").write_text(result.markdown + "\n")
    (out_root / "summary.json").write_text(json.dumps(
        {"sweep": sweep.name, "axis": sweep.axis, "default": sweep.default.name, "metrics": results,
         "delta_points": deltas(results, sweep.default.name), "agreement": result.agreement,
         "variants": {v.variant: {"key": v.key, "checkpoint_dir": v.checkpoint_dir, "reused": v.reused,
                                  "train_seconds": v.train.get("seconds"), "final_loss": v.train.get("final_loss")}
                      for v in result.variants}}, indent=2))
    bar_plot(sweep, results, out_root / "summary.png")
    return result


def bar_plot(sweep: Sweep, results: dict[str, dict[str, float]], path: Path) -> Path:
    """Grouped bars: Δ points vs the default, per metric (groups) and variant (bars)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    d = deltas(results, sweep.default.name)
    others = [v.name for v in sweep.variants if not v.default and v.name in d]
    fig, ax = plt.subplots(figsize=(7.5, 4), dpi=110)
    x = np.arange(len(METRICS))
    width = 0.8 / max(len(others), 1)
    for i, name in enumerate(others):
        values = [d[name].get(key, 0.0) for key, _ in METRICS]
        bars = ax.bar(x + (i - (len(others) - 1) / 2) * width, values, width, label=name)
        ax.bar_label(bars, fmt="%+.1f", fontsize=7, padding=2)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(x, [col for _, col in METRICS])
    ax.set_ylabel(f"Δ points vs {sweep.default.name}")
    ax.set_title(f"Ablation '{sweep.name}' ({sweep.axis}); default {sweep.default.name}")
    if others:
        ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def log_sweep(sweep: Sweep, result: SweepResult, run: RunConfig, *, flow_run_id: str | None) -> None:
    """One MLflow run per variant (once per trained model: found again by its key) + a summary run."""
    import mlflow
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    from flows.tracking import ensure_experiment, flatten

    layout = run.layout()
    uri = layout.tracking_uri
    from flows.tracking_store import use_tracking
    use_tracking(uri)
    experiment_id = ensure_experiment(EXPERIMENT_PREFIX + sweep.name, layout.artifact_root)
    client = MlflowClient()
    base_tags = {"ablation.sweep": sweep.name, "ablation.axis": sweep.axis}
    if flow_run_id:
        base_tags["prefect.flow_run_id"] = flow_run_id
    run_ids = []
    for v in result.variants:
        found = client.search_runs([experiment_id], filter_string=f"tags.`ablation.key` = '{v.key}'", max_results=1)
        if found:
            v.mlflow_run_id = found[0].info.run_id
            run_ids.append(v.mlflow_run_id)
            continue
        cfg = VLJepaConfig.from_json((Path(v.checkpoint_dir) / "config.json").read_text())
        tags = {**base_tags, "ablation.variant": v.variant, "ablation.key": v.key,
                "ablation.default": str(v.variant == sweep.default.name).lower(), "preset": cfg.preset}
        with mlflow.start_run(experiment_id=experiment_id, run_name=f"{sweep.name}={v.variant}", tags=tags) as active:
            mlflow.log_params(flatten("", cfg.to_dict(), {}))
            mlflow.log_metrics({k: float(x) for k, x in v.metrics.items()})
            mlflow.log_metrics({"train/final_loss": float(v.train.get("final_loss") or 0.0),
                                "train/seconds": float(v.train.get("seconds") or 0.0)})
            history = v.train.get("history", [])
            now = int(time.time() * 1000)
            batch = [Metric(key="train/loss", value=float(h["loss"]), timestamp=now, step=i) for i, h in enumerate(history)]
            for start in range(0, len(batch), 900):
                client.log_batch(active.info.run_id, metrics=batch[start:start + 900])
            v.mlflow_run_id = active.info.run_id
        run_ids.append(v.mlflow_run_id)
    out = Path(result.out_dir)
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"{sweep.name}: summary",
                          tags={**base_tags, "ablation.summary": "true"}) as active:
        for name in ("summary.md", "summary.json", "summary.png"):
            mlflow.log_artifact(str(out / name))
        for v in result.variants:
            for key, value in v.metrics.items():
                mlflow.log_metric(f"{v.variant}/{key}", float(value))
        result.summary_run_id = active.info.run_id
    if uri.startswith("http"):
        ids = json.dumps(run_ids).replace(" ", "")
        result.compare_url = f"{uri.rstrip('/')}/#/compare-runs?runs={ids}&experiments=[\"{experiment_id}\"]"


def overview(layout: StateLayout, path: Path, preset: str = "small") -> tuple[Path, str]:
    """Every finished sweep's Δ against the paper's Δ for the matching row, one point per (variant,
    metric): points in the upper-right and lower-left quadrants agree in direction. Also returns
    the sweeps' tables as one markdown document."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    defined = sweeps(RunConfig(preset=preset).model_config())
    fig, ax = plt.subplots(figsize=(6.5, 5.5), dpi=110)
    tables = []
    markers = dict(zip(METRICS, ("o", "s", "^")))
    for i, name in enumerate(SWEEP_NAMES):
        summary_file = layout.ablations / name / "summary.json"
        if name not in defined or not summary_file.is_file():
            continue
        summary = json.loads(summary_file.read_text())
        sweep = defined[name]
        tables.append(summary_markdown(sweep, summary["metrics"]))
        colour, plotted = f"C{i}", False
        for v in sweep.variants:
            paper = paper_delta(sweep, v)
            if v.default or paper is None or v.name not in summary["delta_points"]:
                continue
            for (key, col), theirs in zip(METRICS, paper[1]):
                ours = summary["delta_points"][v.name][key]
                ax.scatter(theirs, ours, color=colour, marker=markers[(key, col)], s=36)
                plotted = True
                ax.annotate(f"{name}:{v.name}", (theirs, ours), fontsize=6, alpha=0.7, xytext=(3, 2),
                            textcoords="offset points")
        if plotted:
            ax.scatter([], [], color=colour, marker="o", label=name)
    for (key, col), marker in markers.items():
        ax.scatter([], [], color="grey", marker=marker, label=col)
    ax.axhline(0, color="black", linewidth=0.7)
    ax.axvline(0, color="black", linewidth=0.7)
    ax.set_xlabel("paper: Δ points vs its default (Table 4)")
    ax.set_ylabel("ours: Δ points vs the default (small preset)")
    ax.set_title("Ablations: same direction = upper-right / lower-left")
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path, "\n\n".join(tables)
