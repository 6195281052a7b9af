"""Where this process sits in a data-parallel job, and ``torch.distributed`` set-up.

Three sources, checked in this order by ``resolve_env``: the torchrun variables (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``), submitit's
``JobEnvironment`` inside a Slurm job, or none (one process). Half-set torchrun variables are
an error, never a silent world size of 1. submitit is imported only inside a submitit job.

The model and the loss never read any of this: ``rank`` and ``world_size`` are passed in.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch

TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True, kw_only=True)
class DistEnv:
    """One process's coordinates in the job."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    master_addr: str = "127.0.0.1"
    master_port: int = 29500
    source: str = "single"  # "single" | "torchrun" | "submitit" | "explicit"

    def __post_init__(self) -> None:
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} is not in [0, world_size={self.world_size})")


def env_from_environ(environ: Mapping[str, str] | None = None) -> DistEnv | None:
    """The torchrun variables as a ``DistEnv``; None when none of them is set."""
    environ = os.environ if environ is None else environ
    present = [name for name in TORCHRUN_VARS if environ.get(name, "") != ""]
    if not present:
        return None
    missing = [name for name in TORCHRUN_VARS if name not in present]
    if missing:
        raise RuntimeError(
            f"distributed environment is half set: {present} are set but {missing} are not. Launch with "
            f"torchrun (it sets all of {list(TORCHRUN_VARS)}), or unset them all for a single process.")
    return DistEnv(rank=int(environ["RANK"]), local_rank=int(environ["LOCAL_RANK"]),
                   world_size=int(environ["WORLD_SIZE"]), master_addr=environ["MASTER_ADDR"],
                   master_port=int(environ["MASTER_PORT"]), source="torchrun")


def env_from_submitit() -> DistEnv:
    """Coordinates from submitit's ``JobEnvironment`` (Slurm or local executor, one task per rank)."""
    import submitit

    job = submitit.JobEnvironment()
    # A port derived from the job id, so two jobs sharing a node do not collide.
    port = 20000 + int("".join(ch for ch in str(job.job_id) if ch.isdigit()) or 0) % 20000
    return DistEnv(rank=job.global_rank, local_rank=job.local_rank, world_size=job.num_tasks,
                   master_addr=job.hostnames[0], master_port=port, source="submitit")


def in_submitit_job(environ: Mapping[str, str] | None = None) -> bool:
    environ = os.environ if environ is None else environ
    return "SUBMITIT_EXECUTOR" in environ or "SUBMITIT_FOLDER" in environ


def resolve_env(environ: Mapping[str, str] | None = None) -> DistEnv:
    """torchrun variables, else submitit's job environment, else a single process."""
    env = env_from_environ(environ)
    if env is not None:
        return env
    if in_submitit_job(environ):
        return env_from_submitit()
    return DistEnv()


@dataclass
class DistContext:
    """What the training loop needs to know: rank, world size, whether a process group is up."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.initialized:
            torch.distributed.barrier()

    def gather_objects(self, obj: object) -> list:
        """``obj`` of every rank, in rank order (a collective; ``[obj]`` on one process)."""
        if not self.initialized:
            return [obj]
        out: list = [None] * self.world_size
        torch.distributed.all_gather_object(out, obj)
        return out

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """Mean of a (detached) tensor over ranks."""
        if not self.initialized:
            return value
        value = value.detach().clone()
        torch.distributed.all_reduce(value)
        return value / self.world_size


def init_distributed(env: DistEnv, *, backend: str | None = None, init_method: str | None = None) -> DistContext:
    """Start the process group for ``env`` (nothing for one process); gloo on CPU, nccl on CUDA."""
    if env.world_size == 1:
        return DistContext()
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if init_method is None:
        init_method = f"tcp://{env.master_addr}:{env.master_port}"
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend=backend, init_method=init_method, rank=env.rank,
                                             world_size=env.world_size)
    if backend == "nccl":
        torch.cuda.set_device(env.local_rank)
    return DistContext(rank=env.rank, world_size=env.world_size, local_rank=env.local_rank, initialized=True)


def shutdown(ctx: DistContext) -> None:
    if ctx.initialized and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
