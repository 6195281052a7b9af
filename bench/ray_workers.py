"""Ray Data pipeline with 1 vs 2 CPU decode workers on the same generated corpus (one Ray).

Each run writes a fresh cache (its own root), so both do all the decoding and encoding.
Speed-up = seconds(1 worker) / seconds(2 workers); ~2 is ideal on 2 free cores.

    python bench/ray_workers.py [--n-videos 16] [--no-warmup]

``--no-warmup`` skips the warm-up run, one of the three Ray runs: the 1-worker run then also pays
what the warm-up absorbs (Ray's first tasks and actors), so the speed-up only shows that the bench
runs (tests/test_bench_modules.py).
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
from preprocessing.pipeline import CacheConfig  # noqa: E402
from preprocessing.ray_pipeline import RayConfig, ensure_ray, run_ray  # noqa: E402
from preprocessing.sampling import SamplingConfig  # noqa: E402
from vljepa.files import file_sha256  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    """Seconds with 1 and 2 decode workers; returns them and the speed-up."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-videos", type=int, default=16)
    parser.add_argument("--no-warmup", action="store_true", help="skip the warm-up run (checking the bench runs)")
    args = parser.parse_args(argv)
    import ray

    from vljepa.config import get_preset
    from vljepa.encoders import build_x_encoder

    cfg = get_preset("tiny").x_encoder
    encoder = build_x_encoder(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_corpus(Path(tmp) / "videos", args.n_videos)
        clips = [ClipRef(p.stem, str(p), file_sha256(p)) for p in paths]
        sampling = SamplingConfig(num_frames=cfg.num_frames)
        ensure_ray(RayConfig(num_cpus=2))
        if not args.no_warmup:  # Ray's workers and actor start-up are not what is compared
            run_ray(encoder, cfg, clips[:2], sampling, CacheConfig(root=f"{tmp}/warm"), RayConfig(decode_concurrency=2))
        seconds = {}
        for workers in (1, 2):
            start = time.perf_counter()
            result = run_ray(encoder, cfg, clips, sampling, CacheConfig(root=f"{tmp}/w{workers}"),
                             RayConfig(decode_concurrency=workers, encode_actors=1, batch_size=8))
            seconds[workers] = time.perf_counter() - start
            print(f"{workers} decode worker(s): {seconds[workers]:.2f} s, {result.n_cached_sources / seconds[workers]:.2f} videos/s, "
                  f"{result.n_frames / seconds[workers]:.1f} frames/s")
        ray.shutdown()
    print(f"speed-up 2 vs 1 workers: {seconds[1] / seconds[2]:.2f}x")
    return {"n_videos": args.n_videos, "warmup": not args.no_warmup, "seconds_1_worker": seconds[1],
            "seconds_2_workers": seconds[2], "speedup_2_vs_1": seconds[1] / seconds[2]}


if __name__ == "__main__":
    main()
