"""The training loop: golden loss curve, accumulation, losses, schedules, precision, live mode, isolation."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from tests.test_distributed import tiny_cfg, tiny_data
from vljepa.config import get_preset


def losses(result) -> list[float]:
    return [round(h["loss"], 4) for h in result.history]


def test_golden_loss_curve_of_tiny(tmp_path):
    """A refactor that changes the data order, init, loss or optimiser shows up here."""
    from vljepa.train import train

    result = train(tiny_cfg(**{"train.max_steps": 4}), tiny_data(), tmp_path, progress=False)
    assert losses(result) == pytest.approx(GOLDEN_TINY, abs=2e-3)
    assert json.loads((tmp_path / "config.json").read_text())["train"]["max_steps"] == 4


GOLDEN_TINY = [3.1458, 3.3342, 2.9298, 2.7246]  # measured with this code, torch 2.13.0 CPU


def test_gradient_accumulation_matches_one_big_batch_for_a_per_sample_loss(tmp_path):
    """L2 is a mean over samples, so 2 micro-batches of 4 give the gradient of 1 batch of 8."""
    from vljepa.train import train

    big = train(tiny_cfg(**{"train.loss": "l2"}), tiny_data(), tmp_path / "a", progress=False)
    accum = train(tiny_cfg(**{"train.loss": "l2", "train.grad_accum_steps": 2}), tiny_data(), tmp_path / "b",
                  progress=False)
    assert [h["loss"] for h in accum.history] == pytest.approx([h["loss"] for h in big.history], rel=1e-5)
    for (name, a), b in zip(big.model.state_dict().items(), accum.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=name)


def test_batch_policy_rounds_the_per_rank_batch_down_and_says_the_effective_batch():
    from vljepa.recipes import stage_config
    from vljepa.train import effective_batch_size, micro_batch_sizes

    assert micro_batch_sizes(tiny_cfg(**{"train.grad_accum_steps": 2}), 2) == (4, 2)
    assert micro_batch_sizes(tiny_cfg(**{"train.grad_accum_steps": 3}), 1) == (2, 2)  # 8 -> 6
    assert effective_batch_size(tiny_cfg(), 3) == 6
    sft = stage_config(get_preset("paper"), "sft")  # batch 6000 on the preset's own 24 x 8 ranks
    ranks = sft.slurm.nodes * sft.slurm.gpus_per_node
    assert (ranks, micro_batch_sizes(sft, ranks), effective_batch_size(sft, ranks)) == (192, (5952, 31), 5952)
    with pytest.raises(ValueError, match="at least 16"):
        micro_batch_sizes(tiny_cfg(**{"train.grad_accum_steps": 2}), 8)


@pytest.mark.parametrize("loss", ["l2", "l1", "cosine"])
def test_each_configured_loss_trains(tmp_path, loss):
    from vljepa.train import train

    import torch.nn.functional as F

    from vljepa.data import BatchStream
    from vljepa.model import build_model
    from vljepa.train import TrainStep

    cfg = tiny_cfg(**{"train.loss": loss, "train.max_steps": 2})
    data = tiny_data()
    result = train(cfg, data, tmp_path, progress=False)
    # Step 1's loss, by hand: the same initial weights and first batch, the formula written out here.
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg)
    model.train()
    index = BatchStream(len(data), cfg.train.batch_size, cfg.train.seed).next()
    with torch.no_grad():
        predicted, target = TrainStep(model)(data.visual(index), None, data.text(index))
    by_hand = {"l2": lambda p, t: ((p - t) ** 2).mean(), "l1": lambda p, t: (p - t).abs().mean(),
               "cosine": lambda p, t: (1 - F.cosine_similarity(p, t, dim=-1)).mean()}[loss](predicted, target)
    assert result.history[0]["loss"] == pytest.approx(float(by_hand), rel=1e-5)
    assert result.history[1]["loss"] != result.history[0]["loss"]  # the update moved the model


def test_cosine_and_constant_schedules():
    from vljepa.schedule import lr_lambda

    cosine = lr_lambda(tiny_cfg(**{"train.schedule": "cosine", "train.warmup_steps": 2}), 10)
    assert [round(cosine(s), 3) for s in (0, 1, 2, 6, 10)] == [0.5, 1.0, 1.0, 0.5, 0.0]
    constant = lr_lambda(tiny_cfg(**{"train.warmup_steps": 0}), 10)
    assert {constant(s) for s in range(10)} == {1.0}


def test_weight_decay_skips_biases_norms_and_embeddings():
    from vljepa.model import build_model, param_groups

    model = build_model(tiny_cfg())
    names = {id(p): n for n, p in model.named_parameters()}
    for group in param_groups(model, lr=1e-3, weight_decay=0.05):
        for p in group["params"]:
            exempt = p.ndim < 2 or "norm" in names[id(p)].lower() or "embed" in names[id(p)]
            assert group["weight_decay"] == (0.0 if exempt else 0.05), names[id(p)]


def test_cpu_runs_in_fp32_and_bf16_is_explicit():
    from vljepa.train import autocast_for

    cpu = torch.device("cpu")
    assert not isinstance(autocast_for(tiny_cfg(), cpu), torch.autocast)
    bf16 = autocast_for(tiny_cfg(**{"train.precision": "bf16"}), cpu)
    with bf16:
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16


def test_live_mode_equals_cached_tokens_of_the_same_encoder(tmp_path):
    """Running the frozen encoder in the loop gives the same training as its cached tokens."""
    from vljepa.config import replace
    from vljepa.data import LiveFrames, TokenTextDataset
    from vljepa.encoders import build_x_encoder
    from vljepa.train import train

    cfg = tiny_cfg(**{"train.max_steps": 2})
    torch.manual_seed(0)
    encoder = build_x_encoder(cfg.x_encoder)
    frames = torch.randn(16, cfg.x_encoder.num_frames, 3, cfg.x_encoder.image_size, cfg.x_encoder.image_size)
    texts = tiny_data().texts
    with torch.no_grad():
        tokens = encoder.encode(frames).numpy()  # (16, N, D) float32: no float16 rounding here
    cfg = replace(cfg, **{"train.seed": 1})
    cached = train(cfg, TokenTextDataset([str(i) for i in range(16)], tokens, texts), tmp_path / "c", progress=False)
    live = train(replace(cfg, **{"train.mode": "live"}), LiveFrames(frames, texts, encoder.encode), tmp_path / "l",
                 progress=False)
    assert [h["loss"] for h in live.history] == pytest.approx([h["loss"] for h in cached.history], rel=1e-5)


def test_training_modules_import_without_orchestration_packages():
    code = ("import sys, json, vljepa.train, vljepa.distributed, vljepa.checkpoint, vljepa.data, vljepa.schedule\n"
            "print(json.dumps([m for m in ('prefect', 'submitit', 'mlflow', 'duckdb', 'ray') if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
