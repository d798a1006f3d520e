"""End to end: the default command, resume, stage selection, failures that leave nothing half-done."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import BENCHMARKS, ROOT


def cli(args, outputs: Path, cache: Path, timeout=600):
    env = {**os.environ, "CFT_OUTPUTS": str(outputs), "CFT_CACHE": str(cache),
           "CFT_BENCHMARKS": str(BENCHMARKS), "WANDB_MODE": "disabled"}
    return subprocess.run([sys.executable, "-m", "cft.main", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def default_run(tmp_path_factory, cache_dir):
    """`python -m cft.main` exactly as the README says (plus where to write)."""
    outputs = tmp_path_factory.mktemp("outputs")
    first = cli([], outputs, cache_dir)
    assert first.returncode == 0, first.stderr[-3000:]
    run_dir = outputs / "runs" / "tiny-cft-champ-reference"
    return run_dir, first, outputs


def test_default_run_writes_every_artifact(default_run):
    run_dir, out, _ = default_run
    for rel in ["config.yaml", "run_info.json", "data/records.jsonl", "critique/critiques.jsonl",
                "critique/rejects.jsonl", "critique/summary.json", "model/model.safetensors",
                "eval/math-500.jsonl", "eval/results.json", "results.json", "results.md",
                "metrics.jsonl"]:
        assert (run_dir / rel).exists(), rel
    info = json.loads((run_dir / "run_info.json").read_text())
    assert len(info["git_sha"]) == 40
    results = json.loads((run_dir / "results.json").read_text())
    assert results["method"] == "cft" and results["n"]["math-500"] == 8
    assert 0.0 <= results["accuracy"]["math-500"] <= 100.0
    assert "results: tiny-cft-champ-reference" in out.stdout  # the printed table
    samples = [json.loads(l) for l in (run_dir / "eval/math-500.jsonl").open()]
    assert {"prompt", "completion", "prediction", "reference", "verdict"} <= set(samples[0])
    critiques = [json.loads(l) for l in (run_dir / "critique/critiques.jsonl").open()]
    assert critiques and all(c["critique"].rstrip().endswith(f"Conclusion: {c['teacher_verdict']} [END]")
                             for c in critiques)
    losses = [json.loads(l)["loss"] for l in (run_dir / "metrics.jsonl").open() if '"loss"' in l]
    assert len(losses) == 12 and losses[-1] < losses[0]


def test_checkpoint_loads_with_from_pretrained(default_run):
    from transformers import AutoModelForCausalLM

    run_dir, _, _ = default_run
    model = AutoModelForCausalLM.from_pretrained(run_dir / "model")
    assert model.config.num_hidden_layers == 2


def test_rerun_resumes_and_says_so(default_run, cache_dir):
    run_dir, _, outputs = default_run
    before = (run_dir / "results.json").read_text()
    mtime = (run_dir / "model/model.safetensors").stat().st_mtime
    again = cli([], outputs, cache_dir)
    assert again.returncode == 0, again.stderr[-2000:]
    for stage in ["data", "critique", "train", "eval", "report"]:
        assert f"stage {stage}: outputs complete, skipped" in again.stdout
    assert (run_dir / "model/model.safetensors").stat().st_mtime == mtime
    assert (run_dir / "results.json").read_text() == before


def test_changed_config_reruns_from_the_changed_stage(default_run, cache_dir, tmp_path):
    run_dir, _, outputs = default_run
    out = cli(["run_name=tiny-cft-champ-reference", "eval.limit=3", "stages=[data,critique,eval,report]"],
              outputs, cache_dir)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "stage data: outputs complete, skipped" in out.stdout
    assert "stage eval: config changed since last run, re-running" in out.stdout
    assert json.loads((run_dir / "results.json").read_text())["n"]["math-500"] == 3


def test_eval_only_on_an_existing_checkpoint(default_run, cache_dir, tmp_path):
    run_dir, _, _ = default_run
    out = cli(["stages=[eval,report]", f"model.path={run_dir / 'model'}", "model.init=pretrained",
               "eval.benchmarks=[gsm8k,aime24]", "eval.limit=2", "run_name=evalonly"],
              tmp_path, cache_dir)
    assert out.returncode == 0, out.stderr[-2000:]
    results = json.loads((tmp_path / "runs/evalonly/results.json").read_text())
    assert results["n"] == {"gsm8k": 2, "aime24": 2}
    assert json.loads((tmp_path / "runs/evalonly/eval/results.json").read_text())["model"] == str(run_dir / "model")


def test_failed_stage_leaves_no_completion_marker(cache_dir, tmp_path):
    # A mix the data cannot fill fails inside the train stage, after data and critique are done.
    out = cli(["method=cft-sft", "method.sft_ratio=0.99"], tmp_path, cache_dir)
    assert out.returncode != 0 and "method.sft_ratio=0.99: needs" in out.stderr
    run_dir = tmp_path / "runs/tiny-cft-sft-champ-reference"
    assert (run_dir / "stages/critique.done.json").exists()
    assert not (run_dir / "stages/train.done.json").exists()
    assert not (run_dir / "model").exists()
    assert not (run_dir / "results.json").exists()
    assert not list(run_dir.rglob("*.tmp"))


def test_malformed_user_dataset_fails_naming_file_and_line(cache_dir, tmp_path):
    data = tmp_path / "mine.jsonl"
    data.write_text('{"question": "q", "response": "r"}\n{"question": "q2", "response": \n')
    out = cli(["dataset=jsonl", f"dataset.path={data}"], tmp_path, cache_dir)
    assert out.returncode != 0
    assert f"{data}:2: not valid JSON" in out.stderr
    assert not (tmp_path / "runs/tiny-cft-jsonl-reference/data/records.jsonl").exists()


@pytest.mark.parametrize("overrides,key", [
    (["eval.backend=vllm"], "eval.backend"),
    (["dataset.noisy_generator=tiny", "dataset.noisy_generator_backend=vllm"], "dataset.noisy_generator_backend"),
])
def test_missing_vllm_fails_before_any_stage(cache_dir, tmp_path, overrides, key):
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed")
    out = cli([*overrides, "run_name=novllm"], tmp_path, cache_dir)
    assert out.returncode != 0
    assert f'{key}=vllm needs vLLM, which is not installed: pip install -e ".[vllm]"' in out.stderr
    assert not (tmp_path / "runs/novllm/stages").exists()
