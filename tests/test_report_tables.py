"""README's figure tables equal what ``python -m bench.report`` writes from the committed artifacts."""

from __future__ import annotations

import json
import shutil

import pytest

from bench import report


def test_readme_tables_are_the_ones_the_artifacts_give():
    text = report.README.read_text()
    for name in report.TABLES:
        assert f"<!-- report:{name} -->" in text, f"README.md lost its {name} block"
    assert report.render(text) == text, "README.md differs from its artifacts: run `python -m bench.report --write`"
    assert report.main(["--check"]) == 0


def test_a_changed_artifact_changes_the_table(tmp_path):
    """The generator reads the numbers (a fixture value no README holds: 0.6172 -> 0.617, x74)."""
    main_job = tmp_path / "main-job"
    shutil.copytree(report.MAIN_JOB, main_job)
    saved = json.loads((main_job / "test_metrics.json").read_text())
    saved["evaluation"]["metrics"]["t2v_r1"] = 0.6172
    saved["evaluation"]["chance"]["t2v_r1"] = 1 / 120
    (main_job / "test_metrics.json").write_text(json.dumps(saved))
    row = next(line for line in report.results_table(main_job) if line.startswith("| text→video R@1 |"))
    assert row == "| text→video R@1 | **0.617** | 0.008 | 74× | not comparable¹ |"
    results = json.loads((main_job / "results.json").read_text())
    results["metrics"]["vqa/acc_what_colour"] = 0.6125
    (main_job / "results.json").write_text(json.dumps(results))
    row = next(line for line in report.tasks_table(main_job) if line.startswith("| VQA by question kind |"))
    assert row.split(" | ")[2].startswith("0.61 / ")


@pytest.mark.parametrize("busy, shown", [(False, "1.38"), (True, "no result (busy)")])
def test_a_load_sensitive_ratio_is_no_result_on_a_busy_machine(tmp_path, busy, shown):
    bench = {"command": "python -m bench.run_all --quick", "started": "2026-01-02 03:04:05", "busy": busy,
             "load_start": [0.5, 0.4, 0.3], "machine": {"cores": 2, "git_commit": "cd" * 20},
             "benches": [{"name": "bench_train", "status": "ok", "ratios": [
                 {"metric": "2-rank DDP / 1 process", "value": 1.3811, "goal": None, "met": None, "note": "",
                  "load_sensitive": True},
                 {"metric": "live / cached", "value": 2.7140, "goal": {"text": "≥ 5 (README)"}, "met": False,
                  "note": "", "load_sensitive": False}]},
                 {"name": "ray_workers", "status": "error", "ratios": []}]}
    path = tmp_path / "latest.json"
    path.write_text(json.dumps(bench))
    lines = report.bench_table(path)
    assert f"| bench_train | 2-rank DDP / 1 process | {shown} |" in "\n".join(lines)
    assert "| bench_train | live / cached | 2.71 | ≥ 5 (README) | no |" in lines
    assert "| ray_workers | error | — | — | — |" in lines
    assert lines[0].startswith("`python -m bench.run_all --quick` on 2026-01-02 03:04:05 UTC, commit `cdcdcdc`")


@pytest.mark.parametrize("base, sft, n, sign, expected", [
    (0.5, 0.6, 100, +1, "**yes** (+2.0 SE, SE 5.0 points)"),   # p 0.55: SE sqrt(0.2475 / 100) = 0.0497
    (0.5, 0.6, 100, -1, "**no** (+2.0 SE, SE 5.0 points)"),
    (0.5, 0.55, 100, +1, "inside the noise (+1.0 SE, SE 5.0 points)"),
    (0.8, 0.7, 400, +1, "**no** (-4.6 SE, SE 2.2 points)"),     # p 0.75: SE sqrt(0.1875 / 400) = 0.02165
])
def test_base_sft_verdict_by_hand(base, sft, n, sign, expected):
    assert report.verdict(base, sft, n, sign) == expected


def test_base_sft_rows_follow_the_artifacts(tmp_path):
    folder = tmp_path / "base-vs-sft"
    shutil.copytree(report.BASE_SFT, folder)
    sft = json.loads((folder / "sft.json").read_text())
    sft["metrics"]["retrieval/t2v_r1"] = 0.7125                  # above BASE now, by > 2 SE
    (folder / "sft.json").write_text(json.dumps(sft))
    base = json.loads((folder / "base.json").read_text())
    row = next(line for line in report.base_sft_table(folder) if line.startswith("| text→video R@1 |"))
    cells = row.split(" | ")
    assert cells[3] == "0.713" and cells[2] == f"{base['metrics']['retrieval/t2v_r1']:.3f}"
    assert cells[4] == f"{100 * (0.7125 - base['metrics']['retrieval/t2v_r1']):+.1f}"
    assert cells[6].startswith("**yes**")


def _gpu_run(batch: int, query: int, cached: tuple[float, float], live: tuple[float, float]) -> dict:
    def mode(name, step_s, peak, flops):
        return {"mode": name, "step_s": step_s, "samples_per_s": batch / step_s, "peak_memory_gb": peak,
                "plan_memory_gb": 2.0 + 0.5 * batch, "achieved_tflops": 123.4, "mfu": 0.1248,
                "plan_step_s": step_s / 3, "flops_per_sample": flops}
    return {"batch": batch, "tokens_per_sample": {"query": query},
            "modes": [mode("cached", cached[0], cached[1], 3e12), mode("live", live[0], live[1], 4.5e12)]}


def test_gpu_check_table_and_its_derived_line(tmp_path):
    """Peak 10 GB at batch 8, 34 GB at 32: 1 GB per sample, 2 GB fixed; plan 0.5 GB per sample, 2 GB fixed."""
    for name, run in {"a": _gpu_run(8, 0, (0.2, 10.0), (0.3, 11.0)), "b": _gpu_run(32, 0, (0.5, 34.0), (0.6, 35.0)),
                      "c": _gpu_run(8, 16, (0.25, 12.0), (0.4, 13.0))}.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(run))
    lines = report.gpu_check_table(tmp_path)
    assert lines[2] == "| 8 | 0 | cached | 0.200 | 40.0 | 10.0 | 6.0 | 123 | 12.5 % | 0.067 |"
    assert lines[6].startswith("| 8 | 16 (SFT) | cached | 0.250 |")
    derived = lines[-1]
    assert "grows by 1.00 GB per sample, plan's by 0.50 GB (×2.0)" in derived
    assert "the fixed part is 2.0 GB measured, 2.0 GB plan" in derived
    assert "adds 0.10–0.15 s per step: ×1.20–1.60 in step time against ×1.50 in FLOPs" in derived


def test_live_stream_table_from_its_json(tmp_path):
    """Lags by hand: windows 0.1 x 40 then 0.3 x 40 (median 0.2, max 0.3); captions 0.5 and 0.9."""
    saved = {"duration_s": 40.0, "decodes": 2, "uniform_1hz_decodes": 40, "lags_s": [0.1] * 40 + [0.3] * 40,
             "caption_lags_s": [0.5, 0.9],
             "provenance": {"command": "cmd", "commit": "abc", "model": "m", "machine": "2 cores", "wall_s": 41.2,
                            "max_rss_gb": 0.5, "note": "a note"}}
    path = tmp_path / "live.json"
    path.write_text(json.dumps(saved))
    lines = report.live_stream_table(path)
    assert "| windows | 80 | 0.20 | 0.30 | 0.30 | 0.10 / 0.30 |" in lines
    assert "| captions | 2 | 0.70 | 0.88 | 0.90 |  |" in lines   # p95 of (0.5, 0.9): 0.5 + 0.95 * 0.4
    assert lines[-1].startswith("40 s of stream, 2 captions (online trigger) against 40 for uniform 1 Hz; 41 s wall")


def test_ablation_and_compare_blocks_follow_the_export(tmp_path):
    """A changed seed in the export changes its row (mean, sd, paired Δ, interval, verdict) and the comparison's cell."""
    folder = tmp_path / "ablations"
    shutil.copytree(report.ABLATIONS, folder)
    export = json.loads((folder / "overview.json").read_text())
    # y-lr 1.0 at default's values on every seed but one, where classification drops 30 points.
    record = export["sweeps"]["y-lr"]
    default = {r["seed"]: r["metrics"] for r in record["runs"] if r["variant"] == "0.05"}
    for r in record["runs"]:
        if r["variant"] == "1.0":
            r["metrics"] = {**default[r["seed"]]}
            if r["seed"] == 0:
                r["metrics"]["classification/top1"] -= 0.30
    # d = (-30, 0, 0): mean -10.0, sd 17.32, half 4.303 * 17.32 / sqrt(3) = 43.03 -> [-53.0, +33.0]: noise.
    export["compare"]["curves"]["token-vlm"]["0"][-1]["captioning/cider"] = 9.0
    (folder / "overview.json").write_text(json.dumps(export))
    row = next(line for line in report.ablations_table(folder) if line.startswith("| 1.0 |"))
    assert row.split(" | ")[1].endswith("(-10.0 [-53.0, +33.0])")
    assert row.endswith("(+0.0 [+0.0, +0.0]) | -3.6, -1.4, -1.8 | noise / noise / noise |")
    last = next(line for line in report.compare_table(folder) if line.startswith("| 2,880 |"))
    vlm = [r[-1]["captioning/cider"] for r in export["compare"]["curves"]["token-vlm"].values()]
    assert f"**{sum(vlm) / 3:.3f}**" in last  # the VLM's mean now the higher one, in bold
