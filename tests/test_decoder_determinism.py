"""The y-decoder trains to the same bytes in separate processes, whatever the process's hash seed,
thread environment or the order its texts arrive in (a fresh clone once gave captioning
CIDEr 1.94 where the README said 1.90).

Each run is a new interpreter (``python -c``) with its own ``PYTHONHASHSEED``, ``OMP_NUM_THREADS`` /
``MKL_NUM_THREADS`` and a differently shuffled, duplicated text list; the decoder is the ``small``
preset (the main job's: the bottom SmolLM2 layers, cut vocabulary, CapDec noise) for a few steps on
a tiny model's y-encoder. Compared: every parameter's bytes, the loss history, beam-3 decodes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

SCRIPT = r"""
import dataclasses, hashlib, json, random, sys
import torch
from vljepa.config import get_preset
from vljepa.decoder import decode_embeddings, decoder_preset
from vljepa.decoder_train import train_decoder
from vljepa.evaluate import text_embeddings
from vljepa.model import build_model

order_seed, out = int(sys.argv[1]), sys.argv[2]
colours, shapes, motions = ["red", "blue", "green", "white"], ["circle", "square", "cross"], ["moves up", "grows", "spins"]
texts = [f"a {c} {s} {m}" for c in colours for s in shapes for m in motions]
shuffled = texts + texts[:7]                     # duplicates are dropped by train_decoder
random.Random(order_seed).shuffle(shuffled)
torch.manual_seed(0)
model = build_model(get_preset("tiny"))
cfg = dataclasses.replace(decoder_preset("small", shared_dim=model.cfg.shared_dim), steps=6, batch_size=8,
                          warmup_steps=2, checkpoint_every=0)
result = train_decoder(model, shuffled, cfg, out_dir=out)
digest = hashlib.sha256()
for name, tensor in sorted(result.decoder.state_dict().items()):
    digest.update(name.encode()); digest.update(tensor.detach().contiguous().numpy().tobytes())
decodes = decode_embeddings(result.decoder, text_embeddings(model, texts[:4]), num_beams=3)
print(json.dumps({"params": digest.hexdigest(), "losses": [h["loss"] for h in result.history], "decodes": decodes,
                  "threads": torch.get_num_threads()}))
"""


def _train(tmp_path, name: str, *, hash_seed: str, threads: str, order_seed: int) -> dict:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(order_seed), str(tmp_path / name)], env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.timeout(900)
def test_the_decoder_trains_to_the_same_bytes_in_separate_processes(tmp_path):
    first = _train(tmp_path, "a", hash_seed="1", threads="1", order_seed=1)
    second = _train(tmp_path, "b", hash_seed="2", threads="2", order_seed=2)
    assert first["threads"] == second["threads"] == 2  # the preset pins torch's intra-op threads
    assert first["losses"] == second["losses"]
    assert first["params"] == second["params"]
    assert first["decodes"] == second["decodes"]
