"""End to end: the default command (one real subprocess run, as the README says), then resume,
stage selection and failures through `pipeline.run(compose(...))` in process."""
from __future__ import annotations

import importlib.util
import re
import shutil
from pathlib import Path

import pytest

from cft.io import DataError, read_json, read_jsonl
from cft.paths import RunPaths
from cft.pipeline import run
from cft.validation import ConfigError
from helpers import cli, run_paths, train_metrics


def default_run_once(tmp_path_factory, cache_dir) -> tuple[RunPaths, str]:
    """`python -m cft.main` exactly as the README says (plus where to write): its run directory
    and printed output, made once per test session (under pytest's base temp dir, so every
    module finds it) and never changed afterwards; a test that changes a run works on copy_run."""
    base = tmp_path_factory.getbasetemp() / "default-run"
    printed = base / "stdout.txt"
    if not printed.exists():
        printed.parent.mkdir(parents=True, exist_ok=True)
        printed.write_text(cli(outputs=base / "outputs", cache=cache_dir, check=True).stdout)
    return run_paths(base / "outputs", "tiny-cft-champ-reference"), printed.read_text()


def copy_run(paths: RunPaths, dest: Path) -> RunPaths:
    shutil.copytree(paths.root, dest)
    return RunPaths.of(dest)


@pytest.fixture(scope="module")
def default_run(tmp_path_factory, cache_dir):
    """The default run (a copy this module's tests may change) and what it printed."""
    paths, printed = default_run_once(tmp_path_factory, cache_dir)
    return copy_run(paths, tmp_path_factory.mktemp("default") / "run"), printed


def test_default_run_writes_every_artifact(default_run):
    from transformers import AutoModelForCausalLM

    paths, out = default_run
    for path in [paths.resolved_config, paths.run_info, paths.records, paths.critiques, paths.rejects,
                 paths.critique_summary, paths.final_model / "model.safetensors",
                 paths.eval_samples("math-500"), paths.eval_results, paths.results, paths.results_md,
                 paths.metrics]:
        assert path.exists(), path
    assert len(read_json(paths.run_info)["git_sha"]) == 40
    results = read_json(paths.results)
    assert results["method"] == "cft" and results["n"]["math-500"] == 8
    assert 0.0 <= results["accuracy"]["math-500"] <= 100.0
    assert "results: tiny-cft-champ-reference" in out  # the printed table
    samples = read_jsonl(paths.eval_samples("math-500"))
    assert {"prompt", "completion", "prediction", "extraction_rule", "reference", "verdict"} <= set(samples[0])
    critiques = read_jsonl(paths.critiques)
    assert critiques and all(c["critique"].rstrip().endswith(f"Conclusion: {c['teacher_verdict']} [END]")
                             for c in critiques)
    losses = [row["loss"] for row in train_metrics(paths)]
    assert len(losses) == 12 and losses[-1] < losses[0]
    assert AutoModelForCausalLM.from_pretrained(paths.final_model).config.num_hidden_layers == 2


def test_rerun_resumes_and_says_so(default_run, compose, capsys):
    paths, _ = default_run
    before = paths.results.read_text()
    mtime = (paths.final_model / "model.safetensors").stat().st_mtime
    run(compose([], run_dir=paths.root))
    printed = capsys.readouterr().out
    for stage in ["data", "critique", "train", "eval", "report"]:
        assert f"stage {stage}: outputs complete, skipped" in printed
    assert (paths.final_model / "model.safetensors").stat().st_mtime == mtime
    assert paths.results.read_text() == before


def test_changed_config_reruns_from_the_changed_stage(default_run, compose, capsys):
    paths, _ = default_run
    run(compose(["eval.limit=3", "stages=[data,critique,eval,report]"], run_dir=paths.root))
    printed = capsys.readouterr().out
    assert "stage data: outputs complete, skipped" in printed
    assert "stage eval: config changed since last run, re-running" in printed
    assert read_json(paths.results)["n"]["math-500"] == 3


def test_eval_only_on_an_existing_checkpoint(default_run, compose, tmp_path):
    trained, _ = default_run
    cfg = compose(["stages=[eval,report]", f"model.path={trained.final_model}", "model.init=pretrained",
                   "eval.benchmarks=[gsm8k,aime24]", "eval.limit=2", "eval.critic=false"])
    run(cfg)
    paths = RunPaths.of(cfg.run_dir)
    assert read_json(paths.results)["n"] == {"gsm8k": 2, "aime24": 2}
    assert read_json(paths.eval_results)["model"] == str(trained.final_model)


def test_failed_stage_leaves_no_completion_marker(compose):
    # A mix the data cannot fill fails inside the train stage, after data and critique are done.
    cfg = compose(["method=cft-sft", "method.sft_ratio=0.99"])
    with pytest.raises(ValueError, match="method.sft_ratio=0.99: needs"):
        run(cfg)
    paths = RunPaths.of(cfg.run_dir)
    assert paths.stage_done("critique").exists() and not paths.stage_done("train").exists()
    assert not paths.final_model.exists() and not paths.results.exists()
    assert not list(paths.root.rglob("*.tmp"))


@pytest.mark.parametrize("text,error", [
    ('{"question": "q", "response": "r"}\n{"question": "q2", "response": \n', ":2: not valid JSON"),
    ('{"question": "q"}\n', ":1.*response"),  # a required field missing
], ids=["not-json", "missing-field"])
def test_malformed_user_dataset_fails_naming_file_and_line(compose, tmp_path, text, error):
    data = tmp_path / "mine.jsonl"
    data.write_text(text)
    cfg = compose(["dataset=jsonl", f"dataset.path={data}"])
    with pytest.raises(DataError, match=re.escape(str(data)) + error):
        run(cfg)
    assert not RunPaths.of(cfg.run_dir).records.exists()


@pytest.mark.parametrize("overrides,key", [
    (["eval.backend=vllm"], "eval.backend"),
    (["dataset.noisy_generator=tiny", "dataset.noisy_generator_backend=vllm"], "dataset.noisy_generator_backend"),
])
def test_missing_vllm_fails_before_any_stage(compose, overrides, key):
    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed")
    cfg = compose(overrides)
    with pytest.raises(ConfigError, match=f'{key}=vllm needs vLLM, which is not installed'):
        run(cfg)
    assert not RunPaths.of(cfg.run_dir).stages_dir.exists()


def test_generated_noisy_responses_follow_their_generator(compose):
    """The data stage's outputs depend on the generating model and engine only when it generates:
    a new tiny architecture re-generates the noisy responses (they were reused, stale), while a
    changed vLLM setting leaves a dataset with shipped responses (and its training) alone."""
    from cft.pipeline import fingerprint

    gen = ["dataset.noisy_generator=tiny"]
    assert fingerprint(compose(gen), "data", "") != fingerprint(compose([*gen, "model.arch.num_hidden_layers=3"]), "data", "")
    assert fingerprint(compose(gen), "data", "") != fingerprint(compose([*gen, "vllm.max_model_len=512"]), "data", "")
    assert fingerprint(compose([]), "data", "") == fingerprint(compose(["vllm.max_model_len=512"]), "data", "")
