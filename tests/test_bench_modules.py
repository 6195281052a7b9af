"""Every benchmark in bench/ runs at its smallest size and reports its ratios (names and numbers, not speeds).

Each bench's ``main(argv)`` (what ``python -m bench.X`` runs) is called in a fresh interpreter, as
``bench.run_all`` does it (its torch threads, Ray and memory are its own), in an empty working
directory with an empty state directory, so no main-job corpus or model changes what is measured.
Its result goes through ``bench.table``'s ratios, ``bench.run_all``'s writer and ``bench.report``'s
README table. The values are never compared with anything: at these sizes they are noise.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench import report, run_all
from bench.run_all import BenchResult
from bench.table import BENCHES
from tests.test_bench import META, markdown_rows

ROOT = Path(__file__).resolve().parent.parent
NUMBER = r"([-+]?(?:\d+\.?\d*(?:e[-+]?\d+)?|nan|inf))"  # nan and inf are matched so that they fail as such

# What `python -m bench.X ARGS` does, keeping main's returned dict (the one run_all's child writes).
RUN_MAIN = """
import importlib, json, sys
from bench.run_all import _jsonable
raw = importlib.import_module(sys.argv[1]).main(sys.argv[3:])
open(sys.argv[2], "w").write(json.dumps(raw, default=_jsonable))
"""


@dataclass(frozen=True, kw_only=True)
class Case:
    name: str  # the key in bench.run_all.BENCHES, and the module in bench/
    args: tuple[str, ...]  # the smallest size that still measures every ratio
    ratios: tuple[str, ...]  # metric names, in the order bench.table gives them
    printed: tuple[str, ...]  # regexes of the lines the bench prints, each around one number
    no_result: frozenset[str] = frozenset()  # ratios that must be None here (with a note saying why)


CASES = [
    Case(name="decode_throughput", args=("--clips", "1", "--repeats", "1", "--size", "64"),
         ratios=("raw ffmpeg s / our decode+sample s, geometric mean",
                 "raw ffmpeg s / our decode+sample s, worst clip"),
         printed=(rf"geometric mean ratio \(raw/ours\): {NUMBER}",)),
    Case(name="cache_rerun", args=("--n-videos", "2"),
         ratios=("token cache re-run s / first run s, parquet", "token cache re-run s / first run s, webdataset"),
         printed=(rf"parquet +first .* ratio {NUMBER}", rf"webdataset +first .* ratio {NUMBER}")),
    Case(name="ray_workers", args=("--n-videos", "2", "--no-warmup"),
         ratios=("Ray Data s with 1 decode worker / s with 2",),
         printed=(rf"speed-up 2 vs 1 workers: {NUMBER}x",)),
    # An untrained tiny model: the per-window ratio only (the sweep needs a main job's model).
    Case(name="bench_streaming", args=("--untrained", "tiny", "--windows", "2"),
         ratios=("online compute per window s / window stride s (small)",),
         printed=(rf"online compute per window / stride \(0\.5 s\): {NUMBER}",)),
    # No corpus in the empty state directory: the ratio with ffmpeg decoding is no result, and says so.
    Case(name="bench_train", args=("--preset", "tiny", "--steps", "1", "--batch", "2", "--rounds", "1"),
         ratios=("live x-encoder step s / cached-token step s",
                 "(live step + ffmpeg decode) s / cached-token step s",
                 "train-step FLOP/s / float32 matmul peak FLOP/s",
                 "2-rank gloo DDP samples/s / 1 process samples/s (same 2 threads, interleaved)"),
         printed=(rf'"live_over_cached": {NUMBER}', rf'"step_flops_over_peak": {NUMBER}',
                  rf'"ddp2_over_single": {NUMBER}'),
         no_result=frozenset({"(live step + ffmpeg decode) s / cached-token step s"})),
    # Stream workers 2 only (each reader is an interpreter of its own): the path that forks and adds up
    # the workers' memory; 0 workers reads in the measuring process, as the in-memory reader does.
    Case(name="bench_loader", args=("--n-samples", "32", "--tokens", "8", "--dim", "64", "--shard-size", "16",
                                    "--batch", "16", "--workers", "2"),
         ratios=tuple(f"stream (2 workers) {what}, {cache}" for cache in ("parquet", "webdataset")
                      for what in ("samples/s / in-memory samples/s (load included)",
                                   "peak memory / in-memory peak RSS")),
         printed=(rf"parquet, 2 workers \| {NUMBER} \|", rf"webdataset, 2 workers \| {NUMBER} \|")),
    # 4 samples of 4 frames: one call of 16 frames against the encoder's calls of 8 (not a size against itself).
    Case(name="bench_encode", args=("--samples", "4", "--repeats", "1", "--sizes", "8"),
         ratios=("x-encoder s for 16 frames in one call / in calls of 8 (efficientnet-lite0)",),
         printed=(rf"one call of 16 frames s / calls of 8 s = {NUMBER}",)),
    Case(name="bench_decode_batch", args=("--clips", "2", "--images", "2", "--repeats", "1"),
         ratios=("decode files/s, 16 files a ffmpeg process / one a process, clips",
                 "decode files/s, 16 files a ffmpeg process / one a process, images"),
         printed=(rf"clips .* ratio {NUMBER}", rf"images .* ratio {NUMBER}")),
]


def bench_env(tmp_path: Path) -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "RAY_USAGE_STATS_ENABLED": "0", "VLJEPA_STATE_DIR": str(tmp_path / "state"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    env.pop("RAY_ADDRESS", None)  # a Ray of its own, as run_all's child has, not a cluster this shell points at
    return env


def test_every_benchmark_has_a_case():
    assert sorted(c.name for c in CASES) == sorted(BENCHES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_each_benchmark_runs_at_its_smallest_size_and_reports_its_ratios(case, tmp_path):
    work, out = tmp_path / "work", tmp_path / "raw.json"
    work.mkdir()
    done = subprocess.run([sys.executable, "-c", RUN_MAIN, f"bench.{case.name}", str(out), *case.args], cwd=work,
                          env=bench_env(tmp_path), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    for pattern in case.printed:  # what a user running `python -m bench.X` reads
        printed = re.search(pattern, done.stdout)
        assert printed, f"{case.name} printed no line matching {pattern!r}:\n{done.stdout[-2000:]}"
        assert math.isfinite(float(printed.group(1))), printed.group(0)

    ratios, _context = BENCHES[case.name].ratios(json.loads(out.read_text()))
    assert tuple(r.metric for r in ratios) == case.ratios
    for ratio in ratios:
        if ratio.metric in case.no_result:
            assert ratio.value is None and ratio.note, ratio
        else:
            assert ratio.value is not None and math.isfinite(ratio.value) and ratio.value > 0, ratio

    # Written as run_all writes them (a quiet machine in META: no ratio is withheld as busy) and as the
    # README's bench table shows them: one row per ratio, a number or the explicit "—" of no result.
    result = BenchResult(name=case.name, status="ok", ratios=ratios)
    json_path, md_path = run_all.write_results([result], META, tmp_path / "results")
    rows = {row[1]: row[2] for row in markdown_rows(md_path.read_text()) if row[0] == case.name}
    assert tuple(rows) == case.ratios
    readme_table = "\n".join(report.bench_table(json_path))
    for metric, shown in rows.items():
        assert (shown == "—") if metric in case.no_result else math.isfinite(float(shown)), (metric, shown)
        assert f"| {case.name} | {metric} | {shown} |" in readme_table


def test_gpu_check_without_a_gpu_says_it_needs_cuda_and_how_to_run_on_cpu(tmp_path):
    """`python -m bench.gpu_check` as documented (paper preset on CUDA); its CPU path is tests/test_gpu_check.py's."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the no-GPU message cannot show here")
    done = subprocess.run([sys.executable, "-m", "bench.gpu_check"], cwd=ROOT, env=bench_env(tmp_path),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and not done.stdout
    assert "no CUDA GPU here" in done.stderr and "--device cuda needs one" in done.stderr
    assert "python -m bench.gpu_check --preset rehearsal --device cpu" in done.stderr
    assert "Traceback" not in done.stderr  # a message, not a crash
