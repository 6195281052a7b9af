"""Training throughput, measured side by side in one run (ratios, not thresholds).

1. A train step from cached frozen tokens vs the same step with the frozen x-encoder in the
   loop (``train.mode = "live"``), ``small`` preset (``--preset``), same model and batch. Live
   decoding with ffmpeg is timed separately (real corpus clips, if the main job's corpus exists).
2. Train-step FLOP/s (counted by ``torch.utils.flop_counter``) vs a float32 matmul peak
   measured by this script on this machine with the same thread count.
3. 2-process gloo DDP (1 thread each) vs 1 process (2 threads), samples/s, same global batch and
   the same thread budget (2), measured interleaved (1 process, DDP, 1 process, DDP, ...; median
   of each). On 2 free cores the ratio cannot exceed 2: a larger one means the 2-thread process
   lost time to contention (OpenMP threads spin while the cores are taken), and it is reported as
   such, not as a speed-up.

    PYTHONPATH=. .venv/bin/python bench/bench_train.py [--steps 3] [--batch 64] [--no-ddp] [--rounds 2]
                                                       [--preset small]

``--preset tiny`` runs every measurement on the unit tests' toy model: seconds instead of minutes,
for checking that the bench runs (tests/test_bench_modules.py); its ratios say nothing about ``small``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from vljepa.config import get_preset, replace
from vljepa.data import LiveFrames, TokenTextDataset
from vljepa.model import visual_dim

COLOURS = ["red", "green", "blue", "yellow", "white", "orange", "purple"]
SHAPES = ["circle", "square", "triangle", "star", "diamond"]


def bench_config(batch: int, steps: int, threads: int, preset: str = "small"):
    return replace(get_preset(preset), **{"train.batch_size": batch, "train.max_steps": steps + 1,
                                           "train.warmup_steps": 1, "train.num_threads": threads})


def synthetic_tokens(cfg, n: int) -> TokenTextDataset:
    rng = np.random.default_rng(0)
    g = cfg.x_encoder.pool_grid or 5
    tokens = rng.standard_normal((n, cfg.x_encoder.num_frames * g * g, visual_dim(cfg))).astype(np.float16)
    texts = [f"a {COLOURS[i % 7]} {SHAPES[(i // 7) % 5]} moves {'left' if i % 2 else 'up'}, then grows"
             for i in range(n)]
    return TokenTextDataset([str(i) for i in range(n)], tokens, texts)


def step_seconds(result) -> float:
    """Median seconds per optimiser step, first (warm-up) step excluded."""
    batch = result.samples_seen / len(result.history)
    return statistics.median(batch / row["samples_per_s"] for row in (result.history[1:] or result.history))


def matmul_peak(threads: int, size: int = 1024, repeats: int = 20) -> float:
    """Best float32 matmul FLOP/s over ``repeats`` runs."""
    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = max(best, 2 * size**3 / (time.perf_counter() - start))
    return best


def step_flops(cfg, data: TokenTextDataset) -> tuple[int, int]:
    """(whole train step, predictor part) FLOPs of forward + backward on one batch."""
    from torch.utils.flop_counter import FlopCounterMode

    from vljepa.losses import embedding_loss
    from vljepa.model import build_model

    model = build_model(cfg)
    model.train()
    index = np.arange(cfg.train.batch_size)
    visual = data.visual(index)
    with FlopCounterMode(display=False) as counter:
        loss = embedding_loss("infonce", model.predict(visual), model.encode_text(data.text(index)))
        loss.backward()
    total = counter.get_total_flops()
    with FlopCounterMode(display=False) as counter:
        model.predict(visual).float().pow(2).mean().backward()
    return total, counter.get_total_flops()


def decode_seconds_per_batch(cfg, batch: int, sample: int = 8) -> float | None:
    """ffmpeg decode of ``batch`` real corpus clips with 2 workers (None without a corpus)."""
    from concurrent.futures import ThreadPoolExecutor

    clips = sorted(Path(".vljepa/data").glob("synthetic-*/videos/*.mp4"))[:sample]
    if not clips:
        return None
    from preprocessing.decode import decode_frames

    def decode(path):
        return decode_frames(path, num_frames=cfg.x_encoder.num_frames, size=cfg.x_encoder.image_size)

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(decode, clips))
    return (time.perf_counter() - start) * batch / len(clips)


def _ddp_worker(rank: int, init_file: str, out: str, batch: int, steps: int, preset: str) -> None:
    from vljepa.distributed import DistEnv, init_distributed, shutdown
    from vljepa.train import train

    ctx = init_distributed(DistEnv(rank=rank, world_size=2, source="explicit"), backend="gloo",
                           init_method=f"file://{init_file}")
    cfg = bench_config(batch, steps, threads=1, preset=preset)
    with tempfile.TemporaryDirectory() as tmp:
        result = train(cfg, synthetic_tokens(cfg, 2 * batch), tmp, progress=False, dist=ctx)
    if rank == 0:
        Path(out).write_text(json.dumps({"step_s": step_seconds(result)}))
    shutdown(ctx)


def ddp_vs_single(batch: int, steps: int, threads: int, rounds: int,
                  preset: str = "small") -> dict[str, float | bool | list]:
    """2-rank DDP (1 thread each) vs 1 process (``threads`` threads), interleaved ``rounds`` times."""
    import torch.multiprocessing as mp

    from vljepa.train import train

    single_s: list[float] = []
    ddp_s: list[float] = []
    cfg = bench_config(batch, steps, threads, preset)
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as tmp:
            single_s.append(step_seconds(train(cfg, synthetic_tokens(cfg, 2 * batch), tmp, progress=False)))
        with tempfile.TemporaryDirectory() as tmp:
            result_file = Path(tmp) / "ddp.json"
            mp.spawn(_ddp_worker, args=(str(Path(tmp) / "init"), str(result_file), batch, steps, preset), nprocs=2,
                     join=True)
            ddp_s.append(json.loads(result_file.read_text())["step_s"])
    single, ddp = statistics.median(single_s), statistics.median(ddp_s)
    ratio = single / ddp  # = DDP samples/s over 1-process samples/s: the same global batch
    return {"single_step_s": single, "ddp2_step_s": ddp, "single_step_s_each": single_s, "ddp2_step_s_each": ddp_s,
            "single_samples_per_s": batch / single, "ddp2_samples_per_s": batch / ddp, "ddp2_over_single": ratio,
            "ddp2_over_single_possible": ratio <= 2.0 * 1.05}  # 5 %: timing noise on a quiet machine


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per measurement (after 1 warm-up)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-ddp", action="store_true")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds of 1 process vs DDP")
    parser.add_argument("--preset", default="small", help="the model timed (tiny: only to check the bench runs)")
    args = parser.parse_args(argv)
    from vljepa.encoders import build_x_encoder
    from vljepa.train import train

    cfg = bench_config(args.batch, args.steps, args.threads, args.preset)
    data = synthetic_tokens(cfg, 2 * args.batch)
    out: dict[str, float | str | None] = {"preset": args.preset, "batch": args.batch, "threads": args.threads}
    with tempfile.TemporaryDirectory() as tmp:
        cached = train(cfg, data, Path(tmp) / "cached", progress=False)
        out["cached_step_s"] = step_seconds(cached)
        encoder = build_x_encoder(cfg.x_encoder)
        size = cfg.x_encoder.image_size
        frames = torch.randn(2 * args.batch, cfg.x_encoder.num_frames, 3, size, size)
        live = train(replace(cfg, **{"train.mode": "live"}), LiveFrames(frames, data.texts, encoder.encode),
                     Path(tmp) / "live", progress=False)
        out["live_step_s"] = step_seconds(live)
    out["live_over_cached"] = out["live_step_s"] / out["cached_step_s"]
    decode = decode_seconds_per_batch(cfg, args.batch)
    out["decode_s_per_batch"] = decode
    out["live_with_decode_over_cached"] = (out["live_step_s"] + decode) / out["cached_step_s"] if decode else None

    total, predictor = step_flops(cfg, data)
    peak = matmul_peak(args.threads)
    out.update({"step_gflop": total / 1e9, "predictor_gflop": predictor / 1e9, "matmul_peak_gflops": peak / 1e9,
                "step_gflops": total / out["cached_step_s"] / 1e9})
    out["step_flops_over_peak"] = total / out["cached_step_s"] / peak

    if not args.no_ddp:
        out.update(ddp_vs_single(args.batch, args.steps, args.threads, args.rounds, args.preset))

    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in out.items()}, indent=2))
    return out


if __name__ == "__main__":
    main()
