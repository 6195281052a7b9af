"""Parameter counts per component, built on the meta device (no weights, no memory)."""

from __future__ import annotations

from vljepa.config import VLJepaConfig
from vljepa.model import build_model, count


def x_encoder_meta(cfg: VLJepaConfig):
    """The x-encoder on the meta device where it has an architecture-only build, else real."""
    if cfg.x_encoder.name == "vjepa2":
        from vljepa.encoders.vjepa2 import VJEPA2Encoder

        return VJEPA2Encoder(cfg.x_encoder, meta=True)
    from vljepa.encoders import build_x_encoder

    return build_x_encoder(cfg.x_encoder)


def parameter_counts(cfg: VLJepaConfig) -> dict[str, dict[str, int]]:
    """``{"x_encoder"|"predictor"|"y_encoder": {"total": int, "trainable": int}}``.

    The x-encoder is frozen (trainable 0); the y-encoder's trainable count follows its lr
    multiplier (0 freezes the backbone, the projection head still trains).
    """
    model = build_model(cfg, meta=True)
    x_encoder = x_encoder_meta(cfg)
    out = {}
    for name, module in (("x_encoder", x_encoder), ("predictor", model.predictor), ("y_encoder", model.y_encoder)):
        c = count(module)
        out[name] = {"total": c.total, "trainable": c.trainable}
    return out
