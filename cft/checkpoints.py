"""Crash-safe, resumable full-state checkpoints on top of HF Trainer's, and weights-only snapshots.

The Trainer already saves everything a bit-exact resume needs into ``checkpoint-N``: model
(safetensors), optimizer, scheduler, RNG state per rank, and ``trainer_state.json`` whose
global_step tells the sampler how many batches to skip. What it does not do (transformers 5.24):
it writes straight into ``checkpoint-N`` (no temp name) and ``get_last_checkpoint`` picks the
highest N that is a directory, so a job killed mid-save resumes from a half-written checkpoint.
We therefore write ``COMPLETE`` (JSON: step, resume key, tracker run id) into the directory
last, after every rank's files are on disk (``on_save`` runs after ``_save_checkpoint``; ranks
meet at a barrier first), and only trust directories that have it.

The resume key hashes the training config and the training examples: checkpoints of a different
config (a changed lr, other data, DeepSpeed on/off) are moved aside, never resumed.

Safe loading: the Trainer loads optimizer, scheduler, scaler and RNG files with
``torch.load(weights_only=True)`` (RNG under ``trainer_pt_utils.safe_globals()`` which
allow-lists the numpy types in the numpy RNG state), so a checkpoint cannot run code on load.
DeepSpeed's own engine loads its shards with ``weights_only=False``; ``safe_deepspeed_load``
switches that to ``weights_only=True`` with an allow-list of the few non-tensor types its files
hold (see ``DEEPSPEED_SAFE_GLOBALS``).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from pathlib import Path

from cft.io import read_json, write_json

MARKER = "COMPLETE"
_CKPT = re.compile(r"^checkpoint-(\d+)$")
_SNAPSHOT = re.compile(r"^step-(\d+)$")


def resume_key(cfg, examples: list[dict]) -> str:
    """Hash of everything a checkpoint's state depends on (not save cadence, not world size:
    the global batch is fixed, so a resume on another world size is still the same run)."""
    from omegaconf import OmegaConf

    method = OmegaConf.to_container(cfg.method, resolve=True)
    for k in ("save_steps", "save_total_limit", "snapshot_steps"):
        method.pop(k, None)
    model = OmegaConf.to_container(cfg.model, resolve=True)
    for k in ("per_device_batch_size", "gradient_checkpointing", "packing", "attn_implementation"):
        model.pop(k, None)
    state = {"method": method, "model": model, "seed": cfg.seed, "deepspeed": int(cfg.deepspeed.stage) > 0,
             "examples": hashlib.sha256(json.dumps(examples, sort_keys=True).encode()).hexdigest()}
    peft = cfg.get("peft")
    if peft is not None and peft.name != "none":  # an adapter checkpoint is no full one (keys of before kept)
        state["peft"] = OmegaConf.to_container(peft, resolve=True)
    blob = json.dumps(state, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def checkpoints(folder: Path) -> list[Path]:
    """checkpoint-N directories, oldest (lowest N) first."""
    if not Path(folder).is_dir():
        return []
    found = [p for p in Path(folder).iterdir() if p.is_dir() and _CKPT.match(p.name)]
    return sorted(found, key=lambda p: int(_CKPT.match(p.name).group(1)))


def is_complete(ckpt: Path, key: str | None = None) -> bool:
    marker = Path(ckpt) / MARKER
    if not marker.is_file():
        return False
    try:
        info = read_json(marker)
    except (OSError, ValueError):
        return False
    return key is None or info.get("resume_key") == key


def last_complete(folder: Path, key: str | None = None) -> Path | None:
    """The newest checkpoint with a COMPLETE marker (and the same resume key), or None."""
    done = [c for c in checkpoints(folder) if is_complete(c, key)]
    return done[-1] if done else None


def tracker_run_id(ckpt: Path | None) -> str | None:
    if ckpt is None or not (Path(ckpt) / MARKER).is_file():
        return None
    return read_json(Path(ckpt) / MARKER).get("tracker_run_id")


def mean_logged_loss(log_history: list[dict], default: float | None = None) -> float | None:
    """The training loss over every optimizer step of the run, from the Trainer's log history,
    each logged loss weighted by the steps it covers (a later entry for a step wins). On resume
    the history is restored from the checkpoint's trainer_state.json, so it spans the steps before
    the resume too; the Trainer's own `training_loss` averages only the steps this process ran
    (0.0 when it resumed from the last step). `default` when nothing was logged."""
    losses = sorted({row["step"]: row["loss"] for row in log_history if "loss" in row and "step" in row}.items())
    total = steps = last = 0
    for step, loss in losses:
        total += loss * (step - last)
        steps += step - last
        last = step
    return total / steps if steps > 0 else default


def clean(folder: Path, key: str) -> list[str]:
    """Rank 0, before training: move aside what must not be resumed or rotated against --
    partial checkpoints (killed mid-save) and checkpoints of another config. Returns what moved."""
    moved = []
    for ckpt in checkpoints(folder):
        if is_complete(ckpt, key):
            continue
        reason = "incomplete" if not is_complete(ckpt) else "stale-config"
        dest = Path(folder).parent / "checkpoints.discarded" / f"{ckpt.name}.{reason}.{int(time.time())}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        if reason == "incomplete":
            shutil.rmtree(ckpt)  # a half-written save is worth nothing
        else:
            os.replace(ckpt, dest)  # another config's state: keep it, out of the way
        moved.append(f"{ckpt.name} ({reason})")
    return moved


def completion_callback(key: str, keep: int, run_id: str | None = None):
    """TrainerCallback writing COMPLETE into checkpoint-N after all ranks finished saving it,
    then deleting all but the newest `keep` complete checkpoints. (We rotate here rather than
    with TrainingArguments.save_total_limit: the Trainer rotates *before* the new checkpoint
    is complete, so a kill in between could leave fewer complete checkpoints than promised.)"""
    from transformers import TrainerCallback

    class CheckpointComplete(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                dist.barrier()  # every rank's rng_state_<rank>.pth / ZeRO shard is written
            ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if state.is_world_process_zero and ckpt.is_dir():
                _fsync_tree(ckpt)
                write_json(ckpt / MARKER, {"step": state.global_step, "resume_key": key,
                                           "tracker_run_id": run_id, "time": time.time()})
                done = [c for c in checkpoints(Path(args.output_dir)) if is_complete(c)]
                for old in done[:-keep] if keep > 0 else []:
                    shutil.rmtree(old, ignore_errors=True)
            return control

    return CheckpointComplete()


# ------------------------------------------------------------------ weights-only snapshots
# The official run saved the model every 2 steps (LLaMA-Factory save_steps: 2, save_only_model:
# true) and picked the best on MATH-500. A full-state checkpoint-N holds fp32 master weights and
# optimizer moments too (~16 bytes a parameter); a snapshot holds only what generation loads
# (2 bytes a parameter in bf16), so selection at that granularity costs a few weights on disk,
# not 49 resumable states. Same crash rules as checkpoints: written under step-N.tmp, COMPLETE
# written last, then renamed; only complete snapshots of this run's resume key are read.

def snapshot_every(value, max_steps: int) -> int | None:
    """Steps between snapshots for method.snapshot_steps=`value` in a run of `max_steps` optimizer
    steps (a value < 1 is a share of them, rounded up as TrainingArguments rounds save_steps);
    None when off."""
    import math

    if not value:
        return None
    return int(value) if value >= 1 else max(1, math.ceil(max_steps * value))


def snapshot_steps(value, max_steps: int) -> list[int]:
    """The steps a run of `max_steps` snapshots at: each multiple of the interval, and the last."""
    every = snapshot_every(value, max_steps)
    if every is None or max_steps < 1:
        return []
    return sorted({*range(every, max_steps + 1, every), max_steps})


def snapshots(folder: Path, key: str | None = None) -> list[tuple[int, Path]]:
    """(step, step-N directory) of the complete snapshots (of resume key `key`), oldest first."""
    if not Path(folder).is_dir():
        return []
    found = [(int(m.group(1)), p) for p in Path(folder).iterdir()
             if p.is_dir() and (m := _SNAPSHOT.match(p.name)) and is_complete(p, key)]
    return sorted(found)


def clean_snapshots(folder: Path, key: str) -> list[str]:
    """Rank 0, before training: delete half-written snapshots (step-N.tmp, step-N.old, or no
    COMPLETE marker), and move another config's aside (as `clean` does checkpoints), so the
    eval stage never scores a snapshot this run did not write. Returns what went."""
    folder = Path(folder)
    gone = []
    for p in sorted(folder.iterdir()) if folder.is_dir() else []:
        if not p.is_dir():
            continue
        if not _SNAPSHOT.match(p.name) or not is_complete(p):
            shutil.rmtree(p, ignore_errors=True)
            gone.append(f"{p.name} (incomplete)")
        elif not is_complete(p, key):
            dest = folder.parent / "snapshots.discarded" / f"{p.name}.stale-config.{int(time.time())}"
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(p, dest)
            gone.append(f"{p.name} (stale-config, moved to {dest.parent})")
    return gone


def snapshot_callback(folder: Path, value, key: str, write_weights, is_main: bool, announce=None):
    """TrainerCallback that writes a snapshot at each step of snapshot_steps(value, max_steps):
    `write_weights(tmp_dir)` is called on every rank (ZeRO-3 gathers the weights collectively);
    the main process then adds COMPLETE and renames step-N.tmp to step-N. A step done again after
    a requeue replaces its snapshot; a kill at any point leaves step-N whole or absent (the
    leftovers are what clean_snapshots deletes). `announce(max_steps)`: the main process, once
    the Trainer knows the run's length."""
    from transformers import TrainerCallback

    folder = Path(folder)

    class Snapshot(TrainerCallback):
        steps: set = set()

        def on_train_begin(self, args, state, control, **kwargs):
            self.steps = set(snapshot_steps(value, state.max_steps))
            if is_main and announce is not None:
                announce(state.max_steps)

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step not in self.steps:
                return control
            final = folder / f"step-{state.global_step}"
            tmp, old = final.with_name(final.name + ".tmp"), final.with_name(final.name + ".old")
            if is_main:
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir(parents=True)
            write_weights(tmp)
            if is_main:
                _fsync_tree(tmp)
                write_json(tmp / MARKER, {"step": state.global_step, "resume_key": key, "time": time.time()})
                if final.exists():  # the step was done again after a requeue
                    shutil.rmtree(old, ignore_errors=True)
                    os.replace(final, old)
                os.replace(tmp, final)
                shutil.rmtree(old, ignore_errors=True)
            return control

    return Snapshot()


def _fsync_tree(folder: Path) -> None:
    """Flush the checkpoint's files to disk before the marker claims they are there."""
    for p in Path(folder).rglob("*"):
        if p.is_file():
            try:
                fd = os.open(p, os.O_RDONLY)
                os.fsync(fd)
                os.close(fd)
            except OSError:
                pass


# Non-tensor types found in DeepSpeed 0.19 ZeRO-2/3 checkpoint files (mp_rank_*_model_states.pt,
# *_optim_states.pt): config enums and containers. Allow-listed for weights_only=True loading.
def _deepspeed_safe_globals() -> list:
    import collections

    out = [collections.OrderedDict, set, frozenset]
    try:
        from deepspeed.runtime.fp16.loss_scaler import LossScaler, DynamicLossScaler
        out += [LossScaler, DynamicLossScaler]
    except ImportError:
        pass
    try:
        from deepspeed.runtime.zero.config import ZeroStageEnum
        out.append(ZeroStageEnum)
    except ImportError:
        pass
    try:
        from deepspeed.utils.tensor_fragment import fragment_address
        out.append(fragment_address)
    except ImportError:
        pass
    try:
        from deepspeed.checkpoint.constants import PARAM_SHAPES  # noqa: F401  (strings only)
    except ImportError:
        pass
    return out


def safe_deepspeed_load() -> None:
    """Make DeepSpeed's checkpoint engine load with torch.load(weights_only=True)."""
    import torch
    from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine

    if getattr(TorchCheckpointEngine.load, "_cft_safe", False):
        return
    torch.serialization.add_safe_globals(_deepspeed_safe_globals())

    def load(self, path: str, map_location=None):
        return torch.load(path, map_location=map_location, weights_only=True)

    load._cft_safe = True
    TorchCheckpointEngine.load = load
