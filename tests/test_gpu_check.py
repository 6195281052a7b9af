"""bench.gpu_check: its CPU path end to end, and the snapshot sizes it writes for the paper preset."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_cpu_path_reports_both_modes_with_plans_flops(tmp_path, monkeypatch):
    """The script's CPU path on freshly written rehearsal snapshots: both modes timed, plan's FLOPs."""
    env = {**os.environ, "VLJEPA_CACHE": str(tmp_path), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run([sys.executable, "-m", "bench.gpu_check", "--preset", "rehearsal", "--device", "cpu",
                           "--batch", "2", "--steps", "1", "--json"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert (result["device"], result["batch"], result["frames"], result["precision"]) == ("cpu", 2, 16, "fp32")
    assert result["tokens_per_sample"] == {"visual": 8 * 4, "query": 0, "target": 32}  # 8 tubelets × (32/16)²
    modes = {m["mode"]: m for m in result["modes"]}
    assert set(modes) == {"cached", "live"}

    from vljepa.config import get_preset
    from vljepa.plan import Workload, plan

    monkeypatch.setenv("VLJEPA_CACHE", str(tmp_path))  # the snapshots the script just wrote
    cfg = get_preset("rehearsal")
    workload = Workload(name="w", num_frames=16, query_tokens=0, target_tokens=32, batch_size=2, steps=1)
    for name, mode in modes.items():
        assert mode["step_s"] > 0 and mode["tokens_per_s"] > 0 and mode["peak_memory_gb"] > 0
        assert mode["tokens_per_s"] == pytest.approx((32 + 32) * 2 / mode["step_s"])
        want = plan(cfg, [workload], gpus=1, live_x_encoder=name == "live")["phases"][0]["flops_per_sample"]
        assert mode["flops_per_sample"] == want
        assert mode["mfu"] is None and mode["plan_step_s"] is None  # no GPU peak on CPU
    assert modes["live"]["flops_per_sample"] > modes["cached"]["flops_per_sample"]  # + the x-encoder's forward


def test_cuda_without_a_gpu_says_how_to_run_the_cpu_path():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    from bench.gpu_check import GpuCheckOptions, run

    with pytest.raises(SystemExit, match="no CUDA GPU.*--preset rehearsal --device cpu"):
        run(GpuCheckOptions(preset="paper", device="cuda"))


def test_default_sizes_are_the_rehearsal_snapshots_of_before():
    """write_snapshots(sizes=None) must keep writing the v1 snapshots (shapes recorded here)."""
    from vljepa.rehearsal import REHEARSAL_SIZES, snapshot_configs

    configs = snapshot_configs()
    assert configs.llama.to_dict() == snapshot_configs(REHEARSAL_SIZES).llama.to_dict()
    llama, vjepa2, gemma = configs.llama, configs.vjepa2, configs.gemma
    assert (llama.hidden_size, llama.intermediate_size, llama.num_attention_heads, llama.num_key_value_heads,
            llama.head_dim, llama.num_hidden_layers, llama.vocab_size) == (64, 128, 4, 2, 16, 4, 1024)
    assert (llama.tie_word_embeddings, llama.bos_token_id, llama.eos_token_id) == (True, 0, 1)
    assert (vjepa2.crop_size, vjepa2.frames_per_clip, vjepa2.patch_size, vjepa2.tubelet_size, vjepa2.hidden_size,
            vjepa2.num_hidden_layers, vjepa2.num_attention_heads,
            vjepa2.pred_hidden_size) == (32, 16, 16, 2, 64, 2, 2, 32)
    assert (gemma.hidden_size, gemma.num_hidden_layers, gemma.num_attention_heads, gemma.num_key_value_heads,
            gemma.head_dim, gemma.vocab_size, gemma.use_bidirectional_attention) == (64, 2, 2, 1, 32, 1024, True)


def test_paper_sizes_have_the_published_shapes_and_pass_the_config_check(tmp_path):
    """The paper-size configs (no weights written): V-JEPA 2 ViT-L, Llama-3.2-1B, EmbeddingGemma-300M."""
    import torch
    from transformers import Gemma3TextModel, LlamaForCausalLM, VJEPA2Model

    from bench.gpu_check import paper_config, paper_snapshot_sizes
    from vljepa.config import get_preset
    from vljepa.rehearsal import RehearsalSnapshots, snapshot_configs

    configs = snapshot_configs(paper_snapshot_sizes(get_preset("paper")))
    llama, vjepa2, gemma = configs.llama, configs.vjepa2, configs.gemma
    assert (llama.hidden_size, llama.intermediate_size, llama.num_attention_heads, llama.num_key_value_heads,
            llama.head_dim, llama.num_hidden_layers, llama.vocab_size) == (2048, 8192, 32, 8, 64, 16, 128256)
    rope = llama.rope_parameters
    assert (rope["rope_type"], rope["factor"], rope["rope_theta"]) == ("llama3", 32.0, 500000.0)
    assert (vjepa2.crop_size, vjepa2.frames_per_clip, vjepa2.patch_size, vjepa2.tubelet_size, vjepa2.hidden_size,
            vjepa2.num_hidden_layers, vjepa2.num_attention_heads) == (256, 16, 16, 2, 1024, 24, 16)
    assert (gemma.hidden_size, gemma.num_hidden_layers, gemma.num_attention_heads, gemma.num_key_value_heads,
            gemma.head_dim, gemma.intermediate_size, gemma.vocab_size) == (768, 24, 3, 1, 256, 1152, 262144)
    with torch.device("meta"):
        # Llama-3.2-1B's published count (tied embeddings): 1,235,814,400.
        assert sum(p.numel() for p in LlamaForCausalLM(llama).parameters()) == 1_235_814_400
        assert 300e6 < sum(p.numel() for p in VJEPA2Model(vjepa2).encoder.parameters()) < 310e6  # ViT-L
        assert 300e6 < sum(p.numel() for p in Gemma3TextModel(gemma).parameters()) < 310e6  # "300M"

    found = RehearsalSnapshots(tmp_path)  # config.json only: what check_snapshots reads
    configs.vjepa2.save_pretrained(found.vjepa2)
    configs.llama.save_pretrained(found.llama)
    cfg = paper_config(found)  # raises if the paper widths and the snapshots disagree
    assert (cfg.predictor.lm.path, cfg.y_encoder.path) == (str(found.llama), str(found.embeddinggemma))
