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
    summary = _summary(torchrun(cfg))
    assert summary["world_size"] == 2 and summary["global_step"] == 4
    assert _compare(one_process, losses(tmp_path / "two"), "ddp") <= TOL
    paths = RunPaths.of(tmp_path / "two")
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
