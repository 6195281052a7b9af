"""The `vljepa` command line: built-in sub-commands and the ones handed to their own parsers."""

import json

import pytest

from vljepa.cli import PASSTHROUGH, main


def test_params_json(capsys):
    assert main(["params", "--preset", "tiny", "--json"]) == 0
    counts = json.loads(capsys.readouterr().out)
    assert set(counts) == {"x_encoder", "predictor", "y_encoder"}
    assert counts["x_encoder"]["trainable"] == 0 and counts["predictor"]["trainable"] > 0


@pytest.mark.parametrize("name", sorted(PASSTHROUGH))
def test_passthrough_commands_have_their_own_help(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([name, "--help"])
    assert exit_info.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_plan_prints_gpu_hours(capsys):
    assert main(["plan", "--preset", "paper", "--stage", "sft"]) == 0
    assert "GPU-hours" in capsys.readouterr().out
