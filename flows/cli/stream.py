"""``vljepa stream SOURCE``: timestamped captions of a video or a live source, decoded selectively (``flows.stream``)."""

from __future__ import annotations

import argparse

from flows.cli.common import add_state_arguments

HELP = ("timestamped captions of a video or a live source (- for standard input, a device, a URL) with selective "
        "decoding: online (causal trigger), ward (offline segmentation) or uniform; prints the decodes used against "
        "uniform 1 Hz and, live, how far behind the live edge each caption was")
EPILOG = """examples:
  vljepa stream clip.mp4                                   # the champion model and its y-decoder
  ffmpeg -re -i clip.mp4 -c copy -f mpegts - | vljepa stream -      # a clip replayed in real time
  vljepa stream /dev/video0 --input-format v4l2            # a camera
  vljepa stream rtsp://camera.local/stream
  vljepa stream clip.mp4 --method ward --rate 0.35 --checkpoint .vljepa/models/pretrain-video-small-...
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.epilog = EPILOG
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("video", metavar="SOURCE",
                   help="a video file, - (standard input), a device (/dev/video0) or a URL (rtsp://, http://): "
                        "anything ffmpeg opens; the last three are read live, as they arrive")
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
    p.add_argument("--model", default="models:/vljepa@champion",
                   help="registered model to stream with (default models:/vljepa@champion in the state dir's MLflow)")
    p.add_argument("--checkpoint", default=None,
                   help="a model dir instead of --model (its y-decoder: <dir>-eval/decoder, from `vljepa evaluate`)")
    p.add_argument("--decoder", default="y-decoder", choices=["y-decoder", "retrieval"],
                   help="y-decoder: the model's own (default); retrieval: the nearest training caption")
    p.add_argument("--num-beams", type=int, default=1, help="y-decoder beam width (default 1: greedy, fastest)")
    p.add_argument("--input-format", default=None,
                   help="ffmpeg input format of a live source when it cannot be guessed (v4l2, mpegts, ...)")
    p.add_argument("--live", action=argparse.BooleanOptionalAction, default=None,
                   help="read the source as it arrives (default: yes for -, /dev/..., URLs; no for files)")
    p.add_argument("--json", action="store_true",
                   help="print the result as one JSON object on stdout (captions, decodes, lags); progress to stderr")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="override the checkpoint's config for this machine, e.g. --set x_encoder.weights=DIR")
    add_state_arguments(p)


def main(args: argparse.Namespace) -> int:
    from flows.resolve import ConfigError, RunConfig
    from flows.stream import StreamConfig, stream_video
    from preprocessing.live import LiveSourceError
    from vljepa.streaming.embed import WindowMismatchError

    cfg = StreamConfig(video=args.video, method=args.method, rate=args.rate, threshold=args.threshold, fps=args.fps,
                       window=args.window, stride=args.stride, allow_frame_mismatch=args.allow_frame_mismatch,
                       model=args.model, checkpoint=args.checkpoint, decoder=args.decoder, num_beams=args.num_beams,
                       live=args.live, input_format=args.input_format,
                       run=RunConfig(state_dir=args.state_dir, tracking_uri=args.tracking_uri,
                                     overrides=tuple(args.overrides)))
    import json

    from flows.cli.common import emit

    try:  # under --json, stdout is stderr until the result is emitted (flows.cli.common.json_mode)
        result = stream_video(cfg, emit=lambda line: print(line, flush=True))
    except (WindowMismatchError, LiveSourceError) as exc:  # a bad --window or source: say so, no traceback
        raise ConfigError(str(exc)) from exc
    if args.json:
        emit(json.dumps({"source": args.video, "method": args.method, "decodes": result.decodes,
                          "uniform_1hz_decodes": result.uniform_1hz_decodes, "duration_s": result.duration,
                          "captions": [{"start": a, "end": b, "text": t} for a, b, t in result.captions],
                          "lags_s": result.lags, "caption_lags_s": result.caption_lags}))
    return 0
