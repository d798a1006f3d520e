"""SLURM job side of a sweep: which job wrote a run dir, and torch.distributed's env per task.

Submission, the pre-timeout signal and requeue are submitit's (via hydra-submitit-launcher, see
conf/cluster/slurm.yaml and launch/README.md): on SIGUSR2 submitit's handler pickles the same
call again and runs ``scontrol requeue``; the requeued job recomposes the same overrides into
the same run dir, where finished stages are skipped and training resumes from its checkpoint.
This module only adds what submitit does not: a per-run-dir record of every SLURM job (and
restart) that worked on it, and the distributed env set at job start, before anything imports
torch. It is wired as a Hydra callback, so the pipeline needs no SLURM code.
"""
from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

JOBS_FILE = "slurm_jobs.jsonl"

_SLURM_KEYS = {
    "job_id": "SLURM_JOB_ID",
    "array_job_id": "SLURM_ARRAY_JOB_ID",
    "array_task_id": "SLURM_ARRAY_TASK_ID",
    "restart_count": "SLURM_RESTART_COUNT",
    "nodelist": "SLURM_JOB_NODELIST",
    "ntasks": "SLURM_NTASKS",
    "partition": "SLURM_JOB_PARTITION",
}


def slurm_job(environ=None) -> dict | None:
    """The current SLURM job as a dict (ids, restart count, nodes), or None outside SLURM."""
    environ = os.environ if environ is None else environ
    if "SLURM_JOB_ID" not in environ:
        return None
    info: dict[str, Any] = {k: environ.get(v) for k, v in _SLURM_KEYS.items()}
    # SLURM sets SLURM_RESTART_COUNT only after a requeue; absent means the first start.
    info["restart_count"] = int(info["restart_count"] or 0)
    info["host"] = socket.gethostname()
    info["started"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    return info


def record_job(run_dir: str | Path, environ=None) -> dict | None:
    """Append this (re)start of the SLURM job to <run_dir>/slurm_jobs.jsonl (rank 0 only)."""
    environ = os.environ if environ is None else environ
    info = slurm_job(environ)
    from cft import distributed

    if info is None or not distributed.is_main(environ):
        return info
    path = Path(run_dir) / JOBS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(info) + "\n")
    return info


def read_jobs(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / JOBS_FILE
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


class SlurmJobCallback(Callback):
    """Hydra callback (conf/cluster/slurm*.yaml): runs in each job before the pipeline."""

    def on_job_start(self, config, **kwargs: Any) -> None:
        # One task per GPU: RANK/WORLD_SIZE/LOCAL_RANK/MASTER_* from SLURM_* before any stage
        # (and transformers) reads them; a no-op for single-task jobs or under torchrun.
        from cft import distributed

        distributed.export_slurm_env()
        record_job(config.hydra.runtime.output_dir)
