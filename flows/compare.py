"""VL-JEPA vs a token-generating VLM, trained alike (paper §4.2, Fig. 3): ``run_compare(...)``.

Both models read the same cached x-encoder tokens of the same clips, in the same batch order,
with the same batch size, schedule and number of samples, and differ in the objective: embedding
prediction (InfoNCE) vs next-token cross-entropy. With the paper's parameter ratio: its VLM trains
the whole 16-layer Llama-3.2-1B while VL-JEPA's predictor is its upper 8 layers, so the VLM here
takes twice the predictor's LM layers (the top ``2n``, the predictor's ``n`` among them; the
ablations' stand-in for the paper's LM, ``vljepa.ablations``). Each seed (data order, head init)
trains both; both are snapshotted at log-spaced samples seen (over more than a decade) and
evaluated on the held-out test split:

- captioning CIDEr: VL-JEPA decodes its predicted embedding with the y-decoder (trained once, on
  the final model's y-encoder, and used for every snapshot); the VLM generates greedily. Both
  decode greedily with the same cut vocabulary mechanism.
- classification top-5: VL-JEPA picks the label text nearest the prediction; the VLM the label
  text of lowest perplexity (the paper's protocols).

Inference cost per caption is measured side by side on the same clips, one caption at a time:
forward passes of the LM layers (counted by a hook on the first layer of each network) and wall
time, both from the cached tokens (the frozen x-encoder is the same for both and left out).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from flows.data import PreparedData, prepare_data
from flows.loaders import load_split
from flows.resolve import RunConfig
from flows.stage import StageWrapper, direct
from vljepa.files import content_key

EXPERIMENT = "vljepa-compare"


@dataclass
class CompareResult:
    points: list[int]  # optimiser steps of the snapshots
    seeds: list[int] = field(default_factory=list)
    layers: dict[str, int] = field(default_factory=dict)  # model -> LM layers it trains
    curves: dict[str, dict[str, list[dict[str, float]]]] = field(default_factory=dict)  # model -> seed -> rows
    cost: dict[str, dict[str, float]] = field(default_factory=dict)  # measured on the first seed's models
    params: dict[str, dict[str, int]] = field(default_factory=dict)
    out_dir: str = ""
    markdown: str = ""
    mlflow_run_ids: dict[str, str] = field(default_factory=dict)  # "<model>/<seed>" -> run id

    def record(self) -> dict:
        """The shape ``flows.compare_report`` reads (and exports from MLflow)."""
        return {"points": self.points, "seeds": self.seeds, "layers": self.layers, "curves": self.curves,
                "cost": self.cost, "params": self.params}


def snapshot_steps(total: int, points: int) -> list[int]:
    """``points`` log-spaced optimiser steps ending at ``total`` (distinct, ≥ 1)."""
    first = max(1, total // 2 ** (points - 1))
    return sorted({int(round(x)) for x in np.geomspace(first, total, points)})


def train_vljepa(cfg, run: RunConfig, data: PreparedData, out: Path) -> dict:
    """VL-JEPA with snapshots (content-addressed: an existing model is reused)."""
    from flows.launch import launch

    if not (out / "model.safetensors").is_file():
        launch(cfg, data.spec(), out, launcher=run.launcher, folder=run.layout().submitit,  # type: ignore[arg-type]
               progress=run.progress).result()
    return json.loads((out / "train_summary.json").read_text())


def train_baseline(cfg, vlm_cfg, data: PreparedData, out: Path, steps: list[int], progress: bool) -> dict:
    """The token VLM on the same data, batches and schedule (in this process; reused if present)."""
    from vljepa.baselines import train_token_vlm

    if not (out / "train_summary.json").is_file():
        train_token_vlm(cfg, vlm_cfg, load_split(data.db_path, data.caches["train"].path, "train"), out,
                        snapshot_steps=tuple(steps), progress=progress)
    return json.loads((out / "train_summary.json").read_text())


def evaluate_snapshots(vljepa_dir: Path, vlm_dir: Path, data: PreparedData, steps: list[int], batch_size: int) -> dict:
    """Captioning CIDEr and classification top-1/top-5 at every snapshot of both models."""
    from flows.evaluate import EvalConfig, ensure_decoder
    from flows.loaders import load_task_data, load_vocabulary
    from vljepa.baselines import evaluate_token_vlm, load_token_vlm
    from vljepa.evaluate import evaluate
    from vljepa.tasks import captioning
    from vljepa.checkpoint import load_checkpoint

    final = load_checkpoint(vljepa_dir)
    labels, _ = load_vocabulary(data.corpus_dir)
    test = load_task_data(data.db_path, data.caches["test"].path, "test", num_frames=final.cfg.x_encoder.num_frames)
    decoder, _ = ensure_decoder(final, vljepa_dir, data.db_path, vljepa_dir.parent / f"{vljepa_dir.name}-eval",
                                EvalConfig(register=False), data.caches["train"].path)
    curves: dict[str, list[dict[str, float]]] = {"vl-jepa": [], "token-vlm": []}
    for step in steps:
        snap = vljepa_dir / "snapshots" / f"step-{step:06d}"
        model = load_checkpoint(snap)
        seen = json.loads((snap / "train_summary.json").read_text())["samples_seen"]
        cls = evaluate(model, test.dataset(), label_set=labels).metrics
        cider = captioning.run(model, decoder, test, num_beams=1).metrics["cider"]
        curves["vl-jepa"].append({"step": step, "samples_seen": seen, "captioning/cider": cider,
                                  "classification/top1": cls["cls_top1"], "classification/top5": cls["cls_top5"]})
        vsnap = vlm_dir / "snapshots" / f"step-{step:06d}"
        vlm_metrics = evaluate_token_vlm(load_token_vlm(vsnap), test, labels, batch_size=batch_size)
        vseen = json.loads((vsnap / "snapshot.json").read_text())["samples_seen"]
        curves["token-vlm"].append({"step": step, "samples_seen": vseen,
                                    **{k: v for k, v in vlm_metrics.items() if not k.startswith("cost/")}})
        print(f"[compare] step {step} ({seen} samples): VL-JEPA CIDEr {cider:.3f} top-5 {cls['cls_top5']:.3f} | "
              f"VLM CIDEr {vlm_metrics['captioning/cider']:.3f} top-5 {vlm_metrics['classification/top5']:.3f}",
              flush=True)
    return curves


class _PassCounter:
    """Counts forward calls of a module (the first LM layer: one call = one pass of the network)."""

    def __init__(self, module) -> None:
        self.n = 0
        self.handle = module.register_forward_hook(self._hook)

    def _hook(self, *_: Any) -> None:
        self.n += 1


def inference_cost(vljepa_dir: Path, vlm_dir: Path, data: PreparedData, *, n_clips: int = 16, repeats: int = 2) -> dict:
    """Per caption, one clip at a time, interleaved: LM forward passes and wall seconds of each model."""
    import torch

    from flows.evaluate import EvalConfig, ensure_decoder
    from vljepa.baselines import load_token_vlm
    from vljepa.tasks.common import predict, training_query
    from vljepa.checkpoint import load_checkpoint

    model = load_checkpoint(vljepa_dir)
    decoder, _ = ensure_decoder(model, vljepa_dir, data.db_path, vljepa_dir.parent / f"{vljepa_dir.name}-eval",
                                EvalConfig(register=False), data.caches["train"].path)
    vlm = load_token_vlm(vlm_dir).eval()
    tokens = load_split(data.db_path, data.caches["test"].path, "test")
    index = np.arange(min(n_clips, len(tokens)))
    query = training_query(model)
    counters = {"predictor": _PassCounter(model.predictor.layers[0]), "y-decoder": _PassCounter(decoder.lm.layers[0]),
                "token-vlm": _PassCounter(vlm.layers[0])}
    seconds = {"vl-jepa": 0.0, "token-vlm": 0.0}
    with torch.no_grad():
        for _ in range(repeats):
            for i in index:
                visual = tokens.visual(np.array([i]))  # (1, N, D)
                t0 = time.perf_counter()
                embedding = predict(model, visual, [query] if query else None)
                decoder.generate(embedding, num_beams=1)
                seconds["vl-jepa"] += time.perf_counter() - t0
                t0 = time.perf_counter()
                vlm.generate(visual, [query] if query else None)
                seconds["token-vlm"] += time.perf_counter() - t0
    for counter in counters.values():
        counter.handle.remove()
    n = repeats * len(index)
    return {
        "vl-jepa": {"predictor_passes_per_caption": counters["predictor"].n / n,
                    "decoder_passes_per_caption": counters["y-decoder"].n / n,
                    "seconds_per_caption": seconds["vl-jepa"] / n},
        "token-vlm": {"decoder_passes_per_caption": counters["token-vlm"].n / n,
                      "seconds_per_caption": seconds["token-vlm"] / n},
        "n_captions": n,
    }


def markdown(result: CompareResult) -> str:
    from flows.compare_report import markdown as table

    return table(result.record())


def model_params(vljepa_dir: Path, vlm_dir: Path) -> dict[str, dict[str, int]]:
    from vljepa.baselines import load_token_vlm
    from vljepa.model import count
    from vljepa.checkpoint import load_checkpoint

    out = {}
    for name, model in (("vl-jepa", load_checkpoint(vljepa_dir)), ("token-vlm", load_token_vlm(vlm_dir))):
        c = count(model)
        out[name] = {"trainable": c.trainable, "frozen": c.total - c.trainable}
    return out


def log_compare(result: CompareResult, run: RunConfig, cfgs: dict[str, object], key: str,
                flow_run_id: str | None) -> dict[str, str]:
    """One MLflow run per (model, seed): curves logged with step = samples seen (MLflow plots them
    against samples), tags ``compare.model`` / ``compare.seed`` / ``compare.key`` for the compare view
    and for ``flows.compare_report.collect``; the figure and table in each."""
    import mlflow

    from flows.tracking import ensure_experiment, flatten
    from flows.tracking_store import use_tracking

    layout = run.layout()
    use_tracking(layout.tracking_uri)
    experiment_id = ensure_experiment(EXPERIMENT, layout.artifact_root)
    out = Path(result.out_dir)
    ids = {}
    for name, by_seed in result.curves.items():
        for seed, rows in by_seed.items():
            cfg = cfgs[seed]
            tags = {"compare.model": name, "compare.seed": seed, "compare.key": key, "preset": cfg.preset}  # type: ignore[attr-defined]
            if flow_run_id:
                tags["prefect.flow_run_id"] = flow_run_id
            with mlflow.start_run(experiment_id=experiment_id, run_name=f"compare: {name} seed {seed}",
                                  tags=tags) as active:
                mlflow.log_params({**flatten("", cfg.to_dict(), {}), "model": name,  # type: ignore[attr-defined]
                                   "lm_layers": result.layers[name], "params.trainable": result.params[name]["trainable"]})
                for row in rows:
                    mlflow.log_metrics({k: float(v) for k, v in row.items() if k not in ("step", "samples_seen")},
                                       step=int(row["samples_seen"]))
                mlflow.log_metrics({f"final/{k}": float(v) for k, v in rows[-1].items() if k != "step"})
                if seed == str(result.seeds[0]):
                    mlflow.log_metrics({f"cost/{k}": float(v) for k, v in result.cost[name].items()})
                for artifact in ("compare.png", "compare.md", "compare.json"):
                    mlflow.log_artifact(str(out / artifact))
                ids[f"{name}/{seed}"] = active.info.run_id
    return ids


def run_compare(run: RunConfig, *, points: int = 5, seeds: tuple[int, ...] = (0, 1, 2), vlm_layers: int | None = None,
                vlm_vocab: str = "cut", eval_batch_size: int = 64, cost_clips: int = 16, flow_run_id: str | None = None,
                log_to_mlflow: bool = True, stage: StageWrapper = direct) -> CompareResult:
    """Train VL-JEPA and the token VLM alike with each seed, evaluate both at log-spaced samples
    seen, plot (mean ± sd bands), log. ``vlm_layers``: LM layers of the VLM, default twice the
    predictor's (the paper's ratio)."""
    import dataclasses

    from flows.compare_report import plot
    from vljepa.baselines import TokenVLMConfig
    from vljepa.config import replace
    from vljepa.schedule import total_steps

    base = run.model_config()
    layout = run.layout()
    data = stage("prepare-data", prepare_data, True)(base, layout, progress=run.progress, engine=run.engine)
    steps = snapshot_steps(total_steps(base, data.caches["train"].n_samples), points)
    n_layers = base.predictor.num_layers
    vlm_cfg = TokenVLMConfig(vocab=vlm_vocab, num_layers=vlm_layers or min(2 * n_layers, base.predictor.lm.num_hidden_layers))  # type: ignore[arg-type]
    cfgs = {str(s): replace(base, **{"train.snapshot_steps": tuple(steps), "train.seed": s}) for s in seeds}
    key = content_key(*[c.to_json() for c in cfgs.values()], vlm_cfg.to_json(), data.caches["train"].cache_key)
    root = layout.compare / key
    root.mkdir(parents=True, exist_ok=True)
    result = CompareResult(points=steps, seeds=list(seeds), out_dir=str(root),
                           layers={"vl-jepa": n_layers, "token-vlm": int(vlm_cfg.num_layers or n_layers)},
                           curves={"vl-jepa": {}, "token-vlm": {}})
    for seed, cfg in cfgs.items():
        seed_root = root / f"seed-{seed}"
        vljepa_dir, vlm_dir = seed_root / "vl-jepa", seed_root / "token-vlm"
        stage(f"train-vl-jepa-{seed}", train_vljepa, False)(cfg, run, data, vljepa_dir)
        stage(f"train-token-vlm-{seed}", train_baseline, False)(cfg, vlm_cfg, data, vlm_dir, steps, run.progress)
        curves = stage(f"evaluate-snapshots-{seed}", evaluate_snapshots, False)(vljepa_dir, vlm_dir, data, steps,
                                                                                eval_batch_size)
        for model in curves:
            result.curves[model][seed] = curves[model]
        if not result.cost:  # the cost per caption does not depend on the seed: measured once
            result.cost = stage("inference-cost", inference_cost, False)(vljepa_dir, vlm_dir, data, n_clips=cost_clips)
            result.params = model_params(vljepa_dir, vlm_dir)
    result.markdown = markdown(result)
    plot(result.record(), root / "compare.png",
         f"{base.preset} preset: same x-encoder tokens, data, batch {base.train.batch_size} and schedule")
    (root / "compare.md").write_text(result.markdown + "\n")
    (root / "compare.json").write_text(json.dumps({k: v for k, v in dataclasses.asdict(result).items()}, indent=2))
    if log_to_mlflow:
        result.mlflow_run_ids = stage("log-to-mlflow", log_compare, True)(result, run, cfgs, key, flow_run_id)
    return result
