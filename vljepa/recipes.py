"""The two-stage recipe as typed data (paper Sec. 3.2, explained in ``shared/paper/001`` §3.2).

Per preset and (stage, phase), a ``Recipe``: the values that change from the preset. Stage 1
phase "image" (1A) is 1 frame per sample; phase "video" (1B) continues from it with the preset's
frames; stage 2 "sft" continues from stage 1 on the VQA / caption / classification / pretraining
mix with a cosine schedule. ``stage_config(cfg, stage, phase)`` applies one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from vljepa.config import ConfigKeyError, Phase, ScheduleName, Stage, VLJepaConfig


@dataclass(frozen=True, kw_only=True)
class Recipe:
    """What one stage / phase of the two-stage recipe changes in a preset; None keeps the preset's value.

    The length is given by ``max_steps`` or by ``epochs``, never both. ``TrainConfig.max_steps``
    overrides ``epochs`` when set, so a recipe that gives ``epochs`` also clears ``max_steps``
    (the length is then the epochs); one that gives ``max_steps`` leaves ``epochs`` as it is
    (unused while ``max_steps`` is set). The paper's phase 1B is ``Recipe(epochs=1.0, ...)``: one
    epoch, where the preset itself runs 100k steps.
    """

    num_frames: int | None = None  # x_encoder.num_frames: 1 in the image phase (a frame per sample)
    batch_size: int | None = None  # train.batch_size (global)
    max_steps: int | None = None  # train.max_steps; excludes `epochs`
    epochs: float | None = None  # train.epochs, and train.max_steps cleared; excludes `max_steps`
    lr: float | None = None  # train.lr
    schedule: ScheduleName | None = None  # train.schedule
    warmup_steps: int | None = None  # train.warmup_steps

    def __post_init__(self) -> None:
        if self.max_steps is not None and self.epochs is not None:
            raise ValueError(f"Recipe: give max_steps ({self.max_steps}) or epochs ({self.epochs}), not both: "
                             "max_steps would silently win")

    def apply(self, cfg: VLJepaConfig) -> VLJepaConfig:
        """``cfg`` with this recipe's values in ``x_encoder`` and ``train``."""
        train = {name: getattr(self, name) for name in ("batch_size", "max_steps", "epochs", "lr",
                                                       "schedule", "warmup_steps")
                 if getattr(self, name) is not None}
        if self.epochs is not None:
            train["max_steps"] = None  # the length is the epochs (see the class docstring)
        x_encoder = (cfg.x_encoder if self.num_frames is None
                     else dataclasses.replace(cfg.x_encoder, num_frames=self.num_frames))
        return dataclasses.replace(cfg, x_encoder=x_encoder, train=dataclasses.replace(cfg.train, **train))


# The two-stage recipe (paper Sec. 3.2, explained in shared/paper/001 §3.2), one entry per
# (preset, stage, phase). Stage 1 phase "image" is 1 frame per sample; phase "video" continues
# from it with the preset's frames; stage 2 "sft" continues from stage 1 on the VQA / caption /
# classification / pretraining mix with a cosine schedule. The paper entries state the published
# numbers of each stage in full, even where they equal the preset's, so a config file derived
# from the paper preset still gets them.
RECIPES: dict[tuple[str, Stage, Phase | None], Recipe] = {
    # Phase 1A: batch 24k, constant lr 5e-5, 100k iterations.
    ("paper", "pretrain", "image"): Recipe(num_frames=1, batch_size=24000, max_steps=100_000, lr=5e-5,
                                           schedule="constant", warmup_steps=0),
    # Phase 1B length is not given in the paper ("subsequent iterations"): one epoch; set max_steps to taste.
    ("paper", "pretrain", "video"): Recipe(num_frames=16, batch_size=24000, epochs=1.0, lr=5e-5,
                                           schedule="constant", warmup_steps=0),
    # SFT: batch 6k, 35k steps, cosine from the initial rate (the rate itself is not given).
    ("paper", "sft", None): Recipe(num_frames=16, batch_size=6000, max_steps=35_000, lr=5e-5,
                                   schedule="cosine", warmup_steps=0),
    # One epoch of single frames (~4x cheaper per sample than 4 frames) before the video phase.
    ("small", "pretrain", "image"): Recipe(num_frames=1, epochs=1.0),
    # Continued from the image phase on the stills + videos mix (twice the items of the videos alone):
    # 1.5 epochs of the mix = the 45 steps the preset's 3 epochs of videos took (the 15-minute budget).
    ("small", "pretrain", "video"): Recipe(epochs=1.5),
    ("small", "sft", None): Recipe(epochs=2.0, lr=1e-4, schedule="cosine", warmup_steps=5),
    # The paper's three steps at rehearsal size: frames as the paper, batches and steps tiny.
    # Batch 16 (pretraining) and 8 (SFT) do not split over 3 ranks: the batch policy is exercised.
    ("rehearsal", "pretrain", "image"): Recipe(num_frames=1, batch_size=16, max_steps=4, lr=5e-5,
                                               schedule="constant", warmup_steps=0),
    ("rehearsal", "pretrain", "video"): Recipe(num_frames=16, batch_size=16, max_steps=4, lr=5e-5,
                                               schedule="constant", warmup_steps=0),
    ("rehearsal", "sft", None): Recipe(num_frames=16, batch_size=8, max_steps=4, lr=5e-5,
                                       schedule="cosine", warmup_steps=0),
    ("tiny", "pretrain", "image"): Recipe(num_frames=1),
    ("tiny", "pretrain", "video"): Recipe(),
    ("tiny", "sft", None): Recipe(schedule="cosine", warmup_steps=1),
}


def _default_phase(stage: Stage, phase: Phase | None) -> Phase | None:
    if stage == "sft" and phase is not None:
        raise ValueError("phase applies to stage 'pretrain' only")
    return phase or ("video" if stage == "pretrain" else None)


def recipe(preset: str, stage: Stage, phase: Phase | None = None) -> Recipe:
    """The recipe of one stage / phase of a preset (``RECIPES``); stage 1's phase defaults to "video"."""
    phase = _default_phase(stage, phase)
    try:
        return RECIPES[(preset, stage, phase)]
    except KeyError:
        known = ", ".join(f"({p!r}, {s!r}, {ph!r})" for p, s, ph in RECIPES)
        raise ConfigKeyError(f"no recipe for preset {preset!r}, stage {stage!r}, phase {phase!r}; "
                       f"recipes exist for (preset, stage, phase): {known}") from None


def stage_config(cfg: VLJepaConfig, stage: Stage, phase: Phase | None = None,
                 init_from: str | None = None) -> VLJepaConfig:
    """``cfg`` with the recipe of one stage / phase applied (``recipe(cfg.preset, stage, phase)``).

    Args:
        stage: "pretrain" (stage 1) or "sft" (stage 2).
        phase: stage 1 only: "image" (phase 1A) or "video" (phase 1B, the default).
        init_from: a checkpoint directory whose weights start this stage.
    """
    phase = _default_phase(stage, phase)
    staged = recipe(cfg.preset, stage, phase).apply(cfg)
    train = dataclasses.replace(staged.train, stage=stage, phase=phase or cfg.train.phase,
                                init_from=cfg.train.init_from if init_from is None else init_from)
    return dataclasses.replace(staged, train=train)
