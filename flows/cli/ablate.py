"""``vljepa ablate SWEEP``: one of the paper's ablation sweeps in this process (``flows.ablate.run_sweep``)."""

from __future__ import annotations

import argparse
import sys

from flows.ablate import SWEEP_NAMES
from flows.cli.common import add_config_arguments, add_state_arguments, run_config
from flows.resolve import LAUNCHERS

HELP = ("run one of the paper's ablations on its protocol (SFT-stage data, constant lr, a fixed sample budget, "
        "3 seeds; no Prefect needed): train every (variant, seed), evaluate on the test split, log the runs and a "
        "summary to MLflow; `overview` rebuilds every table and the figure from the MLflow runs")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("sweep", choices=(*SWEEP_NAMES, "overview"),
                   help="pretraining (a), y-lr (b), loss (c), predictor (d), y-encoder (e) of the paper's Table 5")
    add_config_arguments(p)
    p.add_argument("--variants", nargs="*", default=None, help="a subset of the sweep's variants (default: all)")
    p.add_argument("--samples", type=int, default=None, help="samples per variant (default: the preset's protocol, vljepa.ablations.PROTOCOLS; "
                        "the protocol sets train.max_steps, batch_size, schedule and seed over any --set)")
    p.add_argument("--batch-size", type=int, default=None, help="batch of the protocol (default: the preset's)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds per variant (default: 0 1 2)")
    p.add_argument("--launcher", default="local", choices=LAUNCHERS,
                   help="slurm: every (variant, seed) of the sweep as one job array")
    p.add_argument("--y-encoder", action="append", default=[], metavar="NAME=PATH",
                   help="a local HF text encoder to add to the y-encoder sweep (repeatable)")
    p.add_argument("--out", default=None, help="overview: where overview.json/.png/.md go "
                                               "(default: <state>/ablations/overview)")
    add_state_arguments(p)


def protocol_of(args: argparse.Namespace, preset: str):
    import dataclasses

    from vljepa.ablations import PROTOCOLS

    changes = {k: v for k, v in (("samples", args.samples), ("batch_size", args.batch_size),
                                 ("seeds", tuple(args.seeds) if args.seeds else None)) if v is not None}
    return dataclasses.replace(PROTOCOLS[preset], **changes)


def main(args: argparse.Namespace) -> int:
    from pathlib import Path

    run = run_config(args, launcher=args.launcher)
    if args.sweep == "overview":
        from flows.ablate_report import overview

        layout = run.layout()
        _, text = overview(layout.tracking_uri, Path(args.out) if args.out else layout.ablations / "overview")
        print(text)
        return 0
    from flows.ablate import run_sweep

    paths = dict(item.split("=", 1) for item in args.y_encoder)
    result = run_sweep(args.sweep, run, variants=args.variants, y_encoder_paths=paths or None,
                       protocol=protocol_of(args, run.model_config().preset))
    print(result.markdown)
    print(f"\nsummary: {result.out_dir}/summary.md, .json, .png", file=sys.stderr)
    return 0
