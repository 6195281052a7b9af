"""``vljepa stream VIDEO``: timestamped captions of a video, decoded selectively.

online  — the causal trigger: captions are printed as the stream plays (bounded latency);
ward    — the paper's offline Ward segmentation at ``--rate`` decodes per second;
uniform — one decode every 1/rate seconds (the baseline).
At the end: decodes used vs uniform decoding at 1 Hz.
"""

from __future__ import annotations

import argparse
import glob
import os
from pathlib import Path

import numpy as np

from flows.stages import REPO_ROOT


def latest_checkpoint(state_dir: Path) -> Path:
    """The newest stage-1 model the main job trained (``<state>/models/pretrain-video-*``)."""
    found = sorted(glob.glob(str(state_dir / "models" / "pretrain-video-*" / "model.safetensors")), key=os.path.getmtime)
    if not found:
        raise SystemExit(f"no model under {state_dir}/models: run the main job first, or pass --checkpoint")
    return Path(found[-1]).parent


def caption_bank(db_path: Path) -> list[str]:
    """Training event captions: what the retrieval decoder can say."""
    from preprocessing.manifest import load_sql, open_manifest

    con = open_manifest(db_path)
    try:
        rows = con.execute(load_sql("split_texts"), {"dataset": "synthetic", "split": "train"}).fetchall()
    finally:
        con.close()
    if not rows:
        raise SystemExit(f"no training captions in {db_path} for the retrieval decoder")
    return [r[0] for r in rows]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vljepa stream", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("video", help="a video file (any format ffmpeg reads)")
    parser.add_argument("--method", default="online", choices=["online", "ward", "uniform"])
    parser.add_argument("--rate", type=float, default=0.35, help="decodes per second for ward/uniform (default 0.35)")
    parser.add_argument("--threshold", type=float, default=0.15, help="online trigger: cosine distance threshold")
    parser.add_argument("--fps", type=float, default=2.0)
    parser.add_argument("--window", type=int, default=4, help="frames per window")
    parser.add_argument("--stride", type=int, default=1, help="frames between windows")
    parser.add_argument("--checkpoint", default=None, help="default: the newest under the state dir")
    parser.add_argument("--state-dir", default=os.environ.get("VLJEPA_STATE_DIR", str(REPO_ROOT / ".vljepa")))
    args = parser.parse_args(argv)

    import torch

    from preprocessing.sampling import sample_fps
    from vljepa.encoders import build_x_encoder
    from vljepa.streaming import OnlineTrigger, OnlineTriggerConfig, Stream, uniform_count, uniform_points, ward_points
    from vljepa.streaming.embed import embed_stream
    from vljepa.train import load_checkpoint
    from flows.selective import RetrievalDecoder

    state = Path(args.state_dir)
    checkpoint = Path(args.checkpoint) if args.checkpoint else latest_checkpoint(state)
    model = load_checkpoint(checkpoint)
    encoder = build_x_encoder(model.cfg.x_encoder)
    decode = RetrievalDecoder(model, caption_bank(state / "manifest.duckdb"))
    clip = sample_fps(args.video, fps=args.fps, size=encoder.spec.image_size)
    duration = float(clip.timestamps[-1] - clip.timestamps[0]) + 1.0 / args.fps
    print(f"{args.video}: {len(clip.frames)} frames at {args.fps} fps ({duration:.1f} s), model {checkpoint.name}, "
          f"decoder: nearest training caption")
    frames = zip(clip.timestamps.tolist(), clip.frames)
    windows = []
    decodes = 0
    with torch.no_grad():
        if args.method == "online":
            trigger = OnlineTrigger(OnlineTriggerConfig(threshold=args.threshold))
            for window in embed_stream(frames, encoder, model, window_frames=args.window, stride_frames=args.stride):
                windows.append(window)
                event = trigger.update(window.embedding)
                if event is not None:
                    decodes += 1
                    text = decode(event.embedding[None])[0]
                    print(f"[{windows[event.segment_start].start:7.2f}s → now {window.end:7.2f}s] {text}", flush=True)
        else:
            windows = list(embed_stream(frames, encoder, model, window_frames=args.window, stride_frames=args.stride))
            stream = Stream("video", np.array([w.time for w in windows]), np.stack([w.embedding for w in windows]),
                            [], duration=duration)
            points = (ward_points(stream, uniform_count(duration, args.rate)) if args.method == "ward"
                      else uniform_points(stream, args.rate))
            texts = decode(np.stack([p.embedding for p in points]))
            decodes = len(points)
            for point, text in zip(points, texts):
                print(f"[{point.start:7.2f}s – {point.end:7.2f}s] {text}")
    baseline = uniform_count(duration, 1.0)
    print(f"decodes: {decodes} ({args.method}) vs {baseline} for uniform 1 Hz → {baseline / max(decodes, 1):.2f}× fewer")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
