"""``vljepa stream SOURCE``: timestamped captions of a video or a live source, decoded selectively (``flows.stream``)."""

from __future__ import annotations

import argparse

from flows.cli.common import add_state_arguments
from flows.resolve import LAUNCHERS, PRESET_NAMES

HELP = ("timestamped captions of a video or a live source (- for standard input, a device, a URL) with selective "
        "decoding: online (causal trigger), ward (offline segmentation) or uniform; prints the decodes used against "
        "uniform 1 Hz and, live, how far behind the live edge each caption was")
EPILOG = """examples:
  vljepa stream clip.mp4                                   # the champion model and its y-decoder
  ffmpeg -re -i clip.mp4 -c copy -f mpegts - | vljepa stream -      # a clip replayed in real time
  vljepa stream /dev/video0 --input-format v4l2            # a camera
  vljepa stream rtsp://camera.local/stream
  vljepa stream clip.mp4 --method ward --rate 0.35 --checkpoint .vljepa/models/pretrain-video-small-...
  vljepa stream --benchmark                                # the paper's protocol on the stream benchmark
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.epilog = EPILOG
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("video", metavar="SOURCE", nargs="?",
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
    bench = p.add_argument_group("--benchmark: selective decoding on the paper's protocol (flows.stream_bench)")
    bench.add_argument("--benchmark", action="store_true",
                       help="generate the stream benchmark, train a model on its training streams, sweep uniform and "
                            "Ward decoding (exact and pooled) from 2 to 0.01 Hz on its test streams, tune the online "
                            "trigger on its val streams; log to MLflow (no SOURCE)")
    bench.add_argument("--streams", default="small", choices=["small", "tiny"], help="stream benchmark preset")
    bench.add_argument("--preset", default="small", choices=PRESET_NAMES, help="model preset trained on the streams")
    bench.add_argument("--launcher", default="local", choices=LAUNCHERS,
                       help="where the training runs (as `vljepa run`)")
    bench.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples of the test streams")
    p.add_argument("--json", action="store_true",
                   help="print the result as one JSON object on stdout (captions, decodes, lags); progress to stderr")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="override the checkpoint's config for this machine, e.g. --set x_encoder.weights=DIR "
                        "(with --benchmark: the config of the model trained on the streams)")
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

    if args.benchmark:
        return _benchmark(args)
    if args.video is None:
        raise ConfigError("give a SOURCE (a file, -, a device or a URL), or --benchmark")
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


def _benchmark(args: argparse.Namespace) -> int:
    import json

    from flows.cli.common import emit
    from flows.resolve import ConfigError, RunConfig
    from flows.stream_bench import StreamBenchConfig, run_stream_bench
    from flows.stream_bench_report import markdown

    if args.video is not None:
        raise ConfigError("--benchmark reads its own streams: drop SOURCE")
    run = RunConfig(preset=args.preset, launcher=args.launcher, state_dir=args.state_dir,
                    tracking_uri=args.tracking_uri, overrides=tuple(args.overrides))
    run.model_config()  # a misspelt --set fails before any work
    result = run_stream_bench(StreamBenchConfig(streams=args.streams, bootstrap=args.bootstrap, run=run))
    if args.json:
        emit(json.dumps({k: v for k, v in result.items()}, default=str))
    else:
        emit(markdown(result) + f"\n\nresults, figure and tables: {result['out_dir']} (MLflow run {result['mlflow_run_id']})")
    return 0
