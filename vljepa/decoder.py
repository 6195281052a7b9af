"""The Y-decoder: shared-space embedding -> text (paper Sec. 3, "a light decoder").

The embedding is linearly projected to ``prefix_len`` vectors at the width of a small causal LM,
which continues them into text (greedy or beam search). It is trained text-only on y-encoder
embeddings of captions and answers, with the y-encoder frozen (``vljepa.decoder_train``).

What the paper gives (final version, arXiv 2512.10942, as explained in ``shared/paper/001``
Sec. 2.1.4 and the table of Sec. 3.1): the decoder's role, ``Ŝ_Y -> Ŷ`` from the shared space
(1,536-d for the paper's model); that it is "lightweight", ~100M parameters; that it takes no part
in the main training loop and runs only at inference, when text is needed. It gives neither its
architecture nor how it was trained (the submission, ``000`` Sec. 4.1, used the decoder of the
frozen SONAR text autoencoder, i.e. one trained on text alone).

Our choices (every preset): the bottom ``num_layers`` of SmolLM2-135M (30 layers, width 576), its
final norm and its tied token embeddings, fed ``prefix_len`` vectors projected from the
embedding (ClipCap-style); text-only training on the frozen y-encoder's embeddings of the
training texts with CapDec noise (``noise_norm``), so the decoder tolerates predicted embeddings.

Presets:
- ``paper``: 18 layers, an 8-vector prefix from the 1,536-d space and SmolLM2's full 49,152-token
  vocabulary (``vocab="full"``): 99.1M parameters (18 × 3.54M layers + 28.3M token table + 7.1M
  prefix projection), near the paper's ~100M; trains on a GPU (``device="cuda"``).
- ``small`` (the embedded default): 4 layers, a 4-vector prefix, the vocabulary cut to the
  training texts. Why so few layers: the decoder only has to verbalise a compositional
  embedding of a small domain, and on 2 CPU cores 4 layers train ~6× faster than all 30 (the
  whole decoder trains in ~2 min; see README).
- ``tiny``: a random 2-layer Llama over UTF-8 bytes (unit tests).

Output vocabulary. ``vocab="cut"``: the token ids that occur in the training texts (plus
end-of-text), a few hundred of SmolLM2's 49,152. The input and output embedding rows are cut to
that set, which makes the softmax ~100× cheaper on CPU and the saved decoder small; the decoder
can only emit words it was trained on, which is what a text-only decoder of a closed domain can
do anyway. ``vocab="full"``: every id of the LM; local id == tokenizer id, so no table maps
between them, and any text can be read and written. Its 49k-way softmax is computed only at the
target positions of a batch in training, and only at the last position per step in generation.

The config and the presets live in ``vljepa.decoder_config`` (re-exported here).
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from vljepa.decoder_config import YDecoderConfig, decoder_preset  # noqa: F401  (re-exported)
from vljepa.files import atomic_dir
from vljepa.weights import load_mapped, read_safetensors


# ---------------------------------------------------------------------------------------------
# Text codecs: text <-> ids of the LM's tokenizer


class Codec(Protocol):
    eos_id: int  # in the LM's id space

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


class ByteCodec:
    """UTF-8 bytes as ids 1..256, 0 = end of text (for the tiny random LM)."""

    eos_id = 0
    vocab_size = 257

    def encode(self, text: str) -> list[int]:
        return [b + 1 for b in text.encode()]

    def decode(self, ids: list[int]) -> str:
        return bytes(i - 1 for i in ids if 0 < i <= 256).decode(errors="replace")


class HFCodec:
    """A local Hugging Face tokenizer; no special tokens are added, EOS ends a text."""

    def __init__(self, path: str | Path) -> None:
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        if self.tokenizer.eos_token_id is None:
            raise ValueError(f"tokenizer at {path} has no end-of-text token")
        self.eos_id = int(self.tokenizer.eos_token_id)

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False).input_ids)

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True).strip()


def _lm_dir(cfg: YDecoderConfig) -> Path:
    if cfg.lm_path:
        return Path(cfg.lm_path)
    from vljepa.weights import smollm2_dir

    return smollm2_dir()


def build_codec(cfg: YDecoderConfig) -> Codec:
    return ByteCodec() if cfg.lm == "tiny" else HFCodec(_lm_dir(cfg))


def _lm_vocab_size(cfg: YDecoderConfig) -> int:
    """Rows of the LM's token table: 257 bytes for the tiny LM, else the LM's ``config.json``."""
    if cfg.lm == "tiny":
        return ByteCodec.vocab_size
    return int(json.loads((_lm_dir(cfg) / "config.json").read_text())["vocab_size"])


def decoder_vocab(cfg: YDecoderConfig, texts: list[str], codec: Codec) -> list[int]:
    """The LM ids the decoder knows: those of ``texts`` (``vocab="cut"``) or all of them (``"full"``)."""
    if cfg.vocab == "cut":
        return build_vocab(texts, codec)
    return list(range(_lm_vocab_size(cfg)))


def _llama_config(cfg: YDecoderConfig, vocab_size: int):
    from transformers import LlamaConfig

    if cfg.lm == "tiny":
        config = LlamaConfig(hidden_size=cfg.tiny_hidden, intermediate_size=2 * cfg.tiny_hidden,
                             num_attention_heads=cfg.tiny_heads, num_key_value_heads=cfg.tiny_heads,
                             num_hidden_layers=cfg.num_layers, vocab_size=vocab_size,
                             max_position_embeddings=256, tie_word_embeddings=True)
    else:
        full = json.loads((_lm_dir(cfg) / "config.json").read_text())
        if cfg.num_layers > full["num_hidden_layers"]:
            raise ValueError(f"y-decoder wants {cfg.num_layers} layers; the LM has {full['num_hidden_layers']}")
        keep = {k: full[k] for k in ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads",
                                     "rms_norm_eps", "max_position_embeddings", "hidden_act") if k in full}
        rope = full.get("rope_parameters") or {"rope_type": "default", "rope_theta": full.get("rope_theta", 10000.0)}
        config = LlamaConfig(**keep, num_hidden_layers=cfg.num_layers, vocab_size=vocab_size,
                             rope_parameters=rope, tie_word_embeddings=True, attention_bias=False, mlp_bias=False)
    config._attn_implementation = "sdpa"
    return config


# ---------------------------------------------------------------------------------------------
# The model


class YDecoder(nn.Module):
    """``embedding (B, S) -> text``: prefix projection + a causal Llama over its vocabulary.

    ``vocab`` lists the LM-tokenizer ids the decoder knows (``decoder_vocab``); local id ``i`` is
    ``vocab[i]``. ``cfg.vocab="cut"``: local id 0 is end-of-text. ``"full"``: ``vocab`` is
    ``range(V)`` and local ids are tokenizer ids (end-of-text is the codec's own id).
    meta: build on the meta device (no memory, no weights), e.g. to count parameters.
    """

    def __init__(self, cfg: YDecoderConfig, vocab: list[int], codec: Codec, *, meta: bool = False) -> None:
        super().__init__()
        from transformers import LlamaModel

        if cfg.vocab == "full":
            if list(vocab) != list(range(len(vocab))) or not 0 <= codec.eos_id < len(vocab):
                raise ValueError("a full-vocabulary y-decoder needs vocab == range(V) holding the end-of-text id; "
                                 "build it with decoder_vocab(cfg, texts, codec)")
            self.local = None  # local id == tokenizer id
            self.eos_local = codec.eos_id
        else:
            if not vocab or vocab[0] != codec.eos_id:
                raise ValueError("vocab[0] must be the codec's end-of-text id")
            self.local = {tok: i for i, tok in enumerate(vocab)}
            self.eos_local = 0
        self.cfg = cfg
        self.codec = codec
        self.vocab = list(vocab)
        with torch.device("meta") if meta else contextlib.nullcontext():
            self.lm = LlamaModel(_llama_config(cfg, len(vocab)))
            hidden = self.lm.config.hidden_size
            self.prefix_proj = nn.Linear(cfg.shared_dim, cfg.prefix_len * hidden)  # (S) -> (P*H)
        nn.init.normal_(self.prefix_proj.weight, std=cfg.shared_dim**-0.5 * hidden**-0.5 * 4)
        nn.init.zeros_(self.prefix_proj.bias)

    @property
    def device(self) -> torch.device:
        return self.prefix_proj.weight.device

    # -- pretrained weights ----------------------------------------------------------------
    def load_lm(self) -> None:
        """Import the bottom layers, final norm and the vocabulary's embedding rows (audited)."""
        if self.cfg.lm == "tiny":
            raise ValueError("the tiny y-decoder LM is random")
        path = _lm_dir(self.cfg) / "model.safetensors"
        layer_keys = {k[len("layers.0."):] for k in self.lm.state_dict() if k.startswith("layers.0.")}
        key_map = {"norm.weight": "model.norm.weight"}
        for i in range(self.cfg.num_layers):
            key_map.update({f"layers.{i}.{s}": f"model.layers.{i}.{s}" for s in layer_keys})
        checkpoint = read_safetensors(path, sorted(set(key_map.values())) + ["model.embed_tokens.weight"])
        table = checkpoint.pop("model.embed_tokens.weight")  # (V_lm, H)
        # (V, H): only our vocabulary; the full table as it is (load_mapped checks its shape)
        checkpoint["vocab_rows"] = table if self.local is None else table[torch.tensor(self.vocab)]
        key_map["embed_tokens.weight"] = "vocab_rows"
        rotary = {k for k in self.lm.state_dict() if k.startswith("rotary_emb.")}
        load_mapped(self.lm, checkpoint, key_map, expect_not_loaded=rotary)

    # -- ids ---------------------------------------------------------------------------------
    def to_local(self, text: str) -> list[int]:
        """Text -> local ids, truncated to ``max_length - 1``, plus end-of-text. Unknown tokens fail."""
        ids = self.codec.encode(text)[: self.cfg.max_length - 1]
        if self.local is None:
            return ids + [self.eos_local]
        try:
            return [self.local[t] for t in ids] + [self.eos_local]
        except KeyError as exc:
            raise KeyError(f"token {exc} of {text!r} is not in the y-decoder's vocabulary") from None

    def to_text(self, local_ids: list[int]) -> str:
        """Local ids -> text, up to the first end-of-text."""
        out = []
        for i in local_ids:
            if i == self.eos_local:
                break
            out.append(self.vocab[i])
        return self.codec.decode(out)

    # -- forward -----------------------------------------------------------------------------
    def prefix(self, embedding: torch.Tensor) -> torch.Tensor:
        """embedding ``(B, S)`` (normalised here) -> prefix vectors ``(B, P, H)``."""
        embedding = F.normalize(embedding.float(), dim=-1)
        return self.prefix_proj(embedding).view(len(embedding), self.cfg.prefix_len, -1)

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden @ self.lm.embed_tokens.weight.T  # tied output head, (B, L, V)

    def loss(self, embedding: torch.Tensor, texts: list[str]) -> torch.Tensor:
        """Teacher-forced cross-entropy of ``texts`` given their embeddings ``(B, S)``."""
        targets = [self.to_local(t) for t in texts]
        length = max(len(t) for t in targets)
        ids = torch.zeros(len(texts), length, dtype=torch.long, device=self.device)
        labels = torch.full((len(texts), length), -100, dtype=torch.long, device=self.device)
        mask = torch.zeros(len(texts), self.cfg.prefix_len + length, dtype=torch.long, device=self.device)
        for row, target in enumerate(targets):
            ids[row, : len(target)] = torch.tensor(target)
            labels[row, : len(target)] = torch.tensor(target)
            mask[row, : self.cfg.prefix_len + len(target)] = 1
        # Input at position P+j is token j-1 (the prefix's last vector predicts token 0).
        inputs = torch.cat([self.prefix(embedding), self.lm.embed_tokens(ids[:, :-1])], dim=1)  # (B, P+L-1, H)
        hidden = self.lm(inputs_embeds=inputs, attention_mask=mask[:, :-1]).last_hidden_state
        hidden = hidden[:, self.cfg.prefix_len - 1 :]  # (B, L, H)
        if self.local is None:
            # A 49k-way softmax: logits only at the target positions, not at the padding after
            # shorter texts; the mean over the targets is the same loss as below.
            target = labels != -100  # (B, L)
            return F.cross_entropy(self._logits(hidden[target]), labels[target])  # logits (N, V)
        logits = self._logits(hidden)  # (B, L, V)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)

    @torch.no_grad()
    def generate(self, embedding: torch.Tensor, *, num_beams: int = 1, max_new_tokens: int | None = None,
                 length_penalty: float = 1.0) -> list[str]:
        """Decode embeddings ``(B, S)`` to texts: greedy (``num_beams=1``) or beam search."""
        from transformers import DynamicCache

        max_new = max_new_tokens or self.cfg.max_length
        batch, beams = len(embedding), num_beams
        prefix = self.prefix(embedding.to(self.device)).repeat_interleave(beams, dim=0)  # (B*K, P, H)
        cache = DynamicCache()
        hidden = self.lm(inputs_embeds=prefix, past_key_values=cache, use_cache=True).last_hidden_state
        logprobs = self._logits(hidden[:, -1]).log_softmax(-1)  # (B*K, V)
        scores = torch.zeros(batch, beams, device=self.device)
        scores[:, 1:] = float("-inf")  # all beams start identical: expand from the first only
        sequences = torch.zeros(batch * beams, 0, dtype=torch.long, device=self.device)
        finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(batch)]
        vocab = logprobs.shape[-1]
        for step in range(max_new):
            candidate = (scores.view(-1, 1) + logprobs).view(batch, beams * vocab)  # (B, K*V)
            top, index = candidate.topk(2 * beams, dim=1)  # room for beams that end here
            beam_of, token_of = index // vocab, index % vocab
            new_scores = torch.full((batch, beams), float("-inf"), device=self.device)
            source = torch.zeros(batch, beams, dtype=torch.long, device=self.device)
            tokens = torch.zeros(batch, beams, dtype=torch.long, device=self.device)
            for b in range(batch):
                kept = 0
                for j in range(2 * beams):
                    score, beam, token = float(top[b, j]), int(beam_of[b, j]), int(token_of[b, j])
                    if score == float("-inf"):
                        break
                    if token == self.eos_local or step == max_new - 1:
                        seq = sequences[b * beams + beam].tolist() + ([] if token == self.eos_local else [token])
                        finished[b].append((score / max(len(seq) + 1, 1) ** length_penalty, seq))
                        continue
                    new_scores[b, kept], source[b, kept], tokens[b, kept] = score, beam, token
                    kept += 1
                    if kept == beams:
                        break
            done = all(len(f) >= beams for f in finished)  # early stopping, as HF's early_stopping=True
            if done or step == max_new - 1:
                break
            flat_source = (source + torch.arange(batch, device=self.device)[:, None] * beams).view(-1)  # (B*K)
            sequences = torch.cat([sequences[flat_source], tokens.view(-1, 1)], dim=1)
            cache.reorder_cache(flat_source)
            scores = new_scores
            step_in = self.lm.embed_tokens(tokens.view(-1, 1))  # (B*K, 1, H)
            hidden = self.lm(inputs_embeds=step_in, past_key_values=cache, use_cache=True).last_hidden_state
            logprobs = self._logits(hidden[:, -1]).log_softmax(-1)
        return [self.to_text(max(f)[1]) if f else "" for f in finished]

    # -- persistence -------------------------------------------------------------------------
    def save(self, out_dir: str | Path) -> Path:
        """``decoder.safetensors`` + ``decoder_config.json`` + ``decoder_vocab.json``, atomically.

        The vocabulary file holds ``null`` for a full vocabulary (it is ``range(V)``)."""
        from safetensors.torch import save_file

        out_dir = Path(out_dir)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        with atomic_dir(out_dir) as tmp:
            save_file(state, str(tmp / "decoder.safetensors"))
            (tmp / "decoder_config.json").write_text(self.cfg.to_json())
            (tmp / "decoder_vocab.json").write_text(json.dumps(None if self.local is None else self.vocab))
        return out_dir


def load_decoder(decoder_dir: str | Path) -> YDecoder:
    """Rebuild a saved y-decoder (strict load) from its directory."""
    from safetensors.torch import load_file

    decoder_dir = Path(decoder_dir)
    cfg = YDecoderConfig.from_json((decoder_dir / "decoder_config.json").read_text())
    vocab = json.loads((decoder_dir / "decoder_vocab.json").read_text())
    codec = build_codec(cfg)
    if (vocab is None) != (cfg.vocab == "full"):
        raise ValueError(f"{decoder_dir}: decoder_vocab.json does not match vocab={cfg.vocab!r} of its config")
    decoder = YDecoder(cfg, decoder_vocab(cfg, [], codec) if vocab is None else vocab, codec)
    decoder.load_state_dict(load_file(str(decoder_dir / "decoder.safetensors")), strict=True)
    decoder.eval()
    return decoder


def build_vocab(texts: list[str], codec: Codec) -> list[int]:
    """End-of-text first, then every tokenizer id that occurs in ``texts``, sorted."""
    ids = {t for text in texts for t in codec.encode(text)} - {codec.eos_id}
    return [codec.eos_id, *sorted(ids)]


@torch.no_grad()
def decode_embeddings(decoder: YDecoder, embeddings: torch.Tensor, *, num_beams: int = 1,
                      batch_size: int = 64) -> list[str]:
    """Decode ``(N, S)`` embeddings in batches."""
    out: list[str] = []
    for start in range(0, len(embeddings), batch_size):
        out += decoder.generate(embeddings[start : start + batch_size], num_beams=num_beams)
    return out
