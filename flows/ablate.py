"""Prefect flow ``ablate`` (deployments ``ablate/<sweep>``): the paper's ablations on its own protocol.

``run_sweep(...)`` is the in-process entry point. For one sweep of ``vljepa.ablations``: prepare
the SFT-stage data mix and the test split once (content-addressed, shared with ``sft/full``),
and the stage-1 BASE model where a variant starts from it (the main job's, reused when present);
train every (variant, seed) with the protocol's constant lr and fixed sample budget (local jobs one
after another, or one Slurm job array); evaluate each on the held-out test split
(classification, retrieval, VQA: the paper's three columns); log one MLflow run per (variant,
seed) into experiment ``vljepa-ablate-<sweep>`` tagged ``ablation.axis`` / ``ablation.variant`` /
``ablation.seed``; then a summary run with the table (mean ± sd, Δ with its 95 % interval from the
paired seeds, the paper's Δ, the verdict) and the figure. Trained models are content-addressed
(config + data): a (variant, seed) that another sweep already trained is reused, not retrained,
and each run is logged once per sweep.

``python -m flows.ablate overview`` (= ``vljepa ablate overview``) rebuilds every table and the
figure from the MLflow runs (``flows.ablate_report``).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flows.ablate_report import EXPERIMENT_PREFIX
from flows.data import SplitCache, cache_split_tokens, import_manifest, prepare_corpus
from flows.job import TrainDataSpec
from flows.phase_data import PhaseData, phase_plan, prepare_stills
from flows.resolve import RunConfig
from flows.stage import StageWrapper, direct
from vljepa.ablations import PROTOCOLS, Protocol, Sweep, Variant, protocol_config, sweeps, variant_config
from vljepa.config import VLJepaConfig, replace
from vljepa.files import content_key

SWEEP_NAMES = ("pretraining", "y-lr", "loss", "predictor", "y-encoder")


@dataclass
class RunResult:
    """One trained (variant, seed)."""

    variant: str
    seed: int
    key: str
    checkpoint_dir: str
    metrics: dict[str, float]
    train: dict[str, Any]
    reused: bool
    eval_seconds: float = 0.0
    mlflow_run_id: str | None = None


@dataclass
class SweepResult:
    sweep: str
    axis: str
    runs: list[RunResult] = field(default_factory=list)
    markdown: str = ""
    out_dir: str = ""
    summary_run_id: str | None = None
    compare_url: str | None = None

    def record(self, sweep: Sweep, protocol: Protocol) -> dict:
        """This sweep as ``flows.ablate_report`` reads it (the same shape as its MLflow export)."""
        order = [v.name for v in sweep.variants]
        return {"axis": self.axis, "default": sweep.default.name, "order": order, "note": sweep.note,
                "protocol": protocol.record(),
                "runs": [{"variant": r.variant, "seed": r.seed, "key": r.key, "metrics": r.metrics,
                          "seconds": float(r.train.get("seconds") or 0.0), "eval_seconds": r.eval_seconds,
                          "run_id": r.mlflow_run_id}
                         for r in self.runs]}


@dataclass(frozen=True)
class ProtocolData:
    """What every variant of a sweep trains and is tested on."""

    db_path: Path
    corpus_dir: Path
    sft: PhaseData
    test: SplitCache
    base_dir: str | None  # the stage-1 BASE model, where a variant starts from it

    def spec(self) -> TrainDataSpec:
        return TrainDataSpec(db_path=str(self.db_path), plan=self.sft.plan, corpus_dir=str(self.corpus_dir))


def ensure_base(run: RunConfig, stills: str | None) -> str:
    """The stage-1 BASE model (phase image, then video), exactly as the main job trains it: the same
    content address, so the main job's model is reused when the state dir holds it."""
    from flows.pipeline import train_phase

    layout, init_from = run.layout(), None
    for phase in ("image", "video"):
        cfg = run.stage_config("pretrain", phase, init_from=init_from)
        data = phase_plan(cfg, layout, stills_dataset=stills, progress=run.progress, engine=run.engine)
        init_from = train_phase(cfg, run, layout, data, f"pretrain-{phase}-{cfg.preset}").checkpoint_dir
    assert init_from is not None
    return init_from


def prepare_protocol(run: RunConfig, *, need_base: bool) -> ProtocolData:
    """The SFT-stage mix, the test split's tokens, and (``need_base``) the BASE model."""
    cfg = run.stage_config("sft")
    layout = run.layout().ensure()
    corpus_dir = prepare_corpus(cfg, layout, progress=run.progress)
    import_manifest(layout.manifest, corpus_dir, generated=cfg.data.generate)
    stills = prepare_stills(layout, corpus_dir, progress=run.progress) if cfg.data.generate else None
    sft = phase_plan(cfg, layout, stills_dataset=stills, progress=run.progress, engine=run.engine)
    test = cache_split_tokens(cfg, layout, "test", progress=run.progress, engine=run.engine)
    base = ensure_base(run, stills) if need_base else None
    return ProtocolData(db_path=layout.manifest, corpus_dir=corpus_dir, sft=sft, test=test, base_dir=base)


def run_config_of(sft: VLJepaConfig, sweep: Sweep, variant: Variant, protocol: Protocol, seed: int,
                  base_dir: str | None, inits: Path) -> VLJepaConfig:
    """One (variant, seed)'s training config: the sweep's setting, the variant's change, the protocol,
    and where it starts (``init_checkpoint``)."""
    cfg = protocol_config(variant_config(sft, variant, sweep), protocol, seed)
    if variant.from_base:
        if base_dir is None:
            raise ValueError(f"variant {variant.name!r} starts from the BASE model: prepare it (need_base=True)")
        cfg = replace(cfg, **{"train.init_from": init_checkpoint(cfg, base_dir, inits)})
    return cfg


def init_checkpoint(cfg: VLJepaConfig, base_dir: str, inits: Path) -> str:
    """Where a variant that starts from BASE starts: BASE itself when the variant's model is BASE's
    architecture; else a checkpoint of the variant's own model (built with its seed) that takes from
    BASE every tensor whose role the variant keeps (same name and shape; not the predictor's layers
    when the variant takes other LM layers or random ones, not the text encoder when it is another),
    written once under ``inits/<key>`` with ``init.json`` saying what came from where."""
    import torch
    from safetensors.torch import load_file, save_file

    from vljepa.model import build_model

    base_cfg = VLJepaConfig.from_json((Path(base_dir) / "config.json").read_text())
    p, bp = cfg.predictor, base_cfg.predictor
    skip = []
    if (p.num_layers, p.layer_offset_from_top, p.pretrained) != (bp.num_layers, bp.layer_offset_from_top, bp.pretrained):
        skip.append("predictor.layers.")
    if (cfg.y_encoder.name, cfg.y_encoder.path) != (base_cfg.y_encoder.name, base_cfg.y_encoder.path):
        skip.append("y_encoder.")

    def arch(c: VLJepaConfig) -> tuple:  # what the weights' names and shapes depend on
        return (dataclasses.replace(c.predictor, attention="bidirectional"), c.x_encoder, c.shared_dim,
                dataclasses.replace(c.y_encoder, lr_multiplier=0.0))

    if not skip and arch(cfg) == arch(base_cfg):
        return base_dir  # the same model: start from BASE itself
    out = inits / content_key(cfg.to_json(), base_dir)
    if (out / "model.safetensors").is_file():
        return str(out)
    base = load_file(str(Path(base_dir) / "model.safetensors"))
    torch.manual_seed(cfg.train.seed)
    own = build_model(cfg).state_dict()
    taken = [k for k, t in own.items() if k in base and base[k].shape == t.shape and not k.startswith(tuple(skip))]
    if len(taken) == len(own) == len(base):
        return base_dir  # the same model: start from BASE itself
    state = {k: (base[k] if k in taken else t).detach().cpu().contiguous() for k, t in own.items()}
    tmp = out.with_name(out.name + ".partial")  # written whole, then renamed: a killed run leaves no half init
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(state, str(tmp / "model.safetensors"))
    (tmp / "config.json").write_text(cfg.to_json())
    own_init = sorted({".".join(k.split(".")[:2]) for k in own if k not in taken})
    (tmp / "init.json").write_text(json.dumps({"base": base_dir, "from_base": len(taken), "own_init": own_init,
                                               "base_unused": sorted({".".join(k.split(".")[:2]) for k in base
                                                                      if k not in own or k not in taken})}, indent=2))
    tmp.rename(out)
    return str(out)


def evaluate_variant(checkpoint_dir: str, data: ProtocolData) -> dict[str, float]:
    """The paper's ablation columns on the test split: classification, retrieval, VQA (+ top-5, v2t)."""
    from flows.loaders import load_task_data, load_vocabulary
    from vljepa.checkpoint import load_checkpoint
    from vljepa.evaluate import evaluate
    from vljepa.tasks import vqa

    model = load_checkpoint(checkpoint_dir)
    labels, _ = load_vocabulary(data.corpus_dir)
    task_data = load_task_data(data.db_path, data.test.path, "test", num_frames=model.cfg.x_encoder.num_frames)
    basic = evaluate(model, task_data.dataset(), label_set=labels).metrics
    return {"classification/top1": basic["cls_top1"], "classification/top5": basic["cls_top5"],
            "retrieval/t2v_r1": basic["t2v_r1"], "retrieval/v2t_r1": basic["v2t_r1"],
            "vqa/accuracy": vqa.run(model, task_data).metrics["accuracy"]}


def train_runs(todo: list[tuple[str, VLJepaConfig, Path]], data: ProtocolData, *, launcher: str, folder: Path,
               progress: bool) -> None:
    """Train each (label, config, out_dir): one job after another, or all as one Slurm job array."""
    from flows.launch import launch, launch_array

    spec = data.spec()
    if launcher == "slurm" and todo:
        for job in launch_array([(cfg, spec, out) for _, cfg, out in todo], folder=folder):
            job.result()
        return
    for i, (label, cfg, out) in enumerate(todo):
        print(f"[ablate] training {label} ({i + 1}/{len(todo)}) -> {out}", flush=True)
        launch(cfg, spec, out, launcher=launcher, folder=folder, progress=progress).result()  # type: ignore[arg-type]


def run_sweep(sweep_name: str, run: RunConfig, *, variants: list[str] | None = None,
              y_encoder_paths: dict[str, str] | None = None, protocol: Protocol | None = None,
              flow_run_id: str | None = None, log_to_mlflow: bool = True, stage: StageWrapper = direct) -> SweepResult:
    """Train (every seed), evaluate and log every variant of one sweep; write and log the summary.

    ``protocol``: default ``PROTOCOLS[preset]``. ``stage(name, fn, io)`` wraps each step (the Prefect
    flow makes them tasks, I/O with retries).
    """
    sft = run.stage_config("sft")
    all_sweeps = sweeps(sft, y_encoder_paths=y_encoder_paths)
    if sweep_name not in all_sweeps:
        raise KeyError(f"unknown sweep {sweep_name!r} for preset {sft.preset!r}; choose one of {sorted(all_sweeps)}")
    sweep = all_sweeps[sweep_name].select(variants)
    protocol = protocol or PROTOCOLS[sft.preset]
    layout = run.layout()
    data = stage("prepare-data", prepare_protocol, True)(run, need_base=any(v.from_base for v in sweep.variants))
    planned = []
    for variant in sweep.variants:
        for seed in protocol.seeds:
            cfg = run_config_of(sft, sweep, variant, protocol, seed, data.base_dir, layout.ablations / "inits")
            key = content_key(cfg.to_json(), data.sft.key)
            # Addressed by content alone: a (variant, seed) shared by several sweeps trains once.
            planned.append((variant, seed, cfg, layout.ablations / "models" / key, key))
    done = {key for *_, out, key in planned if (out / "model.safetensors").is_file()}
    todo = [(f"{v.name!r} seed {s}", c, out) for v, s, c, out, k in planned if k not in done]
    if done:
        print(f"[ablate] reusing {len(done)} trained model(s) of {len({k for *_, k in planned})}", flush=True)
    stage("train-variants", train_runs, False)(todo, data, launcher=run.launcher, folder=layout.submitit,
                                               progress=run.progress)
    result = stage("evaluate-variants", evaluate_runs, False)(sweep, planned, data, done)
    root = layout.ablations / sweep.name
    stage("write-summary", write_summary, True)(sweep, protocol, result, root)
    if log_to_mlflow:
        stage("log-to-mlflow", log_sweep, True)(sweep, protocol, result, run, flow_run_id=flow_run_id)
    return result


def evaluate_runs(sweep: Sweep, planned: list, data: ProtocolData, reused: set[str]) -> SweepResult:
    """Metrics of every (variant, seed), cached beside each model and keyed by the test cache."""
    result = SweepResult(sweep=sweep.name, axis=sweep.axis)
    for variant, seed, _, out, key in planned:
        metrics_file = out / "ablation_metrics.json"
        cached = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
        if cached.get("test_cache") != data.test.cache_key:
            t0 = time.perf_counter()
            metrics = evaluate_variant(str(out), data)
            cached = {"test_cache": data.test.cache_key, "metrics": metrics, "seconds": time.perf_counter() - t0}
            metrics_file.write_text(json.dumps(cached, indent=2))
        summary = json.loads((out / "train_summary.json").read_text())
        result.runs.append(RunResult(variant=variant.name, seed=seed, key=key, checkpoint_dir=str(out),
                                     metrics=cached["metrics"], train=summary, reused=key in reused,
                                     eval_seconds=float(cached.get("seconds", 0.0))))
    return result


def write_summary(sweep: Sweep, protocol: Protocol, result: SweepResult, root: Path) -> None:
    """``summary.md`` / ``.json`` / ``.png`` of this sweep, by the same code as the overview."""
    from flows.ablate_report import figure, sweep_markdown

    root.mkdir(parents=True, exist_ok=True)
    record = result.record(sweep, protocol)
    result.markdown = sweep_markdown(sweep.name, record)
    result.out_dir = str(root)
    (root / "summary.md").write_text(result.markdown + "\n")
    (root / "summary.json").write_text(json.dumps({"sweep": sweep.name, **record}, indent=2))
    figure({sweep.name: record}, root / "summary.png")


def log_sweep(sweep: Sweep, protocol: Protocol, result: SweepResult, run: RunConfig, *,
              flow_run_id: str | None) -> None:
    """One MLflow run per (variant, seed) (once per sweep and trained model: found again by its key)
    and a summary run with the table and the figure."""
    import mlflow
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    from flows.tracking import ensure_experiment, flatten
    from flows.tracking_store import use_tracking

    layout = run.layout()
    use_tracking(layout.tracking_uri)
    experiment_id = ensure_experiment(EXPERIMENT_PREFIX + sweep.name, layout.artifact_root)
    client = MlflowClient()
    base_tags = {"ablation.sweep": sweep.name, "ablation.axis": sweep.axis,
                 "ablation.protocol": f"sft-constant-{protocol.samples}x{protocol.batch_size}"}
    if flow_run_id:
        base_tags["prefect.flow_run_id"] = flow_run_id
    order = [v.name for v in sweep.variants]
    for r in result.runs:
        found = client.search_runs([experiment_id], max_results=1, filter_string=f"tags.`ablation.key` = '{r.key}' "
                                   f"and tags.`ablation.variant` = '{r.variant}'")
        if found:
            r.mlflow_run_id = found[0].info.run_id
            continue
        cfg = VLJepaConfig.from_json((Path(r.checkpoint_dir) / "config.json").read_text())
        tags = {**base_tags, "ablation.variant": r.variant, "ablation.seed": str(r.seed), "ablation.key": r.key,
                "ablation.order": str(order.index(r.variant)), "ablation.reused": str(r.reused).lower(),
                "ablation.default": str(r.variant == sweep.default.name).lower(), "ablation.note": sweep.note,
                "ablation.samples": str(protocol.samples), "ablation.batch_size": str(protocol.batch_size),
                "preset": cfg.preset}
        with mlflow.start_run(experiment_id=experiment_id, run_name=f"{sweep.name}={r.variant} seed {r.seed}",
                              tags=tags) as active:
            mlflow.log_params(flatten("", cfg.to_dict(), {}))
            mlflow.log_metrics({k: float(x) for k, x in r.metrics.items()})
            mlflow.log_metrics({"train/final_loss": float(r.train.get("final_loss") or 0.0),
                                "train/seconds": float(r.train.get("seconds") or 0.0),
                                "eval/seconds": r.eval_seconds})
            now = int(time.time() * 1000)
            batch = [Metric(key="train/loss", value=float(h["loss"]), timestamp=now, step=i)
                     for i, h in enumerate(r.train.get("history", []))]
            for start in range(0, len(batch), 900):
                client.log_batch(active.info.run_id, metrics=batch[start:start + 900])
            r.mlflow_run_id = active.info.run_id
    out = Path(result.out_dir)
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"{sweep.name}: summary",
                          tags={**base_tags, "ablation.summary": "true"}) as active:
        for name in ("summary.md", "summary.json", "summary.png"):
            mlflow.log_artifact(str(out / name))
        result.summary_run_id = active.info.run_id
    uri = layout.tracking_uri
    if uri.startswith("http"):
        ids = json.dumps([r.mlflow_run_id for r in result.runs]).replace(" ", "")
        result.compare_url = f"{uri.rstrip('/')}/#/compare-runs?runs={ids}&experiments=[\"{experiment_id}\"]"


if __name__ == "__main__":  # python -m flows.ablate overview [...]: the tables and figure from MLflow
    from flows.ablate_report import main

    if sys.argv[1:2] != ["overview"]:
        sys.exit("python -m flows.ablate overview [--state-dir DIR] [--tracking-uri URI] [--out DIR]; "
                 "to run a sweep: vljepa ablate SWEEP (or prefect deployment run ablate/SWEEP)")
    sys.exit(main(sys.argv[2:]))
