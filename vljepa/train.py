"""Training of predictor + y-encoder on cached frozen tokens: one stage (or phase) of the recipe.

``train(cfg, data, out_dir)`` is the in-process entry point; CLIs, Prefect tasks and submitit
jobs wrap it. Paper recipe (Sec. 3): AdamW, predictor lr 5e-5, y-encoder lr × 0.05, constant lr
in pretraining and cosine in SFT, bidirectional InfoNCE in the shared space with negatives from
every rank.

``out_dir`` receives the final model (``model.safetensors``, ``config.json``,
``train_summary.json``), ``snapshots/step-*`` (model only, at ``train.snapshot_steps``) and
``checkpoints/step-*`` to resume from: a run restarted on the same
``out_dir`` (after a crash, a SIGKILL or a Slurm requeue) continues from its last checkpoint and
ends bit-identical on CPU to a run that was never interrupted.
"""

from __future__ import annotations

import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from vljepa.checkpoint import CheckpointManager, load_weights, save_checkpoint
from vljepa.config import VLJepaConfig
from vljepa.config_dict import replace
from vljepa.data import StreamedData, TrainData
from vljepa.distributed import DistContext
from vljepa.feed import make_feed, n_samples
from vljepa.losses import embedding_loss
from vljepa.model import VLJepa, build_model, param_groups
from vljepa.schedule import lr_lambda, total_steps

StepLogger = Callable[[int, dict[str, float]], None]
Validator = Callable[[VLJepa], dict[str, float]]


@dataclass
class TrainResult:
    model: VLJepa
    checkpoint_dir: Path
    history: list[dict[str, float]] = field(default_factory=list)  # one row per step, resumed ones included
    steps: int = 0
    samples_seen: int = 0
    seconds: float = 0.0  # wall-clock of this process's part of the run
    resumed_from: int | None = None  # step of the checkpoint this run started from
    validation: list[dict[str, float]] = field(default_factory=list)  # {"step": s, metric: value, ...}
    data: dict = field(default_factory=dict)  # loader, samples drawn per component, bad data skipped


class TrainStep(nn.Module):
    """One forward pass of both branches, as a module so DistributedDataParallel can wrap it."""

    def __init__(self, model: VLJepa) -> None:
        super().__init__()
        self.model = model

    def forward(self, visual: torch.Tensor, queries: list[str] | None, texts: list[str]):
        predicted = self.model.predict(visual, queries)  # (b, S)
        target = self.model.encode_text(texts)  # (b, S)
        return predicted, target


def autocast_for(cfg: VLJepaConfig, device: torch.device):
    """bf16 autocast where the device supports it (CUDA with bf16), else full fp32."""
    precision = cfg.train.precision
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()


def micro_batch_sizes(cfg: VLJepaConfig, world_size: int) -> tuple[int, int]:
    """(global micro-batch, per-rank micro-batch) of ``train.batch_size`` over ranks and micro-steps.

    Batch policy: when ``batch_size`` does not split evenly into ``grad_accum_steps × world_size``
    parts, the per-rank micro-batch is rounded down (never above what was planned per rank) and
    the run trains at the *effective* global batch ``per_rank × world_size × grad_accum_steps``
    (``effective_batch_size``), which ``train`` prints and records. The paper's SFT batch 6000 on
    its 24 × 8 = 192 ranks is 31 per rank, 5952 in all (-0.8 %).
    """
    tcfg = cfg.train
    per_rank = tcfg.batch_size // (tcfg.grad_accum_steps * world_size)
    if per_rank == 0:
        raise ValueError(f"train.batch_size={tcfg.batch_size} gives no sample per rank with grad_accum_steps="
                         f"{tcfg.grad_accum_steps} × world_size={world_size}: use a batch of at least "
                         f"{tcfg.grad_accum_steps * world_size}")
    return per_rank * world_size, per_rank


def effective_batch_size(cfg: VLJepaConfig, world_size: int) -> int:
    """The global batch a run on ``world_size`` ranks trains at (see ``micro_batch_sizes``)."""
    return micro_batch_sizes(cfg, world_size)[0] * cfg.train.grad_accum_steps


def with_effective_batch(cfg: VLJepaConfig, world_size: int) -> VLJepaConfig:
    """``cfg`` with ``train.batch_size`` set to the effective batch (the same object when it divides)."""
    effective = effective_batch_size(cfg, world_size)
    if effective == cfg.train.batch_size:
        return cfg
    return replace(cfg, **{"train.batch_size": effective})


def train(cfg: VLJepaConfig, data: TrainData | StreamedData, out_dir: str | Path, *, log_step: StepLogger | None = None,
          progress: bool = True, validate: Validator | None = None, dist: DistContext | None = None,
          resume: bool = True) -> TrainResult:
    """Train on ``data``, checkpointing under ``out_dir/checkpoints``; save the final model to ``out_dir``.

    Args:
        cfg: resolved config (``cfg.train`` drives the optimisation).
        data: in-memory ``TrainData`` (visual tokens ``(b, N, D)``, target texts, optional queries, by
            index) or ``StreamedData`` (each rank streams its own batches; ``preprocessing.stream``).
        out_dir: run directory; an existing checkpoint in it is resumed when ``resume``.
        log_step: called on rank 0 as ``log_step(step, metrics)`` after every step (MLflow, say).
        validate: ``validate(model) -> metrics`` (with ``t2v_r1``), run at every checkpoint and every
            ``train.eval_every`` steps; the best checkpoint by ``t2v_r1`` is kept.
        dist: rank / world size (``vljepa.distributed.init_distributed``); None = one process.
    """
    dist = dist or DistContext()
    configured = cfg.train.batch_size
    cfg = with_effective_batch(cfg, dist.world_size)
    tcfg = cfg.train
    if tcfg.batch_size != configured and dist.is_main:
        print(f"train.batch_size={configured} does not split over grad_accum_steps={tcfg.grad_accum_steps} × "
              f"{dist.world_size} ranks: training at the effective global batch {tcfg.batch_size} "
              f"({tcfg.batch_size // (tcfg.grad_accum_steps * dist.world_size)} per rank per micro-step)",
              file=sys.stderr, flush=True)
    out_dir = Path(out_dir)
    if tcfg.num_threads:
        torch.set_num_threads(tcfg.num_threads)
    device = torch.device(tcfg.device if tcfg.device != "cuda" else f"cuda:{dist.local_rank}")
    torch.manual_seed(tcfg.seed)  # the same initial weights on every rank
    model = build_model(cfg).to(device)
    if tcfg.init_from:
        load_weights(model, Path(tcfg.init_from))
    model.train()
    steps = total_steps(cfg, n_samples(data))
    optimizer = torch.optim.AdamW(param_groups(model, lr=tcfg.lr, weight_decay=tcfg.weight_decay),
                                  betas=(0.9, 0.95))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg, steps))
    micro_global, micro_local = micro_batch_sizes(cfg, dist.world_size)
    feed = make_feed(data, batch_size=tcfg.batch_size, seed=tcfg.seed, micro_global=micro_global,
                     micro_local=micro_local, dist=dist)
    params = [p for p in model.parameters() if p.requires_grad]
    manager = CheckpointManager(out_dir / "checkpoints", keep_last=tcfg.keep_last)

    result = TrainResult(model=model, checkpoint_dir=out_dir)
    start_step = 0
    latest = manager.latest() if resume else None
    if latest is not None:
        state = manager.load(latest, model=model, optimizer=optimizer, scheduler=scheduler)
        feed.load_state_dict(state["stream"])
        start_step, result.samples_seen = state["step"], state["samples_seen"]
        result.history, result.validation = state["history"], state.get("validation", [])
        result.resumed_from = start_step
        if dist.is_main:  # a requeued Slurm job says where its allocation picked up
            print(f"[train] resuming from {latest} (step {start_step} of {steps})", file=sys.stderr, flush=True)
    step_module: nn.Module = TrainStep(model)
    if dist.initialized:
        step_module = nn.parallel.DistributedDataParallel(
            step_module, device_ids=[dist.local_rank] if device.type == "cuda" else None)

    def save(step: int, metrics: dict[str, float] | None) -> None:
        stream_state = feed.state_dict()  # a collective for streamed data: every rank's position
        if dist.is_main:
            manager.save(step=step, model=model, optimizer=optimizer, scheduler=scheduler, cfg=cfg, metrics=metrics,
                         state={"stream": stream_state, "samples_seen": result.samples_seen,
                                "history": result.history, "validation": result.validation})
        dist.barrier()

    bar = _progress(steps, start_step, progress and dist.is_main)
    wall_start = time.perf_counter()
    for step in range(start_step, steps):
        step_start = time.perf_counter()
        feed.start_step()
        loss_sum = torch.zeros((), device=device)
        for micro in range(tcfg.grad_accum_steps):
            last_micro = micro == tcfg.grad_accum_steps - 1
            sync = nullcontext() if (last_micro or not dist.initialized) else step_module.no_sync()
            with sync:
                visual, queries, texts = feed.micro(micro)
                visual = visual.to(device)  # (b, N, D)
                with autocast_for(cfg, device):
                    predicted, target = step_module(visual, queries or _fixed_query(tcfg, len(texts)), texts)
                loss = embedding_loss(tcfg.loss, predicted.float(), target.float(), temperature=tcfg.temperature,
                                      rank=dist.rank, world_size=dist.world_size) / tcfg.grad_accum_steps
                loss.backward()
            loss_sum += loss.detach()
        step_loss = dist.mean(loss_sum)  # the global-batch loss, the same on every rank
        if not torch.isfinite(step_loss):
            last_good = manager.latest()
            raise FloatingPointError(
                f"non-finite loss {step_loss.item()} at step {step}; stopped before the update. Last good "
                f"checkpoint: {last_good or 'none written yet'} (left intact; resume from it after fixing the cause)")
        grad_norm, lr = apply_update(params, optimizer, scheduler, tcfg.grad_clip)
        result.samples_seen += tcfg.batch_size
        row = history_row(step_loss.item(), lr, grad_norm, tcfg.batch_size, step_start, result.samples_seen)
        result.history.append(row)
        if log_step is not None and dist.is_main:
            log_step(step, row)
        done = step + 1
        due_eval = validate is not None and tcfg.eval_every and done % tcfg.eval_every == 0
        # With checkpointing on, the last step is checkpointed too (a later stage can continue it).
        due_ckpt = bool(tcfg.checkpoint_every) and (done % tcfg.checkpoint_every == 0 or done == steps)
        metrics = None
        if validate is not None and (due_eval or due_ckpt):
            metrics = _run_validation(model, validate, done, result, log_step if dist.is_main else None)
        if due_ckpt:
            save(done, metrics)
        if done in tcfg.snapshot_steps and dist.is_main:
            save_checkpoint(model, out_dir / "snapshots" / f"step-{done:06d}",
                            {"steps": done, "samples_seen": result.samples_seen})
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{row['loss']:.3f}", sps=f"{row['samples_per_s']:.1f}")
    if bar is not None:
        bar.close()
    result.data = feed.summary()  # a collective for streamed data
    feed.close()
    result.steps = steps
    result.seconds = time.perf_counter() - wall_start
    model.eval()
    if dist.is_main:
        final_loss = result.history[-1]["loss"] if result.history else None
        save_checkpoint(model, out_dir, {"steps": steps, "samples_seen": result.samples_seen,
                                         "seconds": result.seconds, "final_loss": final_loss,
                                         "resumed_from": result.resumed_from, "best": manager.best(),
                                         "history": result.history, "data": result.data,
                                         "batch_size": {"configured": configured, "effective": tcfg.batch_size}})
    dist.barrier()
    return result


def apply_update(params: list[nn.Parameter], optimizer: torch.optim.Optimizer, scheduler, grad_clip: float) -> tuple[float, float]:
    """Clip, step the optimiser and the schedule; returns (grad norm, the lr this step used)."""
    grad_norm = torch.nn.utils.clip_grad_norm_(params, grad_clip)
    lr = optimizer.param_groups[0]["lr"]  # the predictor's (first group's) lr
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    scheduler.step()
    return float(grad_norm), lr


def history_row(loss: float, lr: float, grad_norm: float, n_samples: int, step_start: float,
                samples_seen: int) -> dict[str, float]:
    """One step's row of the training history (and of the MLflow metrics)."""
    return {"loss": loss, "lr": lr, "grad_norm": grad_norm,
            "samples_per_s": n_samples / (time.perf_counter() - step_start), "samples_seen": float(samples_seen)}


def _fixed_query(tcfg, n: int) -> list[str] | None:
    return [tcfg.query] * n if tcfg.query else None


def _run_validation(model: VLJepa, validate: Validator, step: int, result: TrainResult,
                    log_step: StepLogger | None) -> dict[str, float]:
    model.eval()
    with torch.no_grad():
        metrics = {k: float(v) for k, v in validate(model).items()}
    model.train()
    result.validation.append({"step": float(step), **metrics})
    if log_step is not None:
        log_step(step - 1, {f"val/{k}": v for k, v in metrics.items()})
    return metrics


def _progress(total: int, initial: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="train", unit="step")
