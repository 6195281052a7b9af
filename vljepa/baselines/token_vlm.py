"""The controlled token-generating VLM baseline (paper Sec. 4.2: "the only difference is the prediction task").

Same inputs and the same trainable layers as the VL-JEPA predictor: the frozen x-encoder's
cached visual tokens go through the same linear projection to the LM width, the (optional)
query is embedded with the LM's frozen token table, and the same last LM layers
(``selected_layers``) run, but causally, followed by the LM's final RMSNorm and an output head
tied to the (frozen) token embeddings. It is trained with next-token cross-entropy on the target
text instead of InfoNCE in embedding space; it captions by greedy decoding with a KV cache and
classifies by the lowest mean per-token NLL of each candidate text (as the paper's VLM does).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from itertools import takewhile
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from vljepa.config import PredictorConfig, VLJepaConfig, config_from_dict, replace
from vljepa.decoder import ByteCodec, Codec, HFCodec, build_vocab
from vljepa.files import atomic_path, atomic_write_text
from vljepa.predictor import llama_config, selected_layers
from vljepa.weights import LoadReport, load_mapped, read_safetensors


@dataclass(frozen=True, kw_only=True)
class TokenVLMConfig:
    """What the baseline adds to a ``VLJepaConfig``.

    vocab: "cut" restricts the LM vocabulary (input rows and the tied output head) to the token
        ids of the training texts plus end-of-text, exactly the y-decoder's mechanism
        (``vljepa.decoder.build_vocab``). It is a CPU trade (a softmax over a few hundred ids, not
        49,152) that applies equally to VL-JEPA's y-decoder; the model cannot say a word it never
        saw in training. "full" keeps the whole LM vocabulary.
    num_layers: None = the predictor's layers (``predictor.num_layers`` ending
        ``predictor.layer_offset_from_top`` below the top), i.e. the SAME layers; an int takes that
        many last layers of the LM (the paper's VLM used the whole Llama-3.2-1B).
    max_target_tokens: target tokens per text, end-of-text included (also the generation limit).
    """

    vocab: Literal["cut", "full"] = "cut"
    num_layers: int | None = None
    max_target_tokens: int = 48

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "TokenVLMConfig":
        return config_from_dict(cls, json.loads(text))  # unknown keys are an error


@dataclass(frozen=True)
class GenerateResult:
    texts: list[str]
    forward_passes: int  # decoder passes run for the batch: 1 for the prefix + 1 per token fed back
    passes_per_text: list[int]  # the passes each text needed on its own (prefix + its tokens fed back)


def layer_config(cfg: VLJepaConfig, vlm_cfg: TokenVLMConfig) -> PredictorConfig:
    """The predictor config whose ``selected_layers`` are the baseline's layers."""
    if vlm_cfg.num_layers is None:
        return cfg.predictor
    return replace(cfg.predictor, num_layers=vlm_cfg.num_layers, layer_offset_from_top=0)


def build_codec(cfg: VLJepaConfig) -> Codec:
    """The LM's tokenizer as a codec: bytes for the random ``tiny`` LM, else the LM's own tokenizer."""
    if cfg.predictor.lm.source == "random":
        return ByteCodec()
    from vljepa.model import lm_dir

    return HFCodec(lm_dir(cfg))


def _additive_mask(key_valid: torch.Tensor, query_at: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``(B, 1, Q, K)``: 0 where query ``q`` (at key index ``query_at[q]``) may attend key ``k``.

    Causal (``k <= query_at[q]``) and padded keys masked; a float mask works for SDPA and eager.
    """
    keys = torch.arange(key_valid.shape[1], device=key_valid.device)
    allowed = key_valid[:, None, None, :].bool() & (keys[None, None, None, :] <= query_at[None, None, :, None])
    mask = torch.zeros(allowed.shape, dtype=dtype, device=key_valid.device)
    return mask.masked_fill(~allowed, torch.finfo(dtype).min)


class TokenVLM(nn.Module):
    """``(visual tokens, query) -> text`` by next-token prediction over the predictor's LM layers.

    ``vocab`` lists the LM ids of the embedding rows (local id ``i`` is LM id ``vocab[i]``).
    """

    def __init__(self, cfg: VLJepaConfig, vlm_cfg: TokenVLMConfig, vocab: list[int], codec: Codec) -> None:
        super().__init__()
        from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRMSNorm, LlamaRotaryEmbedding

        from vljepa.model import visual_dim

        lm = cfg.predictor.lm
        bad = [t for t in vocab if not 0 <= t < lm.vocab_size]
        if bad or codec.eos_id not in vocab:
            raise ValueError(f"vocabulary must lie in [0, {lm.vocab_size}) and hold end-of-text {codec.eos_id}; "
                             f"out of range: {bad[:5]}")
        self.cfg, self.vlm_cfg, self.codec = cfg, vlm_cfg, codec
        self.vocab = list(vocab)
        self.local = {tok: i for i, tok in enumerate(self.vocab)}
        self.eos_local = self.local[codec.eos_id]
        self.layer_indices = selected_layers(layer_config(cfg, vlm_cfg))
        config = llama_config(lm)
        self.visual_proj = nn.Linear(visual_dim(cfg), lm.hidden_size)  # as the predictor's
        self.embed_tokens = nn.Embedding(len(self.vocab), lm.hidden_size)  # input rows = tied output head
        self.layers = nn.ModuleList(LlamaDecoderLayer(config, layer_idx=j) for j in range(len(self.layer_indices)))
        self.norm = LlamaRMSNorm(lm.hidden_size, eps=lm.rms_norm_eps)
        self.rotary_emb = LlamaRotaryEmbedding(config)
        for module in self.modules():  # the predictor's init
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=config.initializer_range)
                if isinstance(module, nn.Linear) and module.bias is not None:
                    nn.init.zeros_(module.bias)
        if cfg.predictor.freeze_token_embeddings:
            self.embed_tokens.weight.requires_grad_(False)

    @property
    def device(self) -> torch.device:
        return self.visual_proj.weight.device

    def check_partition(self) -> None:
        """Assert the frozen set is exactly what the config says (the token table, tied head)."""
        frozen = {n for n, p in self.named_parameters() if not p.requires_grad}
        expected = {"embed_tokens.weight"} if self.cfg.predictor.freeze_token_embeddings else set()
        if frozen != expected:
            raise AssertionError(f"frozen parameters {sorted(frozen)} differ from the config's {sorted(expected)}")

    def load_lm(self, checkpoint_path: Path) -> LoadReport:
        """Import the selected layers, final norm and the vocabulary's embedding rows (audited, as
        ``Predictor.load_lm``): ``layers.{j}.*`` <- ``model.layers.{layer_indices[j]}.*``."""
        suffixes = {k[len("layers.0."):] for k in self.state_dict() if k.startswith("layers.0.")}
        key_map = {"norm.weight": "model.norm.weight", "embed_tokens.weight": "vocab_rows"}
        for j, i in enumerate(self.layer_indices):
            key_map.update({f"layers.{j}.{s}": f"model.layers.{i}.{s}" for s in suffixes})
        sources = sorted(set(key_map.values()) - {"vocab_rows"})
        checkpoint = read_safetensors(checkpoint_path, sources + ["model.embed_tokens.weight"])
        checkpoint["vocab_rows"] = checkpoint.pop("model.embed_tokens.weight")[torch.tensor(self.vocab)]  # (V, H)
        new = {k for k in self.state_dict() if k.startswith(("visual_proj.", "rotary_emb."))}
        return load_mapped(self, checkpoint, key_map, expect_not_loaded=new)

    # -- ids ---------------------------------------------------------------------------------------
    def to_local(self, text: str, max_tokens: int) -> list[int]:
        """Text -> local ids (at most ``max_tokens``, no end-of-text). Unknown tokens fail."""
        try:
            return [self.local[t] for t in self.codec.encode(text)[:max_tokens]]
        except KeyError as exc:
            raise KeyError(f"token {exc} of {text!r} is not in the token VLM's vocabulary") from None

    def to_text(self, local_ids: list[int]) -> str:
        """Local ids up to the first end-of-text -> text."""
        return self.codec.decode([self.vocab[i] for i in takewhile(lambda i: i != self.eos_local, local_ids)])

    def _target_ids(self, texts: list[str]) -> list[list[int]]:
        return [self.to_local(t, self.vlm_cfg.max_target_tokens - 1) + [self.eos_local] for t in texts]

    def _padded(self, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Ragged ids -> ``(B, L)`` ids (right-padded with end-of-text) and validity."""
        length = max((len(r) for r in rows), default=0)
        ids = torch.full((len(rows), length), self.eos_local, dtype=torch.long)
        valid = torch.zeros(len(rows), length, dtype=torch.bool)
        for row, tokens in enumerate(rows):
            ids[row, : len(tokens)], valid[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long), True
        return ids.to(self.device), valid.to(self.device)

    # -- forward -----------------------------------------------------------------------------------
    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden @ self.embed_tokens.weight.T  # tied output head, (..., V)

    def _run(self, hidden: torch.Tensor, position_ids: torch.Tensor, mask: torch.Tensor | None,
             cache=None) -> torch.Tensor:
        """The LM layers + final norm; ``mask`` None = plain causal attention (no padding inside)."""
        position_embeddings = self.rotary_emb(hidden, position_ids)
        for layer in self.layers:
            hidden = layer(hidden, attention_mask=mask, position_ids=position_ids, past_key_values=cache,
                           use_cache=cache is not None, position_embeddings=position_embeddings)
        return self.norm(hidden)  # (B, L, H)

    def _prefix(self, visual: torch.Tensor, queries: list[str] | None):
        """``[pad | visual | query]`` inputs ``(B, P, H)``, validity ``(B, P)``, positions ``(B, P)``.

        Prefixes are padded on their left, so every one ends with a real token at index ``P - 1``;
        positions skip the padding, so a padded row computes what it would alone.
        """
        visual = visual.to(self.device)
        hidden = self.visual_proj(visual)  # (B, N, H)
        valid = torch.ones(hidden.shape[:2], dtype=torch.bool, device=self.device)
        if queries is not None and any(queries):
            rows = [self.to_local(q, self.cfg.predictor.max_query_tokens) for q in queries]
            query_ids, query_valid = self._padded(rows)
            hidden = torch.cat([hidden, self.embed_tokens(query_ids).to(hidden.dtype)], dim=1)  # (B, N+Lq, H)
            valid = torch.cat([valid, query_valid], dim=1)
            order = torch.sort(valid.int(), dim=1, stable=True).indices  # padding first, real tokens in order
            hidden = hidden.gather(1, order[..., None].expand_as(hidden))
            valid = valid.gather(1, order)
        positions = (valid.long().cumsum(1) - 1).clamp_min(0)
        return hidden, valid, positions

    def _prefix_pass(self, hidden: torch.Tensor, valid: torch.Tensor, positions: torch.Tensor,
                     cache=None) -> torch.Tensor:
        """Run the prefix (from ``_prefix``), filling ``cache``; returns its last hidden state ``(B, H)``."""
        mask = None if bool(valid.all()) else _additive_mask(valid, torch.arange(valid.shape[1], device=self.device),
                                                             hidden.dtype)
        return self._run(hidden, positions, mask, cache)[:, -1]

    def target_hidden(self, visual: torch.Tensor, queries: list[str] | None,
                      texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher forcing: hidden states ``(B, M, H)`` whose position ``k`` predicts target token ``k``,
        and the targets ``(B, M)`` (end-of-text included, -100 where padded)."""
        prefix, valid, positions = self._prefix(visual, queries)
        targets, target_valid = self._padded(self._target_ids(texts))  # (B, M)
        length = prefix.shape[1]
        inputs = torch.cat([prefix, self.embed_tokens(targets[:, :-1]).to(prefix.dtype)], dim=1)  # (B, P+M-1, H)
        steps = torch.arange(targets.shape[1] - 1, device=self.device)
        positions = torch.cat([positions, positions[:, -1:] + 1 + steps], dim=1)
        mask = None  # right padding after the targets needs no mask under causal attention
        if not bool(valid.all()):
            key_valid = torch.cat([valid, torch.ones_like(targets[:, :-1], dtype=torch.bool)], dim=1)
            mask = _additive_mask(key_valid, torch.arange(inputs.shape[1], device=self.device), inputs.dtype)
        hidden = self._run(inputs, positions, mask)[:, length - 1 :]  # (B, M, H)
        return hidden, targets.masked_fill(~target_valid, -100)

    def target_logits(self, visual: torch.Tensor, texts: list[str], queries: list[str] | None = None) -> torch.Tensor:
        """Logits ``(B, M, V)``: position ``k`` predicts target token ``k`` of each text."""
        return self._logits(self.target_hidden(visual, queries, texts)[0]).float()

    def loss(self, visual: torch.Tensor, queries: list[str] | None, texts: list[str]) -> torch.Tensor:
        """Next-token cross-entropy on the target tokens (+ end-of-text) only; visual ``(B, N, Dv)``."""
        hidden, targets = self.target_hidden(visual, queries, texts)
        keep = targets != -100  # (B, M)
        logits = self._logits(hidden[keep]).float()  # (T, V): only where a target is
        return F.cross_entropy(logits, targets[keep])

    @torch.no_grad()
    def generate(self, visual: torch.Tensor, queries: list[str] | None = None, *, max_new_tokens: int | None = None,
                 use_cache: bool = True) -> GenerateResult:
        """Greedy decoding for visual tokens ``(B, N, Dv)``; batched, stops at end-of-text.

        use_cache: False recomputes the whole sequence at every step (a reference for the cache).
        """
        from transformers import DynamicCache

        max_new = max_new_tokens or self.vlm_cfg.max_target_tokens
        cache = DynamicCache() if use_cache else None
        prefix, valid, positions = self._prefix(visual, queries)
        last = self._prefix_pass(prefix, valid, positions, cache)  # (B, H)
        batch, length = valid.shape
        tokens = torch.zeros(batch, 0, dtype=torch.long, device=self.device)
        done = torch.zeros(batch, dtype=torch.bool, device=self.device)
        passes = 1
        for step in range(max_new):
            token = self._logits(last).argmax(-1).masked_fill(done, self.eos_local)  # (B,)
            tokens = torch.cat([tokens, token[:, None]], dim=1)
            done |= token == self.eos_local
            if bool(done.all()) or step == max_new - 1:
                break
            passes += 1
            key_valid = torch.cat([valid, torch.ones_like(tokens, dtype=torch.bool)], dim=1)  # (B, P+t)
            if use_cache:
                hidden, at = self.embed_tokens(token[:, None]), positions[:, -1:] + 1 + step
                query_at = torch.tensor([length + step], device=self.device)
            else:
                hidden = torch.cat([prefix, self.embed_tokens(tokens).to(prefix.dtype)], dim=1)
                at = torch.cat([positions, positions[:, -1:] + 1 + torch.arange(step + 1, device=self.device)], dim=1)
                query_at = torch.arange(key_valid.shape[1], device=self.device)
            mask = None if bool(valid.all()) else _additive_mask(key_valid, query_at, hidden.dtype)
            last = self._run(hidden, at, mask, cache)[:, -1]
        rows = tokens.tolist()
        per_text = [min(1 + (r.index(self.eos_local) if self.eos_local in r else len(r)), max_new) for r in rows]
        return GenerateResult(texts=[self.to_text(r) for r in rows], forward_passes=passes, passes_per_text=per_text)

    @torch.no_grad()
    def candidate_nll(self, visual: torch.Tensor, candidates: list[str], queries: list[str] | None = None, *,
                      include_eos: bool = False, max_rows: int = 1024, max_elements: int = 2**25) -> torch.Tensor:
        """Mean per-token NLL ``(B, C)`` of each candidate text after each sample's prefix.

        The prefix runs once per sample; its KV cache is repeated for the C candidates, which run
        in one pass (chunks of at most ``max_rows`` (sample, candidate) rows and ``max_elements``
        logits). A candidate with a token outside the vocabulary gets ``inf`` (the model cannot
        produce it). include_eos: also score the end-of-text after the candidate.
        """
        from transformers import DynamicCache

        local: list[list[int] | None] = []
        for text in candidates:
            try:
                local.append(self.to_local(text, self.vlm_cfg.max_target_tokens) + [self.eos_local] * include_eos)
            except KeyError:
                local.append(None)
        if any(c is not None and not c for c in local):
            raise ValueError("an empty candidate has no tokens to score")
        known = [i for i, c in enumerate(local) if c is not None]
        out = torch.full((len(visual), len(candidates)), float("inf"))
        if not known:
            return out
        ids, cand_valid = self._padded([local[i] for i in known])  # (C, M)
        num, width = ids.shape
        lengths = cand_valid.sum(1).float()
        chunk = max(1, min(max_rows // num, max_elements // (num * width * len(self.vocab))))
        for start in range(0, len(visual), chunk):
            cache = DynamicCache()
            part = queries[start : start + chunk] if queries is not None else None
            prefix, valid, positions = self._prefix(visual[start : start + chunk], part)
            last = self._prefix_pass(prefix, valid, positions, cache)  # (b, H)
            b, length = valid.shape
            total = self._logits(last).float().log_softmax(-1)[:, ids[:, 0]]  # (b, C): log p(first token)
            if width > 1:
                cache.batch_repeat_interleave(num)  # row r = sample r // C, candidate r % C
                inputs = self.embed_tokens(ids[:, :-1]).repeat(b, 1, 1)  # (b*C, M-1, H)
                at = positions[:, -1:].repeat_interleave(num, 0) + 1 + torch.arange(width - 1, device=self.device)
                key_valid = torch.cat([valid.repeat_interleave(num, 0), cand_valid[:, :-1].repeat(b, 1)], dim=1)
                mask = _additive_mask(key_valid, length + torch.arange(width - 1, device=self.device), inputs.dtype)
                logprobs = self._logits(self._run(inputs, at, mask, cache)).float().log_softmax(-1)  # (b*C, M-1, V)
                picked = logprobs.gather(-1, ids[:, 1:].repeat(b, 1)[..., None]).squeeze(-1)  # (b*C, M-1)
                total = total + (picked * cand_valid[:, 1:].repeat(b, 1)).sum(1).view(b, num)
            out[start : start + b, known] = (-total / lengths).cpu()
        return out

    # -- persistence -------------------------------------------------------------------------------
    def save(self, out_dir: str | Path) -> Path:
        """``config.json`` (VLJepaConfig), ``token_vlm_config.json``, ``vocab.json`` and, last,
        ``model.safetensors``; each file written to a temporary name and renamed."""
        from safetensors.torch import save_file

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        vocab = self.vocab if self.vlm_cfg.vocab == "cut" else None  # "full" is range(vocab_size)
        atomic_write_text(out_dir / "config.json", self.cfg.to_json())
        atomic_write_text(out_dir / "token_vlm_config.json", self.vlm_cfg.to_json())
        atomic_write_text(out_dir / "vocab.json", json.dumps(vocab))
        with atomic_path(out_dir / "model.safetensors") as tmp:
            save_file(state, str(tmp))
        return out_dir


def _vocabulary(cfg: VLJepaConfig, vlm_cfg: TokenVLMConfig, texts: list[str], codec: Codec) -> list[int]:
    if vlm_cfg.vocab == "cut":
        return build_vocab(texts, codec)
    return list(range(cfg.predictor.lm.vocab_size))


def build_token_vlm(cfg: VLJepaConfig, texts: list[str], vlm_cfg: TokenVLMConfig, *,
                    load_weights: bool = True) -> TokenVLM:
    """Build the baseline over ``cfg``'s LM layers; import them pretrained as the predictor would.

    texts: every text the model must read or write (training targets and queries): they define
        the "cut" vocabulary.
    """
    codec = build_codec(cfg)
    model = TokenVLM(cfg, vlm_cfg, _vocabulary(cfg, vlm_cfg, texts, codec), codec)
    if load_weights and cfg.predictor.lm.source != "random" and cfg.predictor.pretrained:
        from vljepa.model import lm_dir

        model.load_lm(lm_dir(cfg) / "model.safetensors")
    model.check_partition()
    return model


def load_token_vlm(model_dir: str | Path) -> TokenVLM:
    """Rebuild a saved baseline from its directory (strict safetensors load, eval mode)."""
    from safetensors.torch import load_file

    model_dir = Path(model_dir)
    cfg = VLJepaConfig.from_json((model_dir / "config.json").read_text())
    vlm_cfg = TokenVLMConfig.from_json((model_dir / "token_vlm_config.json").read_text())
    vocab = json.loads((model_dir / "vocab.json").read_text())
    codec = build_codec(cfg)
    model = TokenVLM(cfg, vlm_cfg, vocab if vocab is not None else list(range(cfg.predictor.lm.vocab_size)), codec)
    model.load_state_dict(load_file(str(model_dir / "model.safetensors")), strict=True)
    model.check_partition()
    return model.eval()
