"""Every deployment's parameters are typed, so the Prefect UI shows a form with choices and checks input."""

import pytest
from prefect.utilities.callables import parameter_schema


def _flows():
    from flows.prefect_flows.ablate import ablate
    from flows.prefect_flows.compare import compare
    from flows.prefect_flows.preprocess import preprocess
    from flows.prefect_flows.pretrain import pretrain
    from flows.prefect_flows.selective_decoding import selective_decoding
    from flows.prefect_flows.sft import sft

    return {"pretrain": pretrain, "sft": sft, "ablate": ablate, "compare": compare, "preprocess": preprocess,
            "selective_decoding": selective_decoding}


FLOWS = ["pretrain", "sft", "ablate", "compare", "preprocess", "selective_decoding"]


@pytest.mark.parametrize("name", FLOWS)
def test_parameters_have_types_and_choices(name):
    from flows.resolve import ENGINES, LAUNCHERS
    from vljepa.config import PRESETS

    schema = parameter_schema(_flows()[name].fn).model_dump()
    props = schema["properties"]
    # Every preset the CLI accepts, from the one list (vljepa.config.PRESETS): rehearsal included.
    assert props["preset"]["enum"] == list(PRESETS) == ["paper", "rehearsal", "small", "tiny"]
    if "launcher" in props:
        assert props["launcher"]["enum"] == list(LAUNCHERS) == ["local", "inline", "slurm"]
    if "engine" in props:
        assert props["engine"]["enum"] == list(ENGINES) == ["local", "ray"]
    for param, spec in props.items():
        assert "type" in spec or "anyOf" in spec or "enum" in spec, f"{name}.{param} is untyped"


def test_ablate_offers_exactly_the_defined_sweeps():
    from flows.ablate import SWEEP_NAMES
    from vljepa.ablations import sweeps
    from vljepa.config import get_preset

    props = parameter_schema(_flows()["ablate"].fn).model_dump()["properties"]
    assert tuple(props["sweep"]["enum"]) == SWEEP_NAMES
    assert set(SWEEP_NAMES) == set(sweeps(get_preset("small")))


def test_pretrain_full_accepts_the_rehearsal_preset():
    """What `prefect deployment run pretrain/full -p preset=rehearsal` is checked against."""
    assert _flows()["pretrain"].validate_parameters({"preset": "rehearsal"})["preset"] == "rehearsal"


def test_every_command_offers_the_same_presets_and_launchers():
    from flows.cli import build_parser
    from vljepa.config import PRESETS

    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    for name in ("run", "train", "compare", "ablate"):
        actions = {a.dest: a for a in commands[name]._actions}
        assert list(actions["preset"].choices) == list(PRESETS), name
        assert sorted(actions["launcher"].choices) == ["inline", "local", "slurm"], name


def test_a_misspelt_choice_is_rejected_before_the_run():
    from prefect.exceptions import ParameterTypeError

    with pytest.raises(ParameterTypeError):
        _flows()["pretrain"].validate_parameters({"preset": "smal"})
