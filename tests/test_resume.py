"""Checkpoints: exact resume after SIGKILL, NaN stops with the last good checkpoint intact, pruning."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.services import free_port

REPO = Path(__file__).resolve().parents[1]

# The step logger both drivers use: after that step (0-based; rank 0 only) say PAUSED on stdout and
# block on stdin, so the test kills the run at a known point between two checkpoints.
PAUSE = textwrap.dedent("""
    import sys

    def pause_after_step(step_to_pause):
        def log_step(step, row):
            if step_to_pause is not None and step == int(step_to_pause):
                print(f"PAUSED after step {step}", flush=True)
                sys.stdin.read()
        return log_step
""")

DRIVER = PAUSE + textwrap.dedent("""
    import os, sys
    import numpy as np
    from vljepa.config import get_preset, replace

    from vljepa.data import TokenTextDataset
    from vljepa.train import train

    # A cosine schedule (the lr differs at every step past the kill) over shuffled batches (the
    # order differs every epoch of 20 samples): a resume that lost either state cannot match.
    cfg = replace(get_preset("tiny"), **{"train.max_steps": 12, "train.checkpoint_every": 3,
                                         "train.num_threads": 1, "train.batch_size": 8,
                                         "train.schedule": "cosine", "train.warmup_steps": 2})
    skip = os.environ.get("SKIP_RESTORE")  # the controls: a resume that forgets one state
    if skip == "scheduler":
        import torch
        torch.optim.lr_scheduler.LambdaLR.load_state_dict = lambda self, state: None
    elif skip == "data":
        from vljepa.feed import IndexFeed
        IndexFeed.load_state_dict = lambda self, state: None
    rng = np.random.default_rng(0)
    texts = [f"a {c} {s}" for c in ("red", "blue", "green", "pink") for s in ("circle", "square", "star", "cube", "ring")]
    data = TokenTextDataset([str(i) for i in range(20)], rng.standard_normal((20, 8, 32)).astype(np.float16), texts)
    train(cfg, data, sys.argv[1], progress=False, log_step=pause_after_step(os.environ.get("PAUSE_AFTER_STEP")))
""")


def run_driver(tmp_path: Path, out: Path, pause_after: int | None = None, skip: str = "") -> subprocess.Popen:
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    env = {**os.environ, "PYTHONPATH": str(REPO), "SKIP_RESTORE": skip}
    if pause_after is not None:
        env["PAUSE_AFTER_STEP"] = str(pause_after)
    return subprocess.Popen([sys.executable, str(script), str(out)], env=env, cwd=REPO, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def wait_until_paused(proc: subprocess.Popen) -> None:
    """Read the driver's output until it says it is paused (it blocks there until killed)."""
    seen = []
    for line in iter(proc.stdout.readline, b""):  # type: ignore[union-attr]
        seen.append(line.decode(errors="replace"))
        if line.startswith(b"PAUSED after step"):
            return
    raise AssertionError("the run ended before its pause point:\n" + "".join(seen)[-3000:])


STREAM_DRIVER = PAUSE + textwrap.dedent("""
    import os, sys
    from pathlib import Path
    import torch

    from preprocessing.stream import StreamComponent, StreamData, StreamPlan, load_items
    from vljepa.config import get_preset, replace
    from vljepa.distributed import init_distributed, resolve_env, shutdown
    from vljepa.train import train

    import json
    raw = json.loads(Path(sys.argv[2]).read_text())
    plan = StreamPlan(components=tuple(StreamComponent(**{**c, "shards": tuple(c["shards"]),
                                                          "shard_sizes": tuple(c["shard_sizes"])})
                                       for c in raw["components"]), token_shape=tuple(raw["token_shape"]))
    cfg = replace(get_preset("tiny"), **{"train.max_steps": 12, "train.checkpoint_every": 3, "train.num_threads": 1,
                                         "train.batch_size": 8, "train.num_workers": 2, "train.shuffle_buffer": 8})
    dist = init_distributed(resolve_env())
    data = StreamData(plan, load_items(plan), num_workers=2, shuffle_buffer=8)
    train(cfg, data, sys.argv[1], progress=False, dist=dist,
          log_step=pause_after_step(os.environ.get("PAUSE_AFTER_STEP")))
    shutdown(dist)
""")


def run_ranks(tmp_path: Path, out: Path, plan_json: Path, port: int,
              pause_after: int | None = None) -> list[subprocess.Popen]:
    """2 gloo ranks (torchrun's variables), each in its own session so a SIGKILL takes its workers too."""
    script = tmp_path / "stream_driver.py"
    script.write_text(STREAM_DRIVER)
    procs = []
    for rank in range(2):
        env = {**os.environ, "PYTHONPATH": str(REPO), "RANK": str(rank), "WORLD_SIZE": "2",
               "LOCAL_RANK": str(rank), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        if pause_after is not None:
            env["PAUSE_AFTER_STEP"] = str(pause_after)
        procs.append(subprocess.Popen([sys.executable, str(script), str(out), str(plan_json)], env=env, cwd=REPO,
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      start_new_session=True))
    return procs


def wait_all(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        assert proc.wait(timeout=180) == 0, proc.stdout.read().decode()[-3000:]  # type: ignore[union-attr]


def test_streamed_training_2_ranks_x_2_workers_resumes_bit_exact_after_sigkill(tmp_path):
    """The streaming path: a SIGKILL of both ranks (and their DataLoader workers) mid-epoch, a resume,
    and the same samples in the same order: losses and weights equal an uninterrupted run's."""
    import dataclasses

    from tests.test_stream import make_source

    components = [make_source(tmp_path / "data", "a", 44, shard_size=6, items_per_source=2, weight=0.7,
                              shape=(8, 32), noise=True),
                  make_source(tmp_path / "data", "b", 15, shard_size=4, weight=0.3, shape=(8, 32), noise=True)]
    plan_json = tmp_path / "plan.json"
    plan_json.write_text(json.dumps({"components": [dataclasses.asdict(c) for c in components], "token_shape": [8, 32]}))
    wait_all(run_ranks(tmp_path, tmp_path / "straight", plan_json, free_port()))
    # Rank 0 pauses after step 7 (0-based), between checkpoints 6 and 9; rank 1 waits in the next step's
    # all-reduce. Then both, and their DataLoader workers, are killed.
    killed = run_ranks(tmp_path, tmp_path / "killed", plan_json, free_port(), pause_after=7)
    wait_until_paused(killed[0])
    for proc in killed:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (tmp_path / "killed" / "model.safetensors").exists(), "the run finished before the kill"
    wait_all(run_ranks(tmp_path, tmp_path / "killed", plan_json, free_port()))

    summary = json.loads((tmp_path / "killed" / "train_summary.json").read_text())
    assert summary["resumed_from"] == 6 and summary["data"]["loader"] == "stream"
    straight = json.loads((tmp_path / "straight" / "train_summary.json").read_text())
    assert summary["data"]["drawn"] == straight["data"]["drawn"] and sum(straight["data"]["drawn"].values()) == 96
    weights_a, losses_a = final_state(tmp_path / "straight")
    weights_b, losses_b = final_state(tmp_path / "killed")
    assert len(losses_a) == 12 and losses_a == losses_b
    for name in weights_a:
        assert torch.equal(weights_a[name], weights_b[name]), name


def final_state(out: Path) -> tuple[dict[str, torch.Tensor], list[float]]:
    from safetensors.torch import load_file

    last = sorted((out / "checkpoints").glob("step-*"))[-1]
    history = [row["loss"] for row in json.loads((last / "state.json").read_text())["history"]]
    return load_file(str(out / "model.safetensors")), history


def kill_and_resume(tmp_path: Path, out: Path, skip: str = "") -> dict:
    """Start the driver, SIGKILL it between its 2nd and 3rd checkpoints (paused after step 7, 0-based),
    resume it (forgetting the ``skip`` state, for the controls); the resumed run's train_summary.json."""
    killed = run_driver(tmp_path, out, pause_after=7)
    wait_until_paused(killed)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert not (out / "model.safetensors").exists(), "the run finished before the kill"
    resumed = run_driver(tmp_path, out, skip=skip)
    assert resumed.wait(timeout=120) == 0, resumed.stdout.read().decode()
    return json.loads((out / "train_summary.json").read_text())


def test_sigkill_mid_training_then_resume_is_bit_exact(tmp_path):
    """Cosine lr and shuffled batches across the kill: the resumed run equals the uninterrupted one
    bit for bit, and the two controls, each resuming without one state (the scheduler's, the data
    order's), do not: the test fails if either restore is lost."""
    straight = run_driver(tmp_path, tmp_path / "straight")
    assert straight.wait(timeout=120) == 0, straight.stdout.read().decode()
    summary = kill_and_resume(tmp_path, tmp_path / "killed")
    assert summary["resumed_from"] == 6
    weights_a, losses_a = final_state(tmp_path / "straight")
    weights_b, losses_b = final_state(tmp_path / "killed")
    assert len(losses_a) == 12 and losses_a == losses_b  # the same loss curve, bit for bit
    assert weights_a.keys() == weights_b.keys()
    for name in weights_a:
        assert torch.equal(weights_a[name], weights_b[name]), name
    for skip in ("scheduler", "data"):
        control = kill_and_resume(tmp_path, tmp_path / f"no-{skip}", skip=skip)
        weights_c, losses_c = final_state(tmp_path / f"no-{skip}")
        resumed = control["resumed_from"]
        assert losses_c[:resumed] == losses_a[:resumed] and losses_c[resumed:] != losses_a[resumed:], skip
        assert any(not torch.equal(weights_a[n], weights_c[n]) for n in weights_a), skip


class PoisonedData:
    """Wraps a dataset; from the ``poison_at``-th batch on, its visual tokens are NaN."""

    def __init__(self, base, poison_at: int) -> None:
        self.base, self.poison_at, self.calls = base, poison_at, 0

    def __len__(self) -> int:
        return len(self.base)

    def visual(self, index):
        self.calls += 1
        tokens = self.base.visual(index)
        return tokens * float("nan") if self.calls > self.poison_at else tokens

    def text(self, index):
        return self.base.text(index)

    def query(self, index):
        return None


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    from tests.test_distributed import tiny_cfg, tiny_data
    from vljepa.checkpoint import CheckpointManager
    from vljepa.checkpoint import load_checkpoint
    from vljepa.train import train

    cfg = tiny_cfg(**{"train.max_steps": 8, "train.checkpoint_every": 2})
    with pytest.raises(FloatingPointError, match=r"at step 5\b.*step-00000004"):
        train(cfg, PoisonedData(tiny_data(), poison_at=5), tmp_path, progress=False)
    latest = CheckpointManager(tmp_path / "checkpoints").latest()
    assert latest is not None and latest.name == "step-00000004"
    assert not (tmp_path / "model.safetensors").exists()
    model = load_checkpoint(latest)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_keeps_last_k_and_the_best_by_retrieval_r1(tmp_path):
    from tests.test_distributed import tiny_cfg, tiny_data
    from vljepa.train import train

    scores = iter([0.2, 0.9, 0.1, 0.3, 0.4, 0.5])
    cfg = tiny_cfg(**{"train.max_steps": 6, "train.checkpoint_every": 1, "train.keep_last": 2})
    # Temporaries of killed saves (today's naming and the one before vljepa.files) are cleared.
    stale = [tmp_path / "checkpoints" / ".tmp-abc123", tmp_path / "checkpoints" / ".step-00000001.tmp-99-0123abcd"]
    for path in stale:
        path.mkdir(parents=True)
    result = train(cfg, tiny_data(), tmp_path, progress=False, validate=lambda model: {"t2v_r1": next(scores)})
    assert not any(path.exists() for path in stale)
    kept = sorted(p.name for p in (tmp_path / "checkpoints").glob("step-*"))
    assert kept == ["step-00000002", "step-00000005", "step-00000006"]
    best = json.loads((tmp_path / "checkpoints" / "best.json").read_text())
    assert best["step"] == 2 and best["value"] == 0.9
    assert [v["t2v_r1"] for v in result.validation] == [0.2, 0.9, 0.1, 0.3, 0.4, 0.5]


def test_checkpoint_restores_rng_and_data_stream(tmp_path):
    from vljepa.data import BatchStream

    stream = BatchStream(10, 4, seed=3)
    for _ in range(3):
        stream.next()
    state = json.loads(json.dumps(stream.state_dict()))
    expected = [stream.next() for _ in range(4)]
    again = BatchStream(10, 4, seed=3)
    again.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(expected, [again.next() for _ in range(4)]))
    with pytest.raises(ValueError, match="does not match"):
        BatchStream(10, 2, seed=3).load_state_dict(state)

    from vljepa.checkpoint import capture_rng, restore_rng

    saved = capture_rng()
    a = (torch.rand(3), np.random.rand(), __import__("random").random())
    restore_rng(*saved)
    b = (torch.rand(3), np.random.rand(), __import__("random").random())
    assert torch.equal(a[0], b[0]) and a[1:] == b[1:]
