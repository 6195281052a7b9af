"""Timestamped captions of one video, decoded selectively (``vljepa stream VIDEO``).

online  — the causal trigger: captions are emitted as the stream plays (bounded latency);
ward    — the paper's offline Ward segmentation at ``rate`` decodes per second;
uniform — one decode every 1/rate seconds (the baseline).

Windows: one embedding per sliding window of the model's own frame count (``x_encoder.num_frames``
in the checkpoint's config) unless ``window`` says otherwise and ``allow_frame_mismatch`` accepts
it; a new window starts every ``stride`` frames. Frames are sampled at ``fps``, so a window spans
``window / fps`` seconds. The duration of a training clip is not recorded anywhere a checkpoint
points to (training samples ``num_frames`` frames uniformly over each clip, whatever its length),
so ``fps`` is not derived: 2 fps makes a ``small`` window (4 frames) 2 s, the corpus's event
length, and a ``paper`` window (16 frames) 8 s.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from flows.resolve import RunConfig


@dataclass(frozen=True, kw_only=True)
class StreamConfig:
    video: str
    method: Literal["online", "ward", "uniform"] = "online"
    rate: float = 0.35  # decodes per second (ward / uniform)
    threshold: float = 0.15  # online trigger: cosine distance threshold
    fps: float = 2.0  # frames per second sampled from the video
    window: int | None = None  # frames per window; None: the model's x_encoder.num_frames
    stride: int = 1  # frames between window starts (1: a window every 0.5 s at 2 fps)
    allow_frame_mismatch: bool = False  # accept a window that is not the model's frame count (warns)
    checkpoint: str | None = None  # default: the newest stage-1 model under the state dir
    run: RunConfig = field(default_factory=RunConfig)  # state dir and ``--set`` overrides of the model's config


@dataclass
class StreamResult:
    captions: list[tuple[float, float, str]]  # (start s, end s, text)
    decodes: int
    uniform_1hz_decodes: int
    duration: float

    @property
    def savings(self) -> float:
        return self.uniform_1hz_decodes / max(self.decodes, 1)


def stream_video(cfg: StreamConfig, emit: Callable[[str], None] = print) -> StreamResult:
    """Caption ``cfg.video``; ``emit`` gets each line as it is decoded (online: while the stream plays).

    The model's config comes from the checkpoint's ``config.json`` with ``cfg.run.overrides``
    applied (e.g. ``x_encoder.weights`` where the encoder's weights live on this machine).
    """
    import torch

    from flows.loaders import caption_bank
    from flows.selective import RetrievalDecoder
    from flows.train import latest_base_model
    from preprocessing.sampling import sample_fps
    from vljepa.encoders import build_x_encoder
    from vljepa.streaming import OnlineTrigger, OnlineTriggerConfig, Stream, uniform_count, uniform_points, ward_points
    from vljepa.streaming.embed import FrameMismatchWarning, embed_stream, stream_window
    from vljepa.checkpoint import load_checkpoint

    layout = cfg.run.layout()
    checkpoint = Path(cfg.checkpoint) if cfg.checkpoint else latest_base_model(layout)
    model_cfg = RunConfig(config_path=str(checkpoint / "config.json"), overrides=cfg.run.overrides).model_config()
    model = load_checkpoint(checkpoint)
    # Checked before anything is decoded; the model's own config says what it was trained on.
    window = stream_window(model.cfg.x_encoder, cfg.window, allow_frame_mismatch=cfg.allow_frame_mismatch)
    encoder = build_x_encoder(model_cfg.x_encoder)
    decode = RetrievalDecoder(model, caption_bank(layout.manifest))
    clip = sample_fps(cfg.video, fps=cfg.fps, size=encoder.spec.image_size)
    duration = float(clip.timestamps[-1] - clip.timestamps[0]) + 1.0 / cfg.fps
    if len(clip.frames) < window:
        raise ValueError(f"{cfg.video}: {len(clip.frames)} frames at {cfg.fps} fps ({duration:.1f} s), fewer than one "
                         f"window of {window} frames ({window / cfg.fps:.1f} s): stream a longer video")
    emit(f"{cfg.video}: {len(clip.frames)} frames at {cfg.fps} fps ({duration:.1f} s), model {checkpoint.name}, "
         f"windows of {window} frames ({window / cfg.fps:.1f} s) every {cfg.stride} ({cfg.stride / cfg.fps:.2f} s), "
         "decoder: nearest training caption")
    frames = zip(clip.timestamps.tolist(), clip.frames)
    captions: list[tuple[float, float, str]] = []
    with torch.no_grad():
        with warnings.catch_warnings():  # an accepted mismatch was reported once, above
            warnings.simplefilter("ignore", FrameMismatchWarning)
            windows = embed_stream(frames, encoder, model, window_frames=window, stride_frames=cfg.stride,
                                   allow_frame_mismatch=cfg.allow_frame_mismatch)
        if cfg.method == "online":
            trigger = OnlineTrigger(OnlineTriggerConfig(threshold=cfg.threshold))
            seen = []
            for window in windows:
                seen.append(window)
                event = trigger.update(window.embedding)
                if event is not None:
                    text = decode(event.embedding[None])[0]
                    start = seen[event.segment_start].start
                    captions.append((start, window.end, text))
                    emit(f"[{start:7.2f}s → now {window.end:7.2f}s] {text}")
        else:
            seen = list(windows)
            stream = Stream("video", np.array([w.time for w in seen]), np.stack([w.embedding for w in seen]), [],
                            duration=duration)
            points = (ward_points(stream, uniform_count(duration, cfg.rate)) if cfg.method == "ward"
                      else uniform_points(stream, cfg.rate))
            for point, text in zip(points, decode(np.stack([p.embedding for p in points]))):
                captions.append((point.start, point.end, text))
                emit(f"[{point.start:7.2f}s – {point.end:7.2f}s] {text}")
    result = StreamResult(captions=captions, decodes=len(captions), uniform_1hz_decodes=uniform_count(duration, 1.0),
                          duration=duration)
    emit(f"decodes: {result.decodes} ({cfg.method}) vs {result.uniform_1hz_decodes} for uniform 1 Hz → "
         f"{result.savings:.2f}× fewer")
    return result
