"""What every task shares: the split's data on cached tokens, the result type, and writing it."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vljepa.config import XEncoderConfig
from vljepa.data import TokenTextDataset
from vljepa.files import atomic_write_text


@dataclass(frozen=True)
class Event:
    text: str
    start_s: float
    end_s: float
    attributes: dict  # colour, shape, size, count, motion (corpus fields)


def frames_per_token_group(x_encoder: XEncoderConfig) -> int:
    """Frames behind each temporal group of an x-encoder's tokens: V-JEPA 2's tubelet, else 1 (per frame)."""
    return x_encoder.tubelet_size if x_encoder.name == "vjepa2" else 1


@dataclass(frozen=True)
class TaskData:
    """One split: cached visual tokens joined with every annotation the tasks use.

    tokens: ``(S, N, D)`` as cached, in time order: ``N = groups * tokens_per_group`` with one
        group per frame for per-frame x-encoders (``tiny``, EfficientNet-Lite0) and one per
        tubelet of ``tubelet_size`` frames for V-JEPA 2 (16 frames -> 8 groups);
    events: per sample, its events in order; qa: per sample, its (question, answer) pairs;
    tubelet_size: frames per token group (``frames_per_token_group(cfg.x_encoder)``);
    state_tokens: optional ``(S, N_state, D)``, the world-prediction state input of every sample
        encoded from its decoded first and last frames (``flows.loaders.load_state_tokens``):
        needed where ``tubelet_size > 1``, since tubelet tokens mix frames and no single frame
        can be cut out of them.
    """

    sample_ids: list[str]
    tokens: np.ndarray
    captions: list[str]
    labels: list[str | None]
    events: list[list[Event]]
    qa: list[list[tuple[str, str]]]
    num_frames: int
    tubelet_size: int = 1
    state_tokens: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.sample_ids)
        if self.tokens.shape[0] != n or not (len(self.captions) == len(self.labels) == len(self.events) == len(self.qa) == n):
            raise ValueError(f"inconsistent task data for {n} samples")
        if self.tubelet_size < 1:
            raise ValueError(f"tubelet_size must be >= 1, got {self.tubelet_size}")
        if self.tokens.shape[1] % self.num_groups:
            raise ValueError(f"{self.tokens.shape[1]} tokens per clip do not split into {self.num_groups} token groups "
                             f"({self.num_frames} frames, tubelets of {self.tubelet_size})")
        if self.state_tokens is not None and (self.state_tokens.ndim != 3 or self.state_tokens.shape[0] != n
                                              or self.state_tokens.shape[2] != self.tokens.shape[2]):
            raise ValueError(f"state_tokens must be (S={n}, N_state, D={self.tokens.shape[2]}), "
                             f"got {self.state_tokens.shape}")

    def __len__(self) -> int:
        return len(self.sample_ids)

    @property
    def num_groups(self) -> int:
        """Temporal token groups per clip: frames, or tubelets (the last one filled by repeating)."""
        return -(-self.num_frames // self.tubelet_size)

    def dataset(self) -> TokenTextDataset:
        """The retrieval/classification view (captions as texts), as ``vljepa.evaluate`` wants it."""
        labels = self.labels if all(lbl is not None for lbl in self.labels) else None
        return TokenTextDataset(sample_ids=self.sample_ids, tokens=self.tokens, texts=self.captions, labels=labels)

    def frames(self, index: np.ndarray, frames: list[int]) -> torch.Tensor:
        """Float32 tokens of the chosen frames only, ``(b, len(frames) * N/F, D)`` (frames may repeat).

        Per-frame tokens only: tubelet tokens (``tubelet_size > 1``) mix frames, so this refuses them.
        """
        if self.tubelet_size > 1:
            raise ValueError(f"cannot cut frames out of tubelet tokens: each of the {self.num_groups} token groups "
                             f"mixes {self.tubelet_size} of the {self.num_frames} frames; encode the frames "
                             "themselves with the x-encoder instead (see TaskData.state_tokens)")
        per_frame = self.tokens.shape[1] // self.num_frames
        picked = self.tokens[np.asarray(index)].reshape(len(index), self.num_frames, per_frame, -1)[:, frames]
        return torch.from_numpy(picked.reshape(len(index), len(frames) * per_frame, -1).astype(np.float32))


@dataclass
class TaskResult:
    """Metrics of one task with a chance level per metric (same keys), and plot material."""

    task: str
    metrics: dict[str, float]
    chance: dict[str, float]
    n: int
    protocol: str
    details: dict = field(default_factory=dict)  # JSON-serialisable extras (examples, ranks, ...)

    def flat(self) -> dict[str, float]:
        """``{"task/metric": value}`` for MLflow (no '@' in names)."""
        return {f"{self.task}/{k}": float(v) for k, v in self.metrics.items()}


def markdown_table(results: list[TaskResult]) -> str:
    """One row per metric: value, chance level, ratio."""
    lines = ["| task | metric | value | chance | n |", "|---|---|---|---|---|"]
    for result in results:
        for key, value in result.metrics.items():
            chance = result.chance.get(key)
            lines.append(f"| {result.task} | {key} | {value:.3f} | {'' if chance is None else f'{chance:.3f}'} | {result.n} |")
    return "\n".join(lines) + "\n"


def write_result(result: TaskResult, out_dir: str | Path) -> tuple[Path, Path]:
    """``<task>.json`` and ``<task>.md`` under ``out_dir`` (written to temp names, then renamed)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for suffix, text in ((".json", json.dumps(asdict(result), indent=2, sort_keys=True)),
                         (".md", f"# {result.task}\n\n{result.protocol}\n\n{markdown_table([result])}")):
        paths.append(atomic_write_text(out_dir / f"{result.task}{suffix}", text))
    return paths[0], paths[1]


@torch.no_grad()
def predict(model, visual: torch.Tensor, queries: list[str] | None = None, *, batch_size: int = 64) -> torch.Tensor:
    """Predicted unit-norm embeddings ``(B, S)`` for visual tokens ``(B, N, D)`` (+ optional queries)."""
    model.eval()
    device = model.predictor.out_proj.weight.device
    out = []
    for start in range(0, len(visual), batch_size):
        q = queries[start : start + batch_size] if queries is not None else None
        out.append(model.predict(visual[start : start + batch_size].to(device), q).float().cpu())
    return F.normalize(torch.cat(out), dim=-1)


def training_query(model) -> str:
    """The query the predictor was trained with ('' for query-free stage-1 pretraining)."""
    return getattr(model.cfg.train, "query", "") or ""
