"""V-JEPA 2 (HF ``transformers``) as the X-encoder, encoder-only: the paper's choice.

Loaded from a local directory or an HF cache snapshot (e.g. ``facebook/vjepa2-vitl-fpc64-256``);
nothing is downloaded. Only ``VJEPA2Model.encoder`` is kept: V-JEPA 2's own predictor is dropped
after loading so it can never run. Input ``(B, T, 3, H, W)``; output ``(B, T/2 · (H/16)², 1024)``
for ViT-L (tubelets of 2 frames × 16² pixels).

Preprocessing (no torchvision here, so no ``VJEPA2VideoProcessor``): short edge to
``size·256/224``, centre crop to ``size``, [0, 1], ImageNet mean/std — done by the decode stage.
"""

from __future__ import annotations

from pathlib import Path

import torch

from vljepa.config import XEncoderConfig
from vljepa.encoders.base import IMAGENET_MEAN, IMAGENET_STD, FrozenEncoder, PreprocessSpec, pool_frame_grid


def resolve_snapshot(path: str) -> Path:
    """A local model dir, or an HF cache repo dir (``.../models--facebook--vjepa2-.../``)."""
    root = Path(path).expanduser()
    if (root / "config.json").is_file():
        return root
    snapshots = root / "snapshots"
    if snapshots.is_dir():
        candidates = sorted(p for p in snapshots.iterdir() if (p / "config.json").is_file())
        if candidates:
            return candidates[-1]
    raise FileNotFoundError(
        f"no V-JEPA 2 weights at {root}: expected a directory with config.json (save_pretrained) "
        "or an HF cache repo directory with snapshots/*/config.json. Download it on a machine with "
        "internet, e.g. `huggingface-cli download facebook/vjepa2-vitl-fpc64-256`."
    )


# XEncoderConfig field -> the snapshot's config.json key: what the rest of the model is sized from.
SNAPSHOT_FIELDS = {"hidden_size": "hidden_size", "num_layers": "num_hidden_layers", "num_heads": "num_attention_heads",
                   "patch_size": "patch_size", "tubelet_size": "tubelet_size"}


def snapshot_mismatch(cfg: XEncoderConfig) -> dict[str, object]:
    """``{config field: the snapshot's value}`` where the two disagree (``x_encoder.weights`` set)."""
    import json

    snapshot = json.loads((resolve_snapshot(cfg.weights) / "config.json").read_text())
    return {f: snapshot[k] for f, k in SNAPSHOT_FIELDS.items() if k in snapshot and snapshot[k] != getattr(cfg, f)}


def vjepa2_config(cfg: XEncoderConfig):
    from transformers import VJEPA2Config

    return VJEPA2Config(
        patch_size=cfg.patch_size, crop_size=cfg.image_size, frames_per_clip=cfg.num_frames,
        tubelet_size=cfg.tubelet_size, hidden_size=cfg.hidden_size,
        num_attention_heads=cfg.num_heads, num_hidden_layers=cfg.num_layers,
    )


def fill_tubelets(pixels: torch.Tensor, tubelet: int) -> torch.Tensor:
    """``(B, T, 3, H, W)`` with the last frame repeated up to a multiple of ``tubelet`` frames.

    One image becomes one tubelet of identical frames, as the paper feeds images to V-JEPA 2.
    """
    missing = -pixels.shape[1] % tubelet
    if not missing:
        return pixels
    return torch.cat([pixels, pixels[:, -1:].expand(-1, missing, -1, -1, -1)], dim=1)


class VJEPA2Encoder(FrozenEncoder):
    def __init__(self, cfg: XEncoderConfig, *, meta: bool = False) -> None:
        super().__init__()
        from transformers import VJEPA2Model

        if meta:
            with torch.device("meta"):
                model = VJEPA2Model(vjepa2_config(cfg))
        else:
            if not cfg.weights:
                raise ValueError("x_encoder.weights must point at a local V-JEPA 2 snapshot for name='vjepa2'")
            model = VJEPA2Model.from_pretrained(resolve_snapshot(cfg.weights))
        config = model.config
        self.encoder = model.encoder  # the V-JEPA 2 predictor is deliberately not kept
        del model
        self.tubelet = config.tubelet_size
        self.patch = config.patch_size
        self.grid = cfg.pool_grid
        side = cfg.image_size // self.patch
        per_step = side * side if cfg.pool_grid is None else cfg.pool_grid**2
        self.encoder_id = "vjepa2"
        self.spec = PreprocessSpec(num_frames=cfg.num_frames, image_size=cfg.image_size,
                                   mean=IMAGENET_MEAN, std=IMAGENET_STD)
        self.token_dim = config.hidden_size
        # An image (1 frame) is duplicated to fill a tubelet (paper Sec. 3); a clip whose frame count
        # is not a multiple of the tubelet has its last frame repeated the same way.
        self.num_tokens = -(-cfg.num_frames // self.tubelet) * per_step
        self.side = side
        self.freeze()

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        pixels = fill_tubelets(pixels, self.tubelet)  # (B, T', 3, H, W), T' a multiple of the tubelet
        tokens = self.encoder(pixel_values_videos=pixels).last_hidden_state  # (B, T'/2·h·w, D)
        if self.grid is None:
            return tokens
        batch, _, dim = tokens.shape
        tokens = tokens.reshape(batch, -1, self.side, self.side, dim)  # (B, T/2, h, w, D)
        return pool_frame_grid(tokens, self.grid)


def build(cfg: XEncoderConfig) -> VJEPA2Encoder:
    return VJEPA2Encoder(cfg)
