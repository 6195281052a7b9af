"""X-encoders: a registry of frozen visual encoders behind one protocol."""

from vljepa.encoders.base import (
    PreprocessSpec,
    XEncoder,
    build_x_encoder,
    pool_frame_grid,
    registered_x_encoders,
)

__all__ = ["PreprocessSpec", "XEncoder", "build_x_encoder", "pool_frame_grid", "registered_x_encoders"]
