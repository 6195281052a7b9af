"""Frame sampling strategies on top of the ffmpeg decoder, with timestamps kept.

Strategies (``SamplingConfig.strategy``):

- ``uniform``: ``num_frames`` frames at the centres of equal segments of the clip (the paper
  samples 16 frames per video). For a clip with many more frames than needed, an ffmpeg
  ``select`` filter keeps only the frames within one source frame period of a target time,
  so only those ~2·num_frames frames are scaled, converted to RGB and piped (every packet is
  still decoded: that is the codec's floor without seeking). The nearest of them to each
  target is picked, exactly as a full decode would pick it.
- ``fps``: a constant rate (``fps`` frames per second) through ffmpeg's ``fps`` filter;
  ``max_frames`` caps the count.
- ``sliding``: frames at ``fps``, grouped into windows of ``window`` frames every ``stride``
  frames (streaming; a clip shorter than one window is an error, nothing is padded).

Images are 1-frame clips at time 0; ``repeat_to`` (the encoder's frame count) duplicates them
as VL-JEPA does. A video with fewer decodable frames than a ``uniform`` sample needs is an
error unless ``allow_repeat`` (then nearest frames repeat, as ``decode_frames`` does).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from preprocessing.decode import (
    DecodeError,
    DecodedClip,
    _check_file,
    _decode_all,
    is_image_path,
    probe_video,
    uniform_timestamps,
)

Strategy = Literal["uniform", "fps", "sliding"]
# Use the select pre-filter only when it drops most frames; below this ratio it saves little.
_SELECT_MIN_RATIO = 3.0


@dataclass(frozen=True, kw_only=True)
class SamplingConfig:
    """How frames are picked from one clip (see the module docstring for each strategy)."""

    strategy: Strategy = "uniform"
    num_frames: int = 16  # uniform: frames per clip (paper: 16)
    fps: float = 2.0  # fps / sliding: output frame rate, frames per second
    max_frames: int | None = None  # fps: keep at most this many (the first ones)
    window: int = 16  # sliding: frames per window
    stride: int = 8  # sliding: frames between window starts
    allow_repeat: bool = False  # uniform: a clip with < num_frames frames repeats frames instead of failing

    def __post_init__(self) -> None:
        if self.strategy not in ("uniform", "fps", "sliding"):
            raise ValueError(f"strategy must be uniform, fps or sliding, got {self.strategy!r}")
        if self.num_frames < 1 or self.window < 1 or self.stride < 1:
            raise ValueError(f"num_frames, window and stride must be >= 1: {self}")
        if not (self.fps > 0 and math.isfinite(self.fps)):
            raise ValueError(f"fps must be a positive number, got {self.fps}")
        if self.max_frames is not None and self.max_frames < 1:
            raise ValueError(f"max_frames must be >= 1 or None, got {self.max_frames}")

    def frames_per_sample(self) -> int | None:
        """Frames in each sample (None for ``fps``, whose count depends on the clip)."""
        return {"uniform": self.num_frames, "sliding": self.window}.get(self.strategy)


@dataclass(frozen=True)
class Sample:
    """One sample cut from a clip: frames uint8 (T, S, S, 3), timestamps float64 (T,) seconds."""

    index: int  # window number within the clip (0 for uniform / fps / images)
    frames: np.ndarray
    timestamps: np.ndarray


def _nearest(pts: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Index of the decoded frame nearest each target (ties to the earlier): (T,)."""
    return np.abs(pts[None, :] - targets[:, None]).argmin(axis=1)


def _sorted(frames: np.ndarray, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(pts, kind="stable")
    return frames[order], pts[order]


def sample_uniform(path: str | os.PathLike, *, num_frames: int, size: int, allow_repeat: bool = False,
                   duration: float | None = None, fps: float | None = None) -> DecodedClip:
    """``num_frames`` frames nearest the uniform segment centres of the clip.

    Returns DecodedClip: frames uint8 (num_frames, size, size, 3), timestamps float64
    (num_frames,) = the picked frames' source pts. duration / fps: the probed values if the
    caller has them (the manifest does), saving an ffprobe. Raises DecodeError for unreadable
    files and (unless allow_repeat) for clips with fewer than num_frames decodable frames.
    """
    path = Path(path)
    if is_image_path(path):
        raise DecodeError(path, "is an image; use sample_clip, which makes it a 1-frame clip")
    if duration and fps and duration > 0 and fps > 0:
        _check_file(path)
    else:
        info = probe_video(path)
        duration, fps = info.duration, info.fps
    select = uniform_select(duration, fps, num_frames)
    if select is not None:
        clip = select.pick(*_decode_all(path, size, select_expr=select.expr))
        if clip is not None:
            return clip
    return uniform_from_all(path, *_decode_all(path, size), num_frames=num_frames, allow_repeat=allow_repeat)


@dataclass(frozen=True)
class UniformSelect:
    """The ``select`` pre-filter of a uniform sample, and how to pick from what it lets through."""

    expr: str  # ffmpeg select expression
    targets: np.ndarray  # (T,) seconds
    period: float  # one source frame period, seconds
    n_frames: int  # the clip's frame count (duration * fps)

    def pick(self, frames: np.ndarray, pts: np.ndarray) -> DecodedClip | None:
        """The nearest selected frame to each target; None when a target has no frame within one
        period (a variable-rate gap: the caller decodes every frame instead)."""
        if not len(frames):
            return None
        frames, pts = _sorted(frames, pts)
        picked = _nearest(pts, self.targets)
        if np.abs(pts[picked] - self.targets).max() > self.period:
            return None
        return DecodedClip(frames[picked], pts[picked].copy(), n_decoded=self.n_frames)


def uniform_select(duration: float, fps: float, num_frames: int) -> UniformSelect | None:
    """The select pre-filter for a clip of ``duration`` s at ``fps``; None when it would save little."""
    n_frames = int(round(duration * fps))
    if not (fps > 0 and duration > 0 and n_frames >= _SELECT_MIN_RATIO * num_frames):
        return None
    period = 1.0 / fps
    targets = uniform_timestamps(duration, num_frames)
    # Keep frames within one period of a target: at least one frame per target for a
    # constant-rate stream; a variable-rate gap falls back to the full decode.
    expr = "+".join(f"lt(abs(t-{t:.6f}),{period:.6f})" for t in targets)
    return UniformSelect(expr=expr, targets=targets, period=period, n_frames=n_frames)


def uniform_from_all(path: Path, frames: np.ndarray, pts: np.ndarray, *, num_frames: int,
                     allow_repeat: bool) -> DecodedClip:
    """A uniform sample from every decoded frame of the clip (raises DecodeError if too few)."""
    if len(frames) == 0:
        raise DecodeError(path, "no decodable video frames")
    if len(frames) < num_frames and not allow_repeat:
        raise DecodeError(path, f"clip too short: {len(frames)} decodable frames, {num_frames} needed")
    frames, pts = _sorted(frames, pts)
    period = float(np.median(np.diff(pts))) if len(pts) > 1 else 0.0
    targets = pts[0] + uniform_timestamps(pts[-1] - pts[0] + period, num_frames)
    picked = _nearest(pts, targets)
    return DecodedClip(frames[picked], pts[picked].copy(), n_decoded=len(frames))


def sample_fps(path: str | os.PathLike, *, fps: float, size: int,
               max_frames: int | None = None) -> DecodedClip:
    """Frames at a constant ``fps`` (ffmpeg ``fps`` filter, nearest source frame per tick).

    Returns frames uint8 (F, size, size, 3) and timestamps float64 (F,) on the output grid.
    """
    path = Path(path)
    _check_file(path)
    frames, pts = _decode_all(path, size, fps=fps)
    if len(frames) == 0:
        raise DecodeError(path, "no decodable video frames")
    frames, pts = _sorted(frames, pts)
    if max_frames is not None:
        frames, pts = frames[:max_frames], pts[:max_frames]
    return DecodedClip(frames, pts, n_decoded=len(frames))


def sliding_windows(clip: DecodedClip, *, window: int, stride: int) -> list[Sample]:
    """Cut (F, ...) frames into windows of ``window`` frames starting every ``stride`` frames."""
    n = len(clip.frames)
    if n < window:
        raise ValueError(f"{n} frames, fewer than one window of {window}")
    return [Sample(k, clip.frames[s:s + window], clip.timestamps[s:s + window])
            for k, s in enumerate(range(0, n - window + 1, stride))]


def _image_samples(frames: np.ndarray, repeat_to: int | None) -> list[Sample]:
    """An image's one sample: its first frame repeated to ``repeat_to`` frames, at time 0."""
    count = repeat_to or 1
    return [Sample(0, np.repeat(frames[:1], count, axis=0), np.zeros(count))]


def sample_clip(path: str | os.PathLike, cfg: SamplingConfig, *, size: int, repeat_to: int | None = None,
                duration: float | None = None, fps: float | None = None) -> list[Sample]:
    """All samples one file gives under ``cfg``, frames scaled and centre-cropped to ``size``.

    repeat_to: duplicate an image's single frame to this many frames (the encoder's T).
    duration / fps: probed values if known (uniform sampling then skips its ffprobe).
    Raises DecodeError for anything that cannot give a sample (the caller records it).
    """
    path = Path(path)
    if is_image_path(path):
        _check_file(path)
        frames, _ = _decode_all(path, size)
        if len(frames) == 0:
            raise DecodeError(path, "no decodable image")
        return _image_samples(frames, repeat_to)
    if cfg.strategy == "uniform":
        clip = sample_uniform(path, num_frames=cfg.num_frames, size=size, allow_repeat=cfg.allow_repeat,
                              duration=duration, fps=fps)
        return [Sample(0, clip.frames, clip.timestamps)]
    clip = sample_fps(path, fps=cfg.fps, size=size,
                      max_frames=cfg.max_frames if cfg.strategy == "fps" else None)
    if cfg.strategy == "fps":
        return [Sample(0, clip.frames, clip.timestamps)]
    try:
        return sliding_windows(clip, window=cfg.window, stride=cfg.stride)
    except ValueError as err:
        raise DecodeError(path, f"clip too short for a sliding window: {err}") from err


def sample_clips(items: Sequence[tuple[str | os.PathLike, float | None, float | None]], cfg: SamplingConfig, *,
                 size: int, repeat_to: int | None = None) -> list[list[Sample] | DecodeError | OSError]:
    """``sample_clip`` over several ``(path, duration, fps)`` files: each file's samples, or its error.

    Images, and uniform samples of videos whose duration and fps are known, go through one ffmpeg
    process for all of them (``preprocessing.decode_many``: the process start-up, most of the cost
    of a short clip, is paid once); they come out equal to ``sample_clip``'s (tested). Everything
    else, and any file that process could not decode, goes through ``sample_clip`` alone, so
    errors read exactly as they do for one file.
    """
    from preprocessing.decode_many import decode_all_many

    results: list[list[Sample] | DecodeError | OSError | None] = [None] * len(items)
    batch: list[tuple[int, Path, str, UniformSelect | None]] = []  # (item, path, "image" | "uniform", select)
    for index, (path, duration, fps) in enumerate(items):
        path = Path(path)
        try:
            _check_file(path)
        except (DecodeError, OSError):
            continue  # alone: its error as sample_clip words it
        if is_image_path(path):
            batch.append((index, path, "image", None))
        elif cfg.strategy == "uniform" and duration and fps and duration > 0 and fps > 0:
            batch.append((index, path, "uniform", uniform_select(duration, fps, cfg.num_frames)))
    if len(batch) > 1:
        decoded = decode_all_many([(path, select.expr if select else None) for _, path, _, select in batch], size)
        for (index, path, kind, select), got in zip(batch, decoded):
            if got is None:
                continue
            frames, pts = got
            if kind == "image":
                if len(frames):
                    results[index] = _image_samples(frames, repeat_to)
                continue
            try:
                clip = (select.pick(frames, pts) if select is not None else
                        uniform_from_all(path, frames, pts, num_frames=cfg.num_frames, allow_repeat=cfg.allow_repeat))
            except DecodeError:
                clip = None  # alone, for sample_clip's own error
            if clip is not None:
                results[index] = [Sample(0, clip.frames, clip.timestamps)]
    for index, (path, duration, fps) in enumerate(items):
        if results[index] is None:
            try:
                results[index] = sample_clip(path, cfg, size=size, repeat_to=repeat_to, duration=duration, fps=fps)
            except (DecodeError, OSError) as err:
                results[index] = err
    return results  # type: ignore[return-value]
