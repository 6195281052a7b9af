"""bench/run_all.py: the results table (markdown and JSON agree), error rows, one real quick bench."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import pytest

from bench import run_all
from bench.run_all import BenchResult
from bench.table import Goal, Ratio
from vljepa.files import temp_glob

META = {"command": "python -m bench.run_all --quick", "quick": True, "started": "2026-01-01 00:00:00", "seconds": 12.5,
        "load_start": (1.5, 1.0, 0.5), "load_end": (2.0, 1.2, 0.6),
        "machine": {"cpu": "Test CPU @ 1 GHz", "cores": 2, "usable_cores": 2, "ram_gib": 8.0, "gpus": None,
                    "torch": "2.13.0+cpu", "python": "3.11.7", "platform": "Linux", "git_commit": "ab" * 20}}


def fake_results() -> list[BenchResult]:
    return [
        BenchResult(name="cache_rerun", status="ok", seconds=8.2, load_before=(1.0, 1.0, 1.0), load_after=(2.0, 1.0, 1.0),
                    ratios=[Ratio(metric="re-run / first, parquet", value=0.000318, goal=Goal(op="<=", target=0.05)),
                            Ratio(metric="re-run / first, webdataset", value=0.0712, goal=Goal(op="<=", target=0.05))],
                    context={"n_videos": 8, "parquet": {"first_s": 1.76, "rerun_s": 0.00096}}),
        BenchResult(name="bench_streaming", status="ok", seconds=30.0,
                    ratios=[Ratio(metric="per window / stride", value=0.0633, goal=Goal(op="<=", target=0.1)),
                            Ratio(metric="savings vs uniform, online | causal", value=None, goal=Goal(op=">=", target=3.0),
                                  note="not reached"),
                            Ratio(metric="DDP / single", value=1.4417, note="ideal ≈ 2", load_sensitive=True),
                            Ratio(metric="live / cached", value=2.91, goal=Goal(op=">=", target=5.0, source="README"))]),
        BenchResult(name="ray_workers", status="error", seconds=3.0, error="exit 1: Traceback\nRuntimeError: no Ray | here"),
    ]


def markdown_rows(md: str) -> list[list[str]]:
    """Body rows of the Ratios table, split into cells (escaped pipes kept inside their cell)."""
    section = md.split("## Ratios", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")][1:]  # drop the header
    return [[c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", row)[1:-1]] for row in rows]


def test_markdown_and_json_agree(tmp_path):
    json_path, md_path = run_all.write_results(fake_results(), META, tmp_path)
    data, md = json.loads(json_path.read_text()), md_path.read_text()
    rows = markdown_rows(md)
    expected = [(b, r) for b in data["benches"] for r in b["ratios"]]
    errors = [b for b in data["benches"] if b["status"] == "error"]
    assert len(rows) == len(expected) + len(errors)

    by_key = {(row[0], row[1]): row for row in rows}
    for bench, ratio in expected:
        _, _, value, goal, met, note = by_key[(bench["name"], ratio["metric"])]
        if ratio["value"] is None:
            assert value == "—"
        else:  # the table shows 3 significant digits of the JSON's value
            assert float(value) == pytest.approx(ratio["value"], rel=5e-3)
        assert goal == ("" if ratio["goal"] is None else ratio["goal"]["text"])
        assert met == {None: "", True: "yes", False: "no"}[ratio["met"]]
        assert note == ratio["note"]
    # goals are judged, not copied: 0.0712 misses ≤ 0.05, None misses ≥ 3, 2.91 misses the README's ≥ 5
    mets = {r["metric"]: r["met"] for _, r in expected}
    assert mets == {"re-run / first, parquet": True, "re-run / first, webdataset": False, "per window / stride": True,
                    "savings vs uniform, online | causal": False, "DDP / single": None, "live / cached": False}
    assert by_key[("bench_streaming", "live / cached")][3] == "≥ 5 (README)"

    (error,) = errors
    error_row = by_key[("ray_workers", "error")]
    assert error["error"].startswith("exit 1") and "RuntimeError: no Ray | here" in error_row[5]
    # machine and context sections carry the JSON's values
    assert f"| CPU | {data['machine']['cpu']} |" in md and data["machine"]["git_commit"] in md
    assert "| load average (1 / 5 / 15 min), end | 2.00 / 1.20 / 0.60 |" in md
    assert "parquet.first_s 1.76" in md and "n_videos 8" in md


def test_a_failing_benchmark_is_an_error_row_not_a_crash(tmp_path, monkeypatch):
    """The real cache bench's child, with no ffmpeg on its PATH: it exits non-zero and says why."""
    (tmp_path / "bin").mkdir()  # an empty PATH: the child's interpreter is sys.executable, an absolute path
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    result = run_all.run_bench("cache_rerun", quick=True)
    assert result.status == "error" and not result.ratios
    assert result.error.startswith("exit 1: ") and "No such file or directory: 'ffmpeg'" in result.error
    assert result.load_before is not None and result.load_after is not None


@pytest.mark.timeout(120)  # a run_bench that lost its limit hangs here: fail instead
def test_a_benchmark_that_never_finishes_is_a_timed_out_error_row(tmp_path, monkeypatch):
    """A child that waits for an event nothing sets: the limit is its only way out, however fast the machine."""
    (tmp_path / "sitecustomize.py").write_text("import threading\nthreading.Event().wait()\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))  # the child's interpreter imports it before anything else
    monkeypatch.setitem(run_all.BENCHES, "cache_rerun", replace(run_all.BENCHES["cache_rerun"], timeout_s=(1, 1)))
    result = run_all.run_bench("cache_rerun", quick=True)
    assert result.status == "error" and result.error == "timed out after 1 s" and not result.ratios
    assert result.load_before is not None and result.load_after is not None


def test_machine_description():
    m = run_all.machine()
    assert m["cores"] >= 1 and m["cpu"] and m["torch"].startswith("2.13.0")
    assert m["git_commit"] is None or re.fullmatch(r"[0-9a-f]{40}", m["git_commit"])


def test_quick_cache_rerun_end_to_end(tmp_path):
    """The real cache benchmark through the entry point, child process and writer (~10 s)."""
    assert run_all.main(["--quick", "--only", "cache_rerun", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "latest.json").read_text())
    (bench,) = data["benches"]
    assert bench["status"] == "ok", bench["error"]
    ratios = {r["metric"]: r for r in bench["ratios"]}
    assert len(ratios) == 2
    for fmt in ("parquet", "webdataset"):  # each ratio is the re-run's time over the first run's, as timed
        timed = bench["context"][fmt]
        assert ratios[f"token cache re-run s / first run s, {fmt}"]["value"] == timed["rerun_s"] / timed["first_s"]
    assert all(r["goal"]["text"] == "≤ 0.05" for r in ratios.values())
    assert len(markdown_rows((tmp_path / "latest.md").read_text())) == 2
    assert not list(tmp_path.glob(temp_glob()))  # no temporary left by the atomic writes


def test_a_busy_machine_is_flagged(tmp_path):
    quiet_json, quiet_md = run_all.write_results(fake_results(), META, tmp_path / "quiet")
    busy_json, busy_md = run_all.write_results(fake_results(), {**META, "load_end": (4.5, 3.0, 2.0)}, tmp_path / "busy")
    assert json.loads(quiet_json.read_text())["busy"] is False and "machine was busy" not in quiet_md.read_text()
    assert json.loads(busy_json.read_text())["busy"] is True and "machine was busy" in busy_md.read_text()
    # a ratio of thread / process counts is quoted on a quiet machine, and is no result on a busy one
    quiet_row = {(r[0], r[1]): r for r in markdown_rows(quiet_md.read_text())}[("bench_streaming", "DDP / single")]
    busy_row = {(r[0], r[1]): r for r in markdown_rows(busy_md.read_text())}[("bench_streaming", "DDP / single")]
    assert quiet_row[2] == "1.44" and busy_row[2] == "no result (busy)" and "measured 1.44 under load" in busy_row[5]
    still = {(r[0], r[1]): r for r in markdown_rows(busy_md.read_text())}[("bench_streaming", "live / cached")]
    assert still[2] == "2.91"  # not load-sensitive: quoted either way
