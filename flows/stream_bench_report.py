"""The stream benchmark's figure, table and MLflow run (``flows.stream_bench``)."""

from __future__ import annotations

from pathlib import Path

STYLES = {"uniform/pooled": ("tab:red", "o", "-"), "uniform/exact": ("tab:red", "o", ":"),
          "ward/pooled": ("tab:blue", "s", "-"), "ward/exact": ("tab:blue", "s", ":")}


def pareto_figure(result: dict, path: Path) -> Path:
    """CIDEr against decodes per second (log axis): four curves and the online trigger on test."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.4), dpi=110)
    for curve, (colour, marker, line) in STYLES.items():
        pts = sorted((r["decodes_per_s"], r["cider"]) for r in result["rows"] if r["curve"] == curve)
        ax.plot(*zip(*pts), marker=marker, linestyle=line, color=colour, label=curve)
    uniform_1hz = next(r for r in result["rows"] if r["curve"] == "uniform/pooled" and r["rate"] == 1.0)
    ax.axhline(uniform_1hz["cider"] * (1 - result["protocol"]["tolerance"]), color="grey", linewidth=0.8,
               linestyle="--", label="uniform 1 Hz (pooled) − 1 %")
    test = result["online"]["test"]
    ax.plot([test["decodes_per_s"]], [test["cider"]], marker="^", color="tab:green", markersize=9, linestyle="none",
            label=f"online ({trigger_text(result['online'])}, from val)")
    ax.set_xscale("log")
    ax.set_xlabel("decodes per second")
    ax.set_ylabel("CIDEr (annotation ↔ nearest decode)")
    stats = result["streams"]["statistics"]["test"]
    ax.set_title(f"Selective decoding, {result['protocol']['n_test']} test streams of ~{stats['stream_seconds']:.0f} s")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def trigger_text(online: dict) -> str:
    """The chosen trigger's settings (results written before hysteresis and min_len were tuned: threshold only)."""
    text = f"threshold {online['chosen_threshold']}"
    if "chosen_hysteresis" in online:
        text += f", hysteresis {online['chosen_hysteresis']} and min_len {online['chosen_min_len']} windows"
    return text


def _savings_text(entry: dict) -> str:
    if entry["savings"] is None:
        return "not reached"
    ci = entry["ci95"]
    interval = f" (95 % CI {ci[0]:.2f}–{ci[1]:.2f})" if ci else ""
    shortfall = "" if entry["bootstrap_reached"] == 1 else f", reached in {100 * entry['bootstrap_reached']:.0f} % of resamples"
    return f"{entry['savings']:.2f}×{interval}{shortfall}"


def markdown(result: dict) -> str:
    """The statistics beside the paper's, the sweep, the savings and the online trigger."""
    stats, paper = result["streams"]["statistics"]["test"], result["streams"]["paper"]
    lines = ["| stream benchmark (test split) | here | paper (EgoExo4D val) |", "|---|---|---|",
             f"| streams | {stats['streams']} | {paper['streams']} |",
             f"| stream length | {stats['stream_seconds']:.0f} s | ~{paper['stream_seconds']} s |",
             f"| annotations per stream | {stats['annotations_per_stream']:.0f} | ~{paper['annotations_per_stream']} |",
             f"| annotation spacing | {stats['spacing_seconds']:.2f} s | ~{paper['spacing_seconds']} s |",
             f"| keystep length | {stats['keystep_seconds']:.0f} s | tens of seconds |", "",
             "| rate (Hz) | " + " | ".join(f"{c} CIDEr (decodes/s)" for c in STYLES) + " |",
             "|---|" + "---|" * len(STYLES)]
    by = {(r["curve"], r["rate"]): r for r in result["rows"]}
    for rate in result["protocol"]["rates"]:
        cells = [f"{by[(c, rate)]['cider']:.3f} ({by[(c, rate)]['decodes_per_s']:.3f})" for c in STYLES]
        lines.append(f"| {rate:g} | " + " | ".join(cells) + " |")
    lines += ["", "| strategy | savings vs uniform 1 Hz at ≤ 1 % CIDEr loss |", "|---|---|"]
    lines += [f"| {c} | {_savings_text(result['savings'][c])} |" for c in STYLES]
    on = result["online"]
    uniform = by[("uniform/pooled", 1.0)]
    lat = on["latency_s"]
    lines += ["", f"Online trigger ({trigger_text(on)}, chosen on {result['protocol']['n_val']} val "
              f"streams{'' if on['chosen_on_val_within_tolerance'] else ', none within 1 % there: the best CIDEr'}): "
              f"{on['test']['decodes_per_s']:.3f} decodes/s, CIDEr {on['test']['cider']:.3f} = "
              + (f"{100 * on['test']['cider'] / uniform['cider']:.1f} %" if uniform["cider"] else "—")
              + f" of uniform 1 Hz ({uniform['cider']:.3f}) with "
              f"{uniform['decodes_per_s'] / max(on['test']['decodes_per_s'], 1e-9):.2f}× fewer decodes; latency from "
              f"a segment's start to its decode: median {lat['p50']:.1f} s, p95 {lat['p95']:.1f} s, max {lat['max']:.1f} s."]
    if "oracle_val" in result:
        o = result["oracle_val"]
        share = (f" ({100 * o['exact'] / o['uniform_1hz']:.1f} % / {100 * o['pooled'] / o['uniform_1hz']:.1f} %)"
                 if o["uniform_1hz"] else "")
        lines += ["", f"Ceiling, on the val streams: one decode per annotation at its own time (an oracle; "
                  f"{o['decodes_per_s']:.3f} decodes/s) gives CIDEr {o['exact']:.3f} exact / {o['pooled']:.3f} pooled "
                  f"against {o['uniform_1hz']:.3f} for uniform 1 Hz there{share}."]
    return "\n".join(lines)


def log_to_mlflow(result: dict, out: Path, tracking_uri: str) -> str:
    """One run in experiment ``vljepa-selective-decoding``: savings, online figures, the figure and tables."""
    import mlflow

    from flows.tracking_store import use_tracking

    use_tracking(tracking_uri)
    mlflow.set_experiment("vljepa-selective-decoding")
    with mlflow.start_run(run_name=f"stream-bench-{result['streams']['preset']}-{result['model']['key']}") as run:
        mlflow.set_tags({"benchmark": "streams", "model.key": result["model"]["key"],
                         "streams.config_hash": result["streams"]["config_hash"][:12]})
        mlflow.log_params({"rates": ",".join(f"{r:g}" for r in result["protocol"]["rates"]),
                           "tolerance": result["protocol"]["tolerance"], "n_test": result["protocol"]["n_test"],
                           "online.threshold": result["online"]["chosen_threshold"],
                           "online.hysteresis": result["online"].get("chosen_hysteresis"),
                           "online.min_len": result["online"].get("chosen_min_len")})
        for curve, entry in result["savings"].items():
            if entry["savings"] is not None:
                mlflow.log_metric(f"savings/{curve.replace('/', '_')}", entry["savings"])
        mlflow.log_metric("online/decodes_per_s", result["online"]["test"]["decodes_per_s"])
        mlflow.log_metric("online/cider", result["online"]["test"]["cider"])
        for name in ("results.json", "pareto.png", "summary.md"):
            mlflow.log_artifact(str(out / name))
        return run.info.run_id
