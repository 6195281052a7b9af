"""The pretraining pipeline (the main job): one sequence of stages shared by Prefect and ``vljepa run``.

corpus → manifest (+ its still-image set) → per phase: data mix → frozen tokens → stage-1 training
(image phase on images, then image + video streamed as a weighted mix) →
evaluation → MLflow tracking → evaluation suite + registration. ``run_pipeline(run, stage=...)``:
``stage(name, fn, io)`` wraps each step (``flows.stage``); every step is content-addressed, so a
re-run with nothing changed reuses each one, and after a failure only the failed step and those
after it run again.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from flows.data import ImportCounts, SplitCache, cache_split_tokens, import_manifest, prepare_corpus
from flows.env import StateLayout
from flows.job import TrainDataSpec, TrainSummary
from flows.phase_data import PhaseData, phase_plan, prepare_stills
from flows.resolve import RunConfig
from flows.stage import StageWrapper, direct
from flows.user_data import DataInfo, detect_source, generated_data, import_data
from vljepa.config import VLJepaConfig
from vljepa.files import content_key

EXPERIMENT = "vljepa-pretrain"


def train_phase(cfg: VLJepaConfig, run: RunConfig, layout: StateLayout, data: PhaseData, name: str) -> TrainSummary:
    """Train one phase on its streamed mix into a content-addressed directory (config + the plan's
    key): a re-run with nothing changed finds the model there and returns its summary instead."""
    from flows.launch import launch

    # Ranks change how a batch is split (and, when it does not divide, the effective batch): part of the key.
    ranks = () if run.nproc == 1 else (f"nproc={run.nproc}",)
    out = layout.models / f"{name}-{content_key(model_key_config(cfg, layout), data.key, *ranks)}"
    found = TrainSummary.load(out)
    if found is not None:
        return found
    spec = TrainDataSpec(db_path=str(layout.manifest), plan=data.plan)
    return launch(cfg, spec, out, launcher=run.launcher, folder=layout.submitit, progress=run.progress,
                  local_tasks=run.nproc).result()


def model_key_config(cfg: VLJepaConfig, layout: StateLayout) -> str:
    """The config as it enters a model's content key. A model it starts from that lives in this state
    dir's ``models/`` is named by its own content key (its directory name), not by its absolute path, so
    the same run in another (or a copied, or moved) state dir finds the same key."""
    init_from = cfg.train.init_from
    if init_from and Path(init_from).parent.resolve() == layout.models.resolve():
        data = cfg.to_dict()
        data["train"]["init_from"] = f"models/{Path(init_from).name}"
        return json.dumps(data, sort_keys=True)
    return cfg.to_json()


@dataclass(frozen=True)
class Evaluation:
    """Retrieval + classification on the test split, next to chance."""

    metrics: dict[str, float]
    chance: dict[str, float]
    n_test: int
    reused: bool = False


def evaluate_checkpoint(checkpoint_dir: str, db_path: Path, test_cache: str, data: DataInfo) -> Evaluation:
    """Retrieval and classification (when the data has labels) of a checkpoint on the held-out test split."""
    from flows.loaders import load_split
    from vljepa.evaluate import evaluate
    from vljepa.checkpoint import load_checkpoint

    model = load_checkpoint(checkpoint_dir)
    result = evaluate(model, load_split(db_path, test_cache, "test", data.dataset),
                      label_set=list(data.labels) if data.labels else None)
    return Evaluation(metrics=result.metrics, chance=result.chance, n_test=result.n_samples)


def evaluate_model(checkpoint_dir: str, db_path: Path, test: SplitCache, data: DataInfo) -> Evaluation:
    """``evaluate_checkpoint``, kept beside the model (keyed by the test cache)."""
    stamp = Path(checkpoint_dir) / "test_metrics.json"
    if stamp.is_file():
        saved = json.loads(stamp.read_text())
        if saved.get("test_cache") == test.cache_key:
            return Evaluation(**saved["evaluation"], reused=True)
    evaluation = evaluate_checkpoint(checkpoint_dir, db_path, test.path, data)
    record = {"metrics": evaluation.metrics, "chance": evaluation.chance, "n_test": evaluation.n_test}
    stamp.write_text(json.dumps({"test_cache": test.cache_key, "evaluation": record}, indent=2))
    return evaluation


@dataclass
class Tracked:
    """The MLflow run of a pretraining run, and what the registry holds for it."""

    run_id: str
    experiment_id: str
    reused: bool = False
    model_version: str | None = None
    model_uri: str | None = None
    champion_version: str | None = None
    promoted: bool = False  # this run moved ``champion`` (never on a re-run that reused everything)
    registry_log: str = ""  # which version and aliases this run touched
    ui_url: str | None = None


def track(run: RunConfig, layout: StateLayout, cfg: VLJepaConfig, summary: TrainSummary, evaluation: Evaluation,
          data: PhaseData, test: SplitCache, source: DataInfo, run_name: str, flow_run_id: str | None) -> Tracked:
    """Log the run to MLflow once per trained model (found again by its ``vljepa.model_key`` tag)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from flows.tracking import log_and_register

    model_key = Path(summary.checkpoint_dir).name
    experiment = run.experiment or EXPERIMENT
    from flows.tracking_store import use_tracking
    use_tracking(layout.tracking_uri)
    existing = mlflow.get_experiment_by_name(experiment)
    if existing is not None:
        found = MlflowClient().search_runs([existing.experiment_id], max_results=1,
                                           filter_string=f"tags.`vljepa.model_key` = '{model_key}'")
        if found:
            return Tracked(run_id=found[0].info.run_id, experiment_id=existing.experiment_id, reused=True)
    tags = {"preset": cfg.preset, "stage": "pretrain", "launcher": run.launcher, "vljepa.model_key": model_key}
    if flow_run_id:
        tags["prefect.flow_run_id"] = flow_run_id
    drawn = summary.data.get("drawn", {})
    extra = {"data.n_train": data.n_samples, "data.n_test": test.n_samples, "data.mix": data.mix,
             "data.plan": data.key, "data.test_cache": test.cache_key,
             **{f"data.drawn.{name}": n for name, n in drawn.items()},
             "data.dataset": source.dataset, "data.tasks_skipped": ",".join(source.skipped) or "none",
             "data.n_import_failed": source.counts.n_failed if source.counts else 0, "train.steps_run": summary.steps,
             "train.samples_seen": summary.samples_seen, "train.seconds": round(summary.seconds, 1)}
    if cfg.train.init_from:
        extra["train.init_from_phase"] = Path(cfg.train.init_from).name
    logged = log_and_register(
        tracking_uri=layout.tracking_uri, experiment=experiment, registered_model=run.registered_model,
        run_name=run_name, cfg=cfg, history=summary.history,
        evaluation={"metrics": evaluation.metrics, "chance": evaluation.chance, "n_test": evaluation.n_test},
        checkpoint_dir=summary.checkpoint_dir, extra_params=extra, tags=tags,
        artifact_root=layout.mlflow_artifacts, register=False)
    return Tracked(run_id=logged["run_id"], experiment_id=logged["experiment_id"])


def evaluate_suite(run: RunConfig, layout: StateLayout, checkpoint_dir: str, test: SplitCache, data: DataInfo,
                   run_id: str, train: SplitCache) -> dict[str, Any]:
    """Every task of the paper on the test split (y-decoder trained here, on the texts and the predictor's
    outputs for ``train``'s clips), logged into the run; the model + decoder is registered as
    ``candidate`` and promoted to ``champion`` if it is better.
    Done once per (model, test data, MLflow run): a re-run returns the saved summary."""
    from flows.evaluate import EvalConfig, run_evaluation

    stamp = Path(f"{checkpoint_dir}-eval") / "pipeline_stamp.json"
    key = content_key(checkpoint_dir, test.cache_key, train.cache_key, run_id, layout.tracking_uri)
    if stamp.is_file():
        saved = json.loads(stamp.read_text())
        if saved.get("key") == key:
            return {**saved["summary"], "reused": True}
    summary = run_evaluation(checkpoint_dir, layout.manifest, test.path, data.corpus_dir, run_id,
                             tracking_uri=layout.tracking_uri, labels=data.labels, skipped=data.skipped,
                             train_cache=train.path,
                             cfg=EvalConfig(registered_model=run.registered_model, tasks=data.tasks,
                                            dataset=data.dataset))
    stamp.write_text(json.dumps({"key": key, "summary": summary}, indent=2, default=str))
    return summary


@dataclass
class PipelineResult:
    """What ``run_pipeline`` returns: the test metrics, the registered model and what was reused."""

    run_name: str
    preset: str
    phases: list[str]
    metrics: dict[str, float]
    chance: dict[str, float]
    suite_metrics: dict[str, float]
    suite_chance: dict[str, float]
    n_test: int
    n_train: int
    dataset: str
    skipped_tasks: dict[str, str]
    train_steps: int
    train_seconds: float
    final_loss: float | None
    checkpoint_dir: str
    mlflow: Tracked
    phase_data: dict[str, dict[str, Any]] = field(default_factory=dict)  # phase -> mix, shares, drawn per component
    reused_caches: list[str] = field(default_factory=list)
    reused_stages: list[str] = field(default_factory=list)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        import dataclasses

        return dataclasses.asdict(self)


def _reused(out: Any) -> bool:
    if isinstance(out, dict):
        return bool(out.get("reused"))
    return bool(getattr(out, "reused", False))


def run_pipeline(run: RunConfig, *, stage: StageWrapper = direct, flow_run_id: str | None = None) -> PipelineResult:
    """The main job. ``run.phase``: None = both stage-1 phases chained; "image" or "video" = that phase alone."""
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

    from flows.resolve import check_model_snapshots

    phases = ("image", "video") if run.phase is None else (run.phase,)
    cfg = run.stage_config("pretrain", phases[-1])
    check_model_snapshots(cfg)  # a config that does not fit its LM snapshot fails now, not in the training job
    layout = run.layout().ensure()
    run_name = f"pretrain-{cfg.preset}-{time.strftime('%Y%m%d-%H%M%S')}"

    if run.data is None:  # the configured corpus (generated by default)
        corpus_dir = stage("prepare-corpus", prepare_corpus, True)(cfg, layout, progress=run.progress)
        counts: ImportCounts = stage("import-manifest", import_manifest, True)(layout.manifest, corpus_dir,
                                                                               generated=cfg.data.generate)
        stills = (stage("prepare-stills", prepare_stills, True)(layout, corpus_dir, progress=run.progress)
                  if cfg.data.generate else None)  # a user corpus: its own sources serve as images
        source = generated_data(corpus_dir, counts, stills)
    else:  # a dataset of the user's own: its own sources serve as images
        source = stage("import-data", import_data, True)(detect_source(run.data, annotations=run.annotations),
                                                         layout.manifest, allow_outside_root=run.allow_outside_root,
                                                         cfg=cfg)
        if run.progress:
            print("\n".join(f"[import-data] {line}" for line in source.summary_lines()), flush=True)
    init_from: str | None = None
    caches: dict[str, SplitCache] = {}
    phase_data: dict[str, dict[str, Any]] = {}
    for phase in phases:
        phase_cfg = run.stage_config("pretrain", phase, init_from=init_from)
        suffix = f"-{phase}" if len(phases) > 1 else ""
        data = stage(f"plan-data{suffix}", phase_plan, True)(phase_cfg, layout, dataset=source.dataset,
                                                              stills_dataset=source.stills_dataset,
                                                              progress=run.progress, engine=run.engine)
        caches.update({f"{where}@{phase}": cache for where, cache in data.caches.items()})
        summary = stage(f"train{suffix}", train_phase, False)(phase_cfg, run, layout, data,
                                                             f"pretrain-{phase}-{cfg.preset}")
        phase_data[phase] = {"mix": data.mix, "n_samples": data.n_samples, "shares": data.plan.shares,
                             "drawn": summary.data.get("drawn", {}), "skipped": summary.data.get("skipped", {})}
        init_from = summary.checkpoint_dir
        cfg = phase_cfg
    test = stage("cache-tokens-test", cache_split_tokens, True)(cfg, layout, "test", progress=run.progress,
                                                                engine=run.engine, dataset=source.dataset)
    caches["test"] = test
    evaluation = stage("evaluate", evaluate_model, False)(summary.checkpoint_dir, layout.manifest, test, source)
    tracked = stage("track", track, True)(run, layout, cfg, summary, evaluation, data, test, source, run_name,
                                          flow_run_id)
    train = caches.get(f"{source.dataset}/train@{phases[-1]}") or cache_split_tokens(
        cfg, layout, "train", progress=run.progress, engine=run.engine, dataset=source.dataset)
    suite = stage("evaluate-and-register", evaluate_suite, False)(run, layout, summary.checkpoint_dir, test,
                                                                  source, tracked.run_id, train)
    registration = suite.get("mlflow", {})
    tracked.model_version = str(registration.get("version"))
    tracked.model_uri = (f"models:/{run.registered_model}@candidate" if registration.get("candidate", True)
                         else f"models:/{run.registered_model}/{tracked.model_version}")
    tracked.champion_version = str(registration.get("champion_version"))
    reused_suite = bool(suite.get("reused"))  # registered by an earlier run: nothing moved now
    tracked.promoted = bool(registration.get("promoted")) and not reused_suite
    tracked.registry_log = ("nothing moved (registered by an earlier run of this model: version "
                            f"{tracked.model_version})" if reused_suite else str(registration.get("registry_log", "")))
    tracked.ui_url = mlflow_run_url(layout.tracking_uri, tracked)
    return PipelineResult(
        run_name=run_name, preset=cfg.preset, phases=list(phases), metrics=evaluation.metrics,
        chance=evaluation.chance, suite_metrics=suite["metrics"], suite_chance=suite["chance"],
        n_test=evaluation.n_test, n_train=data.n_samples, dataset=source.dataset, skipped_tasks=dict(source.skipped),
        train_steps=summary.steps,
        train_seconds=round(summary.seconds, 1), final_loss=summary.final_loss, checkpoint_dir=summary.checkpoint_dir,
        mlflow=tracked, phase_data=phase_data, reused_caches=[s for s, c in caches.items() if c.reused],
        reused_stages=reused,
        stage_seconds=stage_seconds, seconds=round(time.perf_counter() - started, 1))


def mlflow_run_url(tracking_uri: str, tracked: Tracked) -> str | None:
    """The MLflow UI page of a run, when tracking goes to a server (None for a local SQLite file)."""
    if not tracking_uri.startswith("http"):
        return None
    return f"{tracking_uri.rstrip('/')}/#/experiments/{tracked.experiment_id}/runs/{tracked.run_id}"


def format_report(result: PipelineResult) -> str:
    """Human-readable summary: metrics next to chance."""
    m, c = result.metrics, result.chance
    loss = f"{result.final_loss:.3f}" if result.final_loss is not None else "n/a"
    lines = [f"VL-JEPA pretrain ({result.preset}) — {result.run_name} in {result.seconds} s",
             f"  train: {result.n_train} samples (last phase), {result.train_steps} steps, final loss {loss}",
             f"  test ({'held-out compositions' if result.dataset == 'synthetic' else result.dataset}, "
             f"n={result.n_test}):"]
    for key in ("t2v_r1", "t2v_r5", "v2t_r1", "cls_top1", "cls_top5"):
        if key in m:
            chance = f" (chance {c[key]:.3f}, ×{m[key] / c[key]:.1f})" if key in c and c[key] else ""
            lines.append(f"    {key:<9} {m[key]:.3f}{chance}")
    for key in ("captioning/cider", "vqa/accuracy", "hard_negatives/video_accuracy", "world_prediction/accuracy"):
        if key in result.suite_metrics:
            chance = f" (chance {result.suite_chance[key]:.3f})" if key in result.suite_chance else ""
            lines.append(f"    {key:<26} {result.suite_metrics[key]:.3f}{chance}")
    for task, why in result.skipped_tasks.items():
        lines.append(f"    {task}: skipped ({why})")
    for phase, info in result.phase_data.items():
        drawn = ", ".join(f"{name} {n} ({info['shares'].get(name, 0):.0%} share)" for name, n in info["drawn"].items())
        lines.append(f"  phase {phase}: mix {info['mix']}, drew {drawn or 'n/a'}")
    if result.reused_stages:
        lines.append(f"  reused (nothing changed): {', '.join(result.reused_stages)}")
    promoted = " → promoted to champion" if result.mlflow.promoted else ""
    lines.append(f"  registered: {result.mlflow.model_uri} (version {result.mlflow.model_version}){promoted}")
    if result.mlflow.registry_log:
        lines.append(f"  registry: {result.mlflow.registry_log}")
    return "\n".join(lines)
