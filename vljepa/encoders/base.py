"""The X-encoder contract and its registry.

An X-encoder is frozen: it turns normalised frames into visual tokens once, and those tokens
are cached (paper Sec. 3: "the X-encoder is frozen"). Every encoder says how its frames must be
prepared (``PreprocessSpec``) so the decode stage can do the resizing inside ffmpeg.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import nn


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True, kw_only=True)
class PreprocessSpec:
    """How frames must look when they reach ``XEncoder.encode``."""

    num_frames: int  # frames per clip (images are duplicated to this count)
    image_size: int  # square side in pixels (short edge scaled to size*256/224, centre crop)
    mean: tuple[float, float, float]  # per-channel, on [0, 1] pixels
    std: tuple[float, float, float]


@runtime_checkable
class XEncoder(Protocol):
    """Frames in, tokens out.

    ``encode(pixels)``: pixels ``(B, T, 3, H, W)`` float32, already normalised with
    ``spec.mean``/``spec.std``; returns tokens ``(B, N, D)`` with ``N == num_tokens`` and
    ``D == token_dim``. Never trains.
    """

    encoder_id: str
    spec: PreprocessSpec
    token_dim: int
    num_tokens: int

    def encode(self, pixels: torch.Tensor) -> torch.Tensor: ...

    def weights_hash(self) -> str: ...


def pool_frame_grid(tokens: torch.Tensor, grid: int | None) -> torch.Tensor:
    """Average-pool per-frame spatial token grids.

    tokens: ``(B, T, h, w, D)``; returns ``(B, T * g * g, D)`` (g = grid, or h×w kept if None).
    """
    batch, frames, height, width, dim = tokens.shape
    if grid is not None and (grid, grid) != (height, width):
        x = tokens.permute(0, 1, 4, 2, 3).reshape(batch * frames, dim, height, width)
        x = nn.functional.adaptive_avg_pool2d(x, grid)  # (B*T, D, g, g)
        tokens = x.reshape(batch, frames, dim, grid, grid).permute(0, 1, 3, 4, 2)
    return tokens.reshape(batch, -1, dim)


def state_dict_hash(module: nn.Module) -> str:
    """sha256 over parameter/buffer names, shapes and bytes: a content id for cache keys."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        if tensor.device.type != "meta":
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class FrozenEncoder(nn.Module):
    """Base class: holds the frozen flag, eval mode and a memoised weights hash."""

    def __init__(self) -> None:
        super().__init__()
        self._hash: str | None = None

    # True where tokens of each frame come from that frame alone, frame-major (B, T * n, D): a 2D
    # encoder applied per frame. Lets the cache encode an image duplicated to T frames only once.
    frame_wise = False
    # A frame-wise encoder's frames per forward call when the cache encodes many (None: all in one).
    frames_per_call: int | None = None

    def freeze(self) -> "FrozenEncoder":
        for param in self.parameters():
            param.requires_grad_(False)
        self.eval()
        return self

    def train(self, mode: bool = True) -> "FrozenEncoder":
        # Frozen means frozen: BatchNorm statistics must never update.
        return super().train(False)

    def weights_hash(self) -> str:
        if self._hash is None:
            self._hash = state_dict_hash(self)
        return self._hash
