"""Shared fixtures. Tests never touch the network; weights come from packages or save_pretrained."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture
def tiny_cfg():
    from vljepa.config import get_preset

    return get_preset("tiny")


@pytest.fixture
def tiny_model(tiny_cfg):
    import torch

    from vljepa.model import build_model

    torch.manual_seed(0)
    return build_model(tiny_cfg)


@pytest.fixture(scope="session")
def tiny_state() -> dict:
    """The tiny main-job state, built once per test session: corpus, manifest, token caches, a trained
    model and its MLflow run (``tests.tiny_run.tiny_run``). Read-only: a test that changes it copies it."""
    from tests.tiny_run import tiny_run

    return tiny_run()


@pytest.fixture(scope="session")
def services_env(tmp_path_factory):
    """Local Prefect + MLflow (infra/up.sh on free ports, a temporary state dir), started once per test
    session for every module that talks to them; the environment their clients need."""
    from tests.services import local_services

    with local_services(tmp_path_factory.mktemp("services")) as env:
        yield env


# --- pytest-xdist: which files share a worker, and which start first ------------------------------------
# `--dist loadfile` (infra/test.sh) gives each test file to one worker. Two changes, neither of which can
# change a result (only where and when a file runs):
# - files that use the same session fixture run on one worker, so it is built once: the local services
#   (about 20 s) and the tiny main-job state (about 20 s) would otherwise start on both workers;
# - the longest files start first (longest-processing-time-first), so both workers finish together
#   rather than one waiting on a long file handed out last. Seconds on one worker of the default tier,
#   measured here (2 cores); a file not listed starts after these, in collection order.
SAME_WORKER = {"test_mlflow_ui.py": "test_deployment.py", "test_ablate.py": "test_prefect_flows.py"}
LONGEST_FIRST = ("test_deployment.py",  # with test_mlflow_ui.py: ~130 s
                 "test_cli_paths.py",  # ~88
                 "test_prefect_flows.py",  # with test_ablate.py: ~80
                 "test_bench_modules.py",  # ~80
                 "test_slurm.py",  # ~65
                 "test_resume.py",  # ~63
                 "test_user_data.py", "test_pipeline.py", "test_registry.py", "test_ray_pipeline.py",  # ~40 each
                 "test_live_stream.py", "test_tracking_store.py", "test_decoder_determinism.py", "test_compare.py")


def pytest_xdist_make_scheduler(config, log):
    if config.getvalue("dist") != "loadfile":
        return None
    from collections import OrderedDict
    from pathlib import PurePath

    from xdist.scheduler import LoadFileScheduling

    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}

    class SharedFixtureScheduling(LoadFileScheduling):
        ordered = False

        def _split_scope(self, nodeid: str) -> str:
            path = PurePath(super()._split_scope(nodeid))
            return str(path.with_name(SAME_WORKER.get(path.name, path.name)))

        def _assign_work_unit(self, node) -> None:
            if not self.ordered:  # the first assignment: the queue is whole
                self.ordered = True
                order = sorted(self.workqueue, key=lambda scope: rank.get(PurePath(scope).name, len(rank)))
                self.workqueue = OrderedDict((scope, self.workqueue[scope]) for scope in order)
            super()._assign_work_unit(node)

    return SharedFixtureScheduling(config, log)
