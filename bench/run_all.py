"""Every benchmark in bench/, one run: the ratios, with their goals, in bench/results/latest.{md,json}.

    python -m bench.run_all [--quick] [--only NAME ...] [--out bench/results]

What each benchmark runs, and which of its numbers are ratios, is the table in bench/table.py.

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
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from bench.table import BENCHES, Ratio, fmt
from vljepa.files import atomic_write_text

ROOT = Path(__file__).resolve().parent.parent


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
                  "runs with different thread or process counts (DDP vs 1 process, Ray workers, FLOP/s vs a matmul",
                  "peak, compute vs real time) measured the contention in this run: they read \"no result (busy)\".",
                  ""]
    lines += ["| benchmark | ratio | value | goal | met | note |", "|---|---|---|---|---|---|"]
    for r in results:
        if r.status == "error":
            lines.append(f"| {r.name} | error | — | — | — | {_cell(r.error or '')} |")
        for x in r.ratios:
            if x.load_sensitive and busy(meta):  # it measured the contention: not quoted as a result
                lines.append(f"| {r.name} | {_cell(x.metric)} | no result (busy) | {x.goal or ''} | — | "
                             f"{_cell(f'measured {fmt(x.value)} under load; ' + x.note)} |")
                continue
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
