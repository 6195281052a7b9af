"""Streaming benchmarks, ratios only, measured in one run:

1. online compute per window / window stride for the `small` preset (goal ≤ 0.1: 10× faster
   than real time): frozen encoder on the window's new frame + predictor + trigger update;
2. the savings factor at ≤ 1 % CIDEr loss vs uniform 1 Hz, Ward and online (goal ≥ 3.0×), on the
   corpus's multi-event test streams (needs a main-job state dir: `bash infra/run-main.sh`).

    .venv/bin/python -m bench.bench_streaming [--state-dir .vljepa] [--max-clips 20] [--skip-sweep]
    .venv/bin/python -m bench.bench_streaming --untrained small   # ratio 1 only, no main job needed

``--untrained PRESET`` times a freshly built model of that preset (pretrained backbones, new
projections): the compute per window does not depend on what the model learnt.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch


def per_window_ratio(model, encoder, *, windows: int = 40, window_frames: int | None = None, stride_s: float = 0.5) -> float:
    from vljepa.streaming import OnlineTrigger, OnlineTriggerConfig
    from vljepa.streaming.embed import embed_stream

    window_frames = window_frames or model.cfg.x_encoder.num_frames  # the model's own clip length
    size = encoder.spec.image_size
    rng = np.random.default_rng(0)
    frames = [(i * stride_s, rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
              for i in range(windows + window_frames)]
    trigger = OnlineTrigger(OnlineTriggerConfig())
    with torch.no_grad():
        stream = embed_stream(iter(frames), encoder, model, window_frames=window_frames, stride_frames=1)
        next(stream)  # warm-up window
        start = time.perf_counter()
        count = 0
        for window in stream:
            trigger.update(window.embedding)
            count += 1
    return (time.perf_counter() - start) / count / stride_s


def main(argv: list[str] | None = None) -> dict:
    """The per-window ratio and (unless ``--skip-sweep``) the savings factors, as a dict."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--state-dir", default=None, help="default: $VLJEPA_STATE_DIR or <repo>/.vljepa")
    parser.add_argument("--max-clips", type=int, default=None)
    parser.add_argument("--skip-sweep", action="store_true")
    parser.add_argument("--windows", type=int, default=40, help="windows timed for the per-window ratio")
    parser.add_argument("--untrained", metavar="PRESET", default=None,
                        help="time an untrained model of this preset instead of the main job's (implies --skip-sweep)")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    from flows.selective import SelectiveConfig, run_selective
    from flows.env import StateLayout
    from flows.loaders import caption_bank
    from flows.train import latest_base_model
    from vljepa.encoders import build_x_encoder
    from vljepa.checkpoint import load_checkpoint

    layout = StateLayout.resolve(args.state_dir)
    if args.untrained:
        from vljepa.config import get_preset
        from vljepa.model import build_model

        model, source = build_model(get_preset(args.untrained)).eval(), f"untrained {args.untrained} preset"
    else:
        checkpoint = latest_base_model(layout)
        model, source = load_checkpoint(checkpoint), str(checkpoint)
    encoder = build_x_encoder(model.cfg.x_encoder)
    ratio = per_window_ratio(model, encoder, windows=args.windows)
    out: dict = {"model": source, "windows": args.windows, "per_window_over_stride": ratio}
    print(f"online compute per window / stride (0.5 s): {ratio:.3f}   (goal ≤ 0.1)")
    if not (args.skip_sweep or args.untrained):
        import tempfile

        db = layout.manifest
        with tempfile.TemporaryDirectory() as tmp:
            result = run_selective(model, encoder, db, caption_bank(db), SelectiveConfig(max_clips=args.max_clips),
                                   Path(tmp))
        out["savings_vs_uniform_1hz"] = dict(result["savings_vs_uniform_1hz"])
        for method, factor in result["savings_vs_uniform_1hz"].items():
            shown = "not reached" if factor is None else f"{factor:.2f}×"
            print(f"savings at ≤ 1 % CIDEr loss vs uniform 1 Hz, {method}: {shown}   (goal ≥ 3.0×; paper 2.85×)")
    return out


if __name__ == "__main__":
    main()
