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
