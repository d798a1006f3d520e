"""Weights-only snapshots (method.snapshot_steps): written at their steps with the weights and
nothing else, loadable as they are; checkpoint selection over them keeps only the best; training
dynamics (eval.dynamics) score each one; a snapshot killed mid-write is never read; the plan
states their disk cost. One tiny training run (6 steps, snapshots every 2, checkpoints every 3)
is shared by the module."""
from __future__ import annotations

import contextlib
import io
import shutil
from pathlib import Path

import pytest

from cft import checkpoints as ckpt
from cft.eval.stage import run as run_eval
from cft.io import read_json, read_jsonl
from cft.paths import RunPaths
from cft.report.stage import run as run_report
from conftest import make_compose
from test_eval import overfit
from test_train import train, train_cfg

SNAPSHOT = ["method.max_steps=6", "method.save_steps=3", "method.snapshot_steps=2"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cache_dir):
    """(run paths, what the train stage printed) of one 6-step run with snapshots every 2 steps."""
    run_dir = tmp_path_factory.mktemp("snapshots") / "run"
    cfg = train_cfg(make_compose(cache_dir, run_dir, run_dir.parent / "outputs"), run_dir, *SNAPSHOT)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        summary = train(cfg)
    assert summary["global_step"] == 6
    return RunPaths.of(run_dir), out.getvalue()


@pytest.fixture(scope="module")
def better_model(tiny_source, tmp_path_factory):
    """The tiny model trained to answer the first GSM8K question (60 steps on it alone: the
    cheapest model that scores above the trained run's snapshots)."""
    from cft.benchmarks import SHIPPED, get_benchmark
    from cft.templates import eval_prompt

    out = tmp_path_factory.mktemp("better") / "model"
    item = get_benchmark("gsm8k").load(SHIPPED, 1)[0]
    overfit(tiny_source, out, [(eval_prompt("qwen25-math-cot", item["question"]),
                                f"The answer is $\\boxed{{{item['reference']}}}$.")], steps=60)
    return out


def _tensors(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def test_snapshots_hold_only_the_weights_at_their_steps(trained):
    from transformers import AutoModelForCausalLM

    paths, printed = trained
    assert sorted(p.name for p in paths.snapshots.iterdir()) == ["step-2", "step-4", "step-6"]
    for step in (2, 4, 6):
        snap = paths.snapshot(step)
        files = {p.name for p in snap.iterdir()}
        assert {"model.safetensors", "config.json", "tokenizer.json", "COMPLETE"} <= files
        # no optimizer, scheduler, RNG or trainer state: those stay in the full-state checkpoints
        assert not files & {"optimizer.pt", "scheduler.pt", "trainer_state.json", "training_args.bin"}
        assert not any(f.startswith("rng_state") for f in files)
        assert read_json(snap / "COMPLETE")["step"] == step
        assert read_json(snap / "config.json")["use_cache"] is True  # as the final model/ declares it
    # the last snapshot is the trained model, bit for bit; an earlier one is another model
    last, final, first = _tensors(paths.snapshot(6)), _tensors(paths.final_model), _tensors(paths.snapshot(2))
    assert last.keys() == final.keys() and all((last[k] == final[k]).all() for k in last)
    assert any(not (first[k] == last[k]).all() for k in last)
    model = AutoModelForCausalLM.from_pretrained(paths.snapshot(4))
    assert sum(p.numel() for p in model.parameters()) > 0
    # the resumable checkpoints are unchanged: full state at their own steps
    assert [c.name for c in ckpt.checkpoints(paths.checkpoints)] == ["checkpoint-3", "checkpoint-6"]
    assert (paths.checkpoints / "checkpoint-3" / "optimizer.pt").is_file()
    assert "weights-only snapshots every 2 step(s) of 6: 3 x" in printed


def test_plan_states_the_snapshots_disk_cost(trained, capsys):
    from cft.plan import main as plan

    paths, _ = trained
    assert plan(["model=tiny", *SNAPSHOT, "--json"]) == 0
    import json

    snapshots = json.loads(capsys.readouterr().out)["train"]["snapshots"]
    assert (snapshots["every"], snapshots["count"], snapshots["exact"]) == (2, 3, True)
    on_disk = (paths.snapshot(2) / "model.safetensors").stat().st_size
    assert abs(snapshots["bytes_each"] - on_disk) / on_disk < 0.02  # params x 4 bytes (fp32 tiny) + header
    assert snapshots["peak_bytes"] == 3 * snapshots["bytes_each"]
    assert plan(["model=tiny", *SNAPSHOT]) == 0
    assert "weights-only snapshots every 2 step(s) of 6: 3 x 0.9 MB = 2.6 MB on disk" in capsys.readouterr().out


def test_a_snapshot_killed_mid_write_is_never_read(tmp_path):
    """The real callback, with a writer that dies half-way at step 4, then a requeued run that
    writes step 4 again: step-4 is absent, then whole; never half-written under its name."""
    from transformers import TrainerState

    folder = tmp_path / "snapshots"

    def dying(tmp: Path) -> None:
        (tmp / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt  # the job is killed inside the save

    state = TrainerState(max_steps=6)
    callback = ckpt.snapshot_callback(folder, 2, "key-a", dying, is_main=True)
    callback.on_train_begin(None, state, None)
    state.global_step = 4
    with pytest.raises(KeyboardInterrupt):
        callback.on_step_end(None, state, None)
    assert (folder / "step-4.tmp").is_dir() and ckpt.snapshots(folder) == []

    def writer(tmp: Path) -> None:
        (tmp / "model.safetensors").write_bytes(b"whole")

    (folder / "step-2").mkdir()  # another config's snapshot, complete
    (folder / "step-2" / "COMPLETE").write_text('{"step": 2, "resume_key": "key-b"}')
    assert sorted(ckpt.clean_snapshots(folder, "key-a")) == [
        f"step-2 (stale-config, moved to {tmp_path / 'snapshots.discarded'})", "step-4.tmp (incomplete)"]
    callback = ckpt.snapshot_callback(folder, 2, "key-a", writer, is_main=True)
    callback.on_train_begin(None, state, None)
    for _ in range(2):  # the step done twice (a requeue) replaces its snapshot
        callback.on_step_end(None, state, None)
    assert [(s, p.name) for s, p in ckpt.snapshots(folder, "key-a")] == [(4, "step-4")]
    assert (folder / "step-4" / "model.safetensors").read_bytes() == b"whole"
    assert sorted(p.name for p in folder.iterdir()) == ["step-4"]


def test_selection_and_dynamics_score_every_snapshot_and_keep_the_best(trained, better_model, cache_dir, tmp_path):
    """step-4 is made the better model (it answers the GSM8K item asked): selection picks it over
    the other snapshots and the checkpoint at step 3, deletes the others, keeps their scores; a
    re-run reads the deleted snapshots' scores back; other scoring settings cannot."""
    paths = RunPaths.of(tmp_path / "run")
    shutil.copytree(trained[0].root, paths.root)
    for name in ("model.safetensors", "config.json"):
        shutil.copy(better_model / name, paths.snapshot(4) / name)
    overrides = ["stages=[eval,report]", *SNAPSHOT, "eval.select_checkpoint=true", "eval.select_benchmark=gsm8k",
                 "eval.select_limit=1", "eval.benchmarks=[gsm8k]", "eval.limit=1",
                 "eval.dynamics=[gsm8k,math-500]", "eval.critic=false", "eval.max_new_tokens=24"]
    cfg = make_compose(cache_dir, paths.root, tmp_path / "outputs")(overrides)

    assert run_eval(cfg, paths)["selected_step"] == 4
    selection = read_json(paths.selection)
    assert [(c["step"], c["kind"], c["kept"]) for c in selection["curve"]] == [
        (2, "snapshot", False), (3, "checkpoint", True), (4, "snapshot", True), (6, "snapshot", False)]
    assert [c["accuracy"] for c in selection["curve"]] == [0.0, 0.0, 100.0, 0.0]
    assert sorted(p.name for p in paths.snapshots.iterdir()) == ["step-4"]
    assert read_json(paths.eval_results)["model"] == str(paths.snapshot(4))
    dynamics = read_json(paths.dynamics)
    assert sorted(dynamics["steps"], key=int) == ["2", "4", "6"]
    assert {s: sorted(v) for s, v in dynamics["steps"].items()} == {s: ["gsm8k", "math-500"] for s in ("2", "4", "6")}
    assert dynamics["steps"]["4"]["gsm8k"] == {"accuracy": 100.0, "n": 1}
    run_report(cfg, paths)
    assert paths.dynamics_plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    scored = len(read_jsonl(paths.snapshot_scores))
    assert run_eval(cfg, paths)["selected_step"] == 4  # resumed: the deleted snapshots' scores read back
    assert read_json(paths.selection)["curve"] == selection["curve"]
    assert read_json(paths.dynamics) == dynamics
    assert len(read_jsonl(paths.snapshot_scores)) == scored

    other = make_compose(cache_dir, paths.root, tmp_path / "outputs")([*overrides, "eval.select_limit=2"])
    with pytest.raises(FileNotFoundError, match="snapshot step-2 was deleted after an earlier eval scored it"):
        run_eval(other, paths)
