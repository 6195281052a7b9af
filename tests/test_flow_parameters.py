"""Every deployment's parameters are typed, so the Prefect UI shows a form with choices and checks input."""

import pytest
from prefect.utilities.callables import parameter_schema


def _flows():
    from flows.prefect_flows.ablate import ablate
    from flows.prefect_flows.compare import compare
    from flows.prefect_flows.pretrain import pretrain

    return {"pretrain": pretrain, "ablate": ablate, "compare": compare}


@pytest.mark.parametrize("name", ["pretrain", "ablate", "compare"])
def test_parameters_have_types_and_choices(name):
    schema = parameter_schema(_flows()[name].fn).model_dump()
    props = schema["properties"]
    assert props["preset"]["enum"] == ["small", "tiny", "paper"]
    assert props["launcher"]["enum"] == ["local", "inline", "slurm"]
    for param, spec in props.items():
        assert "type" in spec or "anyOf" in spec or "enum" in spec, f"{name}.{param} is untyped"


def test_ablate_offers_exactly_the_defined_sweeps():
    from flows.ablate import SWEEP_NAMES
    from vljepa.ablations import sweeps
    from vljepa.config import get_preset

    props = parameter_schema(_flows()["ablate"].fn).model_dump()["properties"]
    assert tuple(props["sweep"]["enum"]) == SWEEP_NAMES
    assert set(SWEEP_NAMES) == set(sweeps(get_preset("small")))


def test_a_misspelt_choice_is_rejected_before_the_run():
    from prefect.exceptions import ParameterTypeError

    with pytest.raises(ParameterTypeError):
        _flows()["pretrain"].validate_parameters({"preset": "smal"})
