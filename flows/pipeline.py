"""The pretraining pipeline, one sequence of stages shared by Prefect and the plain CLI.

``run_pipeline(run, stage=...)``: ``stage(name, fn, io)`` wraps each stage function; the
default calls it directly, the Prefect flow wraps it in a task (with retries for I/O stages).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Callable

from flows.stages import (
    RunConfig,
    StageWrapper,
    SplitCache,
    TrainSummary,
    cache_split_tokens,
    content_key,
    direct,
    evaluate_checkpoint,
    import_manifest,
    launch_training,
    prepare_corpus,
)

def train_phase(cfg, run: RunConfig, db_path: Path, cache: SplitCache, name: str) -> TrainSummary:
    """Train one phase into a content-addressed directory (config + training data): a re-run with
    nothing changed finds the model there and returns its summary instead of training again."""
    out = run.state_path() / "models" / f"{name}-{content_key(cfg.to_json(), cache.cache_key)}"
    done = out / "train_summary.json"
    if (out / "model.safetensors").is_file() and done.is_file():
        saved = json.loads(done.read_text())
        return TrainSummary(checkpoint_dir=str(out), history=saved.get("history", []), steps=saved["steps"],
                            samples_seen=saved["samples_seen"], seconds=saved["seconds"], reused=True)
    return launch_training(cfg, run, db_path, cache.path, out)


def evaluate_model(checkpoint_dir: str, db_path: Path, test: SplitCache, corpus_dir: Path) -> dict:
    """Retrieval + classification on the test split, kept beside the model (keyed by the test cache)."""
    stamp = Path(checkpoint_dir) / "test_metrics.json"
    if stamp.is_file():
        saved = json.loads(stamp.read_text())
        if saved.get("test_cache") == test.cache_key:
            return {**saved["evaluation"], "reused": True}
    evaluation = evaluate_checkpoint(checkpoint_dir, db_path, test.path, corpus_dir)
    stamp.write_text(json.dumps({"test_cache": test.cache_key, "evaluation": evaluation}, indent=2))
    return evaluation


def track(run: RunConfig, cfg, summary, evaluation: dict, caches: dict, counts: dict, run_name: str,
          flow_run_id: str | None) -> dict[str, str]:
    """Log the run to MLflow once per trained model (found again by its ``vljepa.model_key`` tag)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from flows.tracking import log_and_register

    model_key = Path(summary.checkpoint_dir).name
    mlflow.set_tracking_uri(run.resolved_tracking_uri())
    experiment = mlflow.get_experiment_by_name(run.experiment)
    if experiment is not None:
        found = MlflowClient().search_runs([experiment.experiment_id], max_results=1,
                                           filter_string=f"tags.`vljepa.model_key` = '{model_key}'")
        if found:
            return {"run_id": found[0].info.run_id, "experiment_id": experiment.experiment_id, "reused": True}
    tags = {"preset": cfg.preset, "stage": "pretrain", "launcher": run.launcher, "vljepa.model_key": model_key}
    if flow_run_id:
        tags["prefect.flow_run_id"] = flow_run_id
    extra = {"data.n_train": caches["train"].n_samples, "data.n_test": caches["test"].n_samples,
             "data.train_cache": caches["train"].cache_key, "data.test_cache": caches["test"].cache_key,
             "data.n_import_failed": counts["n_failed"], "train.steps_run": summary.steps,
             "train.samples_seen": summary.samples_seen, "train.seconds": round(summary.seconds, 1)}
    if cfg.train.init_from:
        extra["train.init_from_phase"] = Path(cfg.train.init_from).name
    return log_and_register(
        tracking_uri=run.resolved_tracking_uri(), experiment=run.experiment,
        registered_model=run.registered_model, run_name=run_name, cfg=cfg, history=summary.history,
        evaluation=evaluation, checkpoint_dir=summary.checkpoint_dir, extra_params=extra, tags=tags,
        artifact_root=run.state_path() / "mlflow" / "artifacts", register=False,
    )


def evaluate_suite(run: RunConfig, checkpoint_dir: str, db_path, test: SplitCache, corpus_dir, run_id: str) -> dict:
    """Every task of the paper on the test split (y-decoder trained here), logged into the run; the
    model + decoder is registered as ``candidate`` and promoted to ``champion`` if it is better.
    Done once per (model, test data, MLflow run): a re-run returns the saved summary."""
    from flows.evaluate import run_evaluation

    stamp = Path(f"{checkpoint_dir}-eval") / "pipeline_stamp.json"
    key = content_key(checkpoint_dir, test.cache_key, run_id, run.resolved_tracking_uri())
    if stamp.is_file():
        saved = json.loads(stamp.read_text())
        if saved.get("key") == key:
            return {**saved["summary"], "reused": True}
    summary = run_evaluation(checkpoint_dir, db_path, test.path, corpus_dir, run_id,
                             tracking_uri=run.resolved_tracking_uri())
    stamp.write_text(json.dumps({"key": key, "summary": summary}, indent=2, default=str))
    return summary


def _reused(out: Any) -> bool:
    if isinstance(out, dict):
        return bool(out.get("reused"))
    return bool(getattr(out, "reused", False))


def run_pipeline(run: RunConfig, *, stage: StageWrapper = direct, flow_run_id: str | None = None) -> dict[str, Any]:
    """corpus → manifest → frozen tokens → stage-1 training (image phase, then image + video) →
    evaluation → MLflow tracking → evaluation suite + registration.

    Every stage is content-addressed: a re-run with nothing changed reuses each one (and says so),
    and after a failure a re-run redoes only the failed stage and those after it.
    ``run.phase``: None = both phases chained; "image" or "video" = that phase alone.
    """
    started = time.perf_counter()
    stage_seconds: dict[str, float] = {}
    reused: list[str] = []
    wrap = stage

    def stage(name: str, fn: Callable[..., Any], io: bool) -> Callable[..., Any]:  # noqa: F811
        inner = wrap(name, fn, io)

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            out = inner(*args, **kwargs)
            stage_seconds[name] = round(time.perf_counter() - t0, 1)
            if _reused(out):
                reused.append(name)
            if run.progress or _reused(out):
                print(f"[{name}] {'reused (content-addressed output exists)' if _reused(out) else 'done'} "
                      f"in {stage_seconds[name]} s", flush=True)
            return out

        return timed

    phases = ("image", "video") if run.phase is None else (run.phase,)
    cfg = run.phase_config(phases[-1])
    state = run.state_path()
    state.mkdir(parents=True, exist_ok=True)
    db_path = state / "manifest.duckdb"
    run_name = f"pretrain-{cfg.preset}-{time.strftime('%Y%m%d-%H%M%S')}"

    corpus_dir = stage("prepare-corpus", prepare_corpus, True)(cfg, state, progress=run.progress)
    counts = stage("import-manifest", import_manifest, True)(db_path, corpus_dir)
    init_from: str | None = None
    for phase in phases:
        phase_cfg = run.phase_config(phase, init_from=init_from)
        suffix = f"-{phase}" if len(phases) > 1 else ""
        splits = ("train", "test") if phase == phases[-1] else ("train",)
        caches = {split: stage(f"cache-tokens-{split}{suffix}", cache_split_tokens, True)(
            phase_cfg, db_path, state, split, progress=run.progress, engine=run.engine) for split in splits}
        summary = stage(f"train{suffix}", train_phase, False)(phase_cfg, run, db_path, caches["train"],
                                                             f"pretrain-{phase}-{cfg.preset}")
        init_from = summary.checkpoint_dir
        cfg = phase_cfg
    evaluation = stage("evaluate", evaluate_model, False)(summary.checkpoint_dir, db_path, caches["test"], corpus_dir)
    tracked = stage("track", track, True)(run, cfg, summary, evaluation, caches, counts, run_name, flow_run_id)
    suite = stage("evaluate-and-register", evaluate_suite, False)(run, summary.checkpoint_dir, db_path,
                                                                  caches["test"], corpus_dir, tracked["run_id"])
    registration = suite.get("mlflow", {})
    tracked = {**tracked, "model_version": str(registration.get("version")),
               "model_uri": f"models:/{run.registered_model}@candidate",
               "champion_version": str(registration.get("champion_version")),
               "promoted": bool(registration.get("promoted")),
               "ui_url": mlflow_run_url(run.resolved_tracking_uri(), tracked)}
    return {
        "run_name": run_name,
        "preset": cfg.preset,
        "phases": list(phases),
        "metrics": evaluation["metrics"],
        "suite_metrics": suite["metrics"],
        "suite_chance": suite["chance"],
        "chance": evaluation["chance"],
        "n_test": evaluation["n_test"],
        "n_train": caches["train"].n_samples,
        "train_steps": summary.steps,
        "train_seconds": round(summary.seconds, 1),
        "final_loss": summary.history[-1]["loss"] if summary.history else None,
        "reused_caches": [s for s, c in caches.items() if c.reused],
        "reused_stages": reused,
        "mlflow": tracked,
        "checkpoint_dir": summary.checkpoint_dir,
        "seconds": round(time.perf_counter() - started, 1),
        "stage_seconds": stage_seconds,
    }


def mlflow_run_url(tracking_uri: str, tracked: dict) -> str | None:
    """The MLflow UI page of a run, when tracking goes to a server (None for a local SQLite file)."""
    if not tracking_uri.startswith("http"):
        return None
    return f"{tracking_uri.rstrip('/')}/#/experiments/{tracked['experiment_id']}/runs/{tracked['run_id']}"


def format_report(result: dict[str, Any]) -> str:
    """Human-readable summary: metrics next to chance."""
    m, c = result["metrics"], result["chance"]
    lines = [f"VL-JEPA pretrain ({result['preset']}) — {result['run_name']} in {result['seconds']} s",
             f"  train: {result['n_train']} clips, {result['train_steps']} steps, final loss {result['final_loss']:.3f}",
             f"  test (held-out compositions, n={result['n_test']}):"]
    for key in ("t2v_r1", "t2v_r5", "v2t_r1", "cls_top1", "cls_top5"):
        if key in m:
            chance = f" (chance {c[key]:.3f}, ×{m[key] / c[key]:.1f})" if key in c and c[key] else ""
            lines.append(f"    {key:<9} {m[key]:.3f}{chance}")
    suite, suite_chance = result.get("suite_metrics", {}), result.get("suite_chance", {})
    for key in ("captioning/cider", "vqa/accuracy", "hard_negatives/video_accuracy", "world_prediction/accuracy"):
        if key in suite:
            chance = f" (chance {suite_chance[key]:.3f})" if key in suite_chance else ""
            lines.append(f"    {key:<26} {suite[key]:.3f}{chance}")
    if result.get("reused_stages"):
        lines.append(f"  reused (nothing changed): {', '.join(result['reused_stages'])}")
    promoted = " → promoted to champion" if result["mlflow"].get("promoted") else ""
    lines.append(f"  registered: {result['mlflow']['model_uri']} (version {result['mlflow']['model_version']}){promoted}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vljepa run", description=(
        "Run the pretraining pipeline in this process (no Prefect server needed): generate the "
        "procedural corpus, cache frozen x-encoder tokens, train predictor + y-encoder, evaluate on "
        "the held-out test split and register the model in MLflow."))
    parser.add_argument("--preset", default="small", choices=["paper", "small", "tiny"])
    parser.add_argument("--config", default=None, help="a VLJepaConfig JSON file (start from `vljepa config --preset paper`); overrides --preset")
    parser.add_argument("--n-videos", type=int, default=None, help="corpus size (default: the preset's)")
    parser.add_argument("--epochs", type=float, default=None, help="training epochs (default: the preset's)")
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--launcher", default="local", choices=["inline", "local"],
                        help="inline: train in this process; local: a submitit subprocess (default)")
    parser.add_argument("--engine", default="local", choices=["local", "ray"],
                        help="preprocessing engine: local threads, or a Ray Data pipeline (RAY_ADDRESS for a cluster)")
    parser.add_argument("--state-dir", default=None, help="default: $VLJEPA_STATE_DIR or <repo>/.vljepa")
    parser.add_argument("--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI or SQLite in the state dir")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    run = RunConfig(preset=args.preset, config_path=args.config, n_videos=args.n_videos, epochs=args.epochs, max_steps=args.max_steps,
                    launcher=args.launcher, engine=args.engine, state_dir=args.state_dir, tracking_uri=args.tracking_uri)
    result = run_pipeline(run)
    print(json.dumps(result, indent=2) if args.json else format_report(result))
    return 0
