"""``vljepa`` command line. Each sub-command is a thin wrapper over an in-process function."""

from __future__ import annotations

import argparse
import json
import sys


def _cmd_params(args: argparse.Namespace) -> int:
    from vljepa.config import get_preset
    from vljepa.params import parameter_counts

    counts = parameter_counts(get_preset(args.preset))
    if args.json:
        print(json.dumps(counts, indent=2))
    else:
        print(f"{'component':<10} {'total':>15} {'trainable':>15}")
        for name, c in counts.items():
            print(f"{name:<10} {c['total']:>15,} {c['trainable']:>15,}")
    return 0


def _cmd_plan(args: argparse.Namespace) -> int:
    from vljepa.config import get_preset
    from vljepa.plan import format_plan, paper_workloads, plan

    result = plan(get_preset(args.preset), paper_workloads(args.stage), gpus=args.gpus, gpu=args.gpu,
                  mfu=args.mfu, precision=args.precision, live_x_encoder=not args.cached_tokens)
    print(json.dumps(result, indent=2) if args.json else format_plan(result))
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    from vljepa.config import get_preset

    print(get_preset(args.preset).to_json())
    return 0




# Sub-commands that own their argument parsing (their --help is their own): name -> (module, help).
# Imported lazily so `vljepa params` never loads the orchestration stack.
PASSTHROUGH = {
    "corpus": ("preprocessing.corpus", "generate the procedural video-language corpus"),
    "data": ("preprocessing.data_cli", "manifest imports, data mixes and failures"),
    "run": ("flows.pipeline", "run the pretraining pipeline in this process, without Prefect"),
    "train": ("flows.train_cli", "stage-1 pretraining or stage-2 SFT through submitit (slurm | local | inline)"),
    "stream": ("flows.stream_cli", "timestamped captions of a video with selective decoding"),
}


def _passthrough(name: str, argv: list[str]) -> int:
    import importlib

    module = importlib.import_module(PASSTHROUGH[name][0])
    return module.main(argv) or 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vljepa",
        description="VL-JEPA pipeline: model inspection, data generation and the end-to-end pretraining job.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("params", help="parameter counts per component (built on the meta device)")
    p.add_argument("--preset", default="small", choices=["paper", "small", "tiny"])
    p.add_argument("--json", action="store_true", help="print JSON: {component: {total, trainable}}")
    p.set_defaults(func=_cmd_params)

    p = sub.add_parser("plan", help="estimate parameters, tokens, memory, FLOPs, cache size and GPU-hours "
                       "of the paper's schedule before launching anything")
    p.add_argument("--preset", default="paper", choices=["paper", "small", "tiny"])
    p.add_argument("--stage", default="pretrain", choices=["pretrain", "sft"],
                   help="pretrain: image phase, 100k steps × batch 24k; sft: 35k steps × batch 6k (paper Sec. 3)")
    p.add_argument("--gpus", type=int, default=192, help="GPUs in the job (paper: 24 nodes × 8)")
    p.add_argument("--gpu", default="h200", choices=["h200", "h100", "a100", "l40s"], help="for the bf16 peak")
    p.add_argument("--mfu", type=float, default=0.4, help="model FLOPs utilisation assumed")
    p.add_argument("--precision", default="bf16", choices=["bf16", "fp32"])
    p.add_argument("--cached-tokens", action="store_true", help="x-encoder tokens come from a cache (no encoder FLOPs)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_plan)

    p = sub.add_parser("config", help="print a preset's resolved config as JSON")
    p.add_argument("--preset", default="small", choices=["paper", "small", "tiny"])
    p.set_defaults(func=_cmd_config)

    for name, (_, help_text) in PASSTHROUGH.items():
        # Listed for --help only: main() hands these to their own parsers before argparse runs.
        sub.add_parser(name, help=f"{help_text} (see `vljepa {name} --help`)", add_help=False)
    return parser





def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in PASSTHROUGH:
        return _passthrough(argv[0], argv[1:])
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
