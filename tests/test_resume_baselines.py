"""Resume of the token VLM baseline and of the y-decoder: a run stopped after a checkpoint and re-run
into the same directory ends bit-equal to one never stopped; a resume that skips one restore differs.

The stop is an exception raised inside the step after the checkpoint (what a kill leaves on disk is
the same: checkpoints are written atomically). Both runs cross the stop with state that matters: a
cosine schedule, batches reshuffled every epoch, and for the decoder the noise it draws per batch.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from vljepa.config import get_preset, replace
from vljepa.data import TokenTextDataset

TEXTS = ["a red circle grows", "a blue square moves up", "a green cross shrinks", "a white diamond moves left",
         "two pink stars spin", "an orange ring fades"]


class Stop(Exception):
    pass


def _weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# -- the token VLM -------------------------------------------------------------------------------------


def _vlm_run(tmp, *, stop_after: int | None = None):
    from vljepa.baselines.token_vlm import TokenVLMConfig
    from vljepa.baselines.train import train_token_vlm
    from vljepa.model import visual_dim

    torch.set_num_threads(1)
    cfg = replace(get_preset("tiny"), **{"train.max_steps": 9, "train.checkpoint_every": 3, "train.batch_size": 4,
                                         "train.schedule": "cosine", "train.warmup_steps": 2, "train.num_threads": 1})
    generator = torch.Generator().manual_seed(0)
    n = 10  # batch 4 over 10 samples: a new shuffled epoch every 2-3 steps
    data = TokenTextDataset([f"s{i}" for i in range(n)],
                            torch.randn(n, 8, visual_dim(cfg), generator=generator).numpy(),
                            [TEXTS[i % len(TEXTS)] for i in range(n)])

    def log_step(step: int, row: dict) -> None:
        if stop_after is not None and step + 1 == stop_after:
            raise Stop

    return train_token_vlm(cfg, TokenVLMConfig(), data, tmp, progress=False, log_step=log_step)


@pytest.fixture(scope="module")
def vlm_reference(tmp_path_factory):
    return _weights(_vlm_run(tmp_path_factory.mktemp("vlm") / "ref").model)


@pytest.mark.parametrize("skip", ["", "scheduler", "data"])
def test_token_vlm_resumes_bit_exact_and_each_restore_matters(tmp_path, vlm_reference, monkeypatch, skip):
    with pytest.raises(Stop):
        _vlm_run(tmp_path / "run", stop_after=5)  # the checkpoint of step 3 is on disk; 4 and 5 are lost
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["step-00000003"]
    if skip == "scheduler":
        monkeypatch.setattr(torch.optim.lr_scheduler.LambdaLR, "load_state_dict", lambda self, state: None)
    elif skip == "data":
        from vljepa.data import BatchStream

        monkeypatch.setattr(BatchStream, "load_state_dict", lambda self, state: None)
    resumed = _vlm_run(tmp_path / "run")
    assert len(resumed.history) == 9 and resumed.samples_seen == 36
    assert _equal(_weights(resumed.model), vlm_reference) == (skip == ""), f"skip={skip!r}"


# -- the y-decoder -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def encoder_model():
    from vljepa.model import build_model

    torch.manual_seed(0)
    return build_model(get_preset("tiny"))


def _decoder_cfg(model):
    from vljepa.decoder import decoder_preset

    return dataclasses.replace(decoder_preset("tiny", shared_dim=model.cfg.shared_dim), steps=12, batch_size=4,
                               warmup_steps=2, checkpoint_every=4, noise_norm=0.3, num_threads=1)


def _decoder_run(model, out, monkeypatch=None, stop_after: int | None = None):
    from vljepa.decoder import YDecoder
    from vljepa.decoder_train import train_decoder

    if stop_after is not None:
        calls = {"n": 0}
        real = YDecoder.loss

        def loss(self, *args, **kwargs):
            calls["n"] += 1
            if calls["n"] > stop_after:
                raise Stop
            return real(self, *args, **kwargs)

        monkeypatch.setattr(YDecoder, "loss", loss)
    try:
        return train_decoder(model, TEXTS, _decoder_cfg(model), out_dir=out)
    finally:
        if monkeypatch is not None and stop_after is not None:
            monkeypatch.undo()


@pytest.fixture(scope="module")
def decoder_reference(encoder_model, tmp_path_factory):
    return _weights(_decoder_run(encoder_model, tmp_path_factory.mktemp("dec") / "ref").decoder)


@pytest.mark.parametrize("skip", ["", "scheduler", "sampler"])
def test_decoder_resumes_bit_exact_and_each_restore_matters(tmp_path, encoder_model, decoder_reference, monkeypatch,
                                                            skip):
    with pytest.raises(Stop):
        _decoder_run(encoder_model, tmp_path / "dec", monkeypatch, stop_after=6)  # checkpoint 4 kept, 5-6 lost
    assert sorted(p.name for p in (tmp_path / "dec" / "checkpoints").iterdir()) == ["step-00000004"]
    if skip == "scheduler":
        monkeypatch.setattr(torch.optim.lr_scheduler.LambdaLR, "load_state_dict", lambda self, state: None)
    elif skip == "sampler":  # the batch order and the noise draws start over instead of going on
        from vljepa import decoder_train

        monkeypatch.setattr(decoder_train, "_restore_sampler", lambda generator, state: ([], state["history"]))
    resumed = _decoder_run(encoder_model, tmp_path / "dec")
    assert len(resumed.history) == 12
    assert _equal(_weights(resumed.decoder), decoder_reference) == (skip == ""), f"skip={skip!r}"
