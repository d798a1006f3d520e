"""Exact resume: a killed run, restarted, continues as if never stopped; a kill mid-save falls back
to the previous complete checkpoint. Tolerance: losses and LR of the resumed steps <= 1e-6 abs."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from cft import checkpoints as ckpt
from cft.io import read_jsonl
from cft.paths import RunPaths
from cft.pipeline import run
from conftest import ROOT, make_compose
from test_train import losses, train, train_cfg, write_rows

TOL = 1e-6

# Runs the train stage in a child process and kills it (os._exit: no cleanup, like SIGKILL/OOM/
# preemption) at a chosen point of the checkpoint at step 4.
KILLER = r"""
import os, sys
from omegaconf import OmegaConf
from transformers import Trainer
from cft.paths import RunPaths
from cft import checkpoints as checkpoint
from cft.train import stage

cfg = OmegaConf.load(sys.argv[1]); mode = sys.argv[2]
if mode == "mid_save":  # model + optimizer written, RNG state and marker not yet
    orig = Trainer._save_rng_state
    def _save_rng_state(self, output_dir):
        if self.state.global_step == 4:
            os._exit(17)
        return orig(self, output_dir)
    Trainer._save_rng_state = _save_rng_state
else:  # after_save: checkpoint-4 complete, then the job dies
    orig_cb = checkpoint.completion_callback
    def completion_callback(*a, **k):
        cb = orig_cb(*a, **k); on_save = cb.on_save
        def killing_on_save(args, state, control, **kw):
            out = on_save(args, state, control, **kw)
            if state.global_step == 4:
                os._exit(17)
            return out
        cb.on_save = killing_on_save
        return cb
    checkpoint.completion_callback = completion_callback
stage.run(cfg, RunPaths.of(cfg.run_dir))
"""


def _killed_run(cfg, mode: str) -> None:
    cfg_file = Path(cfg.run_dir) / "cfg.yaml"
    cfg_file.parent.mkdir(parents=True, exist_ok=True)
    cfg_file.write_text(OmegaConf.to_yaml(cfg))
    proc = subprocess.run([sys.executable, "-c", KILLER, str(cfg_file), mode], cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 17, proc.stderr[-3000:]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, cache_dir):
    """The reference: the same 6 steps, same config and data, in one go (its summary, its log)."""
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    summary = train(train_cfg(make_compose(cache_dir, run_dir, run_dir / "outputs"), run_dir))
    assert summary["global_step"] == 6 and summary["resumed_from"] is None
    return summary, losses(run_dir)


@pytest.mark.parametrize("mode,resumes_from", [("after_save", 4), ("mid_save", 2)])
def test_killed_run_resumes_exactly(compose, tmp_path, uninterrupted, mode, resumes_from):
    reference, uninterrupted = uninterrupted
    run_dir = tmp_path / "run"
    cfg = train_cfg(compose, run_dir)
    write_rows(run_dir)
    _killed_run(cfg, mode)
    newest = ckpt.checkpoints(RunPaths.of(run_dir).checkpoints)[-1]
    assert newest.name == "checkpoint-4"
    assert ckpt.is_complete(newest) is (mode == "after_save")
    before = losses(run_dir)
    assert sorted(before) == [1, 2, 3, 4]
    n_rows = len(read_jsonl(RunPaths.of(run_dir).metrics))

    summary = train(train_cfg(compose, run_dir))  # the same command again
    assert summary["resumed_from"].endswith(f"checkpoint-{resumes_from}")
    assert summary["global_step"] == 6
    rows = read_jsonl(RunPaths.of(run_dir).metrics)[n_rows:]
    resumed_steps = [r["step"] for r in rows if "loss" in r]
    assert resumed_steps == list(range(resumes_from + 1, 7))  # exactly the remaining steps
    after = losses(run_dir)  # later rows win: the resumed run's values for re-done steps
    diffs = {s: abs(after[s]["loss"] - uninterrupted[s]["loss"]) for s in range(resumes_from + 1, 7)}
    print(f"[{mode}] resumed from {resumes_from}: max abs loss diff {max(diffs.values()):.2e}")
    for s in diffs:
        assert diffs[s] <= TOL, (s, after[s], uninterrupted[s])
        assert abs(after[s]["learning_rate"] - uninterrupted[s]["learning_rate"]) <= TOL
        assert abs(after[s]["grad_norm"] - uninterrupted[s]["grad_norm"]) <= 1e-5
    # The summary's loss is over all 6 steps, not only those after the resume (issue #25 item 10).
    assert abs(summary["train_loss"] - sum(after[s]["loss"] for s in range(1, 7)) / 6) <= TOL
    assert abs(summary["train_loss"] - reference["train_loss"]) <= TOL
    # The partial checkpoint was discarded, never resumed; the newest K=2 complete ones remain.
    kept = ckpt.checkpoints(RunPaths.of(run_dir).checkpoints)
    assert [c.name for c in kept] == ["checkpoint-4", "checkpoint-6"] and all(map(ckpt.is_complete, kept))


def test_only_complete_checkpoints_of_the_same_config_are_trusted(tmp_path):
    folder = tmp_path / "checkpoints"
    for step, key in [(2, "a"), (4, "a"), (6, None), (8, "b")]:
        (folder / f"checkpoint-{step}").mkdir(parents=True)
        (folder / f"checkpoint-{step}" / "model.safetensors").write_bytes(b"\0" * 10)
        if key:
            (folder / f"checkpoint-{step}" / ckpt.MARKER).write_text(json.dumps({"resume_key": key}))
    (folder / "checkpoint-10").mkdir()
    (folder / "checkpoint-10" / ckpt.MARKER).write_text('{"resume_k')  # torn marker write
    assert ckpt.last_complete(folder, "a").name == "checkpoint-4"
    moved = ckpt.clean(folder, "a")
    assert sorted(moved) == ["checkpoint-10 (incomplete)", "checkpoint-6 (incomplete)",
                             "checkpoint-8 (stale-config)"]
    assert [c.name for c in ckpt.checkpoints(folder)] == ["checkpoint-2", "checkpoint-4"]
    assert list((tmp_path / "checkpoints.discarded").iterdir())[0].name.startswith("checkpoint-8.stale-config")


def test_checkpoint_names_the_tracker_run_and_loads_without_unpickling_code(compose, tmp_path):
    """The marker names the tracker's run; every .pt/.pth file of a checkpoint loads with
    torch.load(weights_only=True)."""
    import torch
    from transformers.trainer_pt_utils import safe_globals

    run_dir = tmp_path / "run"
    write_rows(run_dir)
    (run_dir / "wandb_run_id.txt").write_text("abc123\n")
    train(train_cfg(compose, run_dir, "method.max_steps=2", "method.save_steps=1"))
    last = ckpt.last_complete(RunPaths.of(run_dir).checkpoints)
    assert last.name == "checkpoint-2" and ckpt.tracker_run_id(last) == "abc123"
    files = list(last.glob("*.pt*"))
    assert {f.name for f in files} >= {"optimizer.pt", "scheduler.pt", "rng_state.pth"}
    for f in files:
        with safe_globals():
            torch.load(f, weights_only=True)


def test_requeue_on_another_world_size_skips_finished_stages(compose, tmp_path, monkeypatch):
    """A job requeued onto a different number of GPUs finds the same fingerprints (accumulation
    is derived, not stored), so data, critique and a finished train stage are not redone."""
    overrides = ["stages=[data,critique,train]", "method.max_steps=2", "dataset.limit=32"]
    run(compose(overrides, run_dir=tmp_path / "run"))
    markers = {p.name: p.read_text() for p in (tmp_path / "run" / "stages").glob("*.done.json")}
    assert sorted(markers) == ["critique.done.json", "data.done.json", "train.done.json"]
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")  # 16 = 2 processes x 8, no accumulation (was 2 steps)
    summary = run(compose(overrides, run_dir=tmp_path / "run"))
    assert {p.name: p.read_text() for p in (tmp_path / "run" / "stages").glob("*.done.json")} == markers
    assert summary["train"]["world_size"] == 1  # the finished run's summary, not a re-run
