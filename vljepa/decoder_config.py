"""The y-decoder's config and presets (``vljepa.decoder`` explains the presets and the choices)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from typing import Literal

# What the y-decoder trains on (``flows.evaluate.ensure_decoder``, ``flows.decoder_study``): the
# training texts' y-encoder embeddings only, or those plus the predictor's own embeddings of
# training clips paired with their captions.
DECODER_TRAINING = ("text", "text+predicted")

@dataclass(frozen=True, kw_only=True)
class YDecoderConfig:
    """Architecture and training of the y-decoder."""

    lm: Literal["smollm2-135m", "tiny"] = "smollm2-135m"
    lm_path: str | None = None  # a local SmolLM2-style HF dir; default: vljepa.weights.smollm2_dir()
    num_layers: int = 4  # bottom layers of the LM kept
    prefix_len: int = 4  # embedding -> this many LM input vectors
    shared_dim: int = 384
    max_length: int = 48  # target tokens (captions of 4 events are ~35)
    # "cut": the ids seen in the training texts (+ end-of-text); "full": the LM's whole vocabulary.
    vocab: Literal["cut", "full"] = "cut"
    # Gaussian noise of this expected L2 norm is added to the unit-norm training embeddings
    # (CapDec, Nukrai et al. 2022): the decoder then tolerates the gap between predicted and
    # target embeddings it never sees in text-only training.
    noise_norm: float = 0.3
    # Training (text-only, y-encoder frozen).
    steps: int = 160
    batch_size: int = 32
    lr: float = 5e-4
    warmup_steps: int = 20
    weight_decay: float = 0.01
    seed: int = 0
    num_threads: int | None = 2
    device: str = "cpu"  # where the decoder trains (the y-encoder's embeddings are moved there)
    checkpoint_every: int | None = None  # steps between resumable checkpoints (out_dir/checkpoints); None: none
    # Tiny random LM (unit tests).
    tiny_hidden: int = 32
    tiny_heads: int = 4

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "YDecoderConfig":
        data = json.loads(text)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown y-decoder config keys {unknown}")
        return cls(**data)


def decoder_preset(name: str, *, shared_dim: int) -> YDecoderConfig:
    """``paper``: ~100M parameters, full vocabulary (for the 1,536-d paper model); ``small``: 4
    SmolLM2 layers over a cut vocabulary (the embedded default); ``tiny``: a random 2-layer Llama."""
    if name == "tiny":
        return YDecoderConfig(lm="tiny", num_layers=2, prefix_len=2, shared_dim=shared_dim, max_length=32,
                              steps=60, batch_size=16, lr=3e-3, warmup_steps=5, noise_norm=0.0)
    if name == "small":
        return YDecoderConfig(shared_dim=shared_dim)
    if name == "paper":
        # Size from the paper (~100M, see the module docstring); depth, prefix and training are ours:
        # captions of real data run longer than the synthetic ones; tens of thousands of steps for
        # a corpus of real captions, on a GPU, with the LM's own threads (num_threads=None).
        return YDecoderConfig(shared_dim=shared_dim, vocab="full", num_layers=18, prefix_len=8, max_length=64,
                              steps=20_000, batch_size=128, lr=3e-4, warmup_steps=500, num_threads=None,
                              device="cuda")
    if name == "rehearsal":
        # The paper decoder's code path (full vocabulary, prefix from the 1536-d space) at a width a
        # CPU trains in seconds: the tiny random LM over the byte codec's whole vocabulary.
        return YDecoderConfig(lm="tiny", vocab="full", num_layers=2, prefix_len=8, shared_dim=shared_dim,
                              max_length=64, steps=20, batch_size=16, lr=3e-3, warmup_steps=2, noise_norm=0.0)
    raise KeyError(f"unknown y-decoder preset {name!r}; choose paper | rehearsal | small | tiny")
