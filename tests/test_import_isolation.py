"""`import vljepa` must not pull in the orchestration stack (open_clip keeps open_clip_train apart)."""

import json
import subprocess
import sys

ORCHESTRATION = ("prefect", "ray", "submitit", "mlflow", "duckdb", "pyarrow", "webdataset")


def test_vljepa_imports_without_orchestration_packages():
    code = (
        "import sys, json\n"
        "import vljepa, vljepa.config, vljepa.model, vljepa.losses, vljepa.train, vljepa.evaluate\n"
        "import vljepa.encoders, vljepa.predictor, vljepa.y_encoder, vljepa.params, vljepa.files\n"
        "import vljepa.decoder, vljepa.decoder_train, vljepa.analysis, vljepa.tasks, vljepa.plan, vljepa.streaming\n"
        "import vljepa.checkpoint, vljepa.distributed, vljepa.schedule, vljepa.data\n"
        "from vljepa.encoders import registered_x_encoders; registered_x_encoders()\n"
        f"print(json.dumps([m for m in {ORCHESTRATION!r} if m in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_the_check_itself_can_fail():
    """Guard against a vacuous test: importing the flows does load the orchestration stack."""
    code = "import sys, flows.prefect_flows.pretrain; print('prefect' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "True"
