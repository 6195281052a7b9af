"""Video/image decoding and uniform frame sampling with ffmpeg.

Resizing and cropping happen inside ffmpeg (one swscale pass that also converts to RGB):
the short edge is scaled to ``round(size * 256 / 224)`` and the centre ``size x size``
square is cropped, the V-JEPA 2 / ImageNet evaluation convention. ``frames_to_tensor``
then scales to [0, 1] and normalises, so the two together match what
``VJEPA2VideoProcessor`` does (torchvision is not installable beside torch 2.13 here, see
STACK-NOTES).

``decode_frames`` decodes every frame of the clip and keeps the one whose presentation time
is nearest each uniform timestamp: exact, and cheap for clips of a few seconds (0.1-0.2 s for
a 4 s 10 fps 192x144 clip here). For long videos ``preprocessing.sampling`` puts a ``select``
or ``fps`` filter before the scaler, so only the frames kept are scaled and piped.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import ffmpeg
import numpy as np
import torch

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp"})
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# `showinfo` prints one line per frame leaving the filter graph: "... n: 3 pts: 3072 pts_time:0.3 ..."
_SHOWINFO_PTS = re.compile(r"\bn:\s*\d+\s+pts:\s*-?\d+\s+pts_time:(-?[0-9.eE+-]+)")


class DecodeError(RuntimeError):
    """A file could not be probed or decoded as a video or image."""

    def __init__(self, path: str | os.PathLike, message: str):
        self.path = str(path)
        self.message = message
        super().__init__(f"cannot decode {self.path}: {message}")


@dataclass(frozen=True, kw_only=True)
class VideoInfo:
    """What ffprobe says about the first video stream of a file."""

    path: str
    duration: float  # seconds; 0.0 for still images
    fps: float  # average frame rate; 0.0 for still images
    width: int  # stored width in pixels (before any rotation metadata)
    height: int
    codec: str
    n_frames: int  # container's frame count if it has one, else round(duration * fps)
    is_image: bool


@dataclass(frozen=True)
class DecodedClip:
    """Frames sampled from one clip.

    frames: uint8 (T, size, size, 3) RGB.
    timestamps: float64 (T,) presentation time of each picked frame in seconds.
    n_decoded: how many distinct frames the file gave (fewer than T means frames repeat).
    """

    frames: np.ndarray
    timestamps: np.ndarray
    n_decoded: int


def is_image_path(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def _rate(text: str | None) -> float:
    """Parse an ffprobe rate such as '30000/1001'; 0.0 for missing or '0/0'."""
    if not text:
        return 0.0
    num, _, den = text.partition("/")
    try:
        n, d = float(num), float(den or 1)
    except ValueError:
        return 0.0
    return n / d if d else 0.0


def _float(text: object) -> float | None:
    try:
        value = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _ffmpeg_message(err: ffmpeg.Error) -> str:
    stderr = (err.stderr or b"").decode("utf-8", "replace").strip().splitlines()
    return stderr[-1] if stderr else str(err)


def _check_file(path: Path) -> None:
    if not path.exists():
        raise DecodeError(path, "file does not exist")
    if not path.is_file():
        raise DecodeError(path, "not a regular file")
    if path.stat().st_size == 0:
        raise DecodeError(path, "file is empty (0 bytes)")


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Read duration, frame rate, size and codec of the first video stream with ffprobe.

    Raises DecodeError for missing or empty files, files ffprobe cannot parse, and files
    with no video stream (audio-only; cover art attached to audio does not count).
    """
    path = Path(path)
    _check_file(path)
    try:
        probe = ffmpeg.probe(str(path))
    except ffmpeg.Error as err:
        raise DecodeError(path, f"ffprobe failed: {_ffmpeg_message(err)}") from err
    streams = [
        s
        for s in probe.get("streams", [])
        if s.get("codec_type") == "video" and not s.get("disposition", {}).get("attached_pic")
    ]
    if not streams:
        kinds = sorted({s.get("codec_type", "?") for s in probe.get("streams", [])}) or ["none"]
        raise DecodeError(path, f"no video stream (streams: {', '.join(kinds)})")
    stream = streams[0]
    width, height = int(stream.get("width") or 0), int(stream.get("height") or 0)
    if width <= 0 or height <= 0:
        raise DecodeError(path, f"video stream has no frame size ({width}x{height})")
    codec = str(stream.get("codec_name", "unknown"))
    if is_image_path(path):
        return VideoInfo(
            path=str(path), duration=0.0, fps=0.0, width=width, height=height,
            codec=codec, n_frames=1, is_image=True,
        )
    fps = _rate(stream.get("avg_frame_rate")) or _rate(stream.get("r_frame_rate"))
    duration = _float(stream.get("duration")) or _float(probe.get("format", {}).get("duration")) or 0.0
    n_frames = int(stream.get("nb_frames") or 0) or int(round(duration * fps))
    return VideoInfo(
        path=str(path), duration=duration, fps=fps, width=width, height=height,
        codec=codec, n_frames=n_frames, is_image=False,
    )


def uniform_timestamps(duration: float, num_frames: int) -> np.ndarray:
    """Centres of `num_frames` equal segments of [0, duration]: float64 (num_frames,) seconds."""
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if not (duration >= 0 and math.isfinite(duration)):
        raise ValueError(f"duration must be a finite number >= 0, got {duration}")
    return (np.arange(num_frames, dtype=np.float64) + 0.5) * (duration / num_frames)


def resize_short_edge(size: int) -> int:
    """Short-edge length before the centre crop: size * 256 / 224 (224 -> 256)."""
    return int(round(size * 256 / 224))


def scale_and_crop(stream, size: int):
    """The encoder's view of a frame, inside ffmpeg (ffmpeg-python): the short edge scaled to
    ``resize_short_edge(size)``, then a centre ``size`` x ``size`` crop. Files and live sources
    (``preprocessing.live``) go through this one chain."""
    short = resize_short_edge(size)
    # Both sides >= `short`, aspect kept: the short edge becomes `short`. Bilinear as
    # torchvision's Resize used by the V-JEPA 2 processor. iw/ih are after autorotation.
    return (stream.filter("scale", short, short, force_original_aspect_ratio="increase", flags="bilinear")
            .filter("crop", size, size))  # x, y default to the centre


def _decode_all(
    path: Path, size: int, *, select_expr: str | None = None, fps: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Decode every frame, scaled (short edge) and centre-cropped to size x size, inside ffmpeg.

    select_expr: an ffmpeg `select` expression applied before scaling (only the frames it
        keeps are scaled, converted and piped; pts stay the source's).
    fps: resample to this constant rate with ffmpeg's `fps` filter before scaling (pts become
        the output grid k / fps).
    Returns frames uint8 (F, size, size, 3) and their presentation times float64 (F,).
    """
    stream = ffmpeg.input(str(path))
    if select_expr is not None:
        stream = stream.filter("select", select_expr)
    if fps is not None:
        stream = stream.filter("fps", fps=fps)
    stream = (
        scale_and_crop(stream, size)
        .filter("showinfo", checksum=0)  # prints the pts of every frame we receive
        # passthrough: one output frame per decoded frame, no duplication or dropping.
        .output("pipe:", format="rawvideo", pix_fmt="rgb24", fps_mode="passthrough")
        .global_args("-nostdin", "-hide_banner", "-loglevel", "info")
    )
    try:
        out, err = stream.run(capture_stdout=True, capture_stderr=True)
    except ffmpeg.Error as error:
        raise DecodeError(path, f"ffmpeg failed: {_ffmpeg_message(error)}") from error
    frame_bytes = size * size * 3
    if len(out) % frame_bytes:
        raise DecodeError(path, f"ffmpeg returned {len(out)} bytes, not a whole number of frames")
    frames = np.frombuffer(out, dtype=np.uint8).reshape(-1, size, size, 3)
    pts = [float(m.group(1)) for m in _SHOWINFO_PTS.finditer(err.decode("utf-8", "replace"))]
    if len(pts) != len(frames):
        raise DecodeError(path, f"ffmpeg gave {len(frames)} frames but {len(pts)} timestamps")
    return frames, np.asarray(pts, dtype=np.float64)


def decode_frames(path: str | os.PathLike, *, num_frames: int, size: int) -> DecodedClip:
    """Decode `num_frames` frames spread uniformly over a clip, resized and centre-cropped.

    path: a video, or an image (.png/.jpg/.jpeg/.webp/.bmp), which becomes `num_frames`
        copies of itself with timestamps 0 (VL-JEPA duplicates images to the video shape).
    Returns DecodedClip with frames uint8 (num_frames, size, size, 3) RGB and timestamps
    float64 (num_frames,), the presentation times of the frames picked.

    Each target time (centre of one of `num_frames` equal segments of the decoded span) takes
    the nearest decoded frame, so a clip with fewer frames than `num_frames` repeats its
    nearest frames. A file with no decodable frame raises DecodeError.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    path = Path(path)
    _check_file(path)
    frames, pts = _decode_all(path, size)  # (F, size, size, 3), (F,)
    if len(frames) == 0:
        raise DecodeError(path, "no decodable video frames")
    if is_image_path(path):
        picked = np.repeat(frames[:1], num_frames, axis=0)  # (T, size, size, 3)
        return DecodedClip(picked, np.zeros(num_frames, dtype=np.float64), n_decoded=1)

    order = np.argsort(pts, kind="stable")
    frames, pts = frames[order], pts[order]
    # The span actually decoded: first pts to last pts plus one frame period. For an intact
    # file this is the container duration; for a truncated one it avoids sampling times that
    # no frame covers.
    period = float(np.median(np.diff(pts))) if len(pts) > 1 else 0.0
    start, span = pts[0], pts[-1] - pts[0] + period
    targets = start + uniform_timestamps(span, num_frames)  # (T,)
    # Nearest decoded frame to each target; ties go to the earlier frame. (T, F) is small.
    nearest = np.abs(pts[None, :] - targets[:, None]).argmin(axis=1)  # (T,)
    return DecodedClip(frames[nearest], pts[nearest].copy(), n_decoded=len(frames))


def frames_to_tensor(
    frames: np.ndarray,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> torch.Tensor:
    """uint8 (T, H, W, 3) RGB frames -> float32 (T, 3, H, W), scaled to [0, 1] then normalised per channel."""
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected uint8 (T, H, W, 3) frames, got {frames.dtype} {frames.shape}")
    if len(mean) != 3 or len(std) != 3:
        raise ValueError(f"mean and std need 3 values (RGB), got {len(mean)} and {len(std)}")
    if any(s <= 0 for s in std):
        raise ValueError(f"std must be positive, got {tuple(std)}")
    pixels = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)  # (T, 3, H, W)
    pixels = pixels.to(torch.float32) / 255.0
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return (pixels - mean_t) / std_t
