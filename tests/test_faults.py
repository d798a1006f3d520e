"""Faults a user meets, one table row each (issue #25): a pipeline killed while its eval child
runs, a second run in the same run directory, outputs damaged after a run. Each row says what
the user does and what must happen; the next case found is another row."""
from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cft.io import read_json, write_json
from cft.paths import RunPaths
from cft.pipeline import one_writer, run
from cft.store import StoreBusy, take_lock
from helpers import ROOT, cli_env
from test_pipeline import copy_run, default_run_once


# --- the main process killed while the eval stage runs in its child ----------------------------
def _alive(pid: int) -> bool:
    """Running (a zombie waiting to be reaped counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def _lines(proc: subprocess.Popen) -> queue.Queue:
    """The process's output lines, read by a thread (so a wait for one can time out)."""
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    return lines


def _wait_for_line(lines: queue.Queue, pattern: str, timeout: float) -> re.Match:
    deadline, seen = time.monotonic() + timeout, []
    while time.monotonic() < deadline:
        try:
            seen.append(lines.get(timeout=0.5))
        except queue.Empty:
            continue
        if match := re.search(pattern, seen[-1]):
            return match
    raise AssertionError(f"no line matching {pattern!r} in {timeout}s:\n" + "".join(seen[-40:]))


SIGNALS = [  # (the signal the main process gets, its exit status after it)
    (signal.SIGKILL, -signal.SIGKILL),  # OOM killer, `kill -9`: no handler of ours runs
    (signal.SIGTERM, -signal.SIGTERM),  # `kill`, scancel, preemption: forwarded, then we end as before
    (signal.SIGINT, -signal.SIGINT),  # `kill -INT`: forwarded, then KeyboardInterrupt as before
]


@pytest.mark.slow
@pytest.mark.parametrize("sig,status", SIGNALS, ids=[s.name for s, _ in SIGNALS])
def test_eval_child_dies_with_the_main_process(tmp_path, cache_dir, tiny_source, sig, status):
    """Before: the eval child outlived its parent, kept writing eval/ and held the progress
    store's lock, so an immediate re-run failed with StoreBusy."""
    outputs = tmp_path / "outputs"
    # An eval long enough to still be running a minute after the kill, were the child left alone.
    main = subprocess.Popen(
        [sys.executable, "-m", "cft.main", "stages=[eval]", "model.init=pretrained",
         f"model.path={tiny_source}", "eval.limit=100", "eval.max_new_tokens=512",
         "eval.critic=false", "run_name=killed"],
        cwd=ROOT, env=cli_env(outputs, cache_dir), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    child = None
    try:
        child = int(_wait_for_line(_lines(main), r"stage eval: running in process (\d+)", 120)[1])
        eval_dir = RunPaths.of(outputs / "runs" / "killed").eval_dir
        deadline = time.monotonic() + 120  # until the child generates (its progress store is open)
        while not any(p.read_text().strip() == str(child) for p in eval_dir.glob("*.lock")):
            assert time.monotonic() < deadline and _alive(child), "the eval child never started generating"
            time.sleep(0.2)
        main.send_signal(sig)
        assert main.wait(timeout=60) == status
        deadline = time.monotonic() + 5
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(child), f"eval child {child} still running after its parent got {sig.name}"
        # Nothing is left holding the run directory or the eval progress: a re-run can start
        # (within seconds: on a loaded box the kernel tears a dead process down lazily).
        paths = RunPaths.of(outputs / "runs" / "killed")
        for lock in [paths.run_lock, *eval_dir.glob("*.lock")]:
            deadline = time.monotonic() + 20
            while True:
                try:
                    take_lock(lock, str(lock)).close()
                    break
                except StoreBusy:
                    assert time.monotonic() < deadline, f"{lock} still held 20 s after the eval child died"
                    time.sleep(0.5)
    finally:
        for pid in (main.pid, child):
            if pid and _alive(pid):
                os.kill(pid, signal.SIGKILL)
        main.wait()


# --- two runs in one run directory ----------------------------------------------------------
HOLDER = """import sys, time
from cft.paths import RunPaths
from cft.pipeline import one_writer
with one_writer(RunPaths.of(sys.argv[1])):
    print("holding", flush=True)
    time.sleep(600)
"""


def test_second_run_in_the_same_run_directory_fails_at_once(compose, monkeypatch):
    """Before: both runs trained at once, one resuming from the other's live checkpoint."""
    cfg = compose([])
    paths = RunPaths.of(cfg.run_dir)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(paths.root)], cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        with pytest.raises(StoreBusy, match=rf"run directory {re.escape(str(paths.root))} .*pid {holder.pid}\b"):
            run(cfg)
        assert [p.name for p in paths.root.iterdir()] == [paths.run_lock.name]  # nothing written
        monkeypatch.setenv("RANK", "1")  # another rank of a torchrun job takes no lock
        monkeypatch.setenv("WORLD_SIZE", "2")
        with one_writer(paths) as lock:
            assert lock is None
    finally:
        holder.kill()
        holder.wait()


# --- outputs damaged after a run -------------------------------------------------------------
def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _overwrite_same_size(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _edit_marker(marker: Path, edit) -> None:
    done = read_json(marker)
    edit(done)
    write_json(marker, done)


DAMAGED = [  # (case, what happens to the user's run directory, {stage that re-runs: why, as it says})
    # The reproduction. The train stage re-saves its last checkpoint's weights: the same
    # files, so evaluation (hours on a 7B model) is not redone.
    ("weights-deleted-results-truncated",
     lambda p: ((p.final_model / "model.safetensors").unlink(), _truncate(p.results)),
     {"train": "output model/model.safetensors is missing", "report": "output results.json has"}),
    ("results-md-byte-flipped", lambda p: _overwrite_same_size(p.results_md),
     {"report": "output results.md has changed since it was written"}),
    ("marker-truncated", lambda p: _truncate(p.stage_done("report")),
     {"report": "report.done.json cannot be read"}),
    ("marker-without-outputs",  # as versions before output records wrote it
     lambda p: _edit_marker(p.stage_done("report"), lambda done: done.pop("outputs")),
     {"report": "records no output files"}),
    ("report-older-than-eval",  # eval redone alone (stages=[eval]) with other outputs since
     lambda p: _edit_marker(p.stage_done("report"), lambda done: done["inputs"].update(eval="0" * 16)),
     {"report": "the outputs of stage eval changed since it last ran"}),
]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, cache_dir) -> RunPaths:
    return default_run_once(tmp_path_factory, cache_dir)[0]


@pytest.mark.parametrize("case,damage,reruns", DAMAGED, ids=[row[0] for row in DAMAGED])
def test_damaged_outputs_rerun_their_stage_and_say_why(finished_run, compose, tmp_path, capsys,
                                                       case, damage, reruns):
    """Before: every stage printed "outputs complete, skipped" and the run exited 0."""
    paths = copy_run(finished_run, tmp_path / "run")
    damage(paths)
    summary = run(compose([], run_dir=paths.root))
    printed = capsys.readouterr().out
    for stage in ["data", "critique", "train", "eval", "report"]:
        if stage in reruns:
            assert re.search(rf"stage {stage}: [^\n]*{re.escape(reruns[stage])}[^\n]*, re-running", printed), printed
        else:
            assert f"stage {stage}: outputs complete, skipped" in printed, printed
    assert read_json(paths.results) == read_json(finished_run.results)  # repaired, same numbers
    assert paths.results_md.read_text() == finished_run.results_md.read_text()
    if "train" in reruns:  # resumed from the last checkpoint: the same weights, the same loss
        assert summary["train"]["resumed_from"].endswith("checkpoint-12")
        assert (paths.final_model / "model.safetensors").read_bytes() == \
            (finished_run.final_model / "model.safetensors").read_bytes()
        trained = read_json(finished_run.stage_done("train"))["summary"]
        assert abs(summary["train"]["train_loss"] - trained["train_loss"]) <= 1e-6  # not 0.0
    run(compose([], run_dir=paths.root))  # and now it is whole again
    assert capsys.readouterr().out.count("outputs complete, skipped") == 5
