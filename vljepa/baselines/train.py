"""Training of the token-generating baseline, step for step the VL-JEPA recipe of ``vljepa.train``.

The same seeded batch order (``BatchStream(len(data), batch_size, seed)``), the same number of
optimiser steps (``total_steps``), AdamW with betas (0.9, 0.95) over the same parameter groups and
weight-decay rules (``param_groups``), the same ``lr_lambda`` schedule, gradient clipping and
autocast: only the loss differs (next-token cross-entropy instead of InfoNCE; paper Sec. 4.2).
One process; ``cfg.train.device`` and ``cfg.train.num_threads`` are honoured. With
``train.checkpoint_every`` it writes resumable checkpoints as ``vljepa.train`` does (model,
optimizer, scheduler, RNG states, batch-stream position, history: ``vljepa.checkpoint``) under
``out_dir/checkpoints``, and a re-run into the same ``out_dir`` resumes from the latest one.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from vljepa.baselines.token_vlm import TokenVLM, TokenVLMConfig, build_token_vlm
from vljepa.checkpoint import CheckpointManager
from vljepa.config import VLJepaConfig
from vljepa.data import BatchStream, TrainData
from vljepa.model import param_groups
from vljepa.schedule import lr_lambda, total_steps
from vljepa.train import (StepLogger, _fixed_query, _progress, apply_update, autocast_for, history_row,
                          micro_batch_sizes)


@dataclass
class TokenVLMTrainResult:
    model: TokenVLM
    out_dir: Path
    history: list[dict[str, float]] = field(default_factory=list)  # one row per step, as vljepa.train
    steps: int = 0
    samples_seen: int = 0
    seconds: float = 0.0
    snapshots: list[dict] = field(default_factory=list)  # {"step", "samples_seen", "path"}


def vocabulary_texts(cfg: VLJepaConfig, data: TrainData) -> list[str]:
    """Every text the model reads or writes in training: targets, queries, the fixed query."""
    everything = np.arange(len(data))
    queries = data.query(everything) or []
    return data.text(everything) + [q for q in queries if q] + ([cfg.train.query] if cfg.train.query else [])


def train_token_vlm(cfg: VLJepaConfig, vlm_cfg: TokenVLMConfig, data: TrainData, out_dir: str | Path, *,
                    snapshot_steps: tuple[int, ...] = (), progress: bool = True,
                    log_step: StepLogger | None = None) -> TokenVLMTrainResult:
    """Train the baseline on ``data``; save it to ``out_dir`` and snapshots to ``out_dir/snapshots``.

    Args:
        cfg: the VL-JEPA run's config (``cfg.train`` drives the optimisation, as for VL-JEPA).
        vlm_cfg: the baseline's own options (vocabulary, layers, target length).
        data: a ``TrainData`` source: visual tokens ``(b, N, D)``, target texts, optional queries.
        snapshot_steps: after each of these optimiser steps (1-based, ``<= total_steps``) the model is
            saved to ``out_dir/snapshots/step-{s:06d}/`` with ``snapshot.json`` (step, samples_seen).
        log_step: called as ``log_step(step, metrics)`` after every step (MLflow, say).
    """
    tcfg = cfg.train
    if tcfg.init_from:
        raise ValueError(f"train.init_from={tcfg.init_from!r} names a VL-JEPA checkpoint; the token VLM baseline "
                         "starts from the LM weights only: clear train.init_from for it")
    if tcfg.num_threads:
        torch.set_num_threads(tcfg.num_threads)
    out_dir = Path(out_dir)
    device = torch.device(tcfg.device)
    steps = total_steps(cfg, len(data))
    outside = sorted(s for s in set(snapshot_steps) if not 1 <= s <= steps)
    if outside:
        raise ValueError(f"snapshot_steps {outside} lie outside the run's steps 1..{steps}")
    torch.manual_seed(tcfg.seed)
    model = build_token_vlm(cfg, vocabulary_texts(cfg, data), vlm_cfg).to(device)
    model.train()
    optimizer = torch.optim.AdamW(param_groups(model, lr=tcfg.lr, weight_decay=tcfg.weight_decay),
                                  betas=(0.9, 0.95))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg, steps))
    stream = BatchStream(len(data), tcfg.batch_size, tcfg.seed)
    micro_size, _ = micro_batch_sizes(cfg, 1)
    params = [p for p in model.parameters() if p.requires_grad]
    result = TokenVLMTrainResult(model=model, out_dir=out_dir)
    manager = CheckpointManager(out_dir / "checkpoints", keep_last=tcfg.keep_last)
    start = 0
    latest = manager.latest()
    if latest is not None:  # a re-run after a kill: continue where the checkpoint left off
        state = manager.load(latest, model=model, optimizer=optimizer, scheduler=scheduler)
        stream.load_state_dict(state["stream"])
        start, result.samples_seen, result.history = state["step"], state["samples_seen"], state["history"]
        result.snapshots = state.get("snapshots", [])
    bar = _progress(steps, start, progress)
    wall_start = time.perf_counter()
    for step in range(start, steps):
        step_start = time.perf_counter()
        index = stream.next()  # (B,) the VL-JEPA run's batch of this step
        loss_sum = torch.zeros((), device=device)
        for micro in range(tcfg.grad_accum_steps):
            micro_index = index[micro * micro_size : (micro + 1) * micro_size]  # (b,)
            visual = data.visual(micro_index).to(device)  # (b, N, D)
            queries = data.query(micro_index) or _fixed_query(tcfg, len(micro_index))
            with autocast_for(cfg, device):
                loss = model.loss(visual, queries, data.text(micro_index)) / tcfg.grad_accum_steps
            loss.backward()
            loss_sum += loss.detach()
        if not torch.isfinite(loss_sum):
            raise FloatingPointError(f"non-finite loss {loss_sum.item()} at step {step}; stopped before the update")
        grad_norm, lr = apply_update(params, optimizer, scheduler, tcfg.grad_clip)
        result.samples_seen += len(index)
        row = history_row(loss_sum.item(), lr, grad_norm, len(index), step_start, result.samples_seen)
        result.history.append(row)
        if log_step is not None:
            log_step(step, row)
        done = step + 1
        if done in snapshot_steps:
            result.snapshots.append(_snapshot(model, out_dir, done, result.samples_seen, row["loss"]))
        if tcfg.checkpoint_every and done % tcfg.checkpoint_every == 0 and done < steps:
            manager.save(step=done, model=model, optimizer=optimizer, scheduler=scheduler, cfg=cfg,
                         state={"stream": stream.state_dict(), "samples_seen": result.samples_seen,
                                "history": result.history, "snapshots": result.snapshots})
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{row['loss']:.3f}", sps=f"{row['samples_per_s']:.1f}")
    if bar is not None:
        bar.close()
    result.steps, result.seconds = steps, time.perf_counter() - wall_start
    model.eval()
    model.save(out_dir)
    summary = {"steps": steps, "samples_seen": result.samples_seen, "seconds": result.seconds,
               "final_loss": result.history[-1]["loss"], "snapshots": result.snapshots}
    (out_dir / "train_summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True))
    return result


def _snapshot(model: TokenVLM, out_dir: Path, step: int, samples_seen: int, loss: float) -> dict:
    path = model.save(out_dir / "snapshots" / f"step-{step:06d}")
    info = {"step": step, "samples_seen": samples_seen, "loss": loss, "path": str(path)}
    (path / "snapshot.json").write_text(json.dumps(info, indent=2, sort_keys=True))
    return info
