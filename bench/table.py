"""What each benchmark of ``bench/run_all.py`` runs and which of its numbers are ratios (with goals)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

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
    # Compares different thread / process counts, or compute against real time: on a busy machine
    # it measures the contention, so the tables print it as no result (bench.report, run_all).
    load_sensitive: bool = False


def fmt(value: float | None) -> str:
    """A ratio as the table shows it: 3 significant digits."""
    if value is None:
        return "—"
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


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
                  note="ideal ≈ 2 with 2 free cores", load_sensitive=True)], raw


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
                    goal=Goal(op="<=", target=0.1), note=f"model: {raw['model']}", load_sensitive=True)]
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
                    goal=Goal(op=">=", target=0.35, source="README"), load_sensitive=True)]
    if "ddp2_over_single" in raw:
        possible = raw.get("ddp2_over_single_possible", raw["ddp2_over_single"] <= 2.1)
        ratios.append(Ratio(metric="2-rank gloo DDP samples/s / 1 process samples/s (same 2 threads, interleaved)",
                            value=raw["ddp2_over_single"], load_sensitive=True,
                            note="ideal ≈ 2 with 2 free cores" if possible else
                            "above the 2× that 2 cores allow: the 2-thread process lost time to contention"))
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
