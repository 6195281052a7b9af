"""``vljepa stream VIDEO``: timestamped captions of a video, decoded selectively (``flows.stream``)."""

from __future__ import annotations

import argparse

from flows.cli.common import add_state_arguments

HELP = ("timestamped captions of a video with selective decoding: online (causal trigger), ward (offline "
        "segmentation) or uniform; prints the decodes used against uniform 1 Hz")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("video", help="a video file (any format ffmpeg reads)")
    p.add_argument("--method", default="online", choices=["online", "ward", "uniform"])
    p.add_argument("--rate", type=float, default=0.35, help="decodes per second for ward/uniform (default 0.35)")
    p.add_argument("--threshold", type=float, default=0.15, help="online trigger: cosine distance threshold")
    p.add_argument("--fps", type=float, default=2.0, help="frames per second sampled from the video (default 2)")
    p.add_argument("--window", type=int, default=None,
                   help="frames per window (default: the model's x_encoder.num_frames; another length needs "
                        "--allow-frame-mismatch)")
    p.add_argument("--stride", type=int, default=1, help="frames between window starts (default 1)")
    p.add_argument("--allow-frame-mismatch", action="store_true",
                   help="accept a --window that is not the model's frame count (a warning instead of an error)")
    p.add_argument("--checkpoint", default=None, help="model dir (default: the newest stage-1 model in the state dir)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="override the checkpoint's config for this machine, e.g. --set x_encoder.weights=DIR")
    add_state_arguments(p, tracking=False)


def main(args: argparse.Namespace) -> int:
    from flows.resolve import ConfigError, RunConfig
    from flows.stream import StreamConfig, stream_video
    from vljepa.streaming.embed import WindowMismatchError

    cfg = StreamConfig(video=args.video, method=args.method, rate=args.rate, threshold=args.threshold, fps=args.fps,
                       window=args.window, stride=args.stride, allow_frame_mismatch=args.allow_frame_mismatch,
                       checkpoint=args.checkpoint,
                       run=RunConfig(state_dir=args.state_dir, overrides=tuple(args.overrides)))
    try:
        stream_video(cfg, emit=lambda line: print(line, flush=True))
    except WindowMismatchError as exc:  # a bad --window: say so, no traceback
        raise ConfigError(str(exc)) from exc
    return 0
