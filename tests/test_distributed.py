"""Multi-process training on CPU (torchrun, gloo): the same loss curve as one process with the
same global batch, and DeepSpeed ZeRO-2/3 runs. Tolerance: per-step loss <= 1e-4 abs (fp32;
the two runs reduce gradients in a different order)."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from cft.io import read_json
from cft.paths import RunPaths
from cft.validation import grad_accum_steps
from conftest import ROOT, make_compose
from helpers import cli, free_port, torchrun_env
from test_train import losses, train, train_cfg, write_rows

pytestmark = pytest.mark.slow
TOL = 1e-4

STAGE = r"""
import sys
from omegaconf import OmegaConf
from cft.paths import RunPaths
from cft.train import stage
cfg = OmegaConf.load(sys.argv[1])
print("SUMMARY", __import__("json").dumps(stage.run(cfg, RunPaths.of(cfg.run_dir))), flush=True)
"""


def torchrun(cfg, nproc: int = 2, timeout: int = 300) -> subprocess.CompletedProcess:
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "cfg.yaml").write_text(OmegaConf.to_yaml(cfg))
    (run_dir / "stage.py").write_text(STAGE)
    env = torchrun_env(cfg.paths.cache, PYTHONPATH=str(ROOT))
    return cli(f"--nproc_per_node={nproc}", f"--master_port={free_port()}", str(run_dir / "stage.py"),
               str(run_dir / "cfg.yaml"), module="torch.distributed.run", env=env, timeout=timeout,
               check=True)


def train_without_launcher(cfg, cache_dir, timeout: int = 600) -> dict:
    """The train stage as one plain process (no torchrun, no rendezvous variables), as on one GPU
    or in a notebook; returns its summary."""
    import sys

    from cft.distributed import RENDEZVOUS_ENV

    run_dir = Path(cfg.run_dir)
    (run_dir / "cfg.yaml").write_text(OmegaConf.to_yaml(cfg))
    (run_dir / "stage.py").write_text(STAGE)
    env = {k: v for k, v in torchrun_env(cache_dir, PYTHONPATH=str(ROOT)).items() if k not in RENDEZVOUS_ENV}
    proc = subprocess.run([sys.executable, str(run_dir / "stage.py"), str(run_dir / "cfg.yaml")],
                          env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return _summary(proc)


def _summary(proc) -> dict:
    return json.loads([l for l in proc.stdout.splitlines() if l.startswith("SUMMARY ")][0][8:])


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, cache_dir):
    run_dir = tmp_path_factory.mktemp("one")
    compose = make_compose(cache_dir, run_dir, run_dir / "outputs")
    summary = train(train_cfg(compose, run_dir, "method.max_steps=4"))
    assert summary["world_size"] == 1 and summary["global_step"] == 4
    return losses(run_dir)


def _compare(one: dict, two: dict, label: str) -> float:
    assert sorted(one) == sorted(two) == [1, 2, 3, 4]
    diff = max(abs(one[s]["loss"] - two[s]["loss"]) for s in one)
    print(f"[{label}] 1 vs 2 processes, same global batch: max abs loss diff {diff:.2e}")
    for s in one:
        assert abs(one[s]["learning_rate"] - two[s]["learning_rate"]) <= 1e-9
    return diff


def test_two_processes_match_one(compose, tmp_path, one_process):
    cfg = train_cfg(compose, tmp_path / "two", "method.max_steps=4", world_size=2)
    assert grad_accum_steps(cfg, 2) == 1  # 8 = 2 processes x 4, vs 1 x 4 x 2 accumulation
    write_rows(tmp_path / "two")
    proc = torchrun(cfg)
    summary = _summary(proc)
    assert summary["world_size"] == 2 and summary["global_step"] == 4
    assert _compare(one_process, losses(tmp_path / "two"), "ddp") <= TOL
    paths = RunPaths.of(tmp_path / "two")
    # One process tokenized (rank 0); rank 1 waited for it and read the same memory-mapped data.
    assert proc.stdout.count("[cft] train: tokenizing ") == 1
    assert "rank 1 waits for rank 0's tokenized examples" in proc.stdout
    (meta,) = paths.tokenized_dir.glob("*/meta.json")
    assert read_json(meta)["tokenized_by"] == {"rank": 0, "world_size": 2}
    names = {p.name for p in (paths.checkpoints / "checkpoint-4").iterdir()}
    assert {"rng_state_0.pth", "rng_state_1.pth", "COMPLETE"} <= names
    assert (paths.final_model / "model.safetensors").exists()


@pytest.mark.parametrize("option", ["zero2", "zero3"])
def test_deepspeed_zero_on_cpu(compose, tmp_path, one_process, option):
    """ZeRO-2/3 with the generated JSON, 2 CPU processes: same losses as plain training,
    checkpoints that resume, final weights as HF safetensors."""
    cfg = train_cfg(compose, tmp_path / option, "method.max_steps=4", f"deepspeed={option}", world_size=2)
    write_rows(tmp_path / option)
    summary = _summary(torchrun(cfg))
    assert summary["deepspeed_stage"] == int(option[-1])
    paths = RunPaths.of(tmp_path / option)
    written = read_json(paths.deepspeed_json)
    assert written["train_batch_size"] == 8 and written["gradient_accumulation_steps"] == 1
    assert _compare(one_process, losses(tmp_path / option), option) <= TOL
    assert (paths.final_model / "model.safetensors").exists()
    ckpt = paths.checkpoints / "checkpoint-4"
    assert (ckpt / "COMPLETE").exists() and list(ckpt.glob("global_step*"))
    # Resume (no steps left): DeepSpeed's shards load with weights_only=True (safe_deepspeed_load).
    proc = torchrun(train_cfg(compose, tmp_path / option, "method.max_steps=4", f"deepspeed={option}",
                              world_size=2))
    assert _summary(proc)["resumed_from"].endswith("checkpoint-4")


def test_zero2_without_a_launcher_trains_as_one_process(compose, tmp_path, one_process, cache_dir):
    """The headline command on one GPU, a notebook or an interactive node: ZeRO-2 started as a
    plain process (no torchrun). DeepSpeed's init_distributed looks for MPI unless RANK,
    WORLD_SIZE, MASTER_ADDR, MASTER_PORT and LOCAL_RANK are all set (deepspeed/comm/comm.py), so
    this died with `No module named 'mpi4py'` before the train stage exported a group of one."""
    import os

    from cft.distributed import RENDEZVOUS_ENV

    cfg = train_cfg(compose, tmp_path / "plain", "method.max_steps=4", "deepspeed=zero2")
    write_rows(tmp_path / "plain")
    summary = train_without_launcher(cfg, cache_dir)
    assert summary["deepspeed_stage"] == 2 and summary["world_size"] == 1
    assert _compare(one_process, losses(tmp_path / "plain"), "zero2, no launcher") <= TOL
    assert not any(k in os.environ for k in RENDEZVOUS_ENV)  # the test process itself is untouched


def test_group_of_one_never_overrides_a_launcher():
    from cft.distributed import group_of_one_env

    env = group_of_one_env({})
    assert env.keys() == {"RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"}
    assert (env["RANK"], env["WORLD_SIZE"], env["MASTER_ADDR"]) == ("0", "1", "127.0.0.1")
    assert group_of_one_env({"MASTER_PORT": "29500"}) == {}  # torchrun's, or a user's choice
    assert group_of_one_env({"SLURM_PROCID": "1", "SLURM_NTASKS": "4"}) == {}  # export_slurm_env's job
