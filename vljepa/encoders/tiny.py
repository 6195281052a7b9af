"""A random patch encoder for unit tests: same contract as the real ones, milliseconds to run."""

from __future__ import annotations

import torch
from torch import nn

from vljepa.config import XEncoderConfig
from vljepa.encoders.base import IMAGENET_MEAN, IMAGENET_STD, FrozenEncoder, PreprocessSpec, pool_frame_grid


class TinyEncoder(FrozenEncoder):
    frame_wise = True  # each frame encoded alone: a still's repeated frame is encoded once

    def __init__(self, cfg: XEncoderConfig) -> None:
        super().__init__()
        if cfg.image_size % cfg.patch_size:
            raise ValueError(f"image_size {cfg.image_size} not divisible by patch_size {cfg.patch_size}")
        torch.manual_seed(0)  # the same random weights every time: cache keys stay stable
        self.patchify = nn.Conv2d(3, cfg.hidden_size, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.grid = cfg.pool_grid
        side = cfg.image_size // cfg.patch_size
        per_frame = side * side if cfg.pool_grid is None else cfg.pool_grid**2
        self.encoder_id = "tiny"
        self.spec = PreprocessSpec(num_frames=cfg.num_frames, image_size=cfg.image_size,
                                   mean=IMAGENET_MEAN, std=IMAGENET_STD)
        self.token_dim = cfg.hidden_size
        self.num_tokens = cfg.num_frames * per_frame
        self.freeze()

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        batch, frames = pixels.shape[:2]
        x = self.patchify(pixels.flatten(0, 1))  # (B*T, D, h, w)
        x = x.reshape(batch, frames, *x.shape[1:]).permute(0, 1, 3, 4, 2)  # (B, T, h, w, D)
        return pool_frame_grid(x, self.grid)  # (B, N, D)


def build(cfg: XEncoderConfig) -> TinyEncoder:
    return TinyEncoder(cfg)
