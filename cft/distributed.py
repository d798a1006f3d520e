"""Who this process is in a multi-process run: the one module that reads RANK / WORLD_SIZE /
SLURM_PROCID, for every stage and helper.

Launchers, in the order they are believed:
- torchrun (or any launcher that sets RANK / WORLD_SIZE itself),
- a multi-task `srun` step (one task per GPU, no torchrun): SLURM_PROCID / SLURM_NTASKS, and
  `export_slurm_env` turns them into torch.distributed's variables through submitit's
  `TorchDistributedEnvironment` (master address from the job's nodelist, port from the job id),
- a single process (rank 0 of 1).

Multi-process runs of the pipeline: only the train stage is data-parallel. Every other stage
runs on the main process; the others wait for its stage marker (data, critique: training needs
their files) or skip (eval, report). We wait on the marker file rather than a torch.distributed
barrier because the process group is created later, by the Trainer, with the backend it picks
(nccl/gloo); if the main process dies, torchrun/srun tear the job down.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path


def _slurm_step(environ) -> bool:
    """Inside a SLURM task that is one of several (a multi-task `srun` step)."""
    return "SLURM_PROCID" in environ and int(environ.get("SLURM_NTASKS", "1")) > 1


def rank(environ=None) -> int:
    environ = os.environ if environ is None else environ
    if "RANK" in environ:
        return int(environ["RANK"])
    return int(environ["SLURM_PROCID"]) if _slurm_step(environ) else 0


def world_size(environ=None) -> int:
    environ = os.environ if environ is None else environ
    if "RANK" in environ:
        return int(environ.get("WORLD_SIZE", "1"))
    return int(environ["SLURM_NTASKS"]) if _slurm_step(environ) else 1


def local_rank(environ=None) -> int:
    environ = os.environ if environ is None else environ
    if "LOCAL_RANK" in environ:
        return int(environ["LOCAL_RANK"])
    return int(environ.get("SLURM_LOCALID", "0")) if _slurm_step(environ) else 0


def is_main(environ=None) -> bool:
    return rank(environ) == 0


def export_slurm_env() -> bool:
    """Under a multi-task srun without torchrun, set MASTER_ADDR/PORT, RANK, WORLD_SIZE,
    LOCAL_RANK from SLURM's variables (submitit's helper), before anything initialises
    torch.distributed. A no-op (False) under torchrun, outside SLURM and for one task."""
    if "RANK" in os.environ or not _slurm_step(os.environ):
        return False
    from submitit.helpers import TorchDistributedEnvironment

    # submitit recognises a SLURM task by this variable, which its own launcher sets; a plain
    # `srun` (ours, or a user's) is the same SLURM environment.
    os.environ.setdefault("SUBMITIT_EXECUTOR", "slurm")
    # GPU binding is SLURM's (--gpus-per-task) or the user's; we only name the process group.
    # overwrite: without RANK no launcher set these; any value found (e.g. LOCAL_WORLD_SIZE, which
    # vLLM's CPU platform writes into its process's environment) is stale, not this step's.
    TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
    return True


# The env:// rendezvous torch.distributed and DeepSpeed read. deepspeed.comm.init_distributed
# (deepspeed/comm/comm.py, 0.19) falls back to MPI discovery (`from mpi4py import MPI`) unless ALL
# of these are set, so a ZeRO run started without a launcher died there (issue #20 item 1).
RENDEZVOUS_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK")


def group_of_one_env(environ=None) -> dict:
    """The variables that make a process started without a launcher (one GPU, a notebook, an
    interactive node) rank 0 of a process group of one on 127.0.0.1 at a free port; {} when a
    launcher already set any of them (torchrun, srun through export_slurm_env): theirs win."""
    environ = os.environ if environ is None else environ
    if any(k in environ for k in RENDEZVOUS_ENV) or _slurm_step(environ):
        return {}
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port)}


def export_group_of_one() -> bool:
    """Before DeepSpeed initialises: export group_of_one_env() (True when it set anything).
    Child processes never see it: they get single_process_env()."""
    env = group_of_one_env()
    os.environ.update(env)
    return bool(env)


# What torchrun / srun / accelerate put in the environment for torch.distributed.
_DISTRIBUTED_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK",
                    "GROUP_WORLD_SIZE", "ROLE_RANK", "ROLE_NAME", "ROLE_WORLD_SIZE", "MASTER_ADDR",
                    "MASTER_PORT", "NODE_RANK")
_DISTRIBUTED_PREFIXES = ("TORCHELASTIC_", "ACCELERATE_", "PET_")


def single_process_env(environ=None) -> dict:
    """`environ` without any distributed variable: the environment of a child process that must
    start as a single process (the evaluation stage after data-parallel training)."""
    environ = os.environ if environ is None else environ
    return {k: v for k, v in environ.items()
            if k not in _DISTRIBUTED_ENV and not k.startswith(_DISTRIBUTED_PREFIXES)}


def die_with_parent():
    """A subprocess `preexec_fn` that makes the kernel SIGKILL the child when its parent dies
    (Linux prctl PR_SET_PDEATHSIG), or None elsewhere: no stage child, engine worker or server
    outlives a killed run and keeps writing into its directory. The signal fires when the parent
    *thread* that forked the child exits: spawn from the main thread, or from a thread that
    outlives the child."""
    import sys

    if not sys.platform.startswith("linux"):
        return None
    import ctypes
    import signal

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here: the child only calls it
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(ctypes.c_int(1), ctypes.c_ulong(signal.SIGKILL))  # 1 = PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before prctl ran: no signal will come
            os._exit(1)

    return preexec


def child_env(devices: str | None = None, environ=None) -> dict:
    """The environment of every process we start (a stage's child, a generation engine worker,
    `vllm serve`): single_process_env (no launcher rendezvous variables: issue #20 S1), vLLM
    workers started by spawn (a fork after CUDA was touched fails with "Cannot re-initialize CUDA
    in forked subprocess": S2), `devices` as CUDA_VISIBLE_DEVICES when given, and this checkout
    first on PYTHONPATH so `python -m cft...` finds it from any working directory."""
    environ = os.environ if environ is None else environ
    from pathlib import Path

    env = single_process_env(environ)
    env["VLLM_WORKER_MULTIPROC_METHOD"] = "spawn"
    if devices is not None:
        env["CUDA_VISIBLE_DEVICES"] = devices
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def wait_for_marker(marker: Path, fingerprint: str, poll_s: float = 2.0,
                    timeout_s: float | None = None) -> dict:
    """Non-main ranks: block until the main process wrote `marker` with this fingerprint."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        try:
            info = json.loads(Path(marker).read_text())
            if info.get("fingerprint") == fingerprint:
                return info
        except (OSError, ValueError):
            pass
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"rank {rank()}: the main process did not finish {marker} in {timeout_s}s")
        time.sleep(poll_s)
