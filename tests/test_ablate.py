"""The ablations on the paper's protocol: the rows, the protocol config, the seed statistics and
verdicts (by hand), the tables, and a tiny sweep end to end through MLflow."""

import json
from pathlib import Path

import pytest

from vljepa.ablation_stats import Delta, paired_delta, spread, t975, verdict
from vljepa.ablations import PROTOCOLS, Protocol, Sweep, Variant, protocol_config, sweeps, variant_config
from vljepa.config import get_preset
from vljepa.predictor import selected_layers
from vljepa.recipes import stage_config

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("preset", ["small", "paper", "tiny"])
def test_every_variant_is_a_valid_config_with_one_default(preset):
    base = stage_config(get_preset(preset), "sft")
    for sweep in sweeps(base).values():
        assert sum(v.default for v in sweep.variants) == 1
        setting = variant_config(base, sweep.default, sweep)
        assert (setting == base) == (not sweep.setting)
        for v in sweep.variants:
            cfg = variant_config(base, v, sweep)
            selected_layers(cfg.predictor)  # raises if the layers do not exist
            same = (cfg, v.from_base) == (setting, sweep.default.from_base)
            assert same == v.default or preset == "tiny", v.name  # tiny's 4 layers merge two rows


def test_rows_are_the_papers_table_5():
    base = stage_config(get_preset("small"), "sft")
    s = sweeps(base)
    assert list(s) == ["pretraining", "y-lr", "loss", "predictor", "y-encoder"]
    # Every row starts from BASE but (a)'s "none".
    assert [(v.name, v.from_base, v.default) for v in s["pretraining"].variants] == [("base", True, True),
                                                                                    ("none", False, False)]
    assert all(v.from_base for name in ("y-lr", "loss", "predictor", "y-encoder") for v in s[name].variants)
    # (b)
    assert [v.name for v in s["y-lr"].variants] == ["0.0", "0.01", "0.05", "0.1", "1.0"] and s["y-lr"].default.name == "0.05"
    # (c) and (e) freeze the text encoder; (c) has no projection head, (e) a trainable one.
    l2 = variant_config(base, s["loss"].variants[3], s["loss"])
    assert l2.train.loss == "l2" and l2.y_encoder.lr_multiplier == 0.0 and not l2.y_encoder.projection
    for v in s["y-encoder"].variants:
        cfg = variant_config(base, v, s["y-encoder"])
        assert cfg.y_encoder.lr_multiplier == 0.0 and cfg.y_encoder.projection
    # (d) from the bottom: the top 8 of SmolLM2's 30 layers stand for Llama's 16, the default is their upper half.
    layers = {v.name: selected_layers(variant_config(base, v, s["predictor"]).predictor) for v in s["predictor"].variants}
    assert layers == {"layers-8-16": [26, 27, 28, 29], "layers-0-2": [22], "layers-0-4": [22, 23],
                      "layers-0-8": [22, 23, 24, 25], "layers-0-16": list(range(22, 30)),
                      "causal": [26, 27, 28, 29], "random": [26, 27, 28, 29]}
    # On the paper preset the mapping is the identity: Llama-3.2-1B's layers 0-2, ..., 0-16 and 8-16.
    paper = stage_config(get_preset("paper"), "sft")
    p = sweeps(paper)["predictor"]
    got = {v.name: selected_layers(variant_config(paper, v, p).predictor) for v in p.variants}
    assert got["layers-0-2"] == [0, 1] and got["layers-0-16"] == list(range(16)) and got["layers-8-16"] == list(range(8, 16))
    extra = sweeps(base, y_encoder_paths={"gemma": "/models/embeddinggemma"})["y-encoder"]
    assert variant_config(base, extra.variants[1], extra).y_encoder.path == "/models/embeddinggemma"


def test_protocol_config_is_constant_lr_fixed_budget_per_seed():
    sft = stage_config(get_preset("small"), "sft")
    assert sft.train.schedule == "cosine"  # the recipe's SFT: the protocol replaces it
    cfg = protocol_config(sft, Protocol(samples=100, batch_size=32, warmup_steps=2), seed=7)
    assert (cfg.train.schedule, cfg.train.max_steps, cfg.train.batch_size, cfg.train.seed, cfg.train.warmup_steps,
            cfg.train.init_from, cfg.train.stage, cfg.train.lr) == ("constant", 3, 32, 7, 2, None, "sft", 1e-4)
    assert PROTOCOLS["small"].seeds == (0, 1, 2) and PROTOCOLS["paper"].samples == 10_000 * 512


def test_select_keeps_the_default_and_rejects_unknown_names():
    sweep = sweeps(get_preset("small"))["loss"]
    assert [v.name for v in sweep.select(["l2"]).variants] == ["infonce", "l2"]
    with pytest.raises(KeyError, match="no variant"):
        sweep.select(["l3"])
    with pytest.raises(ValueError, match="exactly one default"):
        Sweep(name="x", axis="y", variants=(Variant(name="a"), Variant(name="b")))


def test_paired_delta_and_interval_by_hand():
    # d = (+10, +20, +30) points: mean 20, sd 10, half width 4.303 * 10 / sqrt(3) = 24.844.
    d = paired_delta({0: 0.6, 1: 0.7, 2: 0.8, 9: 0.1}, {0: 0.5, 1: 0.5, 2: 0.5})
    assert d.n == 3 and d.mean == pytest.approx(20.0)
    assert (d.low, d.high) == (pytest.approx(20 - 24.8434, abs=1e-3), pytest.approx(20 + 24.8434, abs=1e-3))
    assert not d.excludes_zero
    assert spread([1.0, 2.0, 3.0]).sd == pytest.approx(1.0) and t975(2) == 4.303 and t975(12) == 2.228
    with pytest.raises(ValueError, match="no seed in common"):
        paired_delta({0: 0.1}, {1: 0.2})


@pytest.mark.parametrize("paper,low,high,expected", [
    (-3.0, -5.0, -1.0, "reproduced"), (-3.0, 1.0, 5.0, "not reproduced"), (-3.0, -5.0, 1.0, "inside the noise"),
    (+0.4, -2.0, 2.0, "reproduced (both flat)"), (+0.4, 1.0, 3.0, "not reproduced (paper flat)"),
    (+1.0, 0.5, 2.0, "reproduced")])
def test_verdicts(paper, low, high, expected):
    assert verdict(paper, Delta(mean=(low + high) / 2, low=low, high=high, n=3)) == expected
    assert verdict(paper, Delta(mean=1.0, low=None, high=None, n=1)) == "one seed"


def _record():
    """A y-lr sweep of two variants × 3 seeds with values chosen so the table is checkable by hand."""
    runs = []
    for seed, (base_cls, other_cls) in enumerate(((0.40, 0.30), (0.50, 0.42), (0.45, 0.34))):
        runs.append({"variant": "0.05", "seed": seed, "key": f"k{seed}", "seconds": 10.0, "eval_seconds": 5.0,
                     "metrics": {"classification/top1": base_cls, "retrieval/t2v_r1": 0.5, "vqa/accuracy": 0.6}})
        runs.append({"variant": "1.0", "seed": seed, "key": f"m{seed}", "seconds": 20.0, "eval_seconds": 5.0,
                     "metrics": {"classification/top1": other_cls, "retrieval/t2v_r1": 0.5, "vqa/accuracy": 0.6}})
    return {"axis": "y_encoder.lr_multiplier", "default": "0.05", "order": ["0.0", "0.05", "1.0"], "note": "",
            "protocol": {"samples": 96, "batch_size": 32, "seeds": [0, 1, 2], "schedule": "constant", "data": "sft"},
            "runs": runs}


def test_table_cells_by_hand():
    from flows.ablate_report import cpu_time, markdown, paragraphs, sweep_markdown

    table = sweep_markdown("y-lr", _record())
    # default cls: 40, 50, 45 -> 45.0 ± 5.0; variant 30, 42, 34 -> 35.3 ± 6.1; paired d = -10, -8, -11 ->
    # mean -9.67, sd 1.528, half 4.303 * 1.528 / sqrt(3) = 3.795 -> [-13.5, -5.9]; the paper: -3.6 -> reproduced.
    assert "| 0.05 (default) | 45.0 ± 5.0 | 50.0 ± 0.0 | 60.0 ± 0.0 | default | – |" in table
    assert ("| 1.0 | 35.3 ± 6.1 (-9.7 [-13.5, -5.9]) | 50.0 ± 0.0 (+0.0 [+0.0, +0.0]) | 60.0 ± 0.0 (+0.0 [+0.0, +0.0]) "
            "| -3.6, -1.4, -1.8 | **yes** / noise / noise |") in table
    assert table.count("| 0.0 |") == 0  # a variant without runs is left out
    lines = paragraphs("y-lr", _record())
    assert lines == ["- `y-lr` **1.0**: classification paper -3.6, ours -9.7 [-13.5, -5.9]: reproduced; retrieval "
                     "paper -1.4, ours +0.0 [+0.0, +0.0]: inside the noise; vqa paper -1.8, ours +0.0 [+0.0, +0.0]: "
                     "inside the noise."]
    export = {"sweeps": {"y-lr": _record()}}
    assert cpu_time(export) == (6 * 15.0 + 3 * 10.0, 6, 6)
    assert "6 distinct trained models behind 6 logged runs" in markdown(export)


def test_tiny_sweep_end_to_end_through_mlflow(tmp_path):
    from mlflow.tracking import MlflowClient

    from flows.ablate import run_sweep
    from flows.ablate_report import EXPERIMENT_PREFIX, collect, overview, sweep_markdown
    from flows.resolve import RunConfig

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run = RunConfig(preset="tiny", launcher="inline", state_dir=str(tmp_path / "state"), tracking_uri=uri, progress=False)
    protocol = Protocol(samples=16, batch_size=8, seeds=(0, 1))
    first = run_sweep("pretraining", run, protocol=protocol)
    assert [(r.variant, r.seed) for r in first.runs] == [("base", 0), ("base", 1), ("none", 0), ("none", 1)]
    assert not any(r.reused for r in first.runs) and len({r.key for r in first.runs}) == 4
    configs = {(r.variant, r.seed): json.loads((tmp_path / "state" / "ablations" / "models" / r.key / "config.json")
                                               .read_text())["train"] for r in first.runs}
    base_dir = configs[("base", 0)]["init_from"]
    assert "pretrain-video-tiny-" in base_dir and configs[("none", 1)]["init_from"] is None  # row (a)
    assert {c["seed"] for c in configs.values()} == {0, 1} and {c["schedule"] for c in configs.values()} == {"constant"}
    assert {c["max_steps"] for c in configs.values()} == {2} and {c["stage"] for c in configs.values()} == {"sft"}

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(EXPERIMENT_PREFIX + "pretraining")
    logged = [r for r in client.search_runs([experiment.experiment_id]) if "ablation.seed" in r.data.tags]
    assert sorted((r.data.tags["ablation.variant"], r.data.tags["ablation.seed"]) for r in logged) == [
        ("base", "0"), ("base", "1"), ("none", "0"), ("none", "1")]
    assert all(r.data.tags["ablation.axis"] == "train.init_from" and "vqa/accuracy" in r.data.metrics for r in logged)

    # The overview from MLflow prints exactly the sweep's own summary table.
    exported = collect(uri)["sweeps"]["pretraining"]
    assert exported["protocol"] == protocol.record()  # the same record the run wrote
    assert sweep_markdown("pretraining", exported) == first.markdown
    export, text = overview(uri, tmp_path / "overview")
    assert first.markdown in text and (tmp_path / "overview" / "overview.png").stat().st_size > 5000
    assert json.loads((tmp_path / "overview" / "overview.json").read_text())["sweeps"]["pretraining"] == exported

    second = run_sweep("pretraining", run, protocol=protocol)
    assert all(r.reused for r in second.runs)
    assert [r.mlflow_run_id for r in second.runs] == [r.mlflow_run_id for r in first.runs]
    again = [r for r in client.search_runs([experiment.experiment_id]) if "ablation.seed" in r.data.tags]
    assert len(again) == 4  # not logged twice


# Stand-ins for Slurm's two commands (the real scheduler is tests/test_slurm.py's). ``sbatch`` records the
# script it is given and answers as Slurm does; ``srun`` runs its command with srun's own options dropped
# and its --output / --error patterns filled in from the task's environment, as Slurm fills them.
FAKE_SBATCH = """#!{python}
import json, sys
with open({log!r}, "a") as log:
    log.write(json.dumps({{"argv": sys.argv[1:], "script": open(sys.argv[-1]).read()}}) + "\\n")
print("Submitted batch job 4242")
"""
FAKE_SRUN = """#!{python}
import os, subprocess, sys
args, logs = sys.argv[1:], {{}}
while args[0].startswith("--"):
    flag = args.pop(0)
    if flag in ("--output", "--error"):
        path = args.pop(0)
        for pattern, var in (("%A", "SLURM_ARRAY_JOB_ID"), ("%a", "SLURM_ARRAY_TASK_ID"), ("%j", "SLURM_JOB_ID"),
                             ("%t", "SLURM_PROCID")):
            path = path.replace(pattern, os.environ[var])
        logs[flag] = path
with open(logs["--output"], "a") as out, open(logs["--error"], "a") as err:
    sys.exit(subprocess.call(args, stdout=out, stderr=err))
"""


def test_launch_array_submits_one_slurm_array_whose_tasks_train_their_own_variant(tiny_state, tmp_path, monkeypatch):
    """launch_array gives Slurm one sbatch script of a job array, one task per variant (what makes a
    sweep one array, not N jobs), and array task i trains variant i into its own directory.

    Without Slurm: the stand-in ``sbatch`` keeps the script; the test then plays slurmd and runs each
    array task as Slurm would: that script, with the task's SLURM_* environment."""
    import os
    import re
    import subprocess
    import sys

    from flows import launch as launch_mod
    from flows.job import TrainDataSpec
    from vljepa.config import VLJepaConfig

    bin_dir, log = tmp_path / "bin", tmp_path / "sbatch.jsonl"
    bin_dir.mkdir()
    for name, text in (("sbatch", FAKE_SBATCH), ("srun", FAKE_SRUN)):
        (bin_dir / name).write_text(text.format(python=sys.executable, log=str(log)))
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")

    # The session's tiny state, read only: its manifest and train cache are what the jobs train on.
    spec = TrainDataSpec(db_path=str(tiny_state["db_path"]), train_cache=str(tiny_state["train_cache"]))
    base = get_preset("tiny")
    predictor = sweeps(base)["predictor"]
    variants = {v.name: variant_config(base, v, predictor) for v in predictor.variants
                if v.name in ("layers-8-16", "causal")}
    assert variants["layers-8-16"] != variants["causal"]  # the attention mask differs: a swap would show
    launched = launch_mod.launch_array([(cfg, spec, tmp_path / name) for name, cfg in variants.items()],
                                       folder=tmp_path / "jobs")

    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(calls) == 1  # one submission for the whole sweep
    script = calls[0]["script"]
    array = re.search(r"^#SBATCH --array=0-(\d+)(%\d+)?$", script, re.MULTILINE)
    assert array and int(array[1]) == len(variants) - 1, script
    assert [job.job_id for job in launched] == ["4242_0", "4242_1"]  # the array's tasks, in the order given

    (tmp_path / "task.sh").write_text(script)
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("SLURM_", "SUBMITIT_")) and k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK",
                                                                         "MASTER_ADDR", "MASTER_PORT")}
    for task in range(len(variants)):
        env = {**clean, "PYTHONPATH": str(REPO), "SLURM_ARRAY_JOB_ID": "4242", "SLURM_ARRAY_TASK_ID": str(task),
               "SLURM_JOB_ID": str(4243 + task), "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0",
               "SLURM_NTASKS": "1", "SLURM_JOB_NUM_NODES": "1", "SLURM_JOB_NODELIST": "localhost"}
        done = subprocess.run(["bash", str(tmp_path / "task.sh")], env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:] + "".join(
            p.read_text()[-3000:] for p in (tmp_path / "jobs").glob(f"4242_{task}/*_log.err"))

    for (name, cfg), job in zip(variants.items(), launched):
        summary = job.result()  # the array task's own result, read back through submitit
        assert summary.checkpoint_dir == str(tmp_path / name) and summary.steps > 0
        saved = VLJepaConfig.from_json((tmp_path / name / "config.json").read_text())
        assert saved == cfg, name  # each task trained its own variant's config
        assert (tmp_path / name / "model.safetensors").is_file()


def test_y_encoder_without_projection_head():
    from torch import nn

    from vljepa.config import replace
    from vljepa.model import build_model

    cfg = replace(get_preset("tiny"), **{"y_encoder.projection": False, "y_encoder.lr_multiplier": 0.0})
    model = build_model(cfg)
    assert isinstance(model.y_encoder.proj, nn.Identity)
    assert model.encode_text(["a red circle"]).shape == (1, cfg.shared_dim)
    assert not any(p.requires_grad for p in model.y_encoder.parameters())  # frozen, and nothing on top
    with pytest.raises(ValueError, match="shared_dim"):
        build_model(replace(cfg, shared_dim=cfg.shared_dim * 2))


def test_a_variant_takes_from_base_every_tensor_whose_role_it_keeps(tmp_path):
    import torch
    from safetensors.torch import load_file

    from flows.ablate import init_checkpoint
    from vljepa.checkpoint import save_checkpoint
    from vljepa.model import build_model

    sft = protocol_config(stage_config(get_preset("tiny"), "sft"), PROTOCOLS["tiny"], seed=0)
    torch.manual_seed(123)
    base_dir = save_checkpoint(build_model(sft), tmp_path / "base")
    base = load_file(str(base_dir / "model.safetensors"))
    s = sweeps(sft)
    by_name = {v.name: (v, sw) for sw in s.values() for v in sw.variants}

    def init(name):
        variant, sweep = by_name[name]
        return init_checkpoint(variant_config(sft, variant, sweep), str(base_dir), tmp_path / "inits")

    # Same architecture (another attention mask, another lr): BASE itself.
    assert init("causal") == init("1.0") == str(base_dir)
    # Other LM layers: the predictor's layers are the variant's own, everything else is BASE's.
    other = init("layers-0-8")
    state, info = load_file(f"{other}/model.safetensors"), json.loads((tmp_path / "inits" / other.split("/")[-1] /
                                                                         "init.json").read_text())
    assert info["own_init"] == ["predictor.layers"] and info["base_unused"] == ["predictor.layers"]
    for k, t in state.items():  # (norm weights start at 1 on both sides: compared where init is random)
        assert torch.equal(t, base[k]) != (k.startswith("predictor.layers.") and t.ndim == 2), k
    # No projection head (row c): BASE's head is left out, the rest taken.
    loss_init = init("l2")
    info = json.loads((tmp_path / "inits" / loss_init.split("/")[-1] / "init.json").read_text())
    assert info["own_init"] == [] and info["base_unused"] == ["y_encoder.proj"]
    assert all(torch.equal(t, base[k]) for k, t in load_file(f"{loss_init}/model.safetensors").items())
