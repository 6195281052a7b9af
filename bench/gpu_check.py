"""GPU check of the paper model: one optimiser step timed on the device, beside ``vljepa plan``'s estimate.

The model is the preset's architecture with RANDOM weights, built through the real loading code:
``rehearsal`` uses its (tiny) snapshots as they are; ``paper`` first writes full-size random
snapshots to a temporary directory (``vljepa.rehearsal.write_snapshots`` at the paper's sizes:
V-JEPA 2 ViT-L, Llama-3.2-1B, EmbeddingGemma-300M; ~7.5 GB of float32 on disk, a minute or two
to write) and points a copy of the ``paper`` config at them.

One step is predictor + y-encoder training as ``vljepa.train`` does it: autocast from
``train.precision`` (bf16 on CUDA, fp32 on CPU), bidirectional InfoNCE (``embedding_loss``),
AdamW over ``param_groups``, clipping (``apply_update``). Two modes, same model and optimiser:

- cached: random visual tokens of the x-encoder's output shape ``(B, N, D)``, then the step
  (run first, before the x-encoder is on the device, so its peak memory is the cached run's);
- live: random pixels ``(B, frames, 3, H, W)`` through the frozen x-encoder (no grad, same
  autocast), then the step.

Query and target token ids are random and fed to the predictor and the y-encoder directly, so
the token counts are exactly the ones ``vljepa.plan`` counts (tokenizers and data loading are
not timed). Reported per mode: median step time over ``--steps`` (after 1 warm-up step, CUDA
synchronised around each), samples/s, tokens/s ((visual + query + target) × batch / step),
peak memory, achieved FLOP/s from ``vljepa.plan``'s FLOPs per sample, MFU against the GPU's dense
bf16 peak (``GPU_PEAK_TFLOPS``, or ``--peak-tflops``), and plan's step time at its assumed MFU.

    python -m bench.gpu_check [--preset paper|rehearsal] [--device cuda|cpu] [--batch N]
                              [--frames 16] [--steps 3] [--json]
    python -m bench.gpu_check --preset rehearsal --device cpu     # the CPU path (tested)

Run once on an H200 (README, "The paper model on one GPU"; raw JSON in bench/results/gpu_check_h200/).
On CPU only the rehearsal path is tested (tests/test_gpu_check.py).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Literal

import torch

from vljepa.config import VLJepaConfig, get_preset, replace
from vljepa.rehearsal import LLAMA_PAD_ID, RehearsalSnapshots, SnapshotSizes

# Per-GPU batch by preset. The paper's phase 1B is 24,000 over 192 GPUs = 125 per GPU, which
# plan puts above an H200's memory without activation checkpointing; 8 fits with room to spare.
DEFAULT_BATCH = {"paper": 8, "rehearsal": 2}
TARGET_TOKENS = 32  # as vljepa.plan.paper_workloads
# V-JEPA 2 ViT-L's own predictor (facebook/vjepa2-vitl-fpc64-256): written, dropped at load.
VJEPA2_VITL_PREDICTOR = {"pred_hidden_size": 384, "pred_num_attention_heads": 12, "pred_num_hidden_layers": 12}
EMBEDDINGGEMMA_ATTENTION = {"num_key_value_heads": 1, "head_dim": 256}  # as vljepa.y_encoder's meta build


@dataclass(frozen=True, kw_only=True)
class GpuCheckOptions:
    preset: Literal["paper", "rehearsal"] = "paper"
    device: Literal["cuda", "cpu"] = "cuda"
    batch: int | None = None  # None: DEFAULT_BATCH[preset]
    frames: int | None = None  # None: the preset's x_encoder.num_frames (16)
    query_tokens: int = 0  # stage 1 is query-free; SFT: 32
    target_tokens: int = TARGET_TOKENS
    steps: int = 3  # timed steps per mode, after 1 warm-up step
    peak_tflops: float | None = None  # None: GPU_PEAK_TFLOPS of the detected GPU
    plan_mfu: float = 0.4  # the MFU plan assumes (vljepa plan --mfu)
    snapshot_dir: str | None = None  # paper: keep the full-size snapshots here (written once) instead of a temp dir


@dataclass(frozen=True, kw_only=True)
class ModeResult:
    mode: Literal["cached", "live"]
    step_s: float  # median over the timed steps
    step_s_each: tuple[float, ...]
    samples_per_s: float
    tokens_per_s: float
    peak_memory_gb: float  # see GpuCheckResult.memory_kind
    flops_per_sample: float  # vljepa.plan's count (training step, + the x-encoder's forward when live)
    achieved_tflops: float
    mfu: float | None  # None on CPU, or on a GPU not in GPU_PEAK_TFLOPS without --peak-tflops
    plan_step_s: float | None  # plan's step time on this GPU at plan_mfu (None where mfu is None)
    plan_memory_gb: float  # plan's memory estimate per GPU for this batch


@dataclass(frozen=True, kw_only=True)
class GpuCheckResult:
    preset: str
    device: str
    device_name: str
    precision: str
    batch: int
    frames: int
    tokens_per_sample: dict[str, int]  # visual, query, target
    peak_tflops: float | None
    peak_source: str
    plan_mfu: float
    memory_kind: str
    modes: tuple[ModeResult, ...]


def paper_snapshot_sizes(cfg: VLJepaConfig) -> SnapshotSizes:
    """The snapshot shapes a V-JEPA 2 / Llama / EmbeddingGemma config (the ``paper`` preset) is built for."""
    x, lm, y = cfg.x_encoder, cfg.predictor.lm, cfg.y_encoder
    return SnapshotSizes(
        vjepa2=dict(crop_size=x.image_size, frames_per_clip=x.num_frames, patch_size=x.patch_size,
                    tubelet_size=x.tubelet_size, hidden_size=x.hidden_size, num_attention_heads=x.num_heads,
                    num_hidden_layers=x.num_layers, **VJEPA2_VITL_PREDICTOR),
        llama=dict(hidden_size=lm.hidden_size, intermediate_size=lm.intermediate_size,
                   num_attention_heads=lm.num_attention_heads, num_key_value_heads=lm.num_key_value_heads,
                   head_dim=lm.head_dim, num_hidden_layers=lm.num_hidden_layers, vocab_size=lm.vocab_size,
                   rope_theta=lm.rope_theta, rms_norm_eps=lm.rms_norm_eps, rope_scaling=dict(lm.rope_scaling or {})),
        gemma=dict(hidden_size=y.hidden_size, intermediate_size=y.intermediate_size, num_attention_heads=y.num_heads,
                   num_hidden_layers=y.num_layers, vocab_size=y.vocab_size, **EMBEDDINGGEMMA_ATTENTION),
    )


def paper_config(found: RehearsalSnapshots) -> VLJepaConfig:
    """The ``paper`` preset pointed at random snapshots written at its sizes, checked against them."""
    from vljepa.model import check_snapshots

    cfg = replace(get_preset("paper"), **{
        "x_encoder.weights": str(found.vjepa2), "predictor.lm.path": str(found.llama),
        "predictor.lm.pad_token_id": LLAMA_PAD_ID,  # the written tokenizer's, not Llama-3.2's 128004
        "y_encoder.path": str(found.embeddinggemma)})
    check_snapshots(cfg)
    return cfg


def detect_peak(device: torch.device, override: float | None) -> tuple[float | None, str, str | None]:
    """(dense bf16 peak TFLOP/s or None, where it came from, the GPU_PEAK_TFLOPS key or None)."""
    from vljepa.plan import GPU_PEAK_TFLOPS

    if device.type != "cuda":
        return override, "--peak-tflops" if override else "n/a on CPU", None
    name = torch.cuda.get_device_name(device).lower()
    key = next((k for k in GPU_PEAK_TFLOPS if k in name), None)
    if override:
        return override, "--peak-tflops", key
    if key is None:
        return None, f"unknown GPU {name!r}: pass --peak-tflops", None
    # GPU_PEAK_TFLOPS holds the SXM parts' numbers: an H100 PCIe (756) needs --peak-tflops.
    return GPU_PEAK_TFLOPS[key], f"GPU_PEAK_TFLOPS[{key!r}]", key


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(step: Callable[[], None], *, steps: int, device: torch.device) -> list[float]:
    """Seconds of each of ``steps`` calls of ``step`` after one warm-up call, synchronised around each."""
    step()
    times = []
    for _ in range(steps):
        _sync(device)
        start = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - start)
    return times


def _peak_memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # Linux: KiB


def measure(cfg: VLJepaConfig, options: GpuCheckOptions) -> GpuCheckResult:
    """Time both modes of ``cfg`` (snapshots already in place) on ``options.device``."""
    from vljepa.encoders.registry import build_x_encoder
    from vljepa.losses import embedding_loss
    from vljepa.model import build_model, param_groups, visual_dim
    from vljepa.plan import GPU_PEAK_TFLOPS, Workload, plan, visual_tokens
    from vljepa.schedule import lr_lambda
    from vljepa.train import apply_update, autocast_for

    device = torch.device(options.device)
    batch = options.batch or DEFAULT_BATCH[options.preset]
    frames = options.frames or cfg.x_encoder.num_frames
    cfg = replace(cfg, **{"x_encoder.num_frames": frames, "train.device": options.device})
    tcfg = cfg.train
    if device.type == "cpu" and tcfg.num_threads:
        torch.set_num_threads(tcfg.num_threads)
    precision = "bf16 autocast" if isinstance(autocast_for(cfg, device), torch.autocast) else "fp32"
    peak, peak_source, gpu_key = detect_peak(device, options.peak_tflops)

    torch.manual_seed(tcfg.seed)
    model = build_model(cfg).to(device)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(param_groups(model, lr=tcfg.lr, weight_decay=tcfg.weight_decay), betas=(0.9, 0.95))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg, options.steps + 1))

    n_visual, dim = visual_tokens(cfg, frames), visual_dim(cfg)
    generator = torch.Generator().manual_seed(tcfg.seed)
    query_ids = torch.randint(3, cfg.predictor.lm.vocab_size, (batch, options.query_tokens), generator=generator)
    target_ids = torch.randint(3, cfg.y_encoder.vocab_size, (batch, options.target_tokens), generator=generator)
    query_ids, target_ids = query_ids.to(device), target_ids.to(device)  # (B, Lq), (B, Lt)
    query_mask, target_mask = torch.ones_like(query_ids), torch.ones_like(target_ids)

    def train_step(visual: torch.Tensor) -> None:  # visual: (B, N, D)
        with autocast_for(cfg, device):
            predicted = model.predictor(visual, query_ids if options.query_tokens else None, query_mask)  # (B, S)
            target = model.y_encoder(target_ids, target_mask)  # (B, S)
        loss = embedding_loss(tcfg.loss, predicted.float(), target.float(), temperature=tcfg.temperature)
        loss.backward()
        apply_update(params, optimizer, scheduler, tcfg.grad_clip)

    workload = Workload(name="gpu-check", num_frames=frames, query_tokens=options.query_tokens,
                        target_tokens=options.target_tokens, batch_size=batch, steps=1)
    tokens = {"visual": n_visual, "query": options.query_tokens, "target": options.target_tokens}

    def result(mode: Literal["cached", "live"], times: list[float]) -> ModeResult:
        estimate = plan(cfg, [workload], gpus=1, gpu=gpu_key or "h200", mfu=options.plan_mfu,
                        precision="bf16" if precision.startswith("bf16") else "fp32",
                        live_x_encoder=mode == "live")["phases"][0]
        step_s = statistics.median(times)
        achieved = estimate["flops_per_sample"] * batch / step_s
        # plan's GPU-hours for one step on one GPU, rescaled when the peak is not the one plan used.
        plan_step = (estimate["gpu_hours"] * 3600.0 * GPU_PEAK_TFLOPS[gpu_key or "h200"] / peak) if peak else None
        return ModeResult(mode=mode, step_s=step_s, step_s_each=tuple(times), samples_per_s=batch / step_s,
                          tokens_per_s=sum(tokens.values()) * batch / step_s, peak_memory_gb=_peak_memory_gb(device),
                          flops_per_sample=estimate["flops_per_sample"], achieved_tflops=achieved / 1e12,
                          mfu=achieved / (peak * 1e12) if peak else None, plan_step_s=plan_step,
                          plan_memory_gb=estimate["memory_gb_per_gpu"]["total"])

    modes = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    visual = torch.randn(batch, n_visual, dim, generator=generator).to(device)  # (B, N, D)
    modes.append(result("cached", time_steps(partial(train_step, visual), steps=options.steps, device=device)))
    del visual  # the cached tokens are not the live run's memory

    encoder = build_x_encoder(cfg.x_encoder).to(device)
    size = cfg.x_encoder.image_size
    pixels = torch.randn(batch, frames, 3, size, size, generator=generator).to(device)  # (B, T, 3, H, W)

    def live_step() -> None:
        with autocast_for(cfg, device):
            visual = encoder.encode(pixels).float()  # (B, N, D), frozen: no grad
        if visual.shape != (batch, n_visual, dim):
            raise AssertionError(f"x-encoder gave {tuple(visual.shape)}, plan counts {(batch, n_visual, dim)}")
        train_step(visual)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    modes.append(result("live", time_steps(live_step, steps=options.steps, device=device)))
    return GpuCheckResult(
        preset=options.preset, device=str(device),
        device_name=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", precision=precision,
        batch=batch, frames=frames, tokens_per_sample=tokens, peak_tflops=peak, peak_source=peak_source,
        plan_mfu=options.plan_mfu,
        memory_kind=("torch.cuda.max_memory_allocated, reset between modes" if device.type == "cuda" else
                     "peak RSS of the process (getrusage), not resettable: the live row includes the cached run"),
        modes=tuple(modes))


def run(options: GpuCheckOptions) -> GpuCheckResult:
    """Build the preset with random weights (writing the paper's full-size snapshots first) and measure."""
    if options.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"no CUDA GPU here (torch {torch.__version__}, torch.cuda.is_available() is False): "
                         "--device cuda needs one. The CPU path runs anywhere: "
                         "python -m bench.gpu_check --preset rehearsal --device cpu")
    if options.preset == "rehearsal":
        return measure(get_preset("rehearsal"), options)
    from vljepa.rehearsal import snapshots, write_snapshots

    sizes = paper_snapshot_sizes(get_preset("paper"))
    if options.snapshot_dir is not None:  # several runs (batches, query lengths) on one set, written atomically once
        return measure(paper_config(snapshots(Path(options.snapshot_dir), sizes=sizes)), options)
    with tempfile.TemporaryDirectory(prefix="vljepa-gpu-check-") as tmp:
        return measure(paper_config(write_snapshots(Path(tmp), sizes=sizes)), options)


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def format_table(result: GpuCheckResult) -> str:
    t = result.tokens_per_sample
    lines = [f"GPU check: preset {result.preset!r} on {result.device_name} ({result.precision}), batch {result.batch}, "
             f"{result.frames} frames; tokens/sample visual {t['visual']}, query {t['query']}, target {t['target']}",
             f"peak {_fmt(result.peak_tflops, ',.0f')} TFLOP/s ({result.peak_source}); memory: {result.memory_kind}",
             f"{'mode':<7}{'step s':>10}{'samples/s':>11}{'tokens/s':>11}{'peak GB':>9}{'GFLOP/sample':>14}"
             f"{'TFLOP/s':>10}{'MFU':>7}{f'plan s @{result.plan_mfu:.0%}':>13}{'plan GB':>9}"]
    for m in result.modes:
        lines.append(f"{m.mode:<7}{m.step_s:>10.4f}{m.samples_per_s:>11.2f}{m.tokens_per_s:>11,.0f}"
                     f"{m.peak_memory_gb:>9.2f}{m.flops_per_sample / 1e9:>14,.2f}{m.achieved_tflops:>10.4f}"
                     f"{_fmt(m.mfu, '.1%'):>7}{_fmt(m.plan_step_s, '.4f'):>13}{m.plan_memory_gb:>9.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> GpuCheckResult:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=["paper", "rehearsal"], default="paper")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--batch", type=int, default=None,
                        help="per-GPU batch; default 8 for paper (the paper's phase 1B is 125 per GPU: see the "
                             "plan GB column before raising it), 2 for rehearsal")
    parser.add_argument("--frames", type=int, default=None, help="frames per sample (default: the preset's, 16)")
    parser.add_argument("--query-tokens", type=int, default=0, help="query tokens per sample (stage 1: 0; SFT: 32)")
    parser.add_argument("--target-tokens", type=int, default=TARGET_TOKENS)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per mode, after 1 warm-up step")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="dense bf16 peak of this GPU (default: detected, vljepa.plan.GPU_PEAK_TFLOPS)")
    parser.add_argument("--plan-mfu", type=float, default=0.4, help="the MFU plan's estimate assumes")
    parser.add_argument("--snapshot-dir", default=None,
                        help="paper: write the full-size random snapshots here once and reuse them on later runs "
                             "(default: a temporary directory, removed after the run)")
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON instead of the table")
    args = parser.parse_args(argv)
    if args.steps < 1 or (args.batch is not None and args.batch < 2):
        parser.error("--steps must be >= 1 and --batch >= 2 (InfoNCE needs negatives)")
    result = run(GpuCheckOptions(preset=args.preset, device=args.device, batch=args.batch, frames=args.frames,
                                 query_tokens=args.query_tokens, target_tokens=args.target_tokens, steps=args.steps,
                                 peak_tflops=args.peak_tflops, plan_mfu=args.plan_mfu, snapshot_dir=args.snapshot_dir))
    print(json.dumps(asdict(result), indent=2) if args.json else format_table(result), flush=True)
    return result


if __name__ == "__main__":
    main()
