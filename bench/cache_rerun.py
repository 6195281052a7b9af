"""Token cache: a re-run with nothing changed against the first run (goal: ratio <= 0.05).

The first run decodes, encodes (the configured x-encoder) and writes shards; the re-run
computes the content key (hashing every file) and finds the index. Ratio = re-run / first.

    python bench/cache_rerun.py [--n-videos 24] [--preset tiny|small]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._media import make_corpus  # noqa: E402
from preprocessing.encode import ClipRef  # noqa: E402
from preprocessing.pipeline import CacheConfig, run_local  # noqa: E402
from preprocessing.sampling import SamplingConfig  # noqa: E402
from vljepa.files import file_sha256  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    """First run and re-run per cache format; returns their seconds and re-run / first ratios."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-videos", type=int, default=24)
    parser.add_argument("--preset", default="tiny")
    args = parser.parse_args(argv)
    from vljepa.config import get_preset
    from vljepa.encoders import build_x_encoder

    cfg = get_preset(args.preset).x_encoder
    encoder = build_x_encoder(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_corpus(Path(tmp) / "videos", args.n_videos)
        sampling = SamplingConfig(num_frames=cfg.num_frames)
        out: dict = {"n_videos": args.n_videos, "preset": args.preset}
        for fmt in ("parquet", "webdataset"):
            # A root per format: under one root the second format's first run would copy every clip
            # from the first format's cache (preprocessing.reuse) instead of decoding and encoding.
            cache = CacheConfig(root=f"{tmp}/cache-{fmt}", format=fmt, shard_size=8)
            row, results = [], []
            for _ in range(2):
                start = time.perf_counter()  # hashing the clips is part of both runs
                clips = [ClipRef(p.stem, str(p), file_sha256(p)) for p in paths]
                results.append(run_local(encoder, clips, sampling, cache))
                row.append(time.perf_counter() - start)
            first, rerun = results
            assert not first.reused and first.n_reused_sources == 0 and rerun.reused  # a real first run
            out[fmt] = {"first_s": row[0], "rerun_s": row[1], "ratio": row[1] / row[0]}
            print(f"{fmt:<11} first {row[0]:.3f} s, re-run {row[1]:.4f} s, ratio {row[1] / row[0]:.4f}  (goal <= 0.05)")
    return out


if __name__ == "__main__":
    main()
