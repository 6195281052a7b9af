"""``vljepa config | params | plan``: look at a resolved config before running anything."""

from __future__ import annotations

import argparse
import json

from flows.cli.common import add_config_arguments, emit, run_config


def add_config(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    p.add_argument("--stage", choices=["pretrain", "sft"], default=None,
                   help="apply this stage's recipe (vljepa.recipes.recipe) before the overrides")
    p.add_argument("--phase", choices=["image", "video"], default=None, help="stage-1 phase of the recipe")


def add_params(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    p.add_argument("--json", action="store_true", help="print JSON: {component: {total, trainable}}")


def add_plan(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p, default_preset="paper")
    p.add_argument("--stage", default="pretrain", choices=["pretrain", "sft"],
                   help="pretrain: phase 1A (image, 100k steps × batch 24k, 1 frame) then 1B (image + video, "
                        "16 frames); sft: 35k steps × batch 6k (paper Sec. 3)")
    p.add_argument("--phase", choices=["image", "video"], default=None, help="one stage-1 phase only (default: both)")
    p.add_argument("--video-steps", type=int, default=None,
                   help="phase 1B steps (not given in the paper; default vljepa.plan.PHASE_1B_STEPS, flagged as assumed)")
    p.add_argument("--gpus", type=int, default=192, help="GPUs in the job (paper: 24 nodes × 8)")
    p.add_argument("--gpu", default="h200", choices=["h200", "h100", "a100", "l40s"], help="for the bf16 peak")
    p.add_argument("--mfu", type=float, default=0.4, help="model FLOPs utilisation assumed")
    p.add_argument("--precision", default="bf16", choices=["bf16", "fp32"])
    p.add_argument("--cached-tokens", action="store_true", help="x-encoder tokens come from a cache (no encoder FLOPs)")
    p.add_argument("--json", action="store_true")


def main(args: argparse.Namespace) -> int:
    run = run_config(args)
    if args.command == "config":
        stage = args.stage or ("pretrain" if args.phase else None)
        cfg = run.stage_config(stage, args.phase) if stage else run.model_config()
        print(cfg.to_json())
    elif args.command == "params":
        from vljepa.params import parameter_counts

        counts = parameter_counts(run.model_config())
        if args.json:
            emit(json.dumps(counts, indent=2))
        else:
            print(f"{'component':<10} {'total':>15} {'trainable':>15}")
            for name, c in counts.items():
                print(f"{name:<10} {c['total']:>15,} {c['trainable']:>15,}")
    else:
        from vljepa.plan import format_plan, paper_workloads, plan

        from vljepa.plan import PHASE_1B_STEPS

        if args.stage == "sft" and (args.phase or args.video_steps):
            raise SystemExit("vljepa plan: --phase / --video-steps are for --stage pretrain")
        workloads = paper_workloads(args.stage, args.phase, video_steps=args.video_steps or PHASE_1B_STEPS)
        result = plan(run.model_config(), workloads, gpus=args.gpus, gpu=args.gpu, mfu=args.mfu,
                      precision=args.precision, live_x_encoder=not args.cached_tokens)
        emit(json.dumps(result, indent=2) if args.json else format_plan(result))
    return 0


COMMANDS = {
    "config": ("print a preset's (or file's) resolved config as JSON, with a stage's recipe and --set applied",
               add_config),
    "params": ("parameter counts per component (built on the meta device)", add_params),
    "plan": ("estimate parameters, tokens, memory, FLOPs, cache size and GPU-hours of the paper's schedule "
             "before launching anything", add_plan),
}
