"""The `vljepa` command line: every sub-command has a help of its own and runs through `flows.cli`."""

import json
import subprocess
import sys

import pytest

from flows.cli import COMMANDS, PASSTHROUGH, main


def test_params_json(capsys):
    assert main(["params", "--preset", "tiny", "--json"]) == 0
    counts = json.loads(capsys.readouterr().out)
    assert set(counts) == {"x_encoder", "predictor", "y_encoder"}
    assert counts["x_encoder"]["trainable"] == 0 and counts["predictor"]["trainable"] > 0


@pytest.mark.parametrize("name", sorted({*COMMANDS, *PASSTHROUGH}))
def test_every_command_has_its_own_help(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([name, "--help"])
    assert exit_info.value.code == 0
    # The pass-through commands too: their own parsers must say `vljepa NAME`, not the module's name.
    assert capsys.readouterr().out.split(None, 3)[:3] == ["usage:", "vljepa", name]


def test_plan_prints_gpu_hours(capsys):
    assert main(["plan", "--preset", "paper", "--stage", "sft"]) == 0
    assert "GPU-hours" in capsys.readouterr().out


def test_the_installed_command_lists_every_sub_command():
    out = subprocess.run([sys.executable, "-m", "flows.cli", "--help"], capture_output=True, text=True, check=True).stdout
    for name in (*COMMANDS, *PASSTHROUGH):
        assert f"    {name}" in out, name


def test_vljepa_params_does_not_load_the_orchestration_stack():
    code = ("import sys; from flows.cli import main; main(['params', '--preset', 'tiny']); "
            "print([m for m in ('prefect', 'mlflow', 'submitit', 'ray', 'duckdb') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"
