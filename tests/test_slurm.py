"""The Slurm path on a real scheduler: infra/slurm-up.sh's one-node cluster (munged, MariaDB + slurmdbd,
slurmctld, slurmd on 127.0.0.1), and ``vljepa train --launcher slurm`` on it as users run it, in
subprocesses: a training job and its MLflow run, a 2-task DDP job against the 2-rank local launcher,
preemption (``scontrol requeue``) and time-limit requeues resuming from the last checkpoint, an
ablation sweep as a job array, and ``pretrain/full`` through the Prefect worker.

Skipped where Slurm is not installed or not root (``tests.services.slurm_unavailable``); infra/setup.sh
installs it. The default tier runs one short job through the whole path: submitted, requeued while it
trains, resumed from its checkpoint, its allocations read back from accounting (sacct). The README's Slurm
command with its MLflow run, and the multi-task, bit-exact, time-limit, array and Prefect-worker jobs are
``slow``.

No verdict here depends on this machine's speed: a job that must be preempted trains toward a step count
no machine reaches in its allocation, and the test ends it itself once it has seen what it checks.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.services import local_services, local_slurm, slurm_unavailable
from tests.test_multirank import readme_command, report, vljepa

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slurm
# The tiny preset on one task with one thread: the same numbers under every launcher.
TINY = ["--stage", "pretrain", "--preset", "tiny", "--set", "train.num_threads=1"]
# More steps than any machine trains in the minutes a test waits (tiny: ~60 steps/s here, so ~4.6 hours):
# a job that must be preempted or hit its time limit cannot finish first, however fast the machine.
ENDLESS = 1_000_000


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    why = slurm_unavailable()
    if why:
        pytest.skip(why)
    with local_slurm(tmp_path_factory.mktemp("cluster") / "state") as env:
        yield env


@pytest.fixture(scope="module")
def env(cluster, tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("slurm-jobs")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "VLJEPA_", "MLFLOW_", "PREFECT_"))}
    return {**base, **cluster, "VLJEPA_STATE_DIR": str(root / "state"), "PYTHONPATH": str(REPO),
            "MLFLOW_TRACKING_URI": f"sqlite:///{root}/mlflow.db"}


def allocations(job_id: str, env: dict[str, str], timeout: float = 60) -> list[dict[str, str]]:
    """Every allocation of a job, requeued ones included (``sacct --duplicates``), oldest first, once
    Slurm has ended them all (submitit sees the result file a few seconds before Slurm ends the job)."""
    keys = ("job_id", "state", "start", "end", "exit_code")
    deadline = time.monotonic() + timeout
    while True:
        out = subprocess.run(["sacct", "-j", job_id, "-X", "-D", "-n", "-P", "-o", "JobID,State,Start,End,ExitCode"],
                             env=env, capture_output=True, text=True, check=True, timeout=30)
        rows = [dict(zip(keys, line.split("|"))) for line in out.stdout.splitlines() if line.strip()]
        if rows and not any(r["state"] in ("PENDING", "RUNNING", "COMPLETING", "REQUEUING") for r in rows):
            return rows
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} not ended after {timeout:.0f} s: {rows}")
        time.sleep(1)  # the poll's interval: sacct's answer decides


def job_log(state: str, job_id: str, suffix: str = "0_log.err") -> str:
    return "".join(p.read_text() for p in sorted(Path(state, "submitit").glob(f"{job_id}/*_{suffix}")))


def resumed_steps(log: str) -> list[int]:
    return [int(m) for m in re.findall(r"\[train\] resuming from \S+ \(step (\d+) of", log)]


def weights(run_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(run_dir / "model.safetensors"))


def assert_same_weights(a: Path, b: Path) -> None:
    import torch

    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.equal(wa[name], wb[name]), name


@pytest.mark.slow
def test_a_training_job_through_slurm_returns_and_is_tracked(env):
    command = readme_command("--launcher slurm --set slurm.partition=debug")
    assert command[:6] == ["vljepa", "train", "--stage", "pretrain", "--preset", "tiny"]
    out = vljepa(command, env)
    summary = report(out)
    assert summary["job_id"].isdigit() and summary["steps"] >= 1 and summary["final_loss"] > 0
    assert [a["state"] for a in allocations(summary["job_id"], env)] == ["COMPLETED"]
    assert "Bypassing sacct error" not in out.stderr  # accounting answers submitit's polls
    import mlflow

    run = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"]).get_run(summary["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["launcher"] == "slurm"
    assert run.data.metrics["train/loss"] == pytest.approx(summary["final_loss"])


@pytest.mark.slow
def test_two_tasks_per_node_give_the_local_two_rank_loss_curve(env, tmp_path):
    common = [*TINY, "--set", "train.max_steps=6"]
    local = report(vljepa(["vljepa", "train", *common, "--launcher", "local", "--nproc", "2",
                           "--out", str(tmp_path / "local")], env))
    slurm = report(vljepa(["vljepa", "train", *common, "--launcher", "slurm", "--set", "slurm.tasks_per_node=2",
                           "--set", "slurm.cpus_per_task=1", "--out", str(tmp_path / "slurm")], env))
    assert Path(env["VLJEPA_STATE_DIR"], "submitit", slurm["job_id"], f"{slurm['job_id']}_1_log.out").is_file()
    curve = {name: [row["loss"] for row in json.loads((tmp_path / name / "train_summary.json").read_text())["history"]]
             for name in ("local", "slurm")}
    assert local["steps"] == slurm["steps"] == 6 and slurm["job_id"] != local["job_id"]
    assert len(curve["slurm"]) == 6 and curve["slurm"] == curve["local"]
    assert_same_weights(tmp_path / "local", tmp_path / "slurm")


def start(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    entry = "from flows.cli import main; import sys; sys.exit(main(sys.argv[1:]))"
    return subprocess.Popen([sys.executable, "-c", entry, *args], env=env, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for(predicate, timeout: float, what: str, every: float = 1.0) -> None:
    """Poll ``predicate`` (a file, a job state) every ``every`` s: the condition, not the interval, decides;
    ``timeout`` only turns a hang into a failure."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def latest_checkpoint(checkpoints: Path) -> int:
    """The step of the newest whole checkpoint under ``checkpoints`` (0: none yet)."""
    from vljepa.checkpoint import CheckpointManager

    latest = CheckpointManager(checkpoints).latest()
    return int(latest.name.removeprefix("step-")) if latest else 0


@pytest.mark.slow
def test_scontrol_requeue_resumes_from_the_last_checkpoint_bit_exact(env, tmp_path):
    # ~30 s of training here (tiny trains ~60 steps/s on one thread): the requeue lands well before the end
    # even on a machine a few times faster. 400 steps (7 s) let CI's machine finish before the test's poll.
    max_steps, every = 2000, 100
    long = [*TINY, "--set", f"train.max_steps={max_steps}", "--set", f"train.checkpoint_every={every}",
            "--set", f"train.log_every={every}"]
    reference = report(vljepa(["vljepa", "train", *long, "--launcher", "local", "--out", str(tmp_path / "ref")], env))
    proc = start(["train", *long, "--launcher", "slurm", "--out", str(tmp_path / "preempted")], env)
    checkpoints = tmp_path / "preempted" / "checkpoints"
    wait_for(lambda: latest_checkpoint(checkpoints) >= 2 * every or proc.poll() is not None, 240, "two checkpoints",
             every=0.1)
    assert proc.poll() is None, "the job finished before it could be preempted: give it more steps"
    at_requeue = latest_checkpoint(checkpoints)
    assert at_requeue < max_steps, "the job trained to the end before it could be preempted: give it more steps"
    running = subprocess.run(["squeue", "-h", "-t", "RUNNING", "-o", "%i"], env=env, capture_output=True, text=True,
                             check=True, timeout=30).stdout.split()
    assert len(running) == 1, running  # this test's job alone on the cluster
    job_id = running[0]
    subprocess.run(["scontrol", "requeue", job_id], env=env, check=True, timeout=30)
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-4000:]
    summary = json.loads(stdout[stdout.index("{"):])
    runs = allocations(job_id, env)
    resumed = resumed_steps(job_log(env["VLJEPA_STATE_DIR"], job_id))
    print(f"preemption: job {job_id}, allocations {[a['state'] for a in runs]}, checkpoint at requeue {at_requeue}, "
          f"resumed from steps {resumed}")
    assert [a["state"] for a in runs] == ["REQUEUED", "COMPLETED"]
    assert len(resumed) == 1 and at_requeue <= resumed[0] < max_steps and summary["resumed_from"] == resumed[0]
    assert summary["steps"] == reference["steps"] == max_steps
    assert_same_weights(tmp_path / "ref", tmp_path / "preempted")


def wait_for_resume(state: str, job_id: str, timeout: float) -> int:
    """The step a requeued allocation of ``job_id`` resumed from, once its log says so."""
    found: list[int] = []
    wait_for(lambda: bool(found.extend(resumed_steps(job_log(state, job_id))) or found), timeout,
             f"job {job_id} to resume")
    return found[0]


def test_scontrol_requeue_of_a_running_job_resumes_it_from_its_last_checkpoint(env, tmp_path):
    """Submit, requeue while it trains, see it resume from the checkpoint it had written, cancel it. The job
    trains toward ENDLESS steps, so the requeue always lands while it runs; sacct answers every poll."""
    every = 10
    args = [*TINY, "--set", f"train.max_steps={ENDLESS}", "--set", f"train.checkpoint_every={every}",
            "--set", "train.keep_last=2", "--set", f"train.log_every={every}", "--launcher", "slurm",
            "--out", str(tmp_path / "requeued")]
    proc = start(["train", *args], env)
    try:
        checkpoints = tmp_path / "requeued" / "checkpoints"
        wait_for(lambda: latest_checkpoint(checkpoints) >= every or proc.poll() is not None, 240, "a checkpoint",
                 every=0.2)
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        running = subprocess.run(["squeue", "-h", "-t", "RUNNING", "-o", "%i"], env=env, capture_output=True,
                                 text=True, check=True, timeout=30).stdout.split()
        assert len(running) == 1, running  # this test's job alone on the cluster
        job_id = running[0]
        before_requeue = latest_checkpoint(checkpoints)
        subprocess.run(["scontrol", "requeue", job_id], env=env, check=True, timeout=30)
        resumed = wait_for_resume(env["VLJEPA_STATE_DIR"], job_id, 240)
        # From the newest checkpoint the first allocation wrote: the one seen before the requeue, or one it
        # wrote while it was being stopped; never from scratch.
        assert resumed >= before_requeue >= every and resumed % every == 0
        subprocess.run(["scancel", job_id], env=env, check=True, timeout=30)
        runs = allocations(job_id, env)
        assert [a["state"].split()[0] for a in runs] == ["REQUEUED", "CANCELLED"], runs  # "CANCELLED by 0"
    finally:
        proc.kill()
        _, stderr = proc.communicate(timeout=60)
    assert "Bypassing sacct error" not in stderr  # accounting answered submitit's polls


@pytest.mark.slow
def test_a_job_over_its_time_limit_requeues_itself_and_resumes(env, tmp_path):
    # 1-minute allocations: USR2 is asked for 15 s before the limit and slurmctld checks every 30 s, so it comes
    # 15-45 s into each allocation -> submitit's checkpoint() requeues the job, which resumes from its newest
    # checkpoint. The job trains toward ENDLESS steps: only the time limit Slurm enforces ends an allocation.
    # A requeue waits cred_expire (20 s, infra/slurm-up.sh) before the next allocation.
    args = [*TINY, "--set", f"train.max_steps={ENDLESS}", "--set", "train.checkpoint_every=25",
            "--set", "train.keep_last=2", "--set", "train.log_every=100", "--set", "slurm.time_min=1",
            "--set", "slurm.max_requeues=3", "--launcher", "slurm", "--out", str(tmp_path / "timeout")]
    proc = start(["train", *args], env)
    try:
        wait_for(lambda: bool(queued_jobs(env)) or proc.poll() is not None, 120, "the job to be queued")
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        (job_id,) = queued_jobs(env)
        resumed = wait_for_resume(env["VLJEPA_STATE_DIR"], job_id, 540)
        subprocess.run(["scancel", job_id], env=env, check=True, timeout=30)
        runs = allocations(job_id, env)
    finally:
        proc.kill()
        proc.communicate(timeout=60)
    log = job_log(env["VLJEPA_STATE_DIR"], job_id)
    print(f"timeout: job {job_id}, allocations {[(a['state'], a['start'], a['end']) for a in runs]}, "
          f"resumed from step {resumed}")
    # submitit's warning for the USR2 it requeued the job on (its "requeued" line is INFO: not in the log)
    assert log.count("this job is timed-out") >= 1
    assert runs[0]["state"] == "REQUEUED" and runs[-1]["state"].split()[0] == "CANCELLED"  # "CANCELLED by 0"
    assert resumed >= 25 and resumed % 25 == 0  # from a checkpoint the first allocation wrote


def queued_jobs(env: dict[str, str]) -> list[str]:
    return subprocess.run(["squeue", "-h", "-o", "%i"], env=env, capture_output=True, text=True, check=True,
                          timeout=30).stdout.split()


@pytest.mark.slow
def test_an_ablation_sweep_is_one_job_array_with_a_run_per_variant(env):
    out = vljepa(["vljepa", "ablate", "loss", "--preset", "tiny", "--launcher", "slurm", "--variants", "l1", "--seeds", "0",
                  "--set", "slurm.cpus_per_task=1", "--set", "train.num_threads=1"], env)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    array = re.search(r"submitted a Slurm array of 2 jobs \((\d+)_", out.stderr)
    assert array, out.stderr[-2000:]
    tasks = allocations(array.group(1), env)
    assert sorted(a["job_id"] for a in tasks) == [f"{array.group(1)}_0", f"{array.group(1)}_1"]
    assert {a["state"] for a in tasks} == {"COMPLETED"}
    import mlflow

    client = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("vljepa-ablate-loss")
    runs = client.search_runs([experiment.experiment_id], "tags.`ablation.variant` != ''")
    assert {r.data.tags["ablation.variant"] for r in runs} >= {"infonce", "l1"}
    assert all("retrieval/t2v_r1" in r.data.metrics for r in runs if r.data.tags["ablation.variant"] in ("infonce", "l1"))


@pytest.fixture(scope="module")
def services(cluster, tmp_path_factory):
    with local_services(tmp_path_factory.mktemp("services"), extra=cluster) as services_env:
        subprocess.run([str(REPO / ".venv" / "bin" / "vljepa"), "deploy"], cwd=REPO, env=services_env, check=True,
                       timeout=120)
        yield services_env


def deployment_run(env: dict[str, str], params: dict) -> tuple[subprocess.CompletedProcess, str]:
    """``prefect deployment run pretrain/full --params JSON --watch``; (the CLI's output, the flow run's logs)."""
    prefect = str(REPO / ".venv" / "bin" / "prefect")
    run = subprocess.run([prefect, "deployment", "run", "pretrain/full", "--params", json.dumps(params), "--watch",
                          "--watch-timeout", "600"], cwd=REPO, env=env, capture_output=True, text=True, timeout=700)
    flow_run_id = re.search(r"UUID: ([0-9a-f-]{36})", run.stdout)
    assert flow_run_id, run.stdout[-2000:] + run.stderr[-2000:]
    logs = subprocess.run([prefect, "flow-run", "logs", flow_run_id.group(1)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)
    return run, logs.stdout


@pytest.mark.slow
def test_pretrain_full_on_slurm_through_the_prefect_worker(services):
    run, logs = deployment_run(services, {"preset": "tiny", "launcher": "slurm"})
    assert run.returncode == 0 and "Completed" in run.stdout, run.stdout[-3000:] + logs[-3000:]
    submitted = re.findall(r"submitted slurm job (\d+)", logs)
    assert len(submitted) == 2, logs[-3000:]  # phase 1A, then phase 1B
    assert all([a["state"] for a in allocations(job, services)] == ["COMPLETED"] for job in submitted)


@pytest.mark.slow
def test_a_failing_slurm_job_fails_the_flow_with_its_log_tail(services):
    # A GPU asked of a CPU-only node: the job itself dies (torch has no CUDA here), not the submission.
    run, logs = deployment_run(services, {"preset": "tiny", "launcher": "slurm", "overrides": ["train.device=cuda"]})
    assert run.returncode != 0 and "Failed" in run.stdout, run.stdout[-3000:]
    job = re.search(r"training job (\d+) \(slurm\) failed", logs)
    assert job, logs[-4000:]
    assert "--- job stderr (tail)" in logs and "CUDA" in logs.split("--- job stderr (tail)", 1)[1]
    assert allocations(job.group(1), services)[-1]["state"] == "FAILED"
