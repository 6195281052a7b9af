"""A frame stream → sliding windows → frozen x-encoder → predictor → timestamped embeddings.

Encoder work shared between overlapping windows: for a *per-frame* encoder (EfficientNet-Lite0,
the tiny encoder) each frame is encoded exactly once and a window's tokens are the concatenation
of its frames' tokens — identical to encoding the window at once, because such an encoder sees
frames independently. A *spatio-temporal* encoder (V-JEPA 2: tubelets of 2 frames, attention over
the whole clip) must see the window as a whole, so nothing is reused there: each window is
encoded from its frames (the decoded frames themselves are still shared).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np
import torch

PER_FRAME_ENCODERS = {"efficientnet-lite0", "tiny"}


@dataclass(frozen=True)
class WindowEmbedding:
    time: float  # centre of the window's frames, seconds
    start: float
    end: float
    embedding: np.ndarray  # (D,) predicted embedding, L2-normalised


def _normalise(frames: np.ndarray, mean, std) -> torch.Tensor:
    pixels = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255.0  # (T, 3, H, W)
    return (pixels - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


@torch.no_grad()
def embed_stream(frames: Iterable[tuple[float, np.ndarray]], encoder, model, *, window_frames: int,
                 stride_frames: int, query: str = "") -> Iterator[WindowEmbedding]:
    """Yield one predicted embedding per window of ``window_frames`` frames, every ``stride_frames``.

    frames: ``(time_s, uint8 (H, W, 3))`` pairs at the encoder's size, in time order (a live
    source works: windows are emitted as soon as their last frame arrives).
    """
    if window_frames < 1 or stride_frames < 1:
        raise ValueError("window_frames and stride_frames must be >= 1")
    spec = encoder.spec
    per_frame = encoder.encoder_id in PER_FRAME_ENCODERS
    times: list[float] = []
    buffer: list[np.ndarray] = []  # decoded frames (or per-frame tokens) of the current window span
    next_start = 0
    index = -1
    model.eval()
    queries = [query] if query else None
    for time_s, frame in frames:
        index += 1
        times.append(float(time_s))
        if per_frame:
            pixels = _normalise(frame[None], spec.mean, spec.std)[None]  # (1, 1, 3, H, W)
            buffer.append(encoder.encode(pixels)[0])  # (tokens per frame, D)
        else:
            buffer.append(frame)
        if index - next_start + 1 < window_frames:
            continue
        window = buffer[-window_frames:]
        if per_frame:
            tokens = torch.cat(window, dim=0)[None]  # (1, N, D)
        else:
            tokens = encoder.encode(_normalise(np.stack(window), spec.mean, spec.std)[None])
        predicted = model.predict(tokens, queries)[0].float()
        predicted = predicted / predicted.norm().clamp_min(1e-12)
        window_times = times[-window_frames:]
        yield WindowEmbedding(float(np.mean(window_times)), window_times[0], window_times[-1], predicted.numpy())
        next_start += stride_frames
        # Keep only what the next window needs.
        keep = max(window_frames - stride_frames, 0)
        del buffer[: len(buffer) - keep]
        del times[: len(times) - keep]
