"""Sweeps and requeue on a real SLURM cluster (`bash launch/slurm_local_cluster.sh start`).

Skipped unless `sinfo` answers with an idle node. Jobs are tiny-model runs with cluster=slurm-cpu
(one CPU task per job) and the smallest settings that still run every stage.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cft.cluster import read_jobs
from cft.config import STAGES
from cft.io import read_json
from cft.paths import RunPaths
from helpers import ROOT, cli, cli_env, run_paths

PARTITION = os.environ.get("CFT_SLURM_PARTITION", "debug")
SWEEP = ["--multirun", "cluster=slurm-cpu", f"cluster.partition={PARTITION}",
         "eval.limit=2", "dataset.limit=32", "tracking.mode=disabled"]


def _idle_node() -> str | None:
    if not shutil.which("sinfo"):
        return "no `sinfo` on PATH (start one: bash launch/slurm_local_cluster.sh start)"
    try:
        out = subprocess.run(["sinfo", "-h", "-p", PARTITION, "-o", "%T"], capture_output=True,
                             text=True, timeout=5)
    except subprocess.TimeoutExpired:
        return "sinfo timed out: slurmctld not answering"
    states = out.stdout.split()
    if out.returncode or not any(s in ("idle", "mixed") for s in states):
        return f"no idle node in partition {PARTITION!r} (sinfo: {out.stdout.strip() or out.stderr.strip()})"
    return None


_NO_CLUSTER = _idle_node()
pytestmark = [pytest.mark.slurm, pytest.mark.skipif(bool(_NO_CLUSTER), reason=_NO_CLUSTER or "")]


def _env(tmp_path: Path, cache: Path) -> dict:
    # sbatch exports this environment to the jobs (keys included, never the config).
    return cli_env(tmp_path / "outputs", cache, PWD=str(ROOT))


def _job_dirs(outputs: Path) -> list[Path]:
    return sorted(p.parent.parent for p in outputs.rglob(".hydra/overrides.yaml"))


def _scontrol(job_id: str) -> dict:
    out = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True)
    return dict(kv.split("=", 1) for kv in out.stdout.split() if "=" in kv)


def _final_state(job_id: str, wait_s: float = 60) -> str:
    """The job's state once SLURM has finished it (the result file lands just before exit)."""
    deadline = time.time() + wait_s
    while True:
        state = _scontrol(job_id).get("JobState", "")
        if state not in ("RUNNING", "COMPLETING", "PENDING") or time.time() > deadline:
            return state
        time.sleep(0.5)


def test_sweep_runs_each_cell_as_a_slurm_job(tmp_path, tiny_source, cache_dir):
    cli(*SWEEP, "method=sft,cft", "method.max_steps=2", env=_env(tmp_path, cache_dir), check=True)
    dirs = _job_dirs(tmp_path / "outputs")
    # One dir per cell, named by its overrides (cft.config.job_dir): the same whatever else the sweep holds.
    assert sorted(next(o for o in d.name.split(",") if o.startswith("method=")) for d in dirs) == \
        ["method=cft", "method=sft"]
    job_ids = set()
    for d in dirs:
        assert read_json(d / "results.json")
        overrides = (d / ".hydra" / "overrides.yaml").read_text()
        assert "cluster=slurm-cpu" in overrides and "method=" in overrides
        (job,) = read_jobs(d)  # one start, no restart
        assert job["partition"] == PARTITION and job["restart_count"] == 0
        assert _final_state(job["job_id"]) == "COMPLETED"
        job_ids.add(job["job_id"])
    assert len(job_ids) == 2  # two SLURM (array) jobs, not one process running both
    assert list((tmp_path / "outputs").rglob("*_submission.sh"))


def test_requeue_resumes_in_the_same_run_dir(tmp_path, tiny_source, cache_dir):
    """SIGUSR2 (what SLURM sends signal_delay_s before the time limit) mid-training: submitit
    checkpoints the call and requeues; the requeued job resumes the same run dir, skips the
    finished stages and resumes training from the last complete checkpoint."""
    env = _env(tmp_path, cache_dir)
    # 6 steps, a checkpoint every 3: room to interrupt after one.
    submit = subprocess.Popen([sys.executable, "-m", "cft.main", *SWEEP, "method=cft", "method.max_steps=6",
                               "method.save_steps=3"], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 300
        run_dir, job = None, None
        while time.time() < deadline:
            dirs = _job_dirs(tmp_path / "outputs")
            if dirs and list(RunPaths.of(dirs[0]).checkpoints.glob("checkpoint-*/trainer_state.json")):
                run_dir, paths = dirs[0], RunPaths.of(dirs[0])
                break
            assert submit.poll() is None, submit.stdout.read()[-3000:]
            time.sleep(0.5)
        assert run_dir, "the job never wrote a training checkpoint"
        time.sleep(1.0)  # let the checkpoint's files land
        markers = {s: paths.stage_done(s).stat().st_mtime_ns for s in STAGES if paths.stage_done(s).exists()}
        assert {"data", "critique"} <= set(markers)
        train_done_before = "train" in markers
        (job,) = read_jobs(run_dir)
        subprocess.run(["scancel", "--signal=USR2", job["job_id"]], check=True)
        # SLURM holds a requeued batch job for ~2 minutes (BeginTime); release it at once.
        for _ in range(120):
            info = _scontrol(job["job_id"])
            if info.get("JobState") == "PENDING" and int(info.get("Restarts", 0)) >= 1:
                # slurmd revoked the old instance's credential with 1-second resolution: a launch
                # in that same second is killed ("Job credential revoked"), so let it pass.
                time.sleep(2.0)
                subprocess.run(["scontrol", "update", f"jobid={job['job_id']}", "StartTime=now"], check=True)
                break
            time.sleep(0.5)
        out, _ = submit.communicate(timeout=400)
        assert submit.returncode == 0, out[-3000:]
    finally:
        if submit.poll() is None:
            submit.kill()
            if job:
                subprocess.run(["scancel", job["job_id"]])

    jobs = read_jobs(run_dir)
    assert [j["restart_count"] for j in jobs] == [0, 1]
    assert len({j["job_id"] for j in jobs}) == 1
    assert int(_scontrol(job["job_id"]).get("Restarts", 0)) == 1
    assert _job_dirs(tmp_path / "outputs") == [run_dir]  # no second run dir
    for stage in ("data", "critique"):
        assert paths.stage_done(stage).stat().st_mtime_ns == markers[stage], f"{stage} was redone"
    log = "".join(p.read_text() for p in (tmp_path / "outputs").rglob(".submitit/*/*_log.out"))
    assert "Requeued job" in log
    assert "stage data: outputs complete, skipped" in log
    assert "stage critique: outputs complete, skipped" in log
    assert read_json(paths.results)
    train = read_json(paths.stage_done("train"))["summary"]
    if not train_done_before:  # interrupted mid-training: resumed from the checkpoint
        assert train["resumed_from"] and "checkpoint-" in str(train["resumed_from"])
        assert train["global_step"] == 6


def test_multi_task_srun_runs_data_and_critique_once(tmp_path, tiny_source, cache_dir):
    """`srun -n 2 python -m cft.main cluster=local`: both tasks know they are 2 (rank from
    SLURM_PROCID, world size from SLURM_NTASKS, exported through submitit's helper); task 0 runs
    data and critique, task 1 waits for their markers, so nothing runs twice."""
    env = _env(tmp_path, cache_dir)
    proc = subprocess.run(["srun", f"--partition={PARTITION}", "--ntasks=2", "--cpus-per-task=1", "--label",
                           sys.executable, "-m", "cft.main", "cluster=local", "stages=[data,critique]",
                           "dataset.limit=32", "run_name=srun2"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    ran = [line.split(":", 1)[0].strip() for line in proc.stdout.splitlines() if ": running" in line]
    assert sorted(ran) == ["0", "0"], proc.stdout[-3000:]  # data and critique, each once, by task 0
    assert read_json(run_paths(tmp_path / "outputs", "srun2").run_info)["world_size"] == 2
