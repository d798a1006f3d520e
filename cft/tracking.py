"""Metrics logging: metrics.jsonl always (rank 0), W&B on top when tracking.mode allows.

One W&B run per job, started by the pipeline on rank 0 (`track`), grouped by sweep and named
from the job's overrides. Its id is kept in the run directory (`wandb_run_id.txt`) so a resumed
or requeued job continues the same W&B run, and its files live under the run directory
(`<run_dir>/wandb/`), so every job of a sweep has its own offline run to `wandb sync`.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import time
from pathlib import Path

RUN_ID_FILE = "wandb_run_id.txt"
# A config key whose *name* ends like this holds a secret; `api_key_env` (a variable name) does not.
SECRET_NAME = re.compile(r"(^|[_.\-])(api[_\-]?key|key|token|secret|password|passwd|credentials?)$",
                         re.IGNORECASE)
REDACTED = "<redacted>"

# Per metrics file: (time, step) of the last training row, for step time / throughput.
_last_train_row: dict[str, tuple[float, int]] = {}
_samples_per_step: dict[str, int] = {}


def log_metrics(metrics_path: str | Path, row: dict, step: int | None = None) -> None:
    """Append one metrics row to metrics.jsonl (caller ensures rank 0); also to the active W&B run."""
    row = {"time": time.time(), **({"step": step} if step is not None else {}), **row}
    with open(metrics_path, "a") as f:
        f.write(json.dumps(row, default=str) + "\n")
    run = _active_run()
    if run is not None:
        run.log(_wandb_row(str(metrics_path), row))


def _active_run():
    """The W&B run of this process, without importing wandb when nobody started one."""
    wandb = sys.modules.get("wandb")
    return getattr(wandb, "run", None) if wandb is not None else None


def _wandb_row(key: str, row: dict) -> dict:
    """`{stage}/{metric}` for numeric values, with `{stage}/global_step` as the x-axis."""
    stage = row.get("stage", "metrics")
    out = {f"{stage}/{k}": v for k, v in row.items()
           if k not in ("time", "step", "stage") and isinstance(v, (int, float)) and not isinstance(v, bool)}
    step = row.get("step")
    if step is not None:
        out[f"{stage}/global_step"] = step
    if stage == "train" and "loss" in row and step is not None:
        last = _last_train_row.get(key)
        if last is not None and step > last[1]:
            step_time = (row["time"] - last[0]) / (step - last[1])
            out["train/step_time_s"] = step_time
            if key in _samples_per_step and step_time > 0:
                out["train/samples_per_s"] = _samples_per_step[key] / step_time
        _last_train_row[key] = (row["time"], step)
    return out


# --- config scrubbing ------------------------------------------------------------------------
def _env_secrets() -> list[str]:
    return [v for k, v in os.environ.items() if SECRET_NAME.search(k) and len(v) >= 8]


def scrub(obj, secrets: list[str] | None = None):
    """A copy of a config container with secret-named keys and any env secret value redacted."""
    secrets = _env_secrets() if secrets is None else secrets
    if isinstance(obj, dict):
        return {k: (REDACTED if SECRET_NAME.search(str(k)) and obj[k] not in (None, "") else
                    scrub(v, secrets)) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [scrub(v, secrets) for v in obj]
    if isinstance(obj, str):
        for secret in secrets:
            obj = obj.replace(secret, REDACTED)
    return obj


# --- the run ---------------------------------------------------------------------------------
def job_identity(cfg, run_dir: Path) -> tuple[str | None, str]:
    """(group, name): the sweep a job belongs to and its name from run_name + overrides.

    Hydra's runtime config when present; otherwise the sweep layout of conf/config.yaml
    (`multirun/<sweep>/<override_dirname>`, cft.config.job_dir), so `pipeline.run` without Hydra agrees.
    """
    group, overrides = None, ""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if HydraConfig.initialized():
            hc = HydraConfig.get()
            overrides = hc.job.override_dirname
            if hc.mode == RunMode.MULTIRUN:
                group = Path(hc.sweep.dir).name
    except ImportError:  # pragma: no cover - hydra is a dependency
        pass
    if group is None and run_dir.parent.parent.name == "multirun":
        group = run_dir.parent.name
        overrides = overrides or run_dir.name
    name = f"{cfg.run_name}/{overrides}" if overrides else cfg.run_name
    return cfg.tracking.group or group, name


def start(cfg, paths):
    """Start (or resume) this job's W&B run on rank 0; None when tracking is disabled."""
    from cft import distributed

    if cfg.tracking.mode == "disabled" or not distributed.is_main():
        return None
    import wandb
    from wandb.sdk.lib.runid import generate_id
    from omegaconf import OmegaConf

    from cft.io import atomic_open

    id_file = paths.root / RUN_ID_FILE
    run_id = id_file.read_text().strip() if id_file.exists() else generate_id()
    if not id_file.exists():
        with atomic_open(id_file) as f:
            f.write(run_id + "\n")
    group, name = job_identity(cfg, paths.root)
    config = scrub(OmegaConf.to_container(cfg, resolve=True))
    run = wandb.init(
        project=cfg.tracking.project, entity=cfg.tracking.entity, group=group, name=name,
        id=run_id, resume="allow", dir=str(paths.root), mode=cfg.tracking.mode, config=config,
        job_type=cfg.method.name, tags=[cfg.model.name, cfg.method.name, cfg.dataset.name,
                                        cfg.teacher.name],
        settings=wandb.Settings(save_code=False),
    )
    # Training rows carry their own step: a resumed trainer re-logs steps W&B has already seen.
    run.define_metric("train/global_step")
    run.define_metric("train/*", step_metric="train/global_step")
    _samples_per_step[str(paths.metrics)] = int(cfg.method.global_batch_size)
    _last_train_row.pop(str(paths.metrics), None)
    return run


def finish(run, paths, exit_code: int = 0) -> None:
    """Log the run's results (accuracy per benchmark, per-sample predictions) and close it."""
    from cft.io import read_json, read_jsonl

    try:
        if paths.results.exists():
            results = read_json(paths.results)
            for bench, acc in results["accuracy"].items():
                run.summary[f"eval/{bench}/accuracy"] = acc
                run.summary[f"eval/{bench}/n"] = results["n"].get(bench)
            run.summary["eval/average"] = results["average"]
        if paths.eval_results.exists():
            import wandb

            for bench in read_json(paths.eval_results)["benchmarks"]:
                if paths.eval_samples(bench).exists():
                    columns = ["idx", "question", "prediction", "reference", "verdict", "completion"]
                    rows = [[r.get(c) for c in columns] for r in read_jsonl(paths.eval_samples(bench))]
                    run.log({f"eval/{bench}/predictions": wandb.Table(columns=columns, data=rows)})
        if paths.selection.exists():
            import wandb

            curve = read_json(paths.selection)["curve"]
            run.log({"eval/selection": wandb.Table(columns=["step", "accuracy"],
                                                   data=[[p["step"], p["accuracy"]] for p in curve])})
    finally:
        run.finish(exit_code=exit_code)


@contextlib.contextmanager
def track(cfg, paths):
    """`with track(cfg, paths):` around the stages; the W&B run ends failed if a stage raises."""
    run = start(cfg, paths)
    exit_code = 1
    try:
        yield run
        exit_code = 0
    finally:
        if run is not None:
            finish(run, paths, exit_code)
