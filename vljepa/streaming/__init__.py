"""Streaming inference and selective decoding (paper Sec. 4.3).

``ward_segments`` (offline, the paper's method), an online change trigger (beyond the paper),
uniform decoding (the baseline), nearest-in-time CIDEr scoring and the decode-rate sweep.
"""

from vljepa.streaming.online import OnlineTrigger, OnlineTriggerConfig, run_trigger
from vljepa.streaming.segment import segment_bounds, ward_segments
from vljepa.streaming.selective import (
    DecodePoint,
    annotation_points,
    Stream,
    SweepRow,
    match_nearest_in_time,
    online_points,
    savings_factor,
    sweep,
    uniform_count,
    uniform_points,
    ward_points,
)

__all__ = [
    "DecodePoint", "OnlineTrigger", "annotation_points", "OnlineTriggerConfig", "Stream", "SweepRow", "match_nearest_in_time",
    "online_points", "run_trigger", "savings_factor", "segment_bounds", "sweep", "uniform_count",
    "uniform_points", "ward_points", "ward_segments",
]
