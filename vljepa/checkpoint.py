"""Resumable training checkpoints: written atomically, last k kept plus the best by validation.

One checkpoint is a directory ``step-00000120/`` holding

- ``model.safetensors``: the model's state dict (weights only, no pickle);
- ``train_state.pt``: optimizer and scheduler state and the torch RNG states (tensors and
  plain containers only, so it loads with ``torch.load(weights_only=True)``);
- ``state.json``: step, samples seen, data-stream position, numpy / python RNG states, the loss
  history so far and the validation metrics at this step;
- ``config.json``: the resolved config that made it.

It is written into a hidden temporary directory and renamed into place
(``vljepa.files.atomic_dir``), so a directory named ``step-*`` is always whole; a process killed
mid-write leaves only a hidden ``.step-*.tmp-*`` directory, which the next save removes.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vljepa.config import VLJepaConfig
from vljepa.model import VLJepa, build_model
from vljepa.files import atomic_dir, atomic_path, atomic_write_text, temp_glob

BEST_FILE = "best.json"


def capture_rng() -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(JSON-able numpy + python RNG states, tensor RNG states) of this process."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    json_part = {
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors["cuda"] = torch.cuda.get_rng_state()
    return json_part, tensors


def restore_rng(json_part: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    kind, keys, pos, has_gauss, cached = json_part["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, state, gauss = json_part["python"]
    random.setstate((version, tuple(state), gauss))
    torch.set_rng_state(tensors["torch"])
    if "cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["cuda"])


def step_dir_name(step: int) -> str:
    return f"step-{step:08d}"


class CheckpointManager:
    """Saves and finds resumable checkpoints under ``root``.

    Args:
        root: directory of ``step-*`` checkpoints.
        keep_last: how many of the most recent checkpoints to keep.
        metric: validation metric that picks the best checkpoint (higher is better); the best
            one is kept even when older than the last ``keep_last``.
    """

    def __init__(self, root: str | Path, *, keep_last: int = 2, metric: str = "t2v_r1") -> None:
        if keep_last < 1:
            raise ValueError(f"keep_last must be >= 1, got {keep_last}")
        self.root = Path(root)
        self.keep_last = keep_last
        self.metric = metric

    def checkpoints(self) -> list[Path]:
        """Whole checkpoints, oldest first."""
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.iterdir() if p.is_dir() and p.name.startswith("step-"))

    def latest(self) -> Path | None:
        found = self.checkpoints()
        return found[-1] if found else None

    def best(self) -> dict[str, Any] | None:
        path = self.root / BEST_FILE
        return json.loads(path.read_text()) if path.is_file() else None

    def save(self, *, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
             scheduler: Any, cfg: Any, state: dict[str, Any],
             metrics: dict[str, float] | None = None) -> Path:
        """Write checkpoint ``step`` atomically, then prune; returns its directory."""
        from safetensors.torch import save_file

        self.root.mkdir(parents=True, exist_ok=True)
        # One writer per root: any temporary left is a killed save's (``.tmp-*``: the naming before vljepa.files).
        for stale in [*self.root.glob(temp_glob("step-*")), *self.root.glob(".tmp-*")]:
            shutil.rmtree(stale, ignore_errors=True)
        final = self.root / step_dir_name(step)
        with atomic_dir(final) as tmp:
            rng_json, rng_tensors = capture_rng()
            weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
            save_file(weights, str(tmp / "model.safetensors"))
            torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng_tensors},
                       tmp / "train_state.pt")
            (tmp / "state.json").write_text(json.dumps({**state, "step": step, "rng": rng_json,
                                                        "metrics": metrics or {}}, sort_keys=True))
            (tmp / "config.json").write_text(cfg.to_json())
        if metrics and self.metric in metrics:
            self._update_best(step, metrics)
        self._prune()
        return final

    def _update_best(self, step: int, metrics: dict[str, float]) -> None:
        best = self.best()
        if best is None or metrics[self.metric] > best["value"]:
            record = {"step": step, "metric": self.metric, "value": metrics[self.metric], "dir": step_dir_name(step)}
            atomic_write_text(self.root / BEST_FILE, json.dumps(record, sort_keys=True))

    def _prune(self) -> None:
        found = self.checkpoints()
        best = self.best()
        keep = {p.name for p in found[-self.keep_last:]}
        if best is not None:
            keep.add(best["dir"])
        for path in found:
            if path.name not in keep:
                shutil.rmtree(path, ignore_errors=True)

    @staticmethod
    def load(path: str | Path, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
             scheduler: Any) -> dict[str, Any]:
        """Restore model, optimizer, scheduler and RNG states in place; returns ``state.json``."""
        from safetensors.torch import load_file

        path = Path(path)
        model.load_state_dict(load_file(str(path / "model.safetensors")), strict=True)
        train_state = torch.load(path / "train_state.pt", weights_only=True, map_location="cpu")
        optimizer.load_state_dict(train_state["optimizer"])
        scheduler.load_state_dict(train_state["scheduler"])
        state = json.loads((path / "state.json").read_text())
        restore_rng(state["rng"], train_state["rng"])
        return state


# ---------------------------------------------------------------------------------------------
# The final model of a run: model.safetensors + config.json (+ train_summary.json).


def load_weights(model: VLJepa, checkpoint_dir: Path) -> None:
    """Load ``checkpoint_dir/model.safetensors`` into ``model`` (strict: same architecture); ``train.init_from``."""
    from safetensors.torch import load_file

    path = checkpoint_dir / "model.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"train.init_from: {path} does not exist")
    model.load_state_dict(load_file(str(path)), strict=True)


def save_checkpoint(model: VLJepa, out_dir: Path, extra: dict | None = None) -> Path:
    """The final model: model.safetensors + config.json (+ train_summary.json), each written to a
    temporary name and renamed (resumable checkpoints under ``out_dir/checkpoints`` are kept)."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(out_dir / "model.safetensors") as tmp:
        save_file(state, str(tmp))
    atomic_write_text(out_dir / "config.json", model.cfg.to_json())
    if extra:
        atomic_write_text(out_dir / "train_summary.json", json.dumps(extra, indent=2, sort_keys=True, default=str))
    return out_dir


def load_checkpoint(checkpoint_dir: str | Path) -> VLJepa:
    """Rebuild the model from ``config.json`` and load ``model.safetensors`` strictly."""
    checkpoint_dir = Path(checkpoint_dir)
    cfg = VLJepaConfig.from_json((checkpoint_dir / "config.json").read_text())
    model = build_model(cfg, load_weights=False)
    load_weights(model, checkpoint_dir)
    model.eval()
    return model
