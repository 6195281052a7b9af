"""``vljepa ablate SWEEP``: one of the paper's ablation sweeps in this process (``flows.ablate.run_sweep``)."""

from __future__ import annotations

import argparse
import sys

from flows.ablate import SWEEP_NAMES
from flows.cli.common import add_config_arguments, add_length_arguments, add_state_arguments, run_config

HELP = ("run one of the paper's ablation sweeps (no Prefect needed): train every variant, evaluate it on the "
        "test split, log the runs and a summary to MLflow; `overview` plots every finished sweep against the paper")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("sweep", choices=(*SWEEP_NAMES, "overview"))
    add_config_arguments(p)
    add_length_arguments(p)
    p.add_argument("--variants", nargs="*", default=None, help="a subset of the sweep's variants (default: all)")
    p.add_argument("--launcher", default="local", choices=["inline", "local", "slurm"])
    p.add_argument("--y-encoder", action="append", default=[], metavar="NAME=PATH",
                   help="a local HF text encoder to add to the y-encoder sweep (repeatable)")
    p.add_argument("--out", default=None, help="overview: the figure's path (default: <state>/ablations/overview.png)")
    add_state_arguments(p)


def main(args: argparse.Namespace) -> int:
    from flows.ablate import overview, run_sweep

    run = run_config(args, launcher=args.launcher)
    if args.sweep == "overview":
        layout = run.layout()
        figure, tables = overview(layout, args.out or layout.ablations / "overview.png", preset=args.preset)
        print(tables + f"\n\nfigure: {figure}")
        return 0
    paths = dict(item.split("=", 1) for item in args.y_encoder)
    result = run_sweep(args.sweep, run, variants=args.variants, y_encoder_paths=paths or None)
    print(result.markdown)
    print(f"\nsummary: {result.out_dir}/summary.md, .json, .png", file=sys.stderr)
    return 0
