"""The VL-JEPA vs token-VLM table and figure, from the MLflow runs of ``flows.compare``.

``collect(uri)`` exports the newest comparison in experiment ``vljepa-compare`` (one run per
model and seed, curves logged with step = samples seen) to the record ``CompareResult.record()``
gives; ``markdown(record)`` and ``plot(record)`` turn it into the README's table (mean ± sd over
seeds at each number of samples seen) and figure (both models' curves with ±1 sd bands).
``python -m flows.ablate overview`` writes them beside the ablations'.
"""

from __future__ import annotations

from pathlib import Path

from vljepa.ablation_stats import spread

EXPERIMENT = "vljepa-compare"
MODELS = ("vl-jepa", "token-vlm")
CURVE_METRICS = ("captioning/cider", "classification/top1", "classification/top5")


def collect(tracking_uri: str) -> dict | None:
    """The newest comparison's runs (those of its ``compare.key``) as a record; None without one."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        return None
    runs = [r for r in client.search_runs([experiment.experiment_id], "tags.`compare.seed` != ''",
                                          order_by=["attributes.start_time DESC"], max_results=1000)]
    if not runs:
        return None
    key = runs[0].data.tags["compare.key"]
    runs = [r for r in runs if r.data.tags.get("compare.key") == key]
    record: dict = {"key": key, "points": [], "seeds": sorted({int(r.data.tags["compare.seed"]) for r in runs}),
                    "layers": {}, "curves": {m: {} for m in MODELS}, "cost": {}, "params": {}}
    for r in runs:
        model, seed = r.data.tags["compare.model"], r.data.tags["compare.seed"]
        record["layers"][model] = int(r.data.params["lm_layers"])
        record["params"][model] = {"trainable": int(r.data.params["params.trainable"])}
        histories = {k: client.get_metric_history(r.info.run_id, k) for k in CURVE_METRICS}
        steps = sorted({m.step for m in histories["captioning/cider"]})
        record["curves"][model][seed] = [{"samples_seen": s, **{k: next(m.value for m in histories[k] if m.step == s)
                                                                for k in CURVE_METRICS}} for s in steps]
        cost = {k.removeprefix("cost/"): v for k, v in r.data.metrics.items() if k.startswith("cost/")}
        if cost:
            record["cost"][model] = cost
    record["curves"] = {m: dict(sorted(c.items(), key=lambda kv: int(kv[0]))) for m, c in record["curves"].items()}
    return record


def band(record: dict, model: str, key: str) -> list[tuple[int, float, float, int]]:
    """Per number of samples seen: (samples, mean, sd, seeds) of one model's metric over its seeds."""
    by_samples: dict[int, list[float]] = {}
    for rows in record["curves"][model].values():
        for row in rows:
            by_samples.setdefault(int(row["samples_seen"]), []).append(row[key])
    out = []
    for samples, values in sorted(by_samples.items()):
        s = spread(values)
        out.append((samples, s.mean, s.sd, s.n))
    return out


def markdown(record: dict) -> str:
    """Mean ± sd over seeds at each number of samples seen; then cost and parameters."""
    n = len(record["seeds"])
    lines = ["| samples seen | VL-JEPA CIDEr | VLM CIDEr | VL-JEPA top-5 | VLM top-5 |", "|---|---|---|---|---|"]
    cols = [band(record, m, k) for k in ("captioning/cider", "classification/top5") for m in MODELS]
    for i, (samples, *_rest) in enumerate(cols[0]):
        cells = []
        for k in range(0, 4, 2):
            (_, a, sa, _), (_, b, sb, _) = cols[k][i], cols[k + 1][i]
            cells += [f"**{a:.3f}** ± {sa:.3f}" if a > b else f"{a:.3f} ± {sa:.3f}",
                      f"**{b:.3f}** ± {sb:.3f}" if b > a else f"{b:.3f} ± {sb:.3f}"]
        lines.append(f"| {samples:,} | " + " | ".join(cells) + " |")
    lines += ["", f"Mean ± sd over {n} seeds (seeds {record['seeds']}); bold: the higher mean."]
    c, p, layers = record["cost"], record["params"], record["layers"]
    if c:
        ratio = c["vl-jepa"]["seconds_per_caption"] / c["token-vlm"]["seconds_per_caption"]
        lines += ["", "| per caption (CPU, one clip at a time; first seed's models) | VL-JEPA | VLM |", "|---|---|---|",
                  f"| LM forward passes | {c['vl-jepa']['predictor_passes_per_caption']:.1f} predictor + "
                  f"{c['vl-jepa']['decoder_passes_per_caption']:.1f} y-decoder | "
                  f"{c['token-vlm']['decoder_passes_per_caption']:.1f} |",
                  f"| wall time (from cached tokens) | {1000 * c['vl-jepa']['seconds_per_caption']:.0f} ms | "
                  f"{1000 * c['token-vlm']['seconds_per_caption']:.0f} ms (VL-JEPA / VLM = {ratio:.2f}) |"]
    lines.append(f"| LM layers trained; trainable parameters | {layers['vl-jepa']} (predictor); "
                 f"{p['vl-jepa']['trainable'] / 1e6:.1f}M | {layers['token-vlm']}; "
                 f"{p['token-vlm']['trainable'] / 1e6:.1f}M |")
    return "\n".join(lines)


def plot(record: dict, path: Path, title: str) -> Path:
    """The paper's Fig. 3 layout: CIDEr and top-5 vs samples seen (log axis), mean with ±1 sd bands."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), dpi=110)
    style = {"vl-jepa": ("tab:blue", "o", "VL-JEPA (embedding prediction)"),
             "token-vlm": ("tab:red", "s", "VLM (token prediction)")}
    for ax, (key, label) in zip(axes, (("captioning/cider", "captioning CIDEr"),
                                       ("classification/top5", "classification top-5 accuracy"))):
        for model in MODELS:
            colour, marker, legend = style[model]
            rows = band(record, model, key)
            x = [r[0] for r in rows]
            mean = [r[1] for r in rows]
            sd = [r[2] for r in rows]
            ax.plot(x, mean, marker=marker, color=colour, label=f"{legend}, {record['layers'][model]} LM layers")
            ax.fill_between(x, [m - s for m, s in zip(mean, sd)], [m + s for m, s in zip(mean, sd)], color=colour,
                            alpha=0.18, linewidth=0)
        ax.set_xscale("log")
        seen = [r[0] for r in band(record, "vl-jepa", key)]
        ax.set_xticks(seen, [f"{n:,}" for n in seen])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_xlabel("samples seen (log)")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{title}; mean ± 1 sd over {len(record['seeds'])} seeds", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
