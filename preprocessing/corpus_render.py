"""Geometry and rendering for the procedural corpus (``preprocessing.corpus``).

Everything visual lives here: the colour palette, the filled shape masks, where a group of
objects starts and ends within an event, drawing frames with numpy and encoding them to
H.264 mp4 through the ``ffmpeg`` binary. ``corpus.py`` owns the words; this file owns pixels.

Objects are kept inside the centred ``min(W, H)`` square of the frame, less a margin, for the
whole event, because the pipeline's decoder (``preprocessing.decode``) scales the short edge to
256/224 of the crop and centre-crops a square: it sees only the middle 87.5 % of ``min(W, H)``,
so anything in the side strips of a 4:3 frame or the outer 6.25 % would never reach the encoder.
"""

from __future__ import annotations

import math
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vljepa.files import atomic_path

# Saturated, well-separated RGB values: they must survive yuv420p chroma subsampling and stay
# distinguishable to an ImageNet EfficientNet after resizing.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (225, 30, 30),
    "green": (30, 195, 60),
    "blue": (35, 85, 255),
    "yellow": (245, 225, 35),
    "purple": (165, 50, 205),
    "orange": (255, 140, 15),
    "white": (245, 245, 245),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "cross")
SIZE_RADIUS = {"small": 0.06, "large": 0.12}  # object half-extent, as a fraction of min(W, H)
TRANSLATION = {"moves left": (-1, 0), "moves right": (1, 0), "moves up": (0, -1), "moves down": (0, 1)}
SCALING = {"grows": (0.5, 1.3), "shrinks": (1.3, 0.5)}  # (start, end) radius multipliers
TRAVEL = 0.45  # distance a translating group covers in one event, as a fraction of min(W, H)
MARGIN = 0.07  # border left empty, as a fraction of min(W, H): > (1 - 224/256) / 2 cut by the decoder
GAP = 0.3  # space between neighbouring objects, as a fraction of their radius
# How rendered frames become H.264: one thread and bit-exact flags, so equal frames give equal bytes.
H264_ARGS = ("-c:v", "libx264", "-pix_fmt", "yuv420p", "-threads", "1", "-preset", "veryfast", "-crf", "20",
             "-fflags", "+bitexact", "-map_metadata", "-1")


@dataclass(frozen=True, kw_only=True)
class GroupMotion:
    """Where one event's group of identical objects is drawn, frame by frame (pixels)."""

    n_frames: int
    colour: str
    shape: str
    radius: float  # half-extent at scale 1.0
    offsets: tuple[tuple[float, float], ...]  # (x, y) of each object from the group centre; fixed in an event
    start_centre: tuple[float, float]
    end_centre: tuple[float, float]
    start_scale: float
    end_scale: float


@dataclass(frozen=True, kw_only=True)
class Background:
    """A dark per-clip backdrop: tint, a vertical brightness ramp and static noise."""

    tint: tuple[int, int, int]
    ramp: int  # brightness added at the bottom row, fading to 0 at the top
    noise_seed: int
    noise_amplitude: int = 4


@dataclass(frozen=True, kw_only=True)
class RenderJob:
    """Everything a worker needs to render one clip; pickled across processes."""

    width: int
    height: int
    fps: int
    background: Background
    groups: tuple[GroupMotion, ...]


def safe_box(width: int, height: int) -> tuple[float, float, float, float]:
    """Return ``(x0, y0, x1, y1)`` of the centred square (less margin) objects must stay inside."""
    side = min(width, height)
    margin = MARGIN * side
    x0, y0 = (width - side) / 2 + margin, (height - side) / 2 + margin
    return x0, y0, x0 + side - 2 * margin, y0 + side - 2 * margin


def plan_group(
    rng: np.random.Generator, *, width: int, height: int, n_frames: int, colour: str, shape: str,
    size: str, count: int, motion: str,
) -> GroupMotion:
    """Choose a layout and a start/end position so every object stays in ``safe_box`` throughout."""
    side = min(width, height)
    radius = SIZE_RADIUS[size] * side
    x0, y0, x1, y1 = safe_box(width, height)
    if motion in TRANSLATION:
        dx, dy = TRANSLATION[motion]
        start_scale = end_scale = 1.0
        spacing = radius * (2 + GAP)
        # Line the objects up across the direction of motion so the group stays narrow along it.
        line = [(i - (count - 1) / 2) * spacing for i in range(count)]
        offsets = tuple((0.0, v) if dx else (v, 0.0) for v in line)
        travel = TRAVEL * side
    elif motion in SCALING:
        dx = dy = 0
        start_scale, end_scale = SCALING[motion]
        step = radius * max(start_scale, end_scale) * (2 + GAP) / 2  # half the centre-to-centre distance
        if count == 1:
            offsets = ((0.0, 0.0),)
        elif count == 2:
            offsets = ((-step, 0.0), (step, 0.0)) if rng.random() < 0.5 else ((0.0, -step), (0.0, step))
        else:  # an equilateral triangle, apex up
            h = step * math.sqrt(3)
            offsets = ((-step, h / 2), (step, h / 2), (0.0, -h / 2))
        travel = 0.0
    else:
        raise ValueError(f"unknown motion {motion!r}; expected one of {[*TRANSLATION, *SCALING]}")
    reach = radius * max(start_scale, end_scale)
    half_w = max(abs(ox) for ox, _ in offsets) + reach
    half_h = max(abs(oy) for _, oy in offsets) + reach
    # Feasible start centres: the group box must fit at the start and at start + travel.
    lo_x, hi_x = x0 + half_w - min(0, dx) * travel, x1 - half_w - max(0, dx) * travel
    lo_y, hi_y = y0 + half_h - min(0, dy) * travel, y1 - half_h - max(0, dy) * travel
    if lo_x > hi_x or lo_y > hi_y:
        raise ValueError(f"{count} {size} objects that {motion} do not fit in a {width}x{height} frame")
    start = (float(rng.uniform(lo_x, hi_x)), float(rng.uniform(lo_y, hi_y)))
    end = (start[0] + dx * travel, start[1] + dy * travel)
    return GroupMotion(
        n_frames=n_frames, colour=colour, shape=shape, radius=radius, offsets=offsets,
        start_centre=start, end_centre=end, start_scale=start_scale, end_scale=end_scale,
    )


def object_centres(group: GroupMotion, frame: int) -> tuple[list[tuple[float, float]], float]:
    """Return the pixel centres of the group's objects and their radius at ``frame`` (0-based, within the event)."""
    alpha = frame / (group.n_frames - 1) if group.n_frames > 1 else 0.0
    cx = group.start_centre[0] + alpha * (group.end_centre[0] - group.start_centre[0])
    cy = group.start_centre[1] + alpha * (group.end_centre[1] - group.start_centre[1])
    scale = group.start_scale + alpha * (group.end_scale - group.start_scale)
    return [(cx + ox, cy + oy) for ox, oy in group.offsets], group.radius * scale  # objects grow in place


def shape_mask(shape: str, x: np.ndarray, y: np.ndarray, r: float) -> np.ndarray:
    """Boolean mask of ``shape`` with half-extent ``r`` at offsets ``x`` (1, w) and ``y`` (h, 1) from its centre."""
    ax, ay = np.abs(x), np.abs(y)
    if shape == "circle":
        return x * x + y * y <= r * r
    if shape == "square":
        return (ax <= 0.85 * r) & (ay <= 0.85 * r)  # 0.85: about the circle's area, so size reads alike
    if shape == "triangle":  # apex up at -r, base at +0.75r with half-width r
        return (y >= -r) & (y <= 0.75 * r) & (ax <= (y + r) / 1.75)
    if shape == "diamond":
        return ax + ay <= r
    if shape == "cross":
        arm = r / 3
        return ((ax <= arm) & (ay <= r)) | ((ay <= arm) & (ax <= r))
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def render_background(bg: Background, width: int, height: int) -> np.ndarray:
    """Return the clip's static backdrop, (H, W, 3) uint8."""
    ramp = np.linspace(0.0, bg.ramp, height)[:, None, None]  # (H, 1, 1)
    noise = np.random.default_rng(bg.noise_seed).integers(
        -bg.noise_amplitude, bg.noise_amplitude + 1, size=(height, width, 1))  # grey noise, (H, W, 1)
    image = np.asarray(bg.tint, dtype=np.float64)[None, None, :] + ramp + noise
    return np.clip(image, 0, 255).astype(np.uint8)


def draw_group(image: np.ndarray, group: GroupMotion, frame: int) -> None:
    """Draw the group's objects for ``frame`` into ``image`` (H, W, 3) in place."""
    height, width = image.shape[:2]
    centres, r = object_centres(group, frame)
    colour = np.asarray(PALETTE[group.colour], dtype=np.uint8)
    for cx, cy in centres:
        xa, xb = max(0, math.floor(cx - r)), min(width, math.ceil(cx + r) + 1)
        ya, yb = max(0, math.floor(cy - r)), min(height, math.ceil(cy + r) + 1)
        x = np.arange(xa, xb, dtype=np.float64)[None, :] + 0.5 - cx  # pixel centres, (1, w)
        y = np.arange(ya, yb, dtype=np.float64)[:, None] + 0.5 - cy  # (h, 1)
        image[ya:yb, xa:xb][shape_mask(group.shape, x, y, r)] = colour


def render_frames(job: RenderJob) -> np.ndarray:
    """Render every frame of a clip, (T, H, W, 3) uint8 with T the sum of the events' frames."""
    backdrop = render_background(job.background, job.width, job.height)
    frames = np.empty((sum(g.n_frames for g in job.groups), job.height, job.width, 3), dtype=np.uint8)
    t = 0
    for group in job.groups:
        for k in range(group.n_frames):
            frames[t] = backdrop
            draw_group(frames[t], group, k)
            t += 1
    return frames


def encode_mp4(frames: np.ndarray, fps: int, out_path: Path) -> None:
    """Encode (T, H, W, 3) uint8 RGB frames to H.264 at ``out_path``: temp name first, rename on success."""
    n, height, width, _ = frames.shape
    with atomic_path(out_path) as tmp:
        cmd = [
            "ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", str(fps), "-i", "-",
            *H264_ARGS, "-movflags", "+faststart", "-f", "mp4", str(tmp),
        ]
        try:
            proc = subprocess.run(cmd, input=frames.tobytes(), capture_output=True, check=False)
        except FileNotFoundError:
            raise RuntimeError("the ffmpeg binary is not on PATH; install it (apt-get install ffmpeg)") from None
        if proc.returncode != 0:
            raise RuntimeError(
                f"ffmpeg failed ({proc.returncode}) writing {out_path}: {proc.stderr.decode(errors='replace')}")


def render_clip(job: RenderJob, out_path: str) -> str:
    """Render ``job`` and write it to ``out_path`` (process-pool entry point); returns the path."""
    encode_mp4(render_frames(job), job.fps, Path(out_path))
    return out_path
