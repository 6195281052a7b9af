"""Every benchmark in bench/, one run: the ratios, with their goals, in bench/results/latest.{md,json}.

    python -m bench.run_all [--quick] [--only NAME ...] [--out bench/results]

Only ratios are results: each compares two things measured side by side in the same run (or, for
the streaming bench, compute time against the stream's own clock), so they mean something on a
busy, shared machine where absolute times do not. Absolute times are kept as context, with the
load average around each benchmark. Goals are the ones the bench files state; a few come from the
README (marked). Each benchmark runs in a fresh subprocess (its torch threads, Ray instance and
memory are its own); one that fails or times out becomes an error row, and the others still run.
``--quick`` picks small sizes (about 2-3 minutes on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from vljepa.files import atomic_write_text

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True, kw_only=True)
class Goal:
    op: Literal["<=", ">="]
    target: float
    source: str = "bench file"  # where the goal is stated: the bench file's docstring, or "README"

    def met(self, value: float | None) -> bool:
        if value is None:
            return False
        return value <= self.target if self.op == "<=" else value >= self.target

    def __str__(self) -> str:
        mark = " (README)" if self.source == "README" else ""
        return f"{'≤' if self.op == '<=' else '≥'} {self.target:g}{mark}"


@dataclass(frozen=True, kw_only=True)
class Ratio:
    metric: str  # what is divided by what
    value: float | None  # None: not measured or, for a threshold search, not reached (see note)
    goal: Goal | None = None
    note: str = ""


@dataclass(kw_only=True)
class BenchResult:
    name: str
    status: Literal["ok", "error"]
    ratios: list[Ratio] = field(default_factory=list)
    context: dict[str, Any] = field(default_factory=dict)  # absolute numbers, settings: not results
    error: str | None = None
    seconds: float = 0.0
    load_before: tuple[float, float, float] | None = None
    load_after: tuple[float, float, float] | None = None


# --- the benchmarks: how each is run (in the child process) and which of its numbers are ratios ---

def _run_decode(quick: bool) -> dict:
    from bench import decode_throughput

    return decode_throughput.main(["--repeats", "2"] if quick else [])


def _ratios_decode(raw: dict) -> tuple[list[Ratio], dict]:
    worst = min(raw["rows"], key=lambda r: r["ratio"])
    ratios = [Ratio(metric="raw ffmpeg s / our decode+sample s, geometric mean", value=raw["geomean_ratio"],
                    goal=Goal(op=">=", target=0.85)),
              Ratio(metric="raw ffmpeg s / our decode+sample s, worst clip", value=worst["ratio"],
                    note=f"{worst['clip']} {worst['mode']}")]
    return ratios, raw


def _run_cache(quick: bool) -> dict:
    from bench import cache_rerun

    return cache_rerun.main(["--n-videos", "8"] if quick else [])


def _ratios_cache(raw: dict) -> tuple[list[Ratio], dict]:
    ratios = [Ratio(metric=f"token cache re-run s / first run s, {fmt}", value=raw[fmt]["ratio"],
                    goal=Goal(op="<=", target=0.05)) for fmt in ("parquet", "webdataset")]
    return ratios, raw


def _run_ray(quick: bool) -> dict:
    from bench import ray_workers

    return ray_workers.main(["--n-videos", "8"] if quick else [])


def _ratios_ray(raw: dict) -> tuple[list[Ratio], dict]:
    return [Ratio(metric="Ray Data s with 1 decode worker / s with 2", value=raw["speedup_2_vs_1"],
                  note="ideal ≈ 2 with 2 free cores")], raw


def _run_streaming(quick: bool) -> dict:
    from bench import bench_streaming
    from flows.env import StateLayout
    from flows.train import latest_base_model

    size = ["--windows", "12"] if quick else []
    try:
        latest_base_model(StateLayout.resolve(ROOT / ".vljepa"))
    except FileNotFoundError:  # no main-job model: time an untrained small model (same compute; no sweep)
        return bench_streaming.main(["--untrained", "small", *size])
    return bench_streaming.main(["--skip-sweep", *size] if quick else [])


def _ratios_streaming(raw: dict) -> tuple[list[Ratio], dict]:
    ratios = [Ratio(metric="online compute per window s / window stride s (small)", value=raw["per_window_over_stride"],
                    goal=Goal(op="<=", target=0.1), note=f"model: {raw['model']}")]
    for method, factor in (raw.get("savings_vs_uniform_1hz") or {}).items():
        ratios.append(Ratio(metric=f"decodes saved at ≤ 1 % CIDEr loss vs uniform 1 Hz, {method}", value=factor,
                            goal=Goal(op=">=", target=3.0), note="not reached" if factor is None else ""))
    return ratios, raw


def _run_train(quick: bool) -> dict:
    from bench import bench_train

    return bench_train.main(["--steps", "2", "--batch", "16"] if quick else [])


def _ratios_train(raw: dict) -> tuple[list[Ratio], dict]:
    # README: "cached 3.7x faster than live (4.6x with ffmpeg decoding in the loop; goal 5x)".
    ratios = [Ratio(metric="live x-encoder step s / cached-token step s", value=raw["live_over_cached"]),
              Ratio(metric="(live step + ffmpeg decode) s / cached-token step s",
                    value=raw.get("live_with_decode_over_cached"), goal=Goal(op=">=", target=5.0, source="README"),
                    note="" if raw.get("decode_s_per_batch") else "no main-job corpus to decode"),
              Ratio(metric="train-step FLOP/s / float32 matmul peak FLOP/s", value=raw["step_flops_over_peak"],
                    goal=Goal(op=">=", target=0.35, source="README"))]
    if "ddp2_over_single" in raw:
        ratios.append(Ratio(metric="2-rank gloo DDP samples/s / 1 process samples/s", value=raw["ddp2_over_single"],
                            note="ideal ≈ 2 with 2 free cores"))
    return ratios, raw


def _run_loader(quick: bool) -> dict:
    from bench import bench_loader

    return bench_loader.main(["--quick"] if quick else [])


def _ratios_loader(raw: dict) -> tuple[list[Ratio], dict]:
    ratios = []
    for r in raw["ratios"]:  # stream / in-memory, per cache format and stream worker count
        cache, workers = r["format"], r["workers"]
        ratios += [Ratio(metric=f"stream ({workers} workers) samples/s / in-memory samples/s (load included), {cache}",
                         value=r["samples_per_s"],
                         note=f"vs in-memory after its load: {fmt(r['samples_per_s_vs_after_load'])}"),
                   Ratio(metric=f"stream ({workers} workers) peak memory / in-memory peak RSS, {cache}",
                         value=r["peak_memory"], note=f"cache {raw[f'{cache}_cache_mib']:.0f} MiB"
                         + ("; stream: main VmHWM + workers' private memory" if workers else ""))]
    return ratios, {k: v for k, v in raw.items() if k != "ratios"}


def _run_encode(quick: bool) -> dict:
    from bench import bench_encode

    return bench_encode.main(["--repeats", "2"] if quick else [])


def _ratios_encode(raw: dict) -> tuple[list[Ratio], dict]:
    n = raw["samples"] * raw["frames_per_sample"]
    return [Ratio(metric=f"x-encoder s for {n} frames in one call / in calls of {raw['frames_per_call']} "
                         f"({raw['encoder']})", value=raw["whole_over_chunked"],
                  note="tokens bit-identical" if raw["identical"] else "TOKENS DIFFER")], raw


def _run_decode_batch(quick: bool) -> dict:
    from bench import bench_decode_batch

    return bench_decode_batch.main(["--clips", "32", "--images", "32", "--repeats", "1"] if quick else [])


def _ratios_decode_batch(raw: dict) -> tuple[list[Ratio], dict]:
    return [Ratio(metric=f"decode files/s, {raw['chunk']} files a ffmpeg process / one a process, {kind}",
                  value=raw[kind]["ratio"], note="frames equal" if raw[kind]["equal"] else "FRAMES DIFFER")
            for kind in ("clips", "images")], raw


@dataclass(frozen=True, kw_only=True)
class Bench:
    run: Callable[[bool], dict]  # quick -> the bench's own result dict (runs in the child process)
    ratios: Callable[[dict], tuple[list[Ratio], dict]]  # that dict -> (ratios, context)
    timeout_s: tuple[int, int]  # (quick, full)


BENCHES: dict[str, Bench] = {
    "decode_throughput": Bench(run=_run_decode, ratios=_ratios_decode, timeout_s=(300, 1200)),
    "cache_rerun": Bench(run=_run_cache, ratios=_ratios_cache, timeout_s=(300, 1200)),
    "ray_workers": Bench(run=_run_ray, ratios=_ratios_ray, timeout_s=(300, 1200)),
    "bench_streaming": Bench(run=_run_streaming, ratios=_ratios_streaming, timeout_s=(300, 3600)),
    "bench_train": Bench(run=_run_train, ratios=_ratios_train, timeout_s=(420, 3600)),
    "bench_loader": Bench(run=_run_loader, ratios=_ratios_loader, timeout_s=(300, 1200)),
    "bench_encode": Bench(run=_run_encode, ratios=_ratios_encode, timeout_s=(300, 900)),
    "bench_decode_batch": Bench(run=_run_decode_batch, ratios=_ratios_decode_batch, timeout_s=(300, 900)),
}


# --- running ---------------------------------------------------------------------------------

def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return str(value)


def _child(name: str, quick: bool, out: Path) -> None:
    raw = BENCHES[name].run(quick)
    out.write_text(json.dumps(raw, default=_jsonable))


def run_bench(name: str, quick: bool) -> BenchResult:
    """Run one benchmark in a fresh subprocess; any failure becomes an error result."""
    bench = BENCHES[name]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0",
           "TOKENIZERS_PARALLELISM": "false"}
    load_before = os.getloadavg()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
        out = Path(tmp) / "result.json"
        command = [sys.executable, "-m", "bench.run_all", "--child", name, "--child-out", str(out)]
        try:
            done = subprocess.run(command + (["--quick"] if quick else []), cwd=ROOT, env=env, capture_output=True,
                                  text=True, timeout=bench.timeout_s[0 if quick else 1])
            failure = None if done.returncode == 0 else (
                f"exit {done.returncode}: {_tail(done.stderr) or _tail(done.stdout)}")
        except subprocess.TimeoutExpired:
            failure = f"timed out after {bench.timeout_s[0 if quick else 1]} s"
        result = BenchResult(name=name, status="error", seconds=time.perf_counter() - start, load_before=load_before,
                             load_after=os.getloadavg())
        if failure is None:
            try:
                result.ratios, result.context = bench.ratios(json.loads(out.read_text()))
                result.status = "ok"
            except Exception as exc:  # noqa: BLE001 (a bench that returned something unexpected)
                failure = f"{type(exc).__name__}: {exc}"
        result.error = failure
    return result


def _tail(text: str, lines: int = 6) -> str:
    return "\n".join(line for line in text.strip().splitlines()[-lines:])


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    ram_gib = None
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
        kib = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal:"))
        ram_gib = round(kib / 2**20, 1)
    except (OSError, StopIteration):
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    gpus = None
    if shutil.which("nvidia-smi"):
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout.strip()
        gpus = listed.splitlines() or None
    try:
        torch_version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        torch_version = None
    return {"cpu": cpu, "cores": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)), "ram_gib": ram_gib,
            "gpus": gpus, "torch": torch_version, "python": platform.python_version(), "platform": platform.platform(),
            "git_commit": commit}


# --- writing -----------------------------------------------------------------------------------

def fmt(value: float | None) -> str:
    """A ratio as the table shows it: 3 significant digits."""
    if value is None:
        return "—"
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


def _load(load: tuple[float, float, float] | None) -> str:
    return " / ".join(f"{x:.2f}" for x in load) if load else "?"


def busy(meta: dict[str, Any]) -> bool:
    """Was the 1-minute load average above the usable core count at the start or the end?"""
    cores = meta["machine"]["usable_cores"] or 1
    return any(load and load[0] > cores for load in (meta["load_start"], meta["load_end"]))


def to_json(results: list[BenchResult], meta: dict[str, Any]) -> dict[str, Any]:
    benches = []
    for r in results:
        entry = asdict(r)
        entry["ratios"] = [{**asdict(x), "goal": None if x.goal is None else {**asdict(x.goal), "text": str(x.goal)},
                            "met": None if x.goal is None else x.goal.met(x.value)} for x in r.ratios]
        benches.append(entry)
    return {**meta, "busy": busy(meta), "benches": benches}


def to_markdown(results: list[BenchResult], meta: dict[str, Any]) -> str:
    m = meta["machine"]
    lines = [f"# Benchmarks: latest run ({'quick' if meta['quick'] else 'full'})", "",
             f"`{meta['command']}` on {meta['started']} (UTC), {meta['seconds']:.0f} s, commit "
             f"`{m['git_commit'] or 'unknown'}`.", "",
             "Only the ratios are results: each compares two things measured side by side in this run, so",
             "they hold on a busy, shared machine where absolute times do not (those are context, below).", "",
             "## Machine", "", "| | |", "|---|---|",
             f"| CPU | {m['cpu']} |", f"| cores | {m['cores']} ({m['usable_cores']} usable) |",
             f"| RAM | {m['ram_gib']} GiB |", f"| GPU | {', '.join(m['gpus']) if m['gpus'] else 'none'} |",
             f"| torch | {m['torch']} |", f"| Python | {m['python']} ({m['platform']}) |",
             f"| load average (1 / 5 / 15 min), start | {_load(meta['load_start'])} |",
             f"| load average (1 / 5 / 15 min), end | {_load(meta['load_end'])} |", "",
             "## Ratios", ""]
    if busy(meta):
        lines += [f"**The machine was busy** (load average above its {m['usable_cores']} cores): ratios that compare",
                  "runs with different thread or process counts (DDP vs 1 process, Ray workers, 2-thread steps vs",
                  "real time) mostly measure the contention in this run.", ""]
    lines += ["| benchmark | ratio | value | goal | met | note |", "|---|---|---|---|---|---|"]
    for r in results:
        if r.status == "error":
            lines.append(f"| {r.name} | error | — | — | — | {_cell(r.error or '')} |")
        for x in r.ratios:
            met = "" if x.goal is None else ("yes" if x.goal.met(x.value) else "no")
            lines.append(f"| {r.name} | {_cell(x.metric)} | {fmt(x.value)} | {x.goal or ''} | {met} | {_cell(x.note)} |")
    lines += ["", "## Context (absolute numbers: they depend on the load, they are not results)", ""]
    for r in results:
        lines.append(f"- **{r.name}**: {r.status}, {r.seconds:.0f} s, load {_load(r.load_before)} → "
                     f"{_load(r.load_after)}" + (f"; {_context_line(r.context)}" if r.context else ""))
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _context_line(context: dict[str, Any]) -> str:
    """Scalars, and one level of nested dicts as ``key.sub``; lists (per-clip rows) only in latest.json."""
    def show(key: str, value: Any) -> str | None:
        if isinstance(value, float):
            return f"{key} {value:.4g}"
        if isinstance(value, (int, str)) or value is None:
            return f"{key} {value}"
        return None

    parts = []
    for key, value in context.items():
        items = value.items() if isinstance(value, dict) else [(None, value)]
        parts += [p for sub, v in items if (p := show(key if sub is None else f"{key}.{sub}", v))]
    return ", ".join(parts)


def write_results(results: list[BenchResult], meta: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """Write latest.json and latest.md (each to a temporary name, then renamed)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = (out_dir / "latest.json", out_dir / "latest.md")
    texts = (json.dumps(to_json(results, meta), indent=2, default=_jsonable) + "\n", to_markdown(results, meta))
    for path, text in zip(paths, texts):
        atomic_write_text(path, text)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes (about 2-3 min on 2 cores)")
    parser.add_argument("--only", nargs="+", choices=list(BENCHES), metavar="NAME",
                        help=f"run only these ({', '.join(BENCHES)})")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--child", choices=list(BENCHES), help=argparse.SUPPRESS)
    parser.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child, args.quick, args.child_out)
        return 0

    names = args.only or list(BENCHES)
    started, load_start, t0 = datetime.now(timezone.utc), os.getloadavg(), time.perf_counter()
    results = []
    for name in names:
        print(f"[run_all] {name} ...", flush=True)
        result = run_bench(name, args.quick)
        print(f"[run_all] {name}: {result.status} in {result.seconds:.0f} s"
              + (f": {result.error.splitlines()[-1] if result.error else ''}" if result.status == "error" else ""),
              flush=True)
        results.append(result)
    meta = {"command": " ".join(["python -m bench.run_all", *(sys.argv[1:] if argv is None else argv)]),
            "quick": args.quick, "started": started.strftime("%Y-%m-%d %H:%M:%S"),
            "seconds": time.perf_counter() - t0, "load_start": load_start, "load_end": os.getloadavg(),
            "machine": machine()}
    json_path, md_path = write_results(results, meta, args.out)
    print(md_path.read_text())
    print(f"[run_all] wrote {md_path} and {json_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
