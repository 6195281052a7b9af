"""What the encode stage is given per clip.

The encode stage itself — decode/sample in a thread pool or Ray Data, the frozen x-encoder in
batches, sharded content-addressed caches — is ``preprocessing.pipeline`` (local),
``preprocessing.ray_pipeline`` (Ray) and ``preprocessing.stage`` (manifest → cache).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ClipRef:
    sample_id: str
    path: str
    content_hash: str
    # From the manifest's probe at import, when known: lets sampling skip a second ffprobe.
    # Not part of any cache key (the content hash already fixes them).
    duration: float | None = None  # seconds
    fps: float | None = None
