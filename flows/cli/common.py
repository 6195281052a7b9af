"""Arguments every sub-command that takes a config shares, and their ``RunConfig``."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator
from typing import TextIO

from flows.resolve import PRESET_NAMES, ConfigError, RunConfig, length_overrides

__all__ = ["ConfigError", "add_config_arguments", "add_length_arguments", "add_state_arguments", "emit", "json_mode",
           "run_config"]

_RESULT_OUT: list[TextIO] = []  # the real stdout while a --json command runs


@contextlib.contextmanager
def json_mode(enabled: bool) -> Iterator[None]:
    """``--json``: the command's JSON is all that reaches stdout, so ``| jq`` works.

    While the command runs, file descriptor 1 points at stderr (stage logs, progress, warnings,
    child processes that inherit it) and so does ``sys.stdout``; ``emit`` writes to the real stdout.
    """
    if not enabled:
        yield
        return
    target = sys.stdout  # where the result goes: the process's stdout, or whatever replaced it (tests)
    target.flush()
    try:
        on_fd1 = target.fileno() == 1
    except (AttributeError, OSError, ValueError):  # io.StringIO, pytest's capture
        on_fd1 = False
    saved = os.dup(1)
    os.dup2(2, 1)
    out = os.fdopen(saved, "w", closefd=False) if on_fd1 else target
    _RESULT_OUT.append(out)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        _RESULT_OUT.pop()
        out.flush()
        sys.stderr.flush()
        os.dup2(saved, 1)
        os.close(saved)


def emit(text: str) -> None:
    """Print a command's result: to the real stdout under ``json_mode``, else to ``sys.stdout``."""
    print(text, file=_RESULT_OUT[-1] if _RESULT_OUT else sys.stdout, flush=True)


def add_config_arguments(p: argparse.ArgumentParser, *, default_preset: str = "small") -> None:
    """``--preset``, ``--config FILE`` and repeatable ``--set KEY=VALUE`` (the one resolver: ``flows.resolve``)."""
    p.add_argument("--preset", default=default_preset, choices=PRESET_NAMES, help=f"named config (default {default_preset})")
    p.add_argument("--config", default=None, metavar="FILE",
                   help="a VLJepaConfig JSON (start from `vljepa config --preset paper`); replaces --preset")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="override a config value, applied last (repeatable), e.g. --set train.max_steps=100 "
                        "--set slurm.partition=debug; values parse as JSON where they can")


def add_state_arguments(p: argparse.ArgumentParser, *, tracking: bool = True) -> None:
    p.add_argument("--state-dir", default=None, help="default: $VLJEPA_STATE_DIR or <repo>/.vljepa")
    if tracking:
        p.add_argument("--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI or SQLite in the state dir")


def add_length_arguments(p: argparse.ArgumentParser) -> None:
    """Shortcuts for the overrides users change most (``--set data.n_videos=...`` etc.)."""
    p.add_argument("--n-videos", type=int, default=None, help="corpus size (= --set data.n_videos=N)")
    p.add_argument("--epochs", type=float, default=None, help="training epochs (= --set train.epochs=X)")
    p.add_argument("--max-steps", type=int, default=None, help="optimiser steps (= --set train.max_steps=N)")


def run_config(args: argparse.Namespace, **fields: object) -> RunConfig:
    """The ``RunConfig`` of the parsed arguments (``fields``: launcher, engine, phase, ...).

    Its model config is resolved here once, so a misspelt ``--set`` key fails before any work.
    """
    overrides = length_overrides(n_videos=getattr(args, "n_videos", None), epochs=getattr(args, "epochs", None),
                                 max_steps=getattr(args, "max_steps", None)) + tuple(args.overrides)
    run = RunConfig(preset=args.preset, config_path=args.config, overrides=overrides,
                    state_dir=getattr(args, "state_dir", None), tracking_uri=getattr(args, "tracking_uri", None),
                    **fields)  # type: ignore[arg-type]
    run.model_config()
    return run
