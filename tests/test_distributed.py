"""Data parallelism: environment detection, and 2 gloo processes == 1 process on the same global batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vljepa.distributed import DistEnv, env_from_environ, resolve_env

FULL_ENV = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29501"}


def test_torchrun_variables_are_read():
    env = env_from_environ(FULL_ENV)
    assert env == DistEnv(rank=1, local_rank=1, world_size=2, master_addr="10.0.0.1", master_port=29501,
                          source="torchrun")


def test_no_variables_is_a_single_process():
    assert resolve_env({}) == DistEnv()


@pytest.mark.parametrize("drop", ["WORLD_SIZE", "MASTER_PORT", "LOCAL_RANK"])
def test_half_set_variables_are_an_error_not_world_size_one(drop):
    env = {k: v for k, v in FULL_ENV.items() if k != drop}
    with pytest.raises(RuntimeError, match=f"half set.*{drop}"):
        resolve_env(env)


def test_rank_outside_world_is_an_error():
    with pytest.raises(ValueError):
        env_from_environ({**FULL_ENV, "RANK": "2"})


def tiny_data(n: int = 16):
    from vljepa.data import TokenTextDataset

    rng = np.random.default_rng(0)
    colours = ["red", "blue", "green", "yellow"]
    shapes = ["circle", "square", "triangle", "star"]
    texts = [f"a {colours[i % 4]} {shapes[(i // 4) % 4]} moves {'left' if i % 3 else 'up'}" for i in range(n)]
    return TokenTextDataset([f"c{i}" for i in range(n)], rng.standard_normal((n, 8, 32)).astype(np.float16), texts)


def tiny_cfg(**changes):
    from vljepa.config import get_preset, replace

    base = {"train.max_steps": 3, "train.batch_size": 8, "train.num_threads": 1, "train.warmup_steps": 1}
    return replace(get_preset("tiny"), **{**base, **changes})


def one_step_gradients(cfg, rank: int, world_size: int):
    """Loss (mean over ranks) and parameter gradients (as DDP leaves them) of one global batch."""
    from vljepa.distributed import DistContext
    from vljepa.losses import embedding_loss
    from vljepa.model import build_model
    from vljepa.train import TrainStep

    torch.manual_seed(0)
    model = build_model(cfg)
    model.train()
    data = tiny_data()
    index = torch.arange(cfg.train.batch_size)
    per_rank = len(index) // world_size
    local = index[rank * per_rank : (rank + 1) * per_rank]
    step = TrainStep(model)
    dist = DistContext(rank=rank, world_size=world_size, initialized=world_size > 1)
    if world_size > 1:
        step = torch.nn.parallel.DistributedDataParallel(step)
    predicted, target = step(data.visual(local), None, data.text(local))
    loss = embedding_loss("infonce", predicted, target, temperature=0.07, rank=rank, world_size=world_size)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return dist.mean(loss.detach()).item(), grads


def _worker(rank: int, world_size: int, init_file: str, out: str) -> None:
    from vljepa.distributed import DistEnv, init_distributed, shutdown
    from vljepa.train import train

    ctx = init_distributed(DistEnv(rank=rank, world_size=world_size, source="explicit"), backend="gloo",
                           init_method=f"file://{init_file}")
    torch.set_num_threads(1)
    loss, grads = one_step_gradients(tiny_cfg(), rank, world_size)
    result = train(tiny_cfg(), tiny_data(), f"{out}/run", progress=False, dist=ctx)
    if rank == 0:
        torch.save({"loss": loss, "grads": grads, "history": [h["loss"] for h in result.history],
                    "params": {k: v.clone() for k, v in result.model.state_dict().items()}}, f"{out}/rank0.pt")
    shutdown(ctx)


def test_two_gloo_processes_match_one_process_on_the_same_global_batch(tmp_path):
    import torch.multiprocessing as mp

    from vljepa.train import train

    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    two = torch.load(tmp_path / "rank0.pt", weights_only=True)

    loss, grads = one_step_gradients(tiny_cfg(), 0, 1)
    assert two["loss"] == pytest.approx(loss, rel=1e-5)
    assert grads.keys() == two["grads"].keys() and len(grads) > 10
    for name, grad in grads.items():
        torch.testing.assert_close(two["grads"][name], grad, rtol=1e-4, atol=1e-6, msg=name)

    single = train(tiny_cfg(), tiny_data(), tmp_path / "single", progress=False)
    assert two["history"] == pytest.approx([h["loss"] for h in single.history], rel=1e-5)
    for name, value in single.model.state_dict().items():
        torch.testing.assert_close(two["params"][name], value, rtol=1e-4, atol=1e-5, msg=name)


def test_gathered_infonce_sees_every_rank_as_negatives():
    """With world_size 1 the local loss is the plain (B, B) bidirectional InfoNCE (hand-computed)."""
    import torch.nn.functional as F

    from vljepa.losses import info_nce

    torch.manual_seed(0)
    p, t = torch.randn(6, 5), torch.randn(6, 5)
    logits = F.normalize(p, dim=-1) @ F.normalize(t, dim=-1).T / 0.1
    expected = 0.5 * (F.cross_entropy(logits, torch.arange(6)) + F.cross_entropy(logits.T, torch.arange(6)))
    torch.testing.assert_close(info_nce(p, t, 0.1), expected)
