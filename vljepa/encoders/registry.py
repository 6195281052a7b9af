"""The x-encoders, as an explicit table (torchtitan's ``_supported_models``): name -> builder."""

from __future__ import annotations

from typing import Callable

from vljepa.config import XEncoderConfig
from vljepa.encoders import efficientnet, tiny, vjepa2
from vljepa.encoders.base import XEncoder

Builder = Callable[[XEncoderConfig], XEncoder]
X_ENCODERS: dict[str, Builder] = {
    "vjepa2": vjepa2.build,  # V-JEPA 2 through HF transformers (the paper's)
    "efficientnet-lite0": efficientnet.build,  # packaged ImageNet weights (the embedded default)
    "tiny": tiny.build,  # random, seconds-fast (unit tests)
}


def build_x_encoder(cfg: XEncoderConfig) -> XEncoder:
    """Build (and load, where the entry has weights) the x-encoder named by ``cfg.name``."""
    try:
        builder = X_ENCODERS[cfg.name]
    except KeyError:
        raise KeyError(f"unknown x-encoder {cfg.name!r}; registered: {sorted(X_ENCODERS)}") from None
    encoder = builder(cfg)
    if not isinstance(encoder, XEncoder):
        raise TypeError(f"x-encoder {cfg.name!r} does not satisfy the XEncoder protocol")
    return encoder


def registered_x_encoders() -> list[str]:
    return sorted(X_ENCODERS)
