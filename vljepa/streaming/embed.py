"""A frame stream → sliding windows → frozen x-encoder → predictor → timestamped embeddings.

Encoder work shared between overlapping windows: for a *per-frame* encoder (EfficientNet-Lite0,
the tiny encoder) each frame is encoded exactly once and a window's tokens are the concatenation
of its frames' tokens — identical to encoding the window at once, because such an encoder sees
frames independently. A *spatio-temporal* encoder (V-JEPA 2: tubelets of 2 frames, attention over
the whole clip) must see the window as a whole, so nothing is reused there: each window is
encoded from its frames (the decoded frames themselves are still shared).

Window length: a window is one model input, so it has the model's own frame count
(``x_encoder.num_frames``, saved with the checkpoint: 4 for ``small``, 16 for ``paper``) unless
the caller opts out explicitly (``stream_window``). The stride is free: it only sets how often a
window starts (1 frame by default, i.e. every 0.5 s at the 2 fps the flows sample).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np
import torch

from vljepa.config import XEncoderConfig

PER_FRAME_ENCODERS = {"efficientnet-lite0", "tiny"}
TUBELET_ENCODERS = {"vjepa2"}  # encode frames in tubelets of ``x_encoder.tubelet_size``


class WindowMismatchError(ValueError):
    """An explicit window whose frame count is not the one the model was trained on."""


class FrameMismatchWarning(UserWarning):
    """Windows of another frame count than the model's, accepted with ``allow_frame_mismatch``."""


def stream_window(x_encoder: XEncoderConfig, window_frames: int | None = None, *,
                  allow_frame_mismatch: bool = False) -> int:
    """The frames per streaming window for a model whose X-encoder config is ``x_encoder``.

    Args:
        x_encoder: the model's own ``cfg.x_encoder`` (from its checkpoint's ``config.json``).
        window_frames: an explicit window; None takes ``x_encoder.num_frames``.
        allow_frame_mismatch: accept a window of another length (with a warning) instead of
            raising ``WindowMismatchError``: the model then sees inputs it was never trained on.

    A tubelet encoder (V-JEPA 2) given a window that is not a multiple of its tubelet repeats the
    window's last frame to fill the last tubelet (``vljepa.encoders.vjepa2.fill_tubelets``), as it
    does for training clips; with the model's own frame count that is exactly the training input.
    """
    trained = x_encoder.num_frames
    if window_frames is None:
        return trained
    if window_frames < 1:
        raise ValueError(f"window_frames must be >= 1, got {window_frames}")
    if window_frames == trained:
        return window_frames
    if not allow_frame_mismatch:
        raise WindowMismatchError(
            f"a streaming window of {window_frames} frames, but the model was trained on clips of {trained} frames "
            f"(x_encoder.num_frames={trained} in its config): leave the window unset to use {trained} frames, "
            "or opt in with allow_frame_mismatch=True (vljepa stream: --allow-frame-mismatch) to feed the model "
            f"{window_frames}-frame inputs it was never trained on")
    fill = ""
    if x_encoder.name in TUBELET_ENCODERS and window_frames % x_encoder.tubelet_size:
        fill = (f"; {x_encoder.name} encodes tubelets of {x_encoder.tubelet_size} frames, so each window's last frame "
                f"is repeated to fill {-(-window_frames // x_encoder.tubelet_size) * x_encoder.tubelet_size} frames")
    warnings.warn(f"streaming windows of {window_frames} frames for a model trained on {trained}-frame clips "
                  f"(allow_frame_mismatch): its embeddings are out of distribution{fill}", FrameMismatchWarning,
                  stacklevel=2)
    return window_frames


@dataclass(frozen=True)
class WindowEmbedding:
    time: float  # centre of the window's frames, seconds
    start: float
    end: float
    embedding: np.ndarray  # (D,) predicted embedding, L2-normalised


def _normalise(frames: np.ndarray, mean, std) -> torch.Tensor:
    pixels = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255.0  # (T, 3, H, W)
    return (pixels - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def embed_stream(frames: Iterable[tuple[float, np.ndarray]], encoder, model, *, window_frames: int | None = None,
                 stride_frames: int = 1, allow_frame_mismatch: bool = False,
                 query: str = "") -> Iterator[WindowEmbedding]:
    """One predicted embedding per window of ``window_frames`` frames, every ``stride_frames`` (an iterator).

    Args:
        frames: ``(time_s, uint8 (H, W, 3))`` pairs at the encoder's size, in time order (a live
            source works: windows are emitted as soon as their last frame arrives).
        encoder: the frozen X-encoder; model: the ``VLJepa`` whose ``cfg.x_encoder`` it was trained with.
        window_frames: frames per window; None (the default) is the model's ``x_encoder.num_frames``.
            Another length raises ``WindowMismatchError`` unless ``allow_frame_mismatch``
            (``stream_window``). The window is checked here, before the first frame is read.
        stride_frames: frames between window starts (free; default 1).
    """
    window_frames = stream_window(model.cfg.x_encoder, window_frames, allow_frame_mismatch=allow_frame_mismatch)
    if stride_frames < 1:
        raise ValueError(f"stride_frames must be >= 1, got {stride_frames}")
    return _windows(frames, encoder, model, window_frames, stride_frames, query)


@torch.no_grad()
def _windows(frames: Iterable[tuple[float, np.ndarray]], encoder, model, window_frames: int, stride_frames: int,
             query: str) -> Iterator[WindowEmbedding]:
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
