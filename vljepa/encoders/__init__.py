"""X-encoders: frozen visual encoders behind one protocol (``base``), chosen from one table (``registry``)."""

from vljepa.encoders.base import PreprocessSpec, XEncoder, pool_frame_grid
from vljepa.encoders.registry import build_x_encoder, registered_x_encoders

__all__ = ["PreprocessSpec", "XEncoder", "build_x_encoder", "pool_frame_grid", "registered_x_encoders"]
