"""Plan mode: what a run will cost, estimated before anything is launched.

Parameter counts come from building the model on the meta device (exact). FLOPs count the
matrix multiplies of one sample's forward pass (what ``torch.utils.flop_counter`` counts: 2·m·n·k
per matmul, attention scores and values included), ×3 for a training step where gradients flow
(backward ≈ 2× forward). Memory uses the usual mixed-precision accounting (16 bytes per trainable
parameter: fp32 weights, gradients and two AdamW moments) and, for activations, Korthikanti et al.
(2022)'s 34·s·h bytes per token per layer with a fused (flash/SDPA) attention kernel — an
estimate, not a measurement.

Paper schedule (Sec. 3): stage 1 image phase 100k steps × batch 24k at 1 frame, then
image+video at 16 frames (24 nodes × 8 H200, ~2 weeks in all); stage 2 SFT 35k steps × batch 6k
(~2 days).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from vljepa.config import VLJepaConfig

GPU_PEAK_TFLOPS = {"h200": 989.0, "h100": 989.0, "a100": 312.0, "l40s": 362.0}  # dense bf16


@dataclass(frozen=True, kw_only=True)
class Workload:
    """One training phase: how many frames, tokens and steps."""

    name: str
    num_frames: int
    query_tokens: int
    target_tokens: int
    batch_size: int
    steps: int
    assumed: str = ""  # what the paper does not give and this workload assumes (printed with the plan)


# Phase 1B's length is not in the paper ("subsequent iterations"; stage 1 took ~2 weeks in all).
PHASE_1B_STEPS = 20_000


def paper_workloads(stage: str, phase: str | None = None, *, video_steps: int = PHASE_1B_STEPS) -> list[Workload]:
    """The paper's schedule (Sec. 3) as workloads: stage 1 = phase 1A (image) then 1B (video), or one of them."""
    if stage == "pretrain":
        # Phase 1A: 1 frame per sample (duplicated to one tubelet of 2 frames for V-JEPA 2).
        image = Workload(name="pretrain-image", num_frames=1, query_tokens=0, target_tokens=32,
                         batch_size=24_000, steps=100_000)
        video = Workload(name="pretrain-video", num_frames=16, query_tokens=0, target_tokens=32,
                         batch_size=24_000, steps=video_steps,
                         assumed="" if video_steps != PHASE_1B_STEPS else
                         f"steps: the paper does not give phase 1B's length; {PHASE_1B_STEPS:,} assumed (--video-steps)")
        if phase not in (None, "image", "video"):
            raise ValueError(f"unknown phase {phase!r}; choose image | video")
        return {None: [image, video], "image": [image], "video": [video]}[phase]
    if stage == "sft":
        return [Workload(name="sft", num_frames=16, query_tokens=32, target_tokens=32, batch_size=6_000,
                         steps=35_000)]
    raise ValueError(f"unknown stage {stage!r}; choose pretrain | sft")


def visual_tokens(cfg: VLJepaConfig, num_frames: int) -> int:
    """Visual tokens per sample reaching the predictor for ``num_frames`` input frames."""
    x = cfg.x_encoder
    if x.name == "vjepa2":
        steps = max(1, -(-num_frames // x.tubelet_size))  # images are duplicated to fill a tubelet
        per_step = (x.image_size // x.patch_size) ** 2 if x.pool_grid is None else x.pool_grid**2
        return steps * per_step
    if x.name == "efficientnet-lite0":
        side = -(-x.image_size // 32)
        return num_frames * (side * side if x.pool_grid is None else x.pool_grid**2)
    side = x.image_size // x.patch_size
    return num_frames * (side * side if x.pool_grid is None else x.pool_grid**2)


def predictor_forward_flops(cfg: VLJepaConfig, n_visual: int, n_query: int, visual_dim: int) -> int:
    """Matmul FLOPs of one sample through the predictor (visual projection → layers → output)."""
    lm, p = cfg.predictor.lm, cfg.predictor
    s = n_visual + n_query
    h, i, hd = lm.hidden_size, lm.intermediate_size, lm.head_dim
    nh, nkv = lm.num_attention_heads, lm.num_key_value_heads
    per_layer = (2 * s * h * nh * hd  # q
                 + 2 * 2 * s * h * nkv * hd  # k, v
                 + 2 * s * nh * hd * h  # o
                 + 3 * 2 * s * h * i  # gate, up, down
                 + 2 * 2 * nh * s * s * hd)  # scores QKᵀ and weighted values
    return 2 * n_visual * visual_dim * h + p.num_layers * per_layer + 2 * h * cfg.shared_dim


def y_encoder_forward_flops(cfg: VLJepaConfig, n_tokens: int) -> int:
    """Matmul FLOPs of one target text through a BERT/Gemma-style encoder and the projection."""
    y = cfg.y_encoder
    w, i, s = y.hidden_size, y.intermediate_size, n_tokens
    if y.name == "embeddinggemma":  # GQA with 1 kv head of 256, gated MLP (3 matrices)
        nh, hd = y.num_heads, 256
        attn = 2 * s * w * nh * hd + 2 * 2 * s * w * hd + 2 * s * nh * hd * w + 2 * 2 * nh * s * s * hd
        mlp = 3 * 2 * s * w * i
    else:  # BERT: q, k, v, o square; two-matrix MLP
        attn = 4 * 2 * s * w * w + 2 * 2 * s * s * w
        mlp = 2 * 2 * s * w * i
    return y.num_layers * (attn + mlp) + 2 * w * cfg.shared_dim


def x_encoder_forward_flops(cfg: VLJepaConfig, num_frames: int) -> int:
    """Matmul FLOPs of the frozen V-JEPA 2 ViT on one sample (0 for encoders without a formula).

    Only needed when the encoder runs in the loop ("live"), as at the paper's scale, where a
    float16 token cache would be ~0.5 MB a sample.
    """
    x = cfg.x_encoder
    if x.name != "vjepa2":
        return 0
    frames = max(num_frames, x.tubelet_size)
    s = (frames // x.tubelet_size) * (x.image_size // x.patch_size) ** 2
    w = x.hidden_size
    patch = 2 * s * (3 * x.tubelet_size * x.patch_size**2) * w
    per_layer = 4 * 2 * s * w * w + 2 * 2 * s * w * 4 * w + 2 * 2 * s * s * w
    return patch + x.num_layers * per_layer


@dataclass(frozen=True)
class PhasePlan:
    workload: Workload
    tokens_per_sample: dict[str, int]
    flops_per_sample: float  # training (forward + backward) FLOPs, plus the x-encoder's forward when live
    flops_per_step: float
    flops_total: float
    gpu_hours: float
    memory_gb_per_gpu: dict[str, float]
    token_cache_gb: float  # float16 visual tokens for the phase's distinct samples


def plan(cfg: VLJepaConfig, workloads: list[Workload], *, gpus: int = 192, gpu: str = "h200", mfu: float = 0.4,
         precision: str = "bf16", dataset_samples: int | None = None, live_x_encoder: bool = True) -> dict:
    """Estimate parameters, tokens, memory, FLOPs, cache size and GPU-hours for ``workloads``."""
    from vljepa.model import visual_dim
    from vljepa.params import parameter_counts

    counts = parameter_counts(cfg)
    peak = GPU_PEAK_TFLOPS[gpu] * 1e12
    vdim = visual_dim(cfg)
    trainable = counts["predictor"]["trainable"] + counts["y_encoder"]["trainable"]
    frozen = sum(c["total"] - c["trainable"] for c in counts.values())
    weight_bytes = 2 if precision in ("bf16", "fp16") else 4
    phases = []
    for w in workloads:
        nv = visual_tokens(cfg, w.num_frames)
        y_train = cfg.y_encoder.lr_multiplier > 0
        flops = (3 * predictor_forward_flops(cfg, nv, w.query_tokens, vdim)
                 + (3 if y_train else 1) * y_encoder_forward_flops(cfg, w.target_tokens))
        if live_x_encoder:
            flops += x_encoder_forward_flops(cfg, w.num_frames)
        per_gpu_batch = max(1, -(-w.batch_size // gpus))
        lm = cfg.predictor.lm
        act = per_gpu_batch * (nv + w.query_tokens) * lm.hidden_size * 34 * cfg.predictor.num_layers
        act += per_gpu_batch * w.target_tokens * cfg.y_encoder.hidden_size * 34 * cfg.y_encoder.num_layers
        memory = {"weights_and_optimizer": (16 * trainable + weight_bytes * frozen) / 1e9,
                  "activations": act / 1e9}
        memory["total"] = sum(memory.values())
        total = flops * w.batch_size * w.steps
        samples = dataset_samples or w.batch_size * w.steps
        phases.append(PhasePlan(
            workload=w, tokens_per_sample={"visual": nv, "query": w.query_tokens, "target": w.target_tokens},
            flops_per_sample=float(flops), flops_per_step=float(flops * w.batch_size), flops_total=float(total),
            gpu_hours=total / (peak * mfu) / 3600.0, memory_gb_per_gpu=memory,
            token_cache_gb=samples * nv * vdim * 2 / 1e9,
        ))
    return {"preset": cfg.preset, "parameters": counts, "gpu": gpu, "gpus": gpus, "mfu": mfu,
            "precision": precision, "live_x_encoder": live_x_encoder, "phases": [asdict(p) for p in phases]}


def format_plan(result: dict) -> str:
    mode = "x-encoder live" if result["live_x_encoder"] else "x-encoder tokens cached"
    lines = [f"Plan for preset {result['preset']!r} on {result['gpus']} × {result['gpu']} "
             f"(MFU {result['mfu']:.0%}, {result['precision']}, {mode})", "parameters:"]
    for name, c in result["parameters"].items():
        lines.append(f"  {name:<10} total {c['total']:>14,}  trainable {c['trainable']:>14,}")
    for phase in result["phases"]:
        w = phase["workload"]
        lines += [
            f"phase {w['name']}: batch {w['batch_size']:,} × {w['steps']:,} steps, {w['num_frames']} frame(s)",
            f"  tokens/sample   visual {phase['tokens_per_sample']['visual']}, query {phase['tokens_per_sample']['query']}, "
            f"target {phase['tokens_per_sample']['target']}",
            f"  FLOPs           {phase['flops_per_sample'] / 1e9:,.1f} GFLOP/sample, {phase['flops_per_step'] / 1e15:,.2f} PFLOP/step, "
            f"{phase['flops_total'] / 1e21:,.2f} ZFLOP in all",
            f"  memory/GPU      {phase['memory_gb_per_gpu']['weights_and_optimizer']:.1f} GB weights+optimizer, "
            f"{phase['memory_gb_per_gpu']['activations']:.1f} GB activations",
            f"  token cache     {phase['token_cache_gb']:,.0f} GB (float16)",
            f"  GPU-hours       {phase['gpu_hours']:,.0f} ({phase['gpu_hours'] / result['gpus'] / 24:,.1f} days on {result['gpus']} GPUs)",
        ]
        if w.get("assumed"):
            lines.append(f"  assumed         {w['assumed']}")
    return "\n".join(lines)
