"""The one config resolver: preset or config file → recipe → ``--set KEY=VALUE`` overrides.

Every entry point (``vljepa run``, ``vljepa train``, ``vljepa stream``, ``vljepa plan`` ..., every
Prefect flow) describes what it runs as a ``RunConfig`` and gets its model config from
``RunConfig.model_config`` / ``RunConfig.stage_config``; nothing else applies overrides. A misspelt
key is an error that names the nearest valid key (``vljepa.config.apply_overrides``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from flows.env import StateLayout
from vljepa.config import PRESETS, ConfigKeyError, Phase, Stage, VLJepaConfig, apply_overrides, get_preset
from vljepa.recipes import stage_config

# The one list of each: argparse's choices and the Prefect flows' parameter types (the UI's form) are built
# from these, so a new preset in vljepa.config.PRESETS is a choice of every command and flow at once.
PRESET_NAMES = tuple(PRESETS)
Preset = Literal[PRESET_NAMES]  # type: ignore[valid-type]  # Literal of the tuple's items
Launcher = Literal["local", "inline", "slurm"]
LAUNCHERS = get_args(Launcher)
Engine = Literal["local", "ray"]
ENGINES = get_args(Engine)


class ConfigError(ValueError):
    """A config that cannot be resolved: unknown preset, missing or invalid file, misspelt ``--set`` key."""


def parse_value(text: str) -> object:
    """``--set`` values are JSON where they parse (numbers, booleans, null, lists), else strings."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_overrides(items: Iterable[str]) -> tuple[tuple[str, object], ...]:
    """``["train.lr=1e-4", "slurm.partition=debug"]`` → ``(("train.lr", 0.0001), ("slurm.partition", "debug"))``."""
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set train.max_steps=100")
        out.append((key.strip(), parse_value(value)))
    return tuple(out)


def length_overrides(*, n_videos: int | None = None, epochs: float | None = None,
                     max_steps: int | None = None) -> tuple[str, ...]:
    """The flows' convenience parameters (corpus size, training length) as ``--set`` items."""
    pairs = (("data.n_videos", n_videos), ("train.epochs", epochs), ("train.max_steps", max_steps))
    return tuple(f"{key}={json.dumps(value)}" for key, value in pairs if value is not None)


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """What to run and where: the config source, the overrides, the launcher, the state directory.

    Shared by every stage; stage-specific settings live in that stage's own config
    (``flows.train.TrainJobConfig``, ``flows.evaluate.EvalConfig``, ...).
    """

    preset: str = "small"
    config_path: str | None = None  # a full VLJepaConfig JSON (`vljepa config --preset paper`); replaces preset
    overrides: tuple[str, ...] = ()  # "KEY=VALUE" items, applied last (`--set`)
    launcher: Launcher = "local"  # "local": a submitit subprocess; "slurm": a Slurm job; "inline": this process
    engine: Engine = "local"  # preprocessing engine (ray: Ray Data; RAY_ADDRESS for a cluster)
    phase: Phase | None = None  # stage-1 phase alone; None: image then video, chained
    state_dir: str | None = None  # default: $VLJEPA_STATE_DIR or <repo>/.vljepa
    tracking_uri: str | None = None  # default: $MLFLOW_TRACKING_URI or SQLite under the state dir
    experiment: str | None = None  # MLflow experiment; None: the stage's own default
    registered_model: str = "vljepa"
    progress: bool = True
    nproc: int = 1  # ranks of a local submitit job (gloo on CPU); on Slurm the ranks come from cfg.slurm
    data: str | None = None  # a dataset of the user's own (flows.user_data layouts); None: the configured corpus
    annotations: str | None = None  # with data: its annotation file, when the folder holds several
    allow_outside_root: bool = False  # with data: rows may name files outside it

    def __post_init__(self) -> None:
        if self.nproc < 1:
            raise ConfigError(f"nproc must be at least 1, got {self.nproc}")
        if self.config_path is None and self.preset not in PRESET_NAMES:
            raise ConfigError(f"unknown preset {self.preset!r}; choose one of {PRESET_NAMES} or pass a config file")
        parse_overrides(self.overrides)  # malformed items fail here, before any work

    def base_config(self) -> VLJepaConfig:
        """The preset, or the config file."""
        if self.config_path:
            path = Path(self.config_path)
            if not path.is_file():
                raise ConfigError(f"config file {path} not found (write one with `vljepa config --preset paper > FILE`)")
            try:
                return VLJepaConfig.from_json(path.read_text())
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"config file {path}: {exc}") from exc
        return get_preset(self.preset)

    def model_config(self) -> VLJepaConfig:
        """The base config with this run's phase recipe (if a phase is set) and overrides applied."""
        if self.phase is not None:
            return self.stage_config("pretrain", self.phase)
        return self._with_overrides(self.base_config())

    def stage_config(self, stage: Stage, phase: Phase | None = None, *, init_from: str | None = None) -> VLJepaConfig:
        """One stage / phase of the recipe (``vljepa.recipes.recipe``), then this run's overrides."""
        return self._with_overrides(stage_config(self.base_config(), stage, phase, init_from=init_from))

    def _with_overrides(self, cfg: VLJepaConfig) -> VLJepaConfig:
        if not self.overrides:
            return cfg
        try:
            return apply_overrides(cfg, dict(parse_overrides(self.overrides)))
        except (ConfigKeyError, TypeError) as exc:
            raise ConfigError(f"--set: {exc}") from exc

    def layout(self) -> StateLayout:
        return StateLayout.resolve(self.state_dir, self.tracking_uri)


def check_model_snapshots(cfg: VLJepaConfig) -> None:
    """``vljepa.model.check_snapshots`` as a ``ConfigError`` (the CLI prints it without a traceback)."""
    from vljepa.model import check_snapshots

    try:
        check_snapshots(cfg)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
