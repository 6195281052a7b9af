"""Training of predictor + y-encoder on cached frozen tokens (stage 1 pretraining, query-free).

``train(cfg, data, out_dir)`` is the in-process entry point; CLIs, Prefect tasks and submitit
jobs wrap it. Paper recipe (Sec. 3): AdamW, predictor lr 5e-5, y-encoder lr × 0.05, constant lr
in pretraining, bidirectional InfoNCE in a shared 1536-d space.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from vljepa.config import VLJepaConfig
from vljepa.data import TokenTextDataset, epoch_batches
from vljepa.losses import embedding_loss
from vljepa.model import VLJepa, build_model, param_groups

StepLogger = Callable[[int, dict[str, float]], None]


@dataclass
class TrainResult:
    model: VLJepa
    checkpoint_dir: Path
    history: list[dict[str, float]] = field(default_factory=list)  # one row per step
    steps: int = 0
    samples_seen: int = 0
    seconds: float = 0.0


def lr_lambda(cfg: VLJepaConfig, total_steps: int) -> Callable[[int], float]:
    """Linear warmup, then constant (pretraining) or cosine to zero (SFT)."""
    warmup = max(cfg.train.warmup_steps, 0)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if cfg.train.schedule == "cosine":
            progress = (step - warmup) / max(total_steps - warmup, 1)
            return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
        return 1.0

    return factor


def total_steps(cfg: VLJepaConfig, n_samples: int) -> int:
    if cfg.train.max_steps is not None:
        return cfg.train.max_steps
    per_epoch = n_samples // cfg.train.batch_size
    return max(1, int(round(cfg.train.epochs * per_epoch)))


def save_checkpoint(model: VLJepa, out_dir: Path, extra: dict | None = None) -> Path:
    """model.safetensors + config.json (+ extra JSON), written to a temp dir and renamed."""
    import os
    import shutil
    import tempfile

    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(tmp / "model.safetensors"))
    (tmp / "config.json").write_text(model.cfg.to_json())
    if extra:
        (tmp / "train_summary.json").write_text(json.dumps(extra, indent=2, sort_keys=True))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)
    return out_dir


def load_checkpoint(checkpoint_dir: str | Path) -> VLJepa:
    """Rebuild the model from ``config.json`` and load ``model.safetensors`` strictly."""
    from safetensors.torch import load_file

    checkpoint_dir = Path(checkpoint_dir)
    cfg = VLJepaConfig.from_json((checkpoint_dir / "config.json").read_text())
    model = build_model(cfg, load_weights=False)
    model.load_state_dict(load_file(str(checkpoint_dir / "model.safetensors")), strict=True)
    model.eval()
    return model


def train(cfg: VLJepaConfig, data: TokenTextDataset, out_dir: str | Path, *,
          log_step: StepLogger | None = None, progress: bool = True) -> TrainResult:
    """Train on ``data`` and save the final checkpoint to ``out_dir``.

    Args:
        cfg: resolved config (``cfg.train`` drives the optimisation).
        data: cached visual tokens ``(S, N, D)`` with their target texts.
        out_dir: checkpoint directory (``model.safetensors``, ``config.json``).
        log_step: called as ``log_step(step, metrics)`` after every step (MLflow, say).
    """
    tcfg = cfg.train
    if tcfg.num_threads:
        torch.set_num_threads(tcfg.num_threads)
    torch.manual_seed(tcfg.seed)
    device = torch.device(tcfg.device)
    model = build_model(cfg).to(device)
    model.train()
    steps = total_steps(cfg, len(data))
    optimizer = torch.optim.AdamW(param_groups(model, lr=tcfg.lr, weight_decay=tcfg.weight_decay),
                                  betas=(0.9, 0.95))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg, steps))
    generator = torch.Generator().manual_seed(tcfg.seed)
    queries = [tcfg.query] * tcfg.batch_size if tcfg.query else None
    params = [p for p in model.parameters() if p.requires_grad]

    result = TrainResult(model=model, checkpoint_dir=Path(out_dir))
    bar = _progress(steps, progress)
    start = time.perf_counter()
    batches: list[torch.Tensor] = []
    for step in range(steps):
        if not batches:
            batches = epoch_batches(len(data), tcfg.batch_size, generator)
        index = batches.pop(0)
        step_start = time.perf_counter()
        visual = data.visual(index).to(device)  # (B, N, D)
        predicted = model.predict(visual, queries)  # (B, S)
        target = model.encode_text(data.text(index))  # (B, S)
        loss = embedding_loss(tcfg.loss, predicted, target, temperature=tcfg.temperature)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss {loss.item()} at step {step}; last checkpoint left intact")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, tcfg.grad_clip)
        lr = optimizer.param_groups[0]["lr"]  # the predictor lr this step used
        optimizer.step()
        scheduler.step()
        result.samples_seen += len(index)
        row = {"loss": loss.item(), "lr": lr, "grad_norm": float(grad_norm),
               "samples_per_s": len(index) / (time.perf_counter() - step_start),
               "samples_seen": float(result.samples_seen)}
        result.history.append(row)
        if log_step is not None:
            log_step(step, row)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{row['loss']:.3f}", sps=f"{row['samples_per_s']:.1f}")
    if bar is not None:
        bar.close()
    result.steps = steps
    result.seconds = time.perf_counter() - start
    model.eval()
    save_checkpoint(model, Path(out_dir), {"steps": steps, "samples_seen": result.samples_seen,
                                            "seconds": result.seconds, "final_loss": result.history[-1]["loss"]})
    return result


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="train", unit="step")
