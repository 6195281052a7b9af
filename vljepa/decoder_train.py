"""Text-only training of the y-decoder on frozen y-encoder embeddings, and its round-trip score.

The y-encoder (the checkpoint's, with its projection into the shared space) embeds every
training text once, under ``no_grad``: it is frozen by construction while the decoder trains,
which sees only texts and their embeddings, never a video. This mirrors the paper's submission,
whose decoder was SONAR's own text decoder for the frozen SONAR encoder (text -> embedding ->
text); the final version does not say how its ~100M decoder was trained.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vljepa.decoder import YDecoder, YDecoderConfig, build_codec, decoder_vocab
from vljepa.evaluate import text_embeddings
from vljepa.model import VLJepa


@dataclass
class DecoderTrainResult:
    decoder: YDecoder
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0  # training loop only
    embed_seconds: float = 0.0  # y-encoder pass over the training texts
    n_texts: int = 0


def train_decoder(model: VLJepa, texts: list[str], cfg: YDecoderConfig, *, out_dir: str | Path | None = None,
                  progress: bool = False, extra: tuple[torch.Tensor, list[str]] | None = None) -> DecoderTrainResult:
    """Train a y-decoder to reproduce ``texts`` from their y-encoder embeddings.

    Args:
        model: a trained VL-JEPA; only its y-encoder is used (frozen, eval mode).
        texts: training texts (captions, event captions, answers); duplicates are dropped.
        cfg: decoder architecture and optimisation.
        out_dir: if given, the decoder is saved there (safetensors + config JSON); with
            ``cfg.checkpoint_every`` resumable checkpoints go to ``out_dir/checkpoints`` (model,
            optimizer, scheduler, RNG states, the sampling generator and the batch order left), and a
            re-run into the same ``out_dir`` resumes from the latest one.
        extra: ``(embeddings (E, S), texts)`` pairs trained beside the texts' own embeddings, without
            noise: e.g. the predictor's outputs for training clips with their captions
            (``flows.decoder_study``). Batches draw from both pools alike.
    """
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    torch.manual_seed(cfg.seed)
    texts = sorted(set(t.strip() for t in texts if t and t.strip()))
    if not texts:
        raise ValueError("no training texts for the y-decoder")
    extra_texts = [t.strip() for t in extra[1]] if extra is not None else []
    if extra is not None and len(extra[0]) != len(extra_texts):
        raise ValueError(f"extra: {len(extra[0])} embeddings for {len(extra_texts)} texts")
    codec = build_codec(cfg)
    decoder = YDecoder(cfg, decoder_vocab(cfg, texts + extra_texts, codec), codec)
    if cfg.lm != "tiny":
        decoder.load_lm()
    decoder.to(cfg.device)
    start = time.perf_counter()
    with torch.no_grad():
        targets = text_embeddings(model, texts)  # (T, S), unit norm, on the CPU; y-encoder frozen
    embed_seconds = time.perf_counter() - start
    if targets.shape[1] != cfg.shared_dim:
        raise ValueError(f"y-encoder gives {targets.shape[1]}-d embeddings; decoder expects {cfg.shared_dim}")
    noisy = torch.ones(len(texts), dtype=torch.bool)  # which rows get the CapDec noise
    if extra is not None:
        targets = torch.cat([targets, torch.nn.functional.normalize(extra[0].float().cpu(), dim=-1)])
        texts = texts + extra_texts
        noisy = torch.cat([noisy, torch.zeros(len(extra_texts), dtype=torch.bool)])

    decoder.train()
    params = [p for p in decoder.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.98))

    def factor(step: int) -> float:  # linear warmup, cosine to 10 %
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        progress_ = (step - cfg.warmup_steps) / max(cfg.steps - cfg.warmup_steps, 1)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress_, 1.0)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    generator = torch.Generator().manual_seed(cfg.seed)
    result = DecoderTrainResult(decoder=decoder, embed_seconds=embed_seconds, n_texts=len(texts))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.steps, desc="y-decoder", unit="step")
    order: list[int] = []
    first = 0
    manager = None
    if out_dir is not None and cfg.checkpoint_every:
        from vljepa.checkpoint import CheckpointManager

        manager = CheckpointManager(Path(out_dir) / "checkpoints", keep_last=1)
        latest = manager.latest()
        if latest is not None:
            state = manager.load(latest, model=decoder, optimizer=optimizer, scheduler=scheduler)
            first = state["step"]
            order, result.history = _restore_sampler(generator, state)
            if bar is not None:
                bar.update(first)
    start = time.perf_counter()
    for step in range(first, cfg.steps):
        if len(order) < cfg.batch_size:
            order += torch.randperm(len(texts), generator=generator).tolist()
        index, order = order[: cfg.batch_size], order[cfg.batch_size :]
        embedding = targets[index]  # (B, S)
        if cfg.noise_norm > 0:
            noise = torch.randn(embedding.shape, generator=generator) * (cfg.noise_norm / embedding.shape[1] ** 0.5)
            embedding = embedding + noise * noisy[index, None]
        embedding = embedding.to(cfg.device)
        loss = decoder.loss(embedding, [texts[i] for i in index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        result.history.append({"loss": loss.item(), "lr": optimizer.param_groups[0]["lr"]})
        done = step + 1
        if manager is not None and done % cfg.checkpoint_every == 0 and done < cfg.steps:
            manager.save(step=done, model=decoder, optimizer=optimizer, scheduler=scheduler, cfg=cfg,
                         state={"generator": generator.get_state().tolist(), "order": order,
                                "history": result.history})
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
    if bar is not None:
        bar.close()
    result.seconds = time.perf_counter() - start
    decoder.eval()
    if out_dir is not None:
        decoder.save(out_dir)
    return result


def _restore_sampler(generator: torch.Generator, state: dict) -> tuple[list[int], list[dict[str, float]]]:
    """Put the batch-order / noise generator back where a checkpoint left it: (order left, history)."""
    generator.set_state(torch.tensor(state["generator"], dtype=torch.uint8))
    return list(state["order"]), list(state["history"])
