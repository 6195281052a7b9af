"""VL-JEPA vs a token-generating VLM, trained alike (paper §4.2, Fig. 3): ``run_compare(...)``.

Both models read the same cached x-encoder tokens of the same clips, in the same batch order,
with the same batch size, schedule and number of samples; they share the LM layers (the
predictor's) and differ only in the objective: embedding prediction (InfoNCE) vs next-token
cross-entropy. Both are snapshotted at a log-spaced set of samples seen and evaluated on the
held-out test split:

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
    curves: dict[str, list[dict[str, float]]] = field(default_factory=dict)  # model -> rows per snapshot
    cost: dict[str, dict[str, float]] = field(default_factory=dict)
    params: dict[str, dict[str, int]] = field(default_factory=dict)
    out_dir: str = ""
    markdown: str = ""
    mlflow_run_ids: dict[str, str] = field(default_factory=dict)


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
                                EvalConfig(register=False))
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
                                EvalConfig(register=False))
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


def plot(curves: dict[str, list[dict[str, float]]], cost: dict, path: Path, title: str) -> Path:
    """The paper's Fig. 3 layout: CIDEr and top-5 vs samples seen for both models, cost on the right."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), dpi=110, gridspec_kw={"width_ratios": [1, 1, 0.8]})
    style = {"vl-jepa": ("tab:blue", "o", "VL-JEPA (embedding prediction)"),
             "token-vlm": ("tab:red", "s", "VLM (token prediction)")}
    for ax, (key, label) in zip(axes[:2], (("captioning/cider", "captioning CIDEr"),
                                           ("classification/top5", "classification top-5 accuracy"))):
        for name, rows in curves.items():
            colour, marker, legend = style[name]
            ax.plot([r["samples_seen"] for r in rows], [r[key] for r in rows], marker=marker, color=colour, label=legend)
        ax.set_xscale("log")
        seen = [int(r["samples_seen"]) for r in next(iter(curves.values()))]
        ax.set_xticks(seen, [str(n) for n in seen])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_xlabel("samples seen")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    names = ["vl-jepa", "token-vlm"]
    ms = [1000 * cost[n]["seconds_per_caption"] for n in names]
    passes = [cost["vl-jepa"]["predictor_passes_per_caption"] + cost["vl-jepa"]["decoder_passes_per_caption"],
              cost["token-vlm"]["decoder_passes_per_caption"]]
    bars = axes[2].bar(["VL-JEPA\n(predictor + y-decoder)", "VLM"], ms, color=[style[n][0] for n in names])
    axes[2].bar_label(bars, labels=[f"{m:.0f} ms, {p:.1f} passes" for m, p in zip(ms, passes)], fontsize=8)
    axes[2].set_title("inference per caption (CPU)")
    axes[2].set_ylabel("ms")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def markdown(result: CompareResult) -> str:
    lines = ["| samples seen | VL-JEPA CIDEr | VLM CIDEr | VL-JEPA top-5 | VLM top-5 |", "|---|---|---|---|---|"]
    for a, b in zip(result.curves["vl-jepa"], result.curves["token-vlm"]):
        lines.append(f"| {int(a['samples_seen'])} | {a['captioning/cider']:.3f} | {b['captioning/cider']:.3f} | "
                     f"{a['classification/top5']:.3f} | {b['classification/top5']:.3f} |")
    c, p = result.cost, result.params
    lines += ["", "| per caption (CPU, one at a time) | VL-JEPA | VLM |", "|---|---|---|",
              f"| LM forward passes | {c['vl-jepa']['predictor_passes_per_caption']:.1f} predictor + "
              f"{c['vl-jepa']['decoder_passes_per_caption']:.1f} y-decoder | {c['token-vlm']['decoder_passes_per_caption']:.1f} |",
              f"| wall time | {1000 * c['vl-jepa']['seconds_per_caption']:.1f} ms | {1000 * c['token-vlm']['seconds_per_caption']:.1f} ms |",
              f"| trainable parameters | {p['vl-jepa']['trainable'] / 1e6:.1f}M | {p['token-vlm']['trainable'] / 1e6:.1f}M |"]
    return "\n".join(lines)


def model_params(vljepa_dir: Path, vlm_dir: Path) -> dict[str, dict[str, int]]:
    from vljepa.baselines import load_token_vlm
    from vljepa.model import count
    from vljepa.checkpoint import load_checkpoint

    out = {}
    for name, model in (("vl-jepa", load_checkpoint(vljepa_dir)), ("token-vlm", load_token_vlm(vlm_dir))):
        c = count(model)
        out[name] = {"trainable": c.trainable, "frozen": c.total - c.trainable}
    return out


def log_compare(result: CompareResult, run: RunConfig, cfg, flow_run_id: str | None) -> dict[str, str]:
    """One MLflow run per model (curves logged with step = samples seen, so MLflow plots them
    against samples) and the figure + table in both; tagged for the compare view."""
    import mlflow

    from flows.tracking import ensure_experiment, flatten

    layout = run.layout()
    from flows.tracking_store import use_tracking
    use_tracking(layout.tracking_uri)
    experiment_id = ensure_experiment(EXPERIMENT, layout.artifact_root)
    out = Path(result.out_dir)
    ids = {}
    for name, rows in result.curves.items():
        tags = {"compare.model": name, "preset": cfg.preset}
        if flow_run_id:
            tags["prefect.flow_run_id"] = flow_run_id
        with mlflow.start_run(experiment_id=experiment_id, run_name=f"compare: {name}", tags=tags) as active:
            mlflow.log_params({**flatten("", cfg.to_dict(), {}), "model": name,
                               "params.trainable": result.params[name]["trainable"]})
            for row in rows:
                mlflow.log_metrics({k: float(v) for k, v in row.items() if k not in ("step", "samples_seen")},
                                   step=int(row["samples_seen"]))
            mlflow.log_metrics({f"final/{k}": float(v) for k, v in rows[-1].items() if k not in ("step",)})
            mlflow.log_metrics({f"cost/{k}": float(v) for k, v in result.cost[name].items()})
            for artifact in ("compare.png", "compare.md", "compare.json"):
                mlflow.log_artifact(str(out / artifact))
            ids[name] = active.info.run_id
    return ids


def run_compare(run: RunConfig, *, points: int = 5, vlm_vocab: str = "cut", eval_batch_size: int = 64,
                cost_clips: int = 16, flow_run_id: str | None = None, log_to_mlflow: bool = True,
                stage: StageWrapper = direct) -> CompareResult:
    """Train VL-JEPA and the token VLM alike, evaluate both at log-spaced samples seen, plot, log."""
    import dataclasses

    from vljepa.baselines import TokenVLMConfig
    from vljepa.config import replace
    from vljepa.schedule import total_steps

    base = run.model_config()
    layout = run.layout()
    data = stage("prepare-data", prepare_data, True)(base, layout, progress=run.progress, engine=run.engine)
    steps = snapshot_steps(total_steps(base, data.caches["train"].n_samples), points)
    cfg = replace(base, **{"train.snapshot_steps": tuple(steps)})
    vlm_cfg = TokenVLMConfig(vocab=vlm_vocab)  # type: ignore[arg-type]
    key = content_key(cfg.to_json(), vlm_cfg.to_json(), data.caches["train"].cache_key)
    root = layout.compare / key
    root.mkdir(parents=True, exist_ok=True)
    vljepa_dir, vlm_dir = root / "vl-jepa", root / "token-vlm"
    stage("train-vl-jepa", train_vljepa, False)(cfg, run, data, vljepa_dir)
    stage("train-token-vlm", train_baseline, False)(cfg, vlm_cfg, data, vlm_dir, steps, run.progress)
    result = CompareResult(points=steps, out_dir=str(root))
    result.curves = stage("evaluate-snapshots", evaluate_snapshots, False)(vljepa_dir, vlm_dir, data, steps, eval_batch_size)
    result.cost = stage("inference-cost", inference_cost, False)(vljepa_dir, vlm_dir, data, n_clips=cost_clips)
    result.params = model_params(vljepa_dir, vlm_dir)
    result.markdown = markdown(result)
    plot(result.curves, result.cost, root / "compare.png",
         f"{cfg.preset} preset: same x-encoder tokens, LM layers, data, batch {cfg.train.batch_size} and schedule")
    (root / "compare.md").write_text(result.markdown + "\n")
    (root / "compare.json").write_text(json.dumps({k: v for k, v in dataclasses.asdict(result).items()}, indent=2))
    if log_to_mlflow:
        result.mlflow_run_ids = stage("log-to-mlflow", log_compare, True)(result, run, cfg, flow_run_id)
    return result
