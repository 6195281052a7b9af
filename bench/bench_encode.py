"""Token caching's encoder calls: frames per forward call, side by side (the ratio is the result).

The cache encodes a batch of samples (``run_local``'s default 16 clips × T frames) with the frozen
x-encoder. A frame-wise encoder can take those frames in one call or in calls of
``frames_per_call``; on a CPU, small calls keep the activations in cache. This bench times
``preprocessing.pipeline.encode_samples`` on the same frames with each call size, interleaved over
repeats (the median per size), and checks the tokens are bit-identical.

    python bench/bench_encode.py [--preset small] [--samples 16] [--repeats 5] [--sizes 2 4 8 16 64]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    """Seconds per frame at each call size; ratio = one call for the whole batch / the preset's size."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--samples", type=int, default=16, help="clips per encode batch (run_local's batch_size)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2, 4, 8, 16, 64])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    from preprocessing.pipeline import encode_samples
    from vljepa.config import get_preset
    from vljepa.encoders import build_x_encoder

    torch.set_num_threads(args.threads)
    cfg = get_preset(args.preset).x_encoder
    encoder = build_x_encoder(cfg)
    if not encoder.frame_wise:
        raise SystemExit(f"{cfg.name} is not frame-wise: its frames go through in one call per batch")
    configured = encoder.frames_per_call
    rng = np.random.default_rng(0)
    size, frames = cfg.image_size, cfg.num_frames
    batch = [rng.integers(0, 256, (frames, size, size, 3), dtype=np.uint8) for _ in range(args.samples)]
    n_frames = args.samples * frames
    sizes = sorted({*args.sizes, n_frames, configured or n_frames})
    seconds: dict[int, list[float]] = {s: [] for s in sizes}
    tokens: dict[int, np.ndarray] = {}
    encoder.frames_per_call = sizes[0]
    encode_samples(encoder, batch)  # warm-up
    for _ in range(args.repeats):
        for call in sizes:  # interleaved: each size meets the same machine load
            encoder.frames_per_call = call
            start = time.perf_counter()
            tokens[call] = encode_samples(encoder, batch)
            seconds[call].append(time.perf_counter() - start)
    identical = all(np.array_equal(tokens[s], tokens[sizes[0]]) for s in sizes)
    rows = [{"frames_per_call": s, "median_s": statistics.median(seconds[s]),
             "frames_per_s": n_frames / statistics.median(seconds[s])} for s in sizes]
    for row in rows:
        mark = "  <- the encoder's frames_per_call" if row["frames_per_call"] == configured else ""
        print(f"{row['frames_per_call']:>4} frames a call: {row['frames_per_s']:7.1f} frames/s{mark}")
    whole, chosen = statistics.median(seconds[n_frames]), statistics.median(seconds[configured or n_frames])
    ratio = whole / chosen
    print(f"one call of {n_frames} frames s / calls of {configured} s = {ratio:.2f}   tokens bit-identical: {identical}")
    return {"preset": args.preset, "encoder": cfg.name, "samples": args.samples, "frames_per_sample": frames,
            "frames_per_call": configured, "rows": rows, "whole_over_chunked": ratio, "identical": identical,
            "threads": args.threads, "repeats": args.repeats}


if __name__ == "__main__":
    main()
