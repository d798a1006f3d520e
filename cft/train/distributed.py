"""One launch path for single process, torchrun and srun.

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT itself; under srun
(one task per GPU, no torchrun) ``env_from_slurm`` derives them from SLURM_* so the Trainer's
``torch.distributed`` init sees the same variables. Kept minimal on purpose: submitit/launch
recipes own the cluster side.

Multi-process runs of the pipeline: only the train stage is data-parallel. Every other stage
runs on rank 0; the other ranks wait for rank 0's stage marker (data, critique: the train stage
needs their files) or skip (eval, report). We wait on the marker file rather than a
torch.distributed barrier because the process group is created later, by the Trainer, with the
backend it picks (nccl/gloo); if rank 0 dies, torchrun/srun tear the job down.
"""
from __future__ import annotations

import os
import time
from pathlib import Path


def env_from_slurm(environ=os.environ) -> dict:
    """Fill torch.distributed's variables from SLURM's when running under srun without torchrun.
    Returns what was set. No-op outside SLURM or when RANK is already set."""
    if "RANK" in environ or "SLURM_PROCID" not in environ or int(environ.get("SLURM_NTASKS", "1")) < 2:
        return {}
    nodelist = environ.get("SLURM_JOB_NODELIST") or environ.get("SLURM_NODELIST", "127.0.0.1")
    out = {
        "RANK": environ["SLURM_PROCID"],
        "WORLD_SIZE": environ["SLURM_NTASKS"],
        "LOCAL_RANK": environ.get("SLURM_LOCALID", "0"),
        "MASTER_ADDR": environ.get("MASTER_ADDR") or first_host(nodelist),
        # Derived from the job id so concurrent jobs on one node do not collide.
        "MASTER_PORT": environ.get("MASTER_PORT") or str(20000 + int(environ.get("SLURM_JOB_ID", "0")) % 20000),
    }
    environ.update(out)
    return out


def first_host(nodelist: str) -> str:
    """First host of a SLURM nodelist ("node[03-05,07],gpu1" -> "node03") without scontrol."""
    import re

    prefix, ranges = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist).groups()
    return prefix + (ranges.split(",")[0].split("-")[0] if ranges else "")


def world() -> tuple[int, int]:
    """(rank, world_size) from the environment."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def wait_for_marker(marker: Path, fingerprint: str, poll_s: float = 2.0,
                    timeout_s: float | None = None) -> dict:
    """Non-zero ranks: block until rank 0 wrote `marker` with this fingerprint; return it."""
    import json

    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        try:
            info = json.loads(Path(marker).read_text())
            if info.get("fingerprint") == fingerprint:
                return info
        except (OSError, ValueError):
            pass
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"rank {world()[0]}: rank 0 did not finish {marker} in {timeout_s}s")
        time.sleep(poll_s)
