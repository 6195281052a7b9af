"""VL-JEPA: predictor + y-encoder (trainable) around a frozen, cached x-encoder.

``build_model`` assembles the parts named by a ``VLJepaConfig``, imports pretrained weights
under an audit, and checks that the trainable/frozen partition is what the config says.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from vljepa.config import VLJepaConfig
from vljepa.predictor import Predictor
from vljepa.text import ByteTokenizer, HFTokenizer, Tokenizer
from vljepa.y_encoder import YEncoder, prompt_prefix

# Visual token width of each x-encoder, so the model can be built without loading the encoder.
X_ENCODER_WIDTH = {"efficientnet-lite0": 1280}


def visual_dim(cfg: VLJepaConfig) -> int:
    return X_ENCODER_WIDTH.get(cfg.x_encoder.name, cfg.x_encoder.hidden_size)


class VLJepa(nn.Module):
    """The trainable half of VL-JEPA. The x-encoder is not a submodule: its tokens are cached."""

    def __init__(self, cfg: VLJepaConfig, *, meta: bool = False) -> None:
        super().__init__()
        self.cfg = cfg
        if meta:
            with torch.device("meta"):
                self.predictor = Predictor(cfg.predictor, visual_dim=visual_dim(cfg), shared_dim=cfg.shared_dim)
        else:
            self.predictor = Predictor(cfg.predictor, visual_dim=visual_dim(cfg), shared_dim=cfg.shared_dim)
        self.y_encoder = YEncoder(cfg.y_encoder, shared_dim=cfg.shared_dim, meta=meta)
        self.query_tokenizer: Tokenizer | None = None
        self.target_tokenizer: Tokenizer | None = None
        self.target_prompt = ""  # the y-encoder's task prompt (y_encoder.prompt_name), prepended to texts

    def predict(self, visual_tokens: torch.Tensor, queries: list[str] | None = None) -> torch.Tensor:
        """visual_tokens ``(B, N, Dv)`` (+ optional query strings) -> predicted embeddings ``(B, S)``."""
        query_ids = query_mask = None
        if queries is not None and any(queries):
            assert self.query_tokenizer is not None, "model built without tokenizers"
            query_ids, query_mask = self.query_tokenizer(queries, self.cfg.predictor.max_query_tokens)
            # An empty query is no query: a tokenizer that adds BOS (Llama 3's) would otherwise give
            # the caption samples of a mixed batch a lone BOS that an all-caption batch never has.
            empty = torch.tensor([not q for q in queries], dtype=torch.bool)
            query_mask = query_mask.masked_fill(empty[:, None], 0)
            query_ids, query_mask = query_ids.to(visual_tokens.device), query_mask.to(visual_tokens.device)
        return self.predictor(visual_tokens, query_ids, query_mask)

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """Target texts -> target embeddings ``(B, S)`` through the y-encoder."""
        assert self.target_tokenizer is not None, "model built without tokenizers"
        if self.target_prompt:
            texts = [self.target_prompt + t for t in texts]
        ids, mask = self.target_tokenizer(texts, self.cfg.y_encoder.max_length)
        device = next(self.y_encoder.parameters()).device
        return self.y_encoder(ids.to(device), mask.to(device))


def build_model(cfg: VLJepaConfig, *, meta: bool = False, load_weights: bool = True) -> VLJepa:
    """Build VL-JEPA from a config.

    meta: build on the meta device (no memory, no weights) — for parameter counts of the paper
        preset on a laptop.
    load_weights: import the pretrained LM layers / text encoder named by the config.
    """
    model = VLJepa(cfg, meta=meta)
    if meta:
        return model
    lm = cfg.predictor.lm
    if lm.source == "random" or not cfg.predictor.pretrained:
        model.query_tokenizer = ByteTokenizer(lm.vocab_size) if lm.source == "random" else _lm_tokenizer(cfg)
    else:
        lm_path = lm_dir(cfg)
        check_lm_snapshot(cfg, lm_path)
        if load_weights:
            model.predictor.load_lm(lm_path / "model.safetensors")
        model.query_tokenizer = HFTokenizer(lm_path, pad_id=lm.pad_token_id)
    model.target_tokenizer = target_tokenizer(cfg)
    model.target_prompt = prompt_prefix(cfg.y_encoder)
    check_partition(model)
    return model


def lm_dir(cfg: VLJepaConfig) -> Path:
    """The local HF directory of the predictor's LM (``predictor.lm``): SmolLM2 or ``lm.path``."""
    from vljepa.weights import smollm2_dir

    lm = cfg.predictor.lm
    if lm.source == "smollm2-135m":
        return smollm2_dir()
    if lm.source == "hf":
        if not lm.path:
            raise ValueError("predictor.lm.path must point at a local HF model directory (e.g. Llama-3.2-1B)")
        return Path(lm.path)
    raise ValueError(f"unknown LM source {lm.source!r}")


LM_SHAPE_FIELDS = ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads",
                   "num_hidden_layers", "vocab_size", "rope_theta", "head_dim")


def snapshot_mismatch_error(section: str, current: object, snapshot: str, wrong: dict[str, object]) -> ValueError:
    """The error for config fields (``{field: the snapshot's value}``) that disagree with a snapshot."""
    return ValueError(f"{section} does not match {snapshot}: "
                      + ", ".join(f"{f} {getattr(current, f)} in the config, {v} in config.json" for f, v in wrong.items())
                      + ". Use a config that matches it (" + " ".join(f"--set {section}.{f}={v}" for f, v in wrong.items())
                      + ")")


def check_lm_snapshot(cfg: VLJepaConfig, lm_path: Path) -> None:
    """The predictor is built from ``predictor.lm`` and then filled from the snapshot: their shapes
    must agree. On a mismatch, say which fields differ and the ``--set`` that fixes each."""
    path = lm_path / "config.json"
    if not path.is_file():
        return  # converted SmolLM2 dirs always have it; a missing one fails at the weights below
    snapshot = json.loads(path.read_text())
    if snapshot.get("rope_theta") is None:  # transformers 5 writes it inside rope_parameters
        snapshot["rope_theta"] = (snapshot.get("rope_parameters") or {}).get("rope_theta")
    lm = cfg.predictor.lm
    wrong = {f: snapshot[f] for f in LM_SHAPE_FIELDS
             if snapshot.get(f) is not None and snapshot[f] != getattr(lm, f)}
    if wrong:
        raise snapshot_mismatch_error("predictor.lm", lm, f"the LM snapshot at {lm_path}", wrong)


def check_snapshots(cfg: VLJepaConfig) -> None:
    """Before any work: the configured snapshots (when read) match the config they are built from."""
    if cfg.x_encoder.name == "vjepa2" and cfg.x_encoder.weights:
        from vljepa.encoders.vjepa2 import snapshot_mismatch

        wrong = snapshot_mismatch(cfg.x_encoder)
        if wrong:
            raise snapshot_mismatch_error("x_encoder", cfg.x_encoder, f"the V-JEPA 2 snapshot at {cfg.x_encoder.weights}",
                                          wrong)
    lm = cfg.predictor.lm
    if lm.source == "hf" and cfg.predictor.pretrained:
        check_lm_snapshot(cfg, lm_dir(cfg))


def _lm_tokenizer(cfg: VLJepaConfig) -> Tokenizer:
    return HFTokenizer(lm_dir(cfg), pad_id=cfg.predictor.lm.pad_token_id)


def target_tokenizer(cfg: VLJepaConfig) -> Tokenizer:
    """The y-encoder's tokenizer (built without the model)."""
    from vljepa.weights import minilm_dir

    y = cfg.y_encoder
    if y.name == "tiny":
        return ByteTokenizer(y.vocab_size)
    if y.name == "minilm-l6":
        return HFTokenizer(y.path or minilm_dir())
    if not y.path:
        raise ValueError(f"y_encoder.path is needed for the tokenizer of {y.name!r}")
    return HFTokenizer(y.path)


def expected_frozen(model: VLJepa) -> set[str]:
    """Parameter names that the config says must not train."""
    frozen = set()
    if model.cfg.predictor.freeze_token_embeddings:
        frozen.add("predictor.embed_tokens.weight")
    if model.cfg.y_encoder.lr_multiplier == 0.0:
        frozen |= {f"y_encoder.backbone.{n}" for n, _ in model.y_encoder.backbone.named_parameters()}
        if model.y_encoder.st_head is not None:
            frozen |= {f"y_encoder.st_head.{n}" for n, _ in model.y_encoder.st_head.named_parameters()}
    return frozen


def check_partition(model: VLJepa) -> None:
    """Assert the trainable/frozen split is exactly what the config says."""
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    expected = expected_frozen(model)
    if frozen != expected:
        raise AssertionError(
            f"trainable/frozen partition differs from config: unexpectedly frozen {sorted(frozen - expected)[:5]}, "
            f"unexpectedly trainable {sorted(expected - frozen)[:5]}"
        )


@dataclass(frozen=True)
class ParamCount:
    total: int
    trainable: int


def count(module: nn.Module) -> ParamCount:
    params = list(module.parameters())
    return ParamCount(total=sum(p.numel() for p in params),
                      trainable=sum(p.numel() for p in params if p.requires_grad))


def param_groups(model: VLJepa, *, lr: float, weight_decay: float) -> list[dict]:
    """AdamW groups: predictor at ``lr``, y-encoder backbone at ``lr × multiplier``.

    The y-encoder's projection head is new and trains at the full lr. Biases, norms and
    embedding tables get no weight decay.
    """
    mult = model.cfg.y_encoder.lr_multiplier
    groups: dict[tuple[str, bool], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        # The pretrained text encoder (and its sentence-transformers Dense layers) at lr × multiplier.
        role = "y_encoder" if name.startswith(("y_encoder.backbone.", "y_encoder.st_head.")) else "predictor"
        no_decay = param.ndim < 2 or "norm" in name.lower() or "embed" in name
        groups.setdefault((role, no_decay), []).append(param)
    out = []
    for (role, no_decay), params in sorted(groups.items()):
        out.append({
            "name": f"{role}{'_no_decay' if no_decay else ''}",
            "params": params,
            "lr": lr * (mult if role == "y_encoder" else 1.0),
            "lr_scale": mult if role == "y_encoder" else 1.0,
            "weight_decay": 0.0 if no_decay else weight_decay,
        })
    return out
