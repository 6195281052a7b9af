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
