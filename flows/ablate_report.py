"""The ablation tables and figure, from the MLflow runs of ``flows.ablate``.

    python -m flows.ablate overview [--state-dir DIR] [--tracking-uri URI] [--out DIR]
    vljepa ablate overview ...                       # the same

``collect(uri)`` exports every ``vljepa-ablate-<sweep>`` run (tags: sweep, variant, seed; metrics)
to one JSON record; ``markdown(record)`` and ``figure(record)`` turn it into the README's tables
and figure, so the committed export (``docs/results/ablations/overview.json``) regenerates them
(``python -m bench.report``) and a test checks that the README equals what it prints.
Statistics: ``vljepa.ablation_stats`` (mean ± sd over seeds, paired Δ with a 95 % interval, verdict).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vljepa.ablation_stats import paired_delta, spread, verdict
from vljepa.ablations import METRICS, PAPER, Protocol

EXPERIMENT_PREFIX = "vljepa-ablate-"
SWEEP_ORDER = ("pretraining", "y-lr", "loss", "predictor", "y-encoder")
SHORT = {"reproduced": "**yes**", "reproduced (both flat)": "**yes** (flat)", "inside the noise": "noise",
         "not reproduced": "**no**", "not reproduced (paper flat)": "**no** (paper flat)", "one seed": "one seed"}


def collect(tracking_uri: str) -> dict:
    """Every ablation run in the store, grouped by sweep: {"sweeps": {name: record}} (``SweepResult.record``'s shape)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    sweeps: dict[str, dict] = {}
    for experiment in client.search_experiments(filter_string=f"name LIKE '{EXPERIMENT_PREFIX}%'"):
        name = experiment.name.removeprefix(EXPERIMENT_PREFIX)
        runs = [r for r in client.search_runs([experiment.experiment_id], "tags.`ablation.variant` != ''",
                                              max_results=5000) if "ablation.seed" in r.data.tags]
        if not runs:
            continue
        tags = [r.data.tags for r in runs]
        order = sorted({(int(t["ablation.order"]), t["ablation.variant"]) for t in tags})
        default = {t["ablation.variant"] for t in tags if t["ablation.default"] == "true"}
        if len(default) != 1:
            raise ValueError(f"experiment {experiment.name}: {len(default)} default variants among its runs")
        first = tags[0]
        sweeps[name] = {
            "axis": first["ablation.axis"], "default": default.pop(), "order": [v for _, v in order],
            "note": first.get("ablation.note", ""),
            "protocol": Protocol(samples=int(first["ablation.samples"]), batch_size=int(first["ablation.batch_size"]),
                                 seeds=tuple(sorted({int(t["ablation.seed"]) for t in tags}))).record(),
            "runs": sorted(({"variant": r.data.tags["ablation.variant"], "seed": int(r.data.tags["ablation.seed"]),
                             "key": r.data.tags["ablation.key"], "run_id": r.info.run_id,
                             "metrics": {k: r.data.metrics[k] for k, _ in METRICS if k in r.data.metrics},
                             "seconds": r.data.metrics.get("train/seconds", 0.0),
                             "eval_seconds": r.data.metrics.get("eval/seconds", 0.0)} for r in runs),
                            key=lambda x: (x["variant"], x["seed"])),
        }
    return {"sweeps": {n: sweeps[n] for n in sorted(sweeps, key=_sweep_rank)}}


def _sweep_rank(name: str) -> tuple[int, str]:
    return (SWEEP_ORDER.index(name) if name in SWEEP_ORDER else len(SWEEP_ORDER), name)


def _by_seed(record: dict, variant: str, key: str) -> dict[int, float]:
    return {r["seed"]: r["metrics"][key] for r in record["runs"] if r["variant"] == variant and key in r["metrics"]}


def rows(name: str, record: dict) -> list[dict]:
    """Per variant (in the sweep's order): mean ± sd per metric, Δ with interval, paper Δ, verdicts."""
    out = []
    for variant in record["order"]:
        if not any(r["variant"] == variant for r in record["runs"]):
            continue
        paper = PAPER.get(name, {}).get(variant)
        row: dict = {"variant": variant, "default": variant == record["default"], "paper": paper, "cells": []}
        for i, (key, col) in enumerate(METRICS):
            values = _by_seed(record, variant, key)
            cell: dict = {"metric": col, "spread": spread([100 * v for v in values.values()]) if values else None}
            if not row["default"] and values:
                cell["delta"] = paired_delta(values, _by_seed(record, record["default"], key))
                cell["verdict"] = verdict(paper[i], cell["delta"]) if paper is not None else None
            row["cells"].append(cell)
        out.append(row)
    return out


def _pt(x: float) -> str:
    return f"{round(x, 1) + 0.0:+.1f}"  # + 0.0: no "-0.0"


def _interval(d) -> str:
    return _pt(d.mean) if d.low is None else f"{_pt(d.mean)} [{_pt(d.low)}, {_pt(d.high)}]"


def sweep_markdown(name: str, record: dict) -> str:
    """One sweep's table: mean ± sd (n seeds), Δ [95 % interval] vs the default, the paper's Δ, verdicts."""
    seeds = record["protocol"]["seeds"]
    lines = [f"#### Ablation `{name}` ({record['axis']}; {len(seeds)} seeds)", "",
             "| variant | classification | retrieval | VQA | paper Δ (cls, ret, VQA) | reproduced? (cls, ret, VQA) |",
             "|---|---|---|---|---|---|"]
    for row in rows(name, record):
        cells = []
        for cell in row["cells"]:
            s = cell["spread"]
            text = "–" if s is None else f"{s.mean:.1f} ± {s.sd:.1f}"
            if "delta" in cell:
                text += f" ({_interval(cell['delta'])})"
            cells.append(text)
        paper = row["paper"]
        paper_cell = "default" if row["default"] and paper is not None else (
            "–" if paper is None else ", ".join(f"{x:+.1f}" for x in paper))
        verdicts = [c.get("verdict") for c in row["cells"]]
        verdict_cell = "–" if row["default"] or paper is None else " / ".join(SHORT[v] for v in verdicts if v)
        label = f"{row['variant']} (default)" if row["default"] else row["variant"]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {paper_cell} | {verdict_cell} |")
    if record.get("note"):
        lines += ["", record["note"]]
    return "\n".join(lines)


def paragraphs(name: str, record: dict) -> list[str]:
    """A line per non-default row: the paper's Δ, ours with its interval, the verdict, per metric."""
    out = []
    for row in rows(name, record):
        if row["default"]:
            continue
        parts = []
        for i, cell in enumerate(row["cells"]):
            if "delta" not in cell:
                continue
            theirs = f"paper {row['paper'][i]:+.1f}, " if row["paper"] is not None else ""
            judged = f": {cell['verdict']}" if cell.get("verdict") else ""
            parts.append(f"{cell['metric']} {theirs}ours {_interval(cell['delta'])}{judged}")
        out.append(f"- `{name}` **{row['variant']}**: " + "; ".join(parts) + ".")
    return out


def cpu_time(export: dict) -> tuple[float, int, int]:
    """(seconds of training + evaluation over distinct trained models, distinct models, runs logged)."""
    seen: dict[str, float] = {}
    logged = 0
    for record in export["sweeps"].values():
        for r in record["runs"]:
            logged += 1
            seen[r["key"]] = r["seconds"] + r.get("eval_seconds", 0.0)
    return sum(seen.values()), len(seen), logged


def markdown(export: dict) -> str:
    """Every sweep's table and lines, the protocol, and the CPU time (the README's block)."""
    seconds, models, logged = cpu_time(export)
    protocols = {json.dumps(r["protocol"], sort_keys=True) for r in export["sweeps"].values()}
    lines = []
    for p in map(json.loads, sorted(protocols)):
        lines.append(f"Protocol: {p['data']}, constant lr, {p['samples']:,} samples per variant "
                     f"({p['samples'] // p['batch_size']} steps × {p['batch_size']}), seeds {p['seeds']}.")
    lines += [f"{models} distinct trained models behind {logged} logged runs (a (variant, seed) that several "
              f"sweeps share trains once); {seconds / 60:.0f} min of training and evaluation in all.", ""]
    for name, record in export["sweeps"].items():
        lines += [sweep_markdown(name, record), "", *paragraphs(name, record), ""]
    return "\n".join(lines).rstrip() + "\n"


def figure(sweeps: dict[str, dict], path: Path) -> Path:
    """Ours (Δ with its 95 % interval) against the paper's Δ, one point per (row, metric)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5.5), dpi=110)
    markers = dict(zip([col for _, col in METRICS], ("o", "s", "^")))
    for i, (name, record) in enumerate(sweeps.items()):
        plotted = False
        for row in rows(name, record):
            if row["default"] or row["paper"] is None:
                continue
            for theirs, cell in zip(row["paper"], row["cells"]):
                d = cell.get("delta")
                if d is None:
                    continue
                err = [[d.mean - d.low], [d.high - d.mean]] if d.low is not None else None
                ax.errorbar(theirs, d.mean, yerr=err, fmt=markers[cell["metric"]], color=f"C{i}", ms=5, capsize=2,
                            alpha=0.85)
                ax.annotate(row["variant"], (theirs, d.mean), fontsize=6, alpha=0.7, xytext=(3, 2),
                            textcoords="offset points")
                plotted = True
        if plotted:
            ax.scatter([], [], color=f"C{i}", marker="o", label=name)
    for col, marker in markers.items():
        ax.scatter([], [], color="grey", marker=marker, label=col)
    ax.axhline(0, color="black", linewidth=0.7)
    ax.axvline(0, color="black", linewidth=0.7)
    ax.set_xlabel("paper: Δ points vs its default (Table 5)")
    ax.set_ylabel("ours: Δ points vs the default, 95 % interval over paired seeds")
    ax.set_title("Ablations: same direction = upper-right / lower-left")
    ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def overview(tracking_uri: str, out: Path) -> tuple[dict, str]:
    """Export the ablation runs and the newest comparison to ``out/overview.json``; draw
    ``out/overview.png`` (ablations) and ``out/compare.png``; write ``out/overview.md``."""
    from flows import compare_report

    export = collect(tracking_uri)
    export["compare"] = compare_report.collect(tracking_uri)
    if not export["sweeps"] and export["compare"] is None:
        raise FileNotFoundError(f"no ablation or comparison runs in {tracking_uri}: run `vljepa ablate SWEEP` "
                                "or `vljepa compare` first")
    out.mkdir(parents=True, exist_ok=True)
    (out / "overview.json").write_text(json.dumps(export, indent=2, sort_keys=True) + "\n")
    text = ""
    if export["sweeps"]:
        figure(export["sweeps"], out / "overview.png")
        text += markdown(export)
    if export["compare"] is not None:
        compare_report.plot(export["compare"], out / "compare.png", "VL-JEPA vs token VLM, same tokens, data and batches")
        text += "\n" + compare_report.markdown(export["compare"]) + "\n"
    (out / "overview.md").write_text(text)
    return export, text


def main(argv: list[str] | None = None) -> int:
    from flows.env import StateLayout

    p = argparse.ArgumentParser(prog="python -m flows.ablate overview", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--state-dir", default=None, help="default: $VLJEPA_STATE_DIR or <repo>/.vljepa")
    p.add_argument("--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI or SQLite in the state dir")
    p.add_argument("--out", default=None, help="where overview.json/.png/.md go (default <state>/ablations/overview)")
    args = p.parse_args(argv)
    layout = StateLayout.resolve(args.state_dir, args.tracking_uri)
    _, text = overview(layout.tracking_uri, Path(args.out) if args.out else layout.ablations / "overview")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
