"""Random-weight snapshots of the paper's three models, shrunk, for the ``rehearsal`` preset.

The ``rehearsal`` preset is the ``paper`` preset with every architecture kept and only widths
and depths shrunk (torchtitan's ``debugmodel`` idea), so the paper's code path runs, shape for
shape, in minutes on a CPU:

- x-encoder: ``VJEPA2Model`` (tubelets of 2 frames, patch 16, 16 frames, no token pooling) at
  a 32² crop, width 64, 2 layers;
- predictor LM: a Llama-3-architecture ``LlamaForCausalLM`` (Llama 3's ``llama3`` rope scaling,
  tied input/output embeddings as in Llama-3.2-1B, no pad token in the tokenizer, whose
  post-processor adds a BOS token as Llama 3's does), width 64, 4 layers;
- y-encoder: an EmbeddingGemma-architecture sentence-transformers folder: a Gemma 3 text model
  with bidirectional attention, mean pooling, the two ``Dense`` projection layers (×4 up, back
  down, no bias) and ``Normalize``, and EmbeddingGemma's task prompts.

Each is written with ``save_pretrained`` (sentence-transformers' own ``save`` for the
y-encoder folder) and read back by the code that reads the real snapshots
(``VJEPA2Model.from_pretrained``, ``Predictor.load_lm``, ``vljepa.y_encoder``): nothing in the
loading path knows it is a rehearsal. What is a stand-in: the weights (random), the widths,
and the tokenizers (byte-level BPE with a 1k vocabulary trained here on a few sentences, with
the special tokens of the real ones; Gemma's real tokenizer is SentencePiece).

``write_snapshots(root, sizes=...)`` writes the same three layouts at other shapes (``SnapshotSizes``):
``bench.gpu_check`` passes the paper's full sizes to time the paper model with random weights.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vljepa.files import atomic_dir

VERSION = "v1"  # bump when what the writer produces changes

# Shared by the writer and the preset (vljepa.config.rehearsal): the snapshots' shapes.
VOCAB_SIZE = 1024  # embedding rows of both LMs (the tokenizers use fewer; the rest are unused)
LLAMA = dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
             num_hidden_layers=4, rope_theta=500000.0, rms_norm_eps=1e-5,
             rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                           "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})
LLAMA_SPECIAL = ("<|begin_of_text|>", "<|end_of_text|>", "<|finetune_right_pad_id|>")  # ids 0, 1, 2
LLAMA_PAD_ID = 2  # Llama-3.2's tokenizer has no pad token; the config names <|finetune_right_pad_id|>
VJEPA2 = dict(crop_size=32, frames_per_clip=16, patch_size=16, tubelet_size=2, hidden_size=64,
              num_attention_heads=2, num_hidden_layers=2)
GEMMA = dict(hidden_size=64, intermediate_size=128, num_attention_heads=2, num_key_value_heads=1, head_dim=32,
             num_hidden_layers=2)
GEMMA_SPECIAL = ("<pad>", "<eos>", "<bos>")  # Gemma's ids 0, 1, 2
# EmbeddingGemma-300M's prompts (config_sentence_transformers.json of google/embeddinggemma-300m).
EMBEDDINGGEMMA_PROMPTS = {
    "query": "task: search result | query: ",
    "document": "title: none | text: ",
    "BitextMining": "task: search result | query: ",
    "Clustering": "task: clustering | query: ",
    "Classification": "task: classification | query: ",
    "InstructionRetrieval": "task: code retrieval | query: ",
    "MultilabelClassification": "task: classification | query: ",
    "PairClassification": "task: sentence similarity | query: ",
    "Reranking": "task: search result | query: ",
    "Retrieval": "task: search result | query: ",
    "Retrieval-query": "task: search result | query: ",
    "Retrieval-document": "title: none | text: ",
    "STS": "task: sentence similarity | query: ",
    "Summarization": "task: summarization | query: ",
}


@dataclass(frozen=True, kw_only=True)
class SnapshotSizes:
    """The shapes of the three snapshots: keyword arguments of their transformers configs.

    ``REHEARSAL_SIZES`` (the default) are the ``rehearsal`` preset's; a caller may pass others, e.g.
    the paper's full sizes (``bench.gpu_check``), to get random snapshots laid out as the real ones.
    """

    vjepa2: dict[str, int]  # VJEPA2Config: encoder, and V-JEPA 2's own predictor (dropped at load)
    llama: dict[str, Any]  # LlamaConfig, vocab_size and rope_scaling included
    gemma: dict[str, int]  # Gemma3TextConfig, vocab_size included


REHEARSAL_SIZES = SnapshotSizes(
    vjepa2={**VJEPA2, "pred_hidden_size": 32, "pred_num_attention_heads": 2, "pred_num_hidden_layers": 1},
    llama={**copy.deepcopy(LLAMA), "vocab_size": VOCAB_SIZE},
    gemma={**GEMMA, "vocab_size": VOCAB_SIZE},
)


@dataclass(frozen=True)
class SnapshotConfigs:
    """The transformers configs ``write_snapshots`` builds its random models from."""

    vjepa2: Any  # transformers.VJEPA2Config
    llama: Any  # transformers.LlamaConfig
    gemma: Any  # transformers.Gemma3TextConfig


def snapshot_configs(sizes: SnapshotSizes = REHEARSAL_SIZES) -> SnapshotConfigs:
    """The three models' configs for ``sizes`` (no weights: cheap at any size).

    Token ids follow the tokenizers ``write_snapshots`` trains, whose special tokens come first, in
    order: Llama's BOS 0 and EOS 1 (``LLAMA_SPECIAL``), Gemma's pad 0, EOS 1, BOS 2 (``GEMMA_SPECIAL``).
    """
    from transformers import Gemma3TextConfig, LlamaConfig, VJEPA2Config

    return SnapshotConfigs(
        vjepa2=VJEPA2Config(**sizes.vjepa2),
        llama=LlamaConfig(**copy.deepcopy(sizes.llama), tie_word_embeddings=True, bos_token_id=0, eos_token_id=1,
                          max_position_embeddings=131072),
        gemma=Gemma3TextConfig(**sizes.gemma, use_bidirectional_attention=True, pad_token_id=0, eos_token_id=1,
                               bos_token_id=2, max_position_embeddings=2048, sliding_window=512),
    )


_TRAINING_TEXT = [
    "a small red circle moves left then a large blue square grows",
    "what colour is the shape that moves up? green",
    "how many shapes are there? three",
    "two large blue squares", "the triangle shrinks", "a yellow star rotates clockwise",
    "title: none | text: task: search result | query: ",
]


@dataclass(frozen=True)
class RehearsalSnapshots:
    root: Path

    @property
    def vjepa2(self) -> Path:
        return self.root / "vjepa2"

    @property
    def llama(self) -> Path:
        return self.root / "llama"

    @property
    def embeddinggemma(self) -> Path:
        return self.root / "embeddinggemma"

    def complete(self) -> bool:
        return all((p / "config.json").is_file() for p in (self.vjepa2, self.llama, self.embeddinggemma)) and \
            (self.embeddinggemma / "modules.json").is_file()


def default_root() -> Path:
    from vljepa.weights import cache_root

    return cache_root() / f"rehearsal-{VERSION}"


def snapshots(root: Path | None = None, *, sizes: SnapshotSizes | None = None) -> RehearsalSnapshots:
    """The rehearsal snapshots under ``root`` (default ``~/.cache/vljepa/rehearsal-v1``), written once.

    sizes: other shapes than the rehearsal's (bench/gpu_check: the paper's); they need their own ``root``.
    """
    if sizes is not None and root is None:
        raise ValueError("snapshots(sizes=...) needs a root of its own: the default root holds the rehearsal's sizes")
    found = RehearsalSnapshots(Path(root) if root else default_root())
    if not found.complete():
        with atomic_dir(found.root, overwrite=False) as tmp:  # concurrent writers: the first rename wins
            write_snapshots(Path(tmp), sizes=sizes)
    return found


def _bpe_tokenizer(special: tuple[str, ...], bos: str):
    """A byte-level BPE whose post-processor prepends ``bos`` (as Llama 3's and Gemma's do)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=list(special),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_TRAINING_TEXT * 4, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                       special_tokens=[(bos, tok.token_to_id(bos))])
    return tok


def write_snapshots(root: Path, *, seed: int = 0, sizes: SnapshotSizes | None = None) -> RehearsalSnapshots:
    """Write the three random snapshots under ``root`` (deterministic given ``seed``).

    sizes: the models' shapes (``snapshot_configs``); None = ``REHEARSAL_SIZES``, the preset's.
    """
    import torch
    from transformers import Gemma3TextModel, LlamaForCausalLM, PreTrainedTokenizerFast, VJEPA2Model

    configs = snapshot_configs(sizes or REHEARSAL_SIZES)
    out = RehearsalSnapshots(Path(root))
    torch.manual_seed(seed)
    VJEPA2Model(configs.vjepa2).save_pretrained(out.vjepa2)

    bos, eos, pad = LLAMA_SPECIAL
    llama_tok = PreTrainedTokenizerFast(tokenizer_object=_bpe_tokenizer(LLAMA_SPECIAL, bos), bos_token=bos,
                                        eos_token=eos)  # no pad token, like Llama-3.2's tokenizer
    assert llama_tok.convert_tokens_to_ids(pad) == LLAMA_PAD_ID
    assert (llama_tok.bos_token_id, llama_tok.eos_token_id) == (configs.llama.bos_token_id, configs.llama.eos_token_id)
    LlamaForCausalLM(configs.llama).save_pretrained(out.llama)
    llama_tok.save_pretrained(out.llama)

    _write_embeddinggemma(out.embeddinggemma, configs.gemma, Gemma3TextModel, PreTrainedTokenizerFast)
    (out.root / "README.md").write_text(
        f"Random-weight rehearsal snapshots ({VERSION}) written by vljepa.rehearsal.write_snapshots(seed={seed}).\n")
    return out


def _write_embeddinggemma(target: Path, config, model_cls, tokenizer_cls) -> None:
    """A sentence-transformers folder laid out as google/embeddinggemma-300m's, saved by ST itself."""
    import tempfile

    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import modules as models

    pad, eos, bos = GEMMA_SPECIAL
    tok = tokenizer_cls(tokenizer_object=_bpe_tokenizer(GEMMA_SPECIAL, bos), bos_token=bos, eos_token=eos,
                        pad_token=pad)
    assert (tok.pad_token_id, tok.eos_token_id, tok.bos_token_id) == (config.pad_token_id, config.eos_token_id,
                                                                      config.bos_token_id)
    with tempfile.TemporaryDirectory() as tmp:
        model_cls(config).save_pretrained(tmp)
        tok.save_pretrained(tmp)
        width = config.hidden_size
        modules = [models.Transformer(tmp, max_seq_length=512),
                   models.Pooling(width, pooling_mode="mean"),
                   models.Dense(width, 4 * width, bias=False, activation_function=torch.nn.Identity()),
                   models.Dense(4 * width, width, bias=False, activation_function=torch.nn.Identity()),
                   models.Normalize()]
        model = SentenceTransformer(modules=modules, prompts=dict(EMBEDDINGGEMMA_PROMPTS), device="cpu")
        model.save(str(target))
    json.loads((target / "modules.json").read_text())  # written by ST: fail here, not at load, if not
