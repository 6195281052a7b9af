"""``vljepa compare``: VL-JEPA vs a token-generating VLM trained alike (``flows.compare.run_compare``)."""

from __future__ import annotations

import argparse

from flows.cli.common import add_config_arguments, add_length_arguments, add_state_arguments, run_config
from flows.resolve import LAUNCHERS

HELP = ("train VL-JEPA and a token-generating VLM alike (same tokens, data, batch, schedule; the VLM trains twice "
        "the predictor's LM layers, as the paper's), with 3 seeds, evaluate both at log-spaced samples seen, and plot "
        "CIDEr / top-5 vs samples with bands (paper Fig. 3)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    add_length_arguments(p)
    p.add_argument("--points", type=int, default=5, help="log-spaced evaluation points")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (data order, head init)")
    p.add_argument("--vlm-layers", type=int, default=None,
                   help="LM layers the VLM trains (default: twice the predictor's, the paper's ratio)")
    p.add_argument("--vocab", default="cut", choices=["cut", "full"], help="the VLM's output vocabulary")
    p.add_argument("--launcher", default="local", choices=LAUNCHERS, help="VL-JEPA's training")
    add_state_arguments(p)


def main(args: argparse.Namespace) -> int:
    from flows.compare import run_compare

    result = run_compare(run_config(args, launcher=args.launcher), points=args.points, vlm_vocab=args.vocab,
                         seeds=tuple(args.seeds), vlm_layers=args.vlm_layers)
    print(result.markdown)
    print(f"\nfigure: {result.out_dir}/compare.png")
    return 0
