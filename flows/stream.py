"""Timestamped captions of a video or a live source, decoded selectively (``vljepa stream SOURCE``).

online  — the causal trigger: captions are emitted as the stream plays (bounded latency);
ward    — the paper's offline Ward segmentation at ``rate`` decodes per second;
uniform — one decode every 1/rate seconds (the baseline).

Model and decoder: by default the registered champion (``models:/vljepa@champion`` in the state
dir's MLflow store) and its own y-decoder; ``checkpoint`` streams a model directory instead (its
y-decoder is the one ``vljepa evaluate`` trained into ``<checkpoint>-eval/decoder``);
``decoder="retrieval"`` prints the nearest training caption instead of decoding.

Sources: a file, or anything ffmpeg opens live — ``-`` (standard input, e.g. ``ffmpeg -re -i clip.mp4
-c copy -f mpegts - | vljepa stream -``), a camera device (``/dev/video0``, with ``input_format``
``v4l2``), an RTSP/HTTP URL. A live source is read as it arrives (``preprocessing.live``) and only
the online method runs on it; each caption says how far behind the live edge it was decided (the
seconds since the window's newest frame arrived), and the run ends with that lag's distribution.

Windows: one embedding per sliding window of the model's own frame count (``x_encoder.num_frames``
in the checkpoint's config) unless ``window`` says otherwise and ``allow_frame_mismatch`` accepts
it; a new window starts every ``stride`` frames. Frames are sampled at ``fps``, so a window spans
``window / fps`` seconds. The duration of a training clip is not recorded anywhere a checkpoint
points to (training samples ``num_frames`` frames uniformly over each clip, whatever its length),
so ``fps`` is not derived: 2 fps makes a ``small`` window (4 frames) 2 s, the corpus's event
length, and a ``paper`` window (16 frames) 8 s.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from flows.resolve import RunConfig


@dataclass(frozen=True, kw_only=True)
class StreamConfig:
    video: str  # a file, "-" (standard input), a device or a URL
    method: Literal["online", "ward", "uniform"] = "online"
    rate: float = 0.35  # decodes per second (ward / uniform)
    threshold: float = 0.15  # online trigger: cosine distance threshold
    fps: float = 2.0  # frames per second sampled from the video
    window: int | None = None  # frames per window; None: the model's x_encoder.num_frames
    stride: int = 1  # frames between window starts (1: a window every 0.5 s at 2 fps)
    allow_frame_mismatch: bool = False  # accept a window that is not the model's frame count (warns)
    model: str = "models:/vljepa@champion"  # a registered model (used when checkpoint is None)
    checkpoint: str | None = None  # a model directory instead of the registered model
    decoder: Literal["y-decoder", "retrieval"] = "y-decoder"
    num_beams: int = 1  # y-decoder beam width (1: greedy, the cheapest per caption)
    live: bool | None = None  # None: live for "-", /dev/..., URLs (preprocessing.live.is_live)
    input_format: str | None = None  # ffmpeg input format of a live source (e.g. v4l2, mpegts)
    run: RunConfig = field(default_factory=RunConfig)  # state dir and ``--set`` overrides of the model's config


@dataclass
class StreamResult:
    captions: list[tuple[float, float, str]]  # (start s, end s, text)
    decodes: int
    uniform_1hz_decodes: int
    duration: float
    lags: list[float] = field(default_factory=list)  # live: per window, seconds behind its newest frame
    caption_lags: list[float] = field(default_factory=list)  # live: per caption, when it was printed

    @property
    def savings(self) -> float:
        return self.uniform_1hz_decodes / max(self.decodes, 1)


def _parse_model_uri(uri: str) -> tuple[str, str]:
    from flows.resolve import ConfigError

    name, _, alias = uri.removeprefix("models:/").partition("@")
    if not uri.startswith("models:/") or not name or not alias:
        raise ConfigError(f"--model {uri!r}: expected models:/NAME@ALIAS, e.g. models:/vljepa@champion")
    return name, alias


def load_stream_model(cfg: StreamConfig, check: Callable[[object], object] = lambda model: None):
    """(VLJepa, checkpoint dir, decode callable, a line saying which model and decoder).

    ``check(model)`` runs as soon as the model is loaded, before its decoder is looked for.
    """
    from flows.resolve import ConfigError
    from flows.selective import RetrievalDecoder, YDecoderCallable, load_registered
    from vljepa.checkpoint import load_checkpoint

    layout = cfg.run.layout()
    decoder = None
    if cfg.checkpoint:
        checkpoint = Path(cfg.checkpoint)
        model = load_checkpoint(checkpoint)
        check(model)
        where = f"model {checkpoint.name}"
        decoder_dir = checkpoint.parent / f"{checkpoint.name}-eval" / "decoder"
        if cfg.decoder == "y-decoder":
            if not (decoder_dir / "decoder_config.json").is_file():
                raise ConfigError(f"no y-decoder for {checkpoint} (looked in {decoder_dir}): `vljepa evaluate "
                                  f"{checkpoint}` trains one, or pass --decoder retrieval")
            from vljepa.decoder import load_decoder

            decoder = load_decoder(decoder_dir)
    else:
        name, alias = _parse_model_uri(cfg.model)
        model, decoder, version, checkpoint_dir = load_registered(name, alias, layout.tracking_uri, layout.mlflow_artifacts)
        check(model)
        checkpoint = Path(checkpoint_dir)
        where = f"model {cfg.model} (version {version.version})"
        if cfg.decoder == "y-decoder" and decoder is None:
            raise ConfigError(f"{cfg.model} was registered without a y-decoder: evaluate it first, or pass "
                              "--decoder retrieval")
    if cfg.decoder == "y-decoder":
        return model, checkpoint, YDecoderCallable(decoder, num_beams=cfg.num_beams), \
            f"{where}, decoder: its y-decoder (beam {cfg.num_beams})"
    from flows.loaders import caption_bank

    return model, checkpoint, RetrievalDecoder(model, caption_bank(layout.manifest)), \
        f"{where}, decoder: nearest training caption"


def _lag_line(lags: list[float], what: str) -> str:
    q = np.quantile(lags, [0.5, 0.95]) if lags else [float("nan")] * 2
    return (f"lag behind the live edge, {len(lags)} {what}: median {q[0]:.2f} s, p95 {q[1]:.2f} s, "
            f"max {max(lags, default=float('nan')):.2f} s")


def stream_video(cfg: StreamConfig, emit: Callable[[str], None] = print) -> StreamResult:
    """Caption ``cfg.video``; ``emit`` gets each line as it is decoded (online: while the stream plays).

    The model's config comes from the checkpoint's ``config.json`` with ``cfg.run.overrides``
    applied (e.g. ``x_encoder.weights`` where the encoder's weights live on this machine).
    """
    import torch

    from flows.resolve import ConfigError
    from preprocessing.live import LiveFrames, is_live
    from preprocessing.sampling import sample_fps
    from vljepa.encoders import build_x_encoder
    from vljepa.streaming import OnlineTrigger, OnlineTriggerConfig, Stream, uniform_count, uniform_points, ward_points
    from vljepa.streaming.embed import FrameMismatchWarning, embed_stream, stream_window

    live = is_live(cfg.video) if cfg.live is None else cfg.live
    if live and cfg.method != "online":
        raise ConfigError(f"--method {cfg.method} segments the whole video at once; a live source ({cfg.video}) "
                          "streams with --method online")
    # The window is checked before anything is decoded; the model's own config says what it was trained on.
    checked: list[int] = []
    model, checkpoint, decode, described = load_stream_model(cfg, check=lambda m: checked.append(
        stream_window(m.cfg.x_encoder, cfg.window, allow_frame_mismatch=cfg.allow_frame_mismatch)))
    window = checked[0]
    model_cfg = RunConfig(config_path=str(checkpoint / "config.json"), overrides=cfg.run.overrides).model_config()
    encoder = build_x_encoder(model_cfg.x_encoder)
    span = f"windows of {window} frames ({window / cfg.fps:.1f} s) every {cfg.stride} ({cfg.stride / cfg.fps:.2f} s)"
    reader = None
    if live:
        reader = LiveFrames(cfg.video, fps=cfg.fps, size=encoder.spec.image_size, input_format=cfg.input_format)
        frames = iter(reader.start())
        emit(f"{cfg.video}: live at {cfg.fps} fps, {described}, {span}")
    else:
        clip = sample_fps(cfg.video, fps=cfg.fps, size=encoder.spec.image_size)
        duration = float(clip.timestamps[-1] - clip.timestamps[0]) + 1.0 / cfg.fps
        if len(clip.frames) < window:
            raise ValueError(f"{cfg.video}: {len(clip.frames)} frames at {cfg.fps} fps ({duration:.1f} s), fewer than "
                             f"one window of {window} frames ({window / cfg.fps:.1f} s): stream a longer video")
        emit(f"{cfg.video}: {len(clip.frames)} frames at {cfg.fps} fps ({duration:.1f} s), {described}, {span}")
        frames = zip(clip.timestamps.tolist(), clip.frames)
    captions: list[tuple[float, float, str]] = []
    lags: list[float] = []
    caption_lags: list[float] = []
    try:
        with torch.no_grad():
            with warnings.catch_warnings():  # an accepted mismatch was reported once, above
                warnings.simplefilter("ignore", FrameMismatchWarning)
                windows = embed_stream(frames, encoder, model, window_frames=window, stride_frames=cfg.stride,
                                       allow_frame_mismatch=cfg.allow_frame_mismatch)
            if cfg.method == "online":
                trigger = OnlineTrigger(OnlineTriggerConfig(threshold=cfg.threshold))
                seen = []
                for item in windows:
                    seen.append(item)
                    event = trigger.update(item.embedding)
                    if event is not None:
                        text = decode(event.embedding[None])[0]
                        start = seen[event.segment_start].start
                        captions.append((start, item.end, text))
                        if reader is not None:
                            caption_lags.append(time.monotonic() - reader.last_arrival)
                            emit(f"[{start:7.2f}s → now {item.end:7.2f}s] {text}   (lag {caption_lags[-1]:.2f} s)")
                        else:
                            emit(f"[{start:7.2f}s → now {item.end:7.2f}s] {text}")
                    if reader is not None:
                        lags.append(time.monotonic() - reader.last_arrival)
                duration = (seen[-1].end + 1.0 / cfg.fps) if seen else 0.0
            else:
                seen = list(windows)
                stream = Stream("video", np.array([w.time for w in seen]), np.stack([w.embedding for w in seen]), [],
                                duration=duration)
                points = (ward_points(stream, uniform_count(duration, cfg.rate)) if cfg.method == "ward"
                          else uniform_points(stream, cfg.rate))
                for point, text in zip(points, decode(np.stack([p.embedding for p in points]))):
                    captions.append((point.start, point.end, text))
                    emit(f"[{point.start:7.2f}s – {point.end:7.2f}s] {text}")
    finally:
        if reader is not None:
            reader.close()
    if reader is not None and not lags:
        raise ValueError(f"{cfg.video}: {reader.frames_read} frames at {cfg.fps} fps, fewer than one window of "
                         f"{window} frames ({window / cfg.fps:.1f} s)")
    result = StreamResult(captions=captions, decodes=len(captions), uniform_1hz_decodes=uniform_count(duration, 1.0),
                          duration=duration, lags=lags, caption_lags=caption_lags)
    emit(f"decodes: {result.decodes} ({cfg.method}) vs {result.uniform_1hz_decodes} for uniform 1 Hz → "
         f"{result.savings:.2f}× fewer")
    if reader is not None:
        emit(_lag_line(lags, "windows") + "; " + _lag_line(caption_lags, "captions").split(", ", 1)[1])
    return result
