"""The typed stage recipes, the dotted-key overrides and the config's unknown-key errors."""

import hashlib

import pytest

from vljepa.config import PRESETS, ConfigKeyError, TrainConfig, apply_overrides, config_from_dict, get_preset
from vljepa.recipes import RECIPES, Recipe, recipe, stage_config

# sha256(stage_config(preset, stage, phase, init_from).to_json())[:16], recorded from the
# dotted-dict RECIPES before they became typed, and re-recorded when the streamed reader added its
# fields to TrainConfig (num_workers, shuffle_buffer, resampled, skip_bad_samples) and small's
# video phase became 1.5 epochs of the stills + videos mix, and when the y-encoder gained
# y_encoder.prompt_name (EmbeddingGemma's task prompt). Model
# directories are content-addressed by this JSON: a change here orphans every model already made.
GOLDEN = {
    ("paper", "pretrain", "image", None): "7c6da8615f14e912",
    ("paper", "pretrain", "image", "/ckpt/prev"): "7a1a85cde5156be5",
    ("paper", "pretrain", "video", None): "a3c8fb0a1baf7a18",
    ("paper", "pretrain", "video", "/ckpt/prev"): "03e9989c9c1c0f96",
    ("paper", "sft", None, None): "bedaab3def32825e",
    ("paper", "sft", None, "/ckpt/prev"): "d943d41303ecd4a1",
    ("small", "pretrain", "image", None): "a745ef9320c9a7a6",
    ("small", "pretrain", "image", "/ckpt/prev"): "211da0c3778d4ab6",
    ("small", "pretrain", "video", None): "7def001943e1a75d",
    ("small", "pretrain", "video", "/ckpt/prev"): "7828d4e6dded3851",
    ("small", "sft", None, None): "8128d2e91a676ba2",
    ("small", "sft", None, "/ckpt/prev"): "159675a9df660b46",
    ("tiny", "pretrain", "image", None): "5e051ae51acf6d9d",
    ("tiny", "pretrain", "image", "/ckpt/prev"): "981d22995a6f0c09",
    ("tiny", "pretrain", "video", None): "3e8e415d75b0b652",
    ("tiny", "pretrain", "video", "/ckpt/prev"): "1e48875c1a875303",
    ("tiny", "sft", None, None): "eed467c3f75d755f",
    ("tiny", "sft", None, "/ckpt/prev"): "10123d62706fd00b",
}


@pytest.mark.parametrize(("preset", "stage", "phase", "init_from"), sorted(GOLDEN, key=str))
def test_stage_config_json_is_unchanged(preset, stage, phase, init_from):
    cfg = stage_config(get_preset(preset), stage, phase, init_from=init_from)
    digest = hashlib.sha256(cfg.to_json().encode()).hexdigest()[:16]
    assert digest == GOLDEN[(preset, stage, phase, init_from)]


def test_every_preset_has_every_stage():
    expected = {(name, stage, phase) for name in PRESETS
                for stage, phase in (("pretrain", "image"), ("pretrain", "video"), ("sft", None))}
    assert set(RECIPES) == expected


def test_misspelt_recipe_field_is_a_type_error():
    with pytest.raises(TypeError, match="num_frame"):
        Recipe(num_frame=1)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Recipe(1)  # type: ignore[misc]  # keyword-only


def test_recipe_length_is_steps_or_epochs():
    with pytest.raises(ValueError, match="not both"):
        Recipe(max_steps=10, epochs=1.0)
    # Epochs clear the preset's max_steps (which would win): the paper's phase 1B runs one epoch.
    video = stage_config(get_preset("paper"), "pretrain", "video")
    assert get_preset("paper").train.max_steps == 100_000
    assert (video.train.max_steps, video.train.epochs) == (None, 1.0)
    # Steps leave epochs alone.
    sft = stage_config(get_preset("paper"), "sft")
    assert (sft.train.max_steps, sft.train.epochs) == (35_000, get_preset("paper").train.epochs)


def test_unset_recipe_fields_keep_the_config_values():
    cfg = apply_overrides(get_preset("tiny"), {"train.lr": 0.123, "x_encoder.num_frames": 3})
    sft = stage_config(cfg, "sft")
    assert (sft.train.lr, sft.x_encoder.num_frames) == (0.123, 3)  # the tiny SFT recipe sets neither
    assert (sft.train.schedule, sft.train.warmup_steps, sft.train.stage) == ("cosine", 1, "sft")
    assert stage_config(cfg, "pretrain", "image").x_encoder.num_frames == 1


def test_recipe_lookup():
    assert recipe("paper", "pretrain") is RECIPES[("paper", "pretrain", "video")]
    assert recipe("small", "sft") == Recipe(epochs=2.0, lr=1e-4, schedule="cosine", warmup_steps=5)
    with pytest.raises(KeyError) as info:
        recipe("huge", "pretrain", "image")
    assert "'huge'" in str(info.value) and "('tiny', 'sft', None)" in str(info.value)
    with pytest.raises(ValueError, match="pretrain"):
        recipe("paper", "sft", "image")


def test_from_dict_names_the_nearest_option():
    with pytest.raises(TypeError, match=r"^TrainConfig: unknown option 'lrr'; did you mean 'lr'\?$"):
        config_from_dict(TrainConfig, {"lrr": 1e-4})
    data = get_preset("tiny").to_dict()
    data["slurm"]["partitoin"] = "debug"
    with pytest.raises(TypeError, match="SlurmConfig: unknown option 'partitoin'; did you mean 'partition'"):
        config_from_dict(type(get_preset("tiny")), data)
    with pytest.raises(TypeError, match="valid:"):  # nothing close: list what is valid
        config_from_dict(TrainConfig, {"zzzzzz": 1})


def test_token_vlm_config_rejects_unknown_keys():
    from vljepa.baselines.token_vlm import TokenVLMConfig

    assert TokenVLMConfig.from_json(TokenVLMConfig(num_layers=2).to_json()) == TokenVLMConfig(num_layers=2)
    with pytest.raises(TypeError, match="did you mean 'vocab'"):
        TokenVLMConfig.from_json('{"vocb": "full"}')


def test_apply_overrides_sets_values_at_any_depth():
    base = get_preset("tiny")
    cfg = apply_overrides(base, {"train.lr": 1e-4, "slurm.partition": "debug",
                                 "predictor.lm.rms_norm_eps": 1e-6, "train.snapshot_steps": [2, 4],
                                 "shared_dim": 16})
    assert (cfg.train.lr, cfg.slurm.partition, cfg.predictor.lm.rms_norm_eps, cfg.shared_dim) == (
        1e-4, "debug", 1e-6, 16)
    assert cfg.train.snapshot_steps == (2, 4)  # re-validated: JSON lists become the field's tuple
    assert base.train.lr == 1e-3 and base.slurm.partition is None  # the input is untouched
    assert apply_overrides(base, {}) == base
    whole = apply_overrides(base, {"data": {"n_videos": 7}})  # a section from a mapping
    assert whole.data.n_videos == 7 and whole.data.seed == base.data.seed


@pytest.mark.parametrize(("key", "nearest"), [
    ("train.lrr", "train.lr"),
    ("trian.lr", "train.lr"),
    ("slurm.partitoin", "slurm.partition"),
    ("predictor.lm.hiden_size", "predictor.lm.hidden_size"),
])
def test_misspelt_override_names_the_nearest_key(key, nearest):
    with pytest.raises(ConfigKeyError) as info:
        apply_overrides(get_preset("tiny"), {key: 1})
    assert isinstance(info.value, KeyError)
    assert str(info.value) == f"unknown config key {key!r}; did you mean {nearest!r}?"


def test_bad_overrides_fail():
    cfg = get_preset("tiny")
    with pytest.raises(ConfigKeyError, match="valid keys at the top level"):
        apply_overrides(cfg, {"zzzzzz": 1})
    with pytest.raises(ConfigKeyError, match="'train.lr' is a value, not a section"):
        apply_overrides(cfg, {"train.lr.warmup": 1})
    with pytest.raises(TypeError, match="TrainConfig: expected a mapping"):
        apply_overrides(cfg, {"train": 3})
    with pytest.raises(TypeError, match="did you mean 'partition'"):
        apply_overrides(cfg, {"slurm": {"partitoin": "debug"}})
