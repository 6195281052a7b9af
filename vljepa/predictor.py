"""The predictor: the last layers of a Llama-style LM, run bidirectionally (paper Sec. 3).

Visual tokens are linearly projected to the LM width, the text query's token embeddings are
appended after them, the selected decoder layers run with a padding-only attention mask (no
causal mask: "we disable the causal attention mask so that visual and query embeddings can
attend to each other"), the outputs are average-pooled over non-[PAD] positions and linearly
projected to the shared embedding space.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from vljepa.config import LMConfig, PredictorConfig
from vljepa.weights import LoadReport, load_mapped, read_safetensors


def llama_config(lm: LMConfig):
    from transformers import LlamaConfig

    config = LlamaConfig(
        hidden_size=lm.hidden_size, intermediate_size=lm.intermediate_size,
        num_attention_heads=lm.num_attention_heads, num_key_value_heads=lm.num_key_value_heads,
        head_dim=lm.head_dim, num_hidden_layers=lm.num_hidden_layers, vocab_size=lm.vocab_size,
        rms_norm_eps=lm.rms_norm_eps, max_position_embeddings=131072 if lm.rope_scaling else 8192, pad_token_id=lm.pad_token_id,
        rope_parameters={"rope_type": "default", "rope_theta": lm.rope_theta, **(lm.rope_scaling or {})},
        attention_bias=False, mlp_bias=False,
    )
    config._attn_implementation = "sdpa"
    return config


def selected_layers(cfg: PredictorConfig) -> list[int]:
    """Indices (in the full LM) of the layers the predictor is cut from."""
    total = cfg.lm.num_hidden_layers
    stop = total - cfg.layer_offset_from_top
    start = stop - cfg.num_layers
    if start < 0 or cfg.num_layers < 1:
        raise ValueError(f"cannot take {cfg.num_layers} layers ending {cfg.layer_offset_from_top} below the top of a {total}-layer LM")
    return list(range(start, stop))


class Predictor(nn.Module):
    """``(visual tokens, query ids) -> predicted target embedding``."""

    def __init__(self, cfg: PredictorConfig, *, visual_dim: int, shared_dim: int) -> None:
        super().__init__()
        from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRMSNorm, LlamaRotaryEmbedding

        self.cfg = cfg
        config = llama_config(cfg.lm)
        self.layer_indices = selected_layers(cfg)
        hidden = cfg.lm.hidden_size
        self.visual_proj = nn.Linear(visual_dim, hidden)
        self.embed_tokens = nn.Embedding(cfg.lm.vocab_size, hidden, padding_idx=cfg.lm.pad_token_id)
        self.layers = nn.ModuleList(LlamaDecoderLayer(config, layer_idx=i) for i in range(cfg.num_layers))
        self.norm = LlamaRMSNorm(hidden, eps=cfg.lm.rms_norm_eps)
        self.rotary_emb = LlamaRotaryEmbedding(config)
        self.out_proj = nn.Linear(hidden, shared_dim)
        self.causal = cfg.attention == "causal"
        if not self.embed_tokens.weight.is_meta:
            self._init_weights(config.initializer_range)
        if cfg.freeze_token_embeddings:
            self.embed_tokens.weight.requires_grad_(False)

    def _init_weights(self, std: float) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=std)

    def attention_mask(self, valid: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Additive 4-D mask ``(B, 1, L, L)``: 0 where a query may attend a key, -inf-like elsewhere.

        Bidirectional: only padded keys are masked. Causal (ablation): also keys after the query.
        A float mask works for both SDPA and eager attention.
        """
        allowed = valid[:, None, None, :].bool()  # (B, 1, 1, L)
        length = valid.shape[1]
        if self.causal:
            allowed = allowed & torch.ones(length, length, dtype=torch.bool, device=valid.device).tril()
        mask = torch.zeros(allowed.shape[0], 1, length, length, dtype=dtype, device=valid.device)
        return mask.masked_fill(~allowed, torch.finfo(dtype).min)

    def forward(self, visual_tokens: torch.Tensor, query_ids: torch.Tensor | None = None,
                query_mask: torch.Tensor | None = None) -> torch.Tensor:
        """visual_tokens ``(B, Nv, Dv)``; query_ids/query_mask ``(B, Lq)`` or None; returns ``(B, S)``."""
        batch, num_visual = visual_tokens.shape[:2]
        hidden = self.visual_proj(visual_tokens)  # (B, Nv, H)
        valid = torch.ones(batch, num_visual, dtype=torch.long, device=hidden.device)
        if query_ids is not None and query_ids.shape[1] > 0:
            if query_ids.shape[1] > self.cfg.max_query_tokens:
                raise ValueError(f"query has {query_ids.shape[1]} tokens > max_query_tokens={self.cfg.max_query_tokens}")
            if query_mask is None:
                query_mask = torch.ones_like(query_ids)
            hidden = torch.cat([hidden, self.embed_tokens(query_ids)], dim=1)  # (B, Nv+Lq, H)
            valid = torch.cat([valid, query_mask.to(valid.dtype)], dim=1)
        position_ids = torch.arange(hidden.shape[1], device=hidden.device)[None].expand(batch, -1)
        position_embeddings = self.rotary_emb(hidden, position_ids)
        mask = self.attention_mask(valid, hidden.dtype)
        for layer in self.layers:
            hidden = layer(hidden, attention_mask=mask, position_ids=position_ids,
                           position_embeddings=position_embeddings, is_causal=False)
        hidden = self.norm(hidden)  # (B, L, H)
        weights = valid.to(hidden.dtype).unsqueeze(-1)  # (B, L, 1)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)  # mean over non-pad
        return self.out_proj(pooled)  # (B, S)

    def load_lm(self, checkpoint_path: Path) -> LoadReport:
        """Import the selected layers, final norm and token embeddings from an HF safetensors file.

        Key map: ``layers.{j}.*`` <- ``model.layers.{layer_indices[j]}.*``; the visual and output
        projections are new and must be the only parameters not loaded.
        """
        layer_state = {k for k in self.state_dict() if k.startswith("layers.0.")}
        key_map = {"embed_tokens.weight": "model.embed_tokens.weight", "norm.weight": "model.norm.weight"}
        for j, i in enumerate(self.layer_indices):
            for key in layer_state:
                suffix = key[len("layers.0."):]
                key_map[f"layers.{j}.{suffix}"] = f"model.layers.{i}.{suffix}"
        checkpoint = read_safetensors(checkpoint_path, sorted(set(key_map.values())))
        new = {k for k in self.state_dict() if k.startswith(("visual_proj.", "out_proj.", "rotary_emb."))}
        return load_mapped(self, checkpoint, key_map, expect_not_loaded=new)
