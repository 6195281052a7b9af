"""The README's figure tables, written from committed artifacts, never typed.

    python -m bench.report                 # print every table
    python -m bench.report --write         # replace each table's block in README.md
    python -m bench.report --check         # exit 1 if README.md differs (tests/test_report_tables.py)

Each table sits in README.md between ``<!-- report:NAME -->`` and ``<!-- /report:NAME -->``:

- ``results`` and ``tasks``: the main job's test metrics and evaluation suite, from
  ``docs/results/main-job/`` (``test_metrics.json`` and the suite's ``results.json``, copied from the
  run named in ``provenance.json``: ``python -m bench.report --import-run STATE_DIR`` copies them);
- ``bench``: the ratios of the latest ``python -m bench.run_all`` (``bench/results/latest.json``):
  ratios that compare thread or process counts read "no result (busy)" when the machine was busy;
- ``base-sft``: stage 2 against its BASE, from ``docs/results/base-vs-sft/`` (the two evaluations'
  ``results.json`` plus each task's ``n``, the SFT run's train summary without its history, and the
  commands in ``provenance.json``); the verdict column is :func:`verdict`'s;
- ``live-stream``: ``vljepa stream -`` fed a clip in real time (``docs/results/live-stream/``, its ``--json``);
- ``selective``: ``vljepa stream --benchmark`` (``docs/results/selective-decoding/``: its ``results.json``,
  ``pareto.png`` and the command in ``provenance.json``), through ``flows.stream_bench_report.markdown``;
- ``decoder-study``: ``python -m flows.decoder_study`` on the stream benchmark's model
  (``docs/results/decoder-study/``);
- ``ablations`` and ``compare``: ``python -m flows.ablate overview`` (the ablation sweeps and the
  controlled comparison, exported from their MLflow runs to ``docs/results/ablations/overview.json``),
  through ``flows.ablate_report.markdown`` and ``flows.compare_report.markdown``;
- ``gpu-check``: ``bench/gpu_check.py`` on the lent H200 (``bench/results/gpu_check_h200/*.json``),
  and the memory and live-encoder figures derived from the same files.

Only the paper's figures (a citation) and the row labels are text here; every measured number
comes from the artifact.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
MAIN_JOB = ROOT / "docs" / "results" / "main-job"
BENCH_JSON = ROOT / "bench" / "results" / "latest.json"


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


def _x(value: float, chance: float | None) -> str:
    if not chance:
        return "—"
    times = value / chance
    return f"{times:.0f}×" if times >= 10 else f"{times:.1f}×"


def results_table(main_job: Path = MAIN_JOB) -> list[str]:
    """The main job's retrieval and classification on the test split (``test_metrics.json``)."""
    saved = _load(main_job / "test_metrics.json")["evaluation"]
    m, c, n = saved["metrics"], saved["chance"], saved["n_test"]
    rows = [("text→video R@1", "t2v_r1", "not comparable¹"), ("text→video R@5", "t2v_r5", "—"),
            ("video→text R@1", "v2t_r1", "—"), ("classification top-1", "cls_top1", "not comparable¹"),
            ("classification top-5", "cls_top5", "—")]
    lines = [f"| metric (test, n = {n}) | VL-JEPA `small` | chance | × chance | paper (VL-JEPA_BASE) |",
             "|---|---|---|---|---|"]
    for label, key, paper in rows:
        value = f"**{m[key]:.3f}**" if key in ("t2v_r1",) else f"{m[key]:.3f}"
        lines.append(f"| {label} | {value} | {c[key]:.3f} | {_x(m[key], c[key])} | {paper} |")
    return lines


def tasks_table(main_job: Path = MAIN_JOB) -> list[str]:
    """Every task of the suite (``results.json`` of the main job's evaluation)."""
    saved = _load(main_job / "results.json")
    m, c = saved["metrics"], saved["chance"]

    def row(task: str, metric: str, keys: list[str], paper: str, *, bold: bool = True, fmt: str = ".3f",
            formats: list[str] | None = None, chance: list[str] | None = None, chance_note: str = "",
            value_note: str = "") -> str:
        formats = formats or [fmt] * len(keys)
        shown = [format(m[k], f) for k, f in zip(keys, formats)]
        if bold:
            shown[0] = f"**{shown[0]}**"
        chance_keys = keys if chance is None else chance
        chances = ["—" if c.get(k) is None else format(c[k], f) for k, f in zip(chance_keys, formats)]
        chance_text = " / ".join(chances) + chance_note if any(x != "—" for x in chances) else "—"
        return f"| {task} | {metric} | {' / '.join(shown)}{value_note} | {chance_text} | {paper} |"

    r, h, v, e = "retrieval/", "hard_negatives/", "vqa/", "embedding_space/"
    beams = saved.get("num_beams", 3)  # runs before the decoder study's choice: text-only, beam 3
    decoder = (f"y-decoder on texts + predictions, {'greedy' if beams == 1 else f'beam {beams}'}"
               if saved["decoder"].get("training") == "text+predicted" else f"y-decoder, beam {beams}")
    return [
        "| task | metric | VL-JEPA `small` | chance | paper (not comparable¹) |", "|---|---|---|---|---|",
        row("retrieval", "text→video R@1 / R@5 / R@10", [f"{r}t2v_r1", f"{r}t2v_r5", f"{r}t2v_r10"],
            "58.4 % R@1 (8-dataset avg, BASE)"),
        row("retrieval", "video→text R@1 / median rank", [f"{r}v2t_r1", f"{r}v2t_median_rank"], "—", bold=False,
            formats=[".3f", "g"]),
        row("classification (4 templates averaged)", "top-1 / top-5", ["classification/top1", "classification/top5"],
            "46.4 % top-1 (8-dataset avg, BASE)"),
        row(f"captioning ({decoder})", "CIDEr / BLEU-4 / ROUGE-L",
            ["captioning/cider", "captioning/bleu4", "captioning/rouge_l"], "14.8 CIDEr (controlled comparison) ³",
            formats=[".2f", ".3f", ".3f"], chance_note=" ²"),
        row("VQA by candidate similarity", "accuracy", [f"{v}accuracy"], "GQA 60.8 % (SFT)"),
        row("VQA by question kind", "colour / shape / count / direction",
            [f"{v}acc_what_colour", f"{v}acc_what_shape", f"{v}acc_how_many", f"{v}acc_which_way"], "—",
            bold=False, fmt=".2f"),
        row("VQA, decoded answer", "exact match", [f"{v}decoded_exact_match"], "—", bold=False, chance=[],
            value_note=" ⁴"),
        row("y-encoder hard negatives, text only (SugarCrepe++-style triplets)", "accuracy", [f"{h}text_accuracy"],
            "SugarCrepe++ 63.9 %, VISLA 42.9 %", bold=False),
        row("— by kind", "replace attribute / object, swap attribute, reorder events",
            [f"{h}text_replace_attribute", f"{h}text_replace_object", f"{h}text_swap_attribute",
             f"{h}text_reorder_events"], "—", bold=False, fmt=".2f", chance=[f"{h}text_accuracy"], value_note=" ⁵"),
        row("hard negatives anchored on the video", "accuracy", [f"{h}video_accuracy"], "—"),
        row("WorldPrediction-style (first + last frame → 4 candidate clips) ⁶", "accuracy",
            ["world_prediction/accuracy"], "63.9 % BASE (WorldPrediction-WM)"),
        row("y-decoder round trip (held-out captions)", "BLEU-4 / CIDEr / exact match",
            ["decoder_round_trip/bleu4", "decoder_round_trip/cider", "decoder_round_trip/exact_match"], "—",
            bold=False, formats=[".3f", ".2f", ".3f"]),
        row("embedding space", "alignment / neighbour agreement (k = 10) / modality gap",
            [f"{e}alignment", f"{e}nn_agreement", f"{e}modality_gap"], "—", bold=False,
            chance_note=" (alignment: shuffled pairs)"),
    ]


def bench_table(path: Path = BENCH_JSON) -> list[str]:
    """The ratios of the latest ``bench.run_all`` run, with its date, load and commit."""
    from bench.table import fmt

    saved = _load(path)
    busy = bool(saved.get("busy"))
    load = " / ".join(f"{x:.1f}" for x in saved["load_start"]) if saved.get("load_start") else "?"
    lines = [f"`{saved['command']}` on {saved['started']} UTC, commit `{(saved['machine'].get('git_commit') or '?')[:7]}`, "
             f"{saved['machine']['cores']} cores, load average at the start {load}"
             + (" (busy: ratios that compare thread or process counts are no result)." if busy else "."), "",
             "| benchmark | ratio | value | goal | met |", "|---|---|---|---|---|"]
    for bench in saved["benches"]:
        if bench["status"] != "ok":
            lines.append(f"| {bench['name']} | error | — | — | — |")
        for ratio in bench["ratios"]:
            goal = ratio["goal"]["text"] if ratio.get("goal") else ""
            if ratio.get("load_sensitive") and busy:
                value, met = "no result (busy)", "—"
            else:
                value = fmt(ratio["value"])
                met = "" if ratio.get("met") is None else ("yes" if ratio["met"] else "no")
            metric = " ".join(ratio["metric"].split()).replace("|", "\\|")
            lines.append(f"| {bench['name']} | {metric} | {value} | {goal} | {met} |")
    return lines


BASE_SFT = ROOT / "docs" / "results" / "base-vs-sft"
GPU_CHECK = ROOT / "bench" / "results" / "gpu_check_h200"

# (label, metric key, task for n, paper BASE -> SFT, the paper's direction: +1 / -1 / 0 for none)
BASE_SFT_ROWS = [
    ("VQA accuracy", "vqa/accuracy", "vqa", "SFT only (BASE sees no query)", +1),
    ("classification top-1", "classification/top1", "classification", "46.4 → 70.7 (8-dataset avg)", +1),
    ("classification top-5", "classification/top5", "classification", "—", 0),
    ("text→video R@1", "retrieval/t2v_r1", "retrieval", "58.4 → 59.5", +1),
    ("hard negatives, text only (y-encoder)", "hard_negatives/text_accuracy", "hard_negatives",
     "**63.9 → 58.4** (SugarCrepe++)", -1),
    ("hard negatives, anchored on the video", "hard_negatives/video_accuracy", "hard_negatives", "—", 0),
    ("WorldPrediction-style", "world_prediction/accuracy", "world_prediction", "63.9 → 65.7", +1),
    ("VQA: count / direction questions", "vqa/acc_how_many vqa/acc_which_way", None, "—", 0),
    ("VQA decoded exact match", "vqa/decoded_exact_match", "vqa", "—", 0),
    ("captioning CIDEr", "captioning/cider", None, "—", 0),
    ("y-decoder round trip CIDEr", "decoder_round_trip/cider", None, "—", 0),
]


def verdict(base: float, sft: float, n: int, paper_sign: int) -> str:
    """The paper's direction against ours: a difference under 2 standard errors is noise.

    The standard error is one proportion's, sqrt(p(1-p)/n) at the two models' mean p, as the
    README has always used (the two rows share their test items, so a paired test would be tighter).
    """
    p = (base + sft) / 2
    se = (p * (1 - p) / n) ** 0.5
    z = (sft - base) / se if se else 0.0
    if abs(z) < 2:
        return f"inside the noise ({z:+.1f} SE, SE {100 * se:.1f} points)"
    agrees = (z > 0) == (paper_sign > 0)
    return f"{'**yes**' if agrees else '**no**'} ({z:+.1f} SE, SE {100 * se:.1f} points)"


def base_sft_table(folder: Path = BASE_SFT) -> list[str]:
    """BASE vs SFT on the same test split: ``base.json`` and ``sft.json`` (each a ``vljepa evaluate``)."""
    base, sft = _load(folder / "base.json"), _load(folder / "sft.json")
    train, prov = _load(folder / "sft_train_summary.json"), _load(folder / "provenance.json")
    drawn = train["data"]["drawn"]
    steps, batch = train["steps"], train["batch_size"]["effective"]
    lines = [f"Commit `{prov['commit']}`. SFT: `{prov['sft']['command']}`, mix `{prov['sft']['mix'].split()[0]}`, "
             f"{prov['sft']['epochs']} epochs of {train['data']['n_samples']:,} samples ({steps} steps × {batch}; "
             f"drawn: " + ", ".join(f"{k} {v:,}" for k, v in sorted(drawn.items(), key=lambda kv: -kv[1]))
             + f"), {train['seconds']:,.0f} s of training. Evaluation: `{prov['sft']['evaluation']}`; "
             f"BASE: {prov['base']['command']}.", "",
             "| metric (test) | n | BASE | SFT | Δ (points; CIDEr as is) | paper BASE → SFT | paper's direction, ours |",
             "|---|---|---|---|---|---|---|"]
    for label, keys, task, paper, sign in BASE_SFT_ROWS:
        b = [base["metrics"][k] for k in keys.split()]
        s = [sft["metrics"][k] for k in keys.split()]
        f = ".2f" if len(b) > 1 or "cider" in keys else ".3f"
        shown_b, shown_s = " / ".join(format(x, f) for x in b), " / ".join(format(x, f) for x in s)
        n = base["n_by_task"][task] if task else ""
        delta = f"{100 * (s[0] - b[0]):+.1f}" if task else ("" if len(b) > 1 else f"{s[0] - b[0]:+.2f}")
        call = verdict(b[0], s[0], n, sign) if task and sign else "—"
        lines.append(f"| {label} | {n} | {shown_b} | {shown_s} | {delta} | {paper} | {call} |")
    return lines


def gpu_check_table(folder: Path = GPU_CHECK) -> list[str]:
    """``bench.gpu_check`` on the lent GPU: one JSON per (batch, query tokens), two modes each."""
    runs = sorted((_load(p) for p in folder.glob("*.json")),
                  key=lambda r: (r["tokens_per_sample"]["query"], r["batch"]))
    lines = ["| batch / GPU | query tokens | mode | step s | samples/s | peak GB (measured) | plan GB | TFLOP/s | MFU "
             "| plan s @ 40 % MFU |", "|---|---|---|---|---|---|---|---|---|---|"]
    for run in runs:
        q = run["tokens_per_sample"]["query"]
        for m in run["modes"]:
            lines.append(f"| {run['batch']} | {q}{' (SFT)' if q else ''} | {m['mode']} | {m['step_s']:.3f} | "
                         f"{m['samples_per_s']:.1f} | {m['peak_memory_gb']:.1f} | {m['plan_memory_gb']:.1f} | "
                         f"{m['achieved_tflops']:.0f} | {100 * m['mfu']:.1f} % | {m['plan_step_s']:.3f} |")
    by = {(r["batch"], r["tokens_per_sample"]["query"]): {m["mode"]: m for m in r["modes"]} for r in runs}
    small, large = by[(8, 0)]["cached"], by[(32, 0)]["cached"]
    grow, plan_grow = ((large[k] - small[k]) / 24 for k in ("peak_memory_gb", "plan_memory_gb"))
    fixed, plan_fixed = small["peak_memory_gb"] - 8 * grow, small["plan_memory_gb"] - 8 * plan_grow
    live_cost = [m["live"]["step_s"] - m["cached"]["step_s"] for m in by.values()]
    step_x = [m["live"]["step_s"] / m["cached"]["step_s"] for m in by.values()]
    flop_x = by[(8, 0)]["live"]["flops_per_sample"] / small["flops_per_sample"]
    lines += ["", f"Derived from the same files: between batch 8 and 32 (cached) the measured peak grows by "
              f"{grow:.2f} GB per sample, plan's by {plan_grow:.2f} GB (×{grow / plan_grow:.1f}); the fixed part is "
              f"{fixed:.1f} GB measured, {plan_fixed:.1f} GB plan. The live x-encoder adds {min(live_cost):.2f}–"
              f"{max(live_cost):.2f} s per step: ×{min(step_x):.2f}–{max(step_x):.2f} in step time against "
              f"×{flop_x:.2f} in FLOPs per sample (batch 8, no query)."]
    return lines


LIVE_STREAM = ROOT / "docs" / "results" / "live-stream" / "vtest-180s.json"


def live_stream_table(path: Path = LIVE_STREAM) -> list[str]:
    """``vljepa stream -`` on a clip replayed in real time: the lag of every window and caption (``--json``)."""
    import numpy as np

    saved = _load(path)
    prov = saved["provenance"]
    lines = [f"`{prov['command']}` (commit {prov['commit']}; {prov['model']}; {prov['machine']}).", "",
             "| over | n | median lag s | p95 s | max s | mean of the first / last 20 s |", "|---|---|---|---|---|---|"]
    for name, key in (("windows", "lags_s"), ("captions", "caption_lags_s")):
        lags = np.asarray(saved[key])
        edge = ""
        if name == "windows":  # a window every 0.5 s: 40 windows are 20 s
            edge = f"{lags[:40].mean():.2f} / {lags[-40:].mean():.2f}"
        lines.append(f"| {name} | {len(lags)} | {np.median(lags):.2f} | {np.quantile(lags, 0.95):.2f} | "
                     f"{lags.max():.2f} | {edge} |")
    lines += ["", f"{saved['duration_s']:.0f} s of stream, {saved['decodes']} captions (online trigger) against "
              f"{saved['uniform_1hz_decodes']} for uniform 1 Hz; {prov['wall_s']:.0f} s wall, peak RSS "
              f"{prov['max_rss_gb']:.2f} GB. {prov['note']}."]
    return lines


SELECTIVE = ROOT / "docs" / "results" / "selective-decoding"


def selective_table(folder: Path = SELECTIVE) -> list[str]:
    """``vljepa stream --benchmark``: the benchmark's statistics, the sweep, the savings, the online trigger."""
    from flows.stream_bench_report import markdown

    result, prov = _load(folder / "results.json"), _load(folder / "provenance.json")
    return [f"`{prov['command']}` at commit `{prov['commit']}`: {prov['machine']}; {result['seconds']:,.0f} s in all "
            f"({prov['note']}).", "", *markdown(result).splitlines()]


DECODER_STUDY = ROOT / "docs" / "results" / "decoder-study"


def decoder_study_table(folder: Path = DECODER_STUDY) -> list[str]:
    """``python -m flows.decoder_study``: the y-decoder variants on one checkpoint (``decoder_study.json``)."""
    from flows.decoder_study import markdown

    result, prov = _load(folder / "decoder_study.json"), _load(folder / "provenance.json")
    return [f"`{prov['command']}` at commit `{prov['commit']}` ({prov['model']}; {result['seconds']:,.0f} s).", "",
            *markdown(result)]


ABLATIONS = ROOT / "docs" / "results" / "ablations"


def ablations_table(folder: Path = ABLATIONS) -> list[str]:
    """``python -m flows.ablate overview``'s export of the ablation runs: every sweep's table and lines."""
    from flows.ablate_report import markdown

    export, prov = _load(folder / "overview.json"), _load(folder / "provenance.json")
    return [f"`{prov['command']}` at commit `{prov['commit']}` ({prov['machine']}).", "",
            *markdown(export).rstrip("\n").splitlines()]


def compare_table(folder: Path = ABLATIONS) -> list[str]:
    """The same export's controlled comparison (its newest ``vljepa compare``)."""
    from flows.compare_report import markdown

    export, prov = _load(folder / "overview.json"), _load(folder / "provenance.json")
    return [f"`{prov['compare_command']}` at commit `{prov['commit']}` ({prov['machine']}).", "",
            *markdown(export["compare"]).splitlines()]


TABLES: dict[str, Callable[[], list[str]]] = {"results": results_table, "tasks": tasks_table, "bench": bench_table,
                                              "base-sft": base_sft_table, "gpu-check": gpu_check_table,
                                              "live-stream": live_stream_table, "selective": selective_table,
                                              "decoder-study": decoder_study_table,
                                              "decoder-study-main-job": lambda: decoder_study_table(
                                                  ROOT / "docs" / "results" / "decoder-study-main-job"),
                                              "ablations": ablations_table,
                                              "compare": compare_table}


def _block(name: str) -> re.Pattern[str]:
    return re.compile(rf"(<!-- report:{name} -->\n)(.*?)(<!-- /report:{name} -->)", re.S)


def render(text: str, tables: dict[str, Callable[[], list[str]]] = TABLES) -> str:
    """``text`` with each table's block replaced by what its artifact gives now."""
    for name, make in tables.items():
        pattern = _block(name)
        if not pattern.search(text):
            raise ValueError(f"README.md has no <!-- report:{name} --> block")
        body = "\n".join(make()) + "\n"
        text = pattern.sub(lambda match: match.group(1) + body + match.group(3), text)
    return text


def import_run(state_dir: Path, out: Path = MAIN_JOB, *, command: str, commit: str) -> None:
    """Copy the newest main-job model's test metrics and suite results from ``state_dir``."""
    models = sorted((state_dir / "models").glob("pretrain-video-*-eval"), key=lambda p: p.stat().st_mtime)
    if not models:
        raise FileNotFoundError(f"no pretrain-video-*-eval under {state_dir}/models: run the main job first")
    evaluation = models[-1]
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(evaluation.parent / evaluation.name.removesuffix("-eval") / "test_metrics.json", out)
    saved = _load(evaluation / "results.json")
    keep = {k: saved[k] for k in ("metrics", "chance", "n_test", "timings_s", "decoder", "num_beams", "skipped")
            if k in saved}
    (out / "results.json").write_text(json.dumps(keep, indent=2, sort_keys=True) + "\n")
    (out / "provenance.json").write_text(json.dumps({"command": command, "commit": commit,
                                                     "model": evaluation.name.removesuffix("-eval")}, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help="rewrite the blocks in README.md")
    parser.add_argument("--check", action="store_true", help="exit 1 if README.md's blocks differ")
    parser.add_argument("--import-run", metavar="STATE_DIR", help="copy a main-job run's results into "
                                                                  "docs/results/main-job first")
    parser.add_argument("--command", default="bash infra/run-main.sh", help="with --import-run: how it was run")
    parser.add_argument("--commit", default="?", help="with --import-run: the commit it ran")
    args = parser.parse_args(argv)
    if args.import_run:
        import_run(Path(args.import_run), command=args.command, commit=args.commit)
    text = README.read_text()
    new = render(text)
    if args.check:
        if new != text:
            print("README.md's report blocks differ from the artifacts: run `python -m bench.report --write`",
                  file=sys.stderr)
            return 1
        return 0
    if args.write:
        README.write_text(new)
        return 0
    for name, make in TABLES.items():
        print(f"<!-- report:{name} -->\n" + "\n".join(make()) + f"\n<!-- /report:{name} -->\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
