"""Config composition: every option of every group composes; bad overrides fail naming the key."""
from __future__ import annotations

import re

import pytest

from cft.pipeline import run
from cft.validation import ConfigError, grad_accum_steps, validate
from helpers import ROOT, cli

GROUPS = ["model", "dataset", "method", "teacher", "cluster", "deepspeed", "eval", "recipe"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (ROOT / "conf" / group).glob("*.yaml"))


def test_every_yaml_opens_with_a_comment():
    """A one-line description; an experiment's or a cluster's names the command that runs it."""
    for path in (ROOT / "conf").rglob("*.yaml"):
        first = [l for l in path.read_text().splitlines() if not l.startswith("# @package")][0]
        assert first.startswith("# "), f"{path} does not open with a one-line comment"
        if path.parent.name in ("experiment", "cluster"):
            assert "python -m cft.main" in first, path


@pytest.mark.parametrize("group", GROUPS)
def test_every_option_composes(compose, group, tmp_path):
    assert options(group), f"conf/{group} is empty"
    for option in options(group):
        overrides = [f"{group}={option}"]
        if group == "dataset" and option == "jsonl":
            (tmp_path / "x.jsonl").touch()
            overrides.append(f"dataset.path={tmp_path / 'x.jsonl'}")
        if group == "dataset" and option == "one-shot-pi1":  # a problem without responses: generate them
            overrides.append("dataset.noisy_generator=tiny")
        if group == "teacher" and option == "openai":
            overrides += ["teacher.base_url=http://127.0.0.1:1/v1", "teacher.model=m"]
        if group == "cluster" and option.startswith("slurm"):
            overrides += ["hydra.launcher.partition=debug"]
        cfg = compose(overrides)
        assert cfg[group].name == option
        validate(cfg)


def test_paper_recipe_for_deepseek_math(compose):
    cfg = validate(compose(["model=deepseek-math", "method=cft"]))
    assert cfg.model.path == "deepseek-ai/deepseek-math-7b-base"
    assert cfg.model.eval_template == "deepseek-math"
    m = cfg.method
    assert (m.lr, m.scheduler, m.warmup_ratio, m.global_batch_size, m.epochs, m.cutoff_len, m.bf16) == (
        5e-6, "cosine", 0.1, 512, 1.0, 2048, True)
    assert grad_accum_steps(cfg, 1) == 512 // 8 and grad_accum_steps(cfg, 8) == 8
    assert "grad_accum_steps" not in cfg.method  # derived where the Trainer is built, never stored
    with pytest.raises(ConfigError, match="not divisible by world_size \\(3\\)"):
        validate(compose(["model=deepseek-math"]), world_size=3)


def test_tiny_overrides_only_what_cpu_needs(compose):
    tiny, big = compose(["model=tiny"]), compose(["model=qwen2.5-math-7b"])
    assert tiny.method.lr != big.method.lr and tiny.method.bf16 is False
    for key in ("scheduler", "warmup_ratio", "epochs", "target", "keep"):
        assert tiny.method[key] == big.method[key]


def test_cfg_job_prints_composed_config(tmp_path):
    out = cli("model=deepseek-math", "method=cft", "--cfg", "job", outputs=tmp_path, cache=tmp_path, check=True)
    assert "deepseek-ai/deepseek-math-7b-base" in out.stdout and "lr: 5.0e-06" in out.stdout


@pytest.mark.parametrize("override, needle", [
    ("method.lr=abc", "method.lr"),
    ("model=nope", "model/nope"),
    ("method.lrr=1", "lrr"),
    ("eval.limit=many", "eval.limit"),
])
def test_bad_override_fails_naming_the_key(override, needle, tmp_path):
    out = cli(override, "--cfg", "job", outputs=tmp_path, cache=tmp_path)
    assert out.returncode != 0 and needle in out.stderr


def test_sft_teacher_with_released_critiques_fails_naming_both(compose):
    """teacher=released ships critiques; training them as 'solutions' would be a silent mix-up."""
    cfg = compose(["dataset=webinstruct-cft-50k", "teacher=released", "method=sft-teacher"])
    with pytest.raises(ConfigError, match="method=sft-teacher .* teacher=released only ships critiques"):
        validate(cfg)
    validate(compose(["dataset=webinstruct-cft-50k", "teacher=released", "method=sft-teacher", "stages=[eval]"]))


@pytest.mark.parametrize("overrides,message", [
    (["model=qwen2.5-7b", "method.global_batch_size=100"], "method.global_batch_size"),
    (["method.target=imitation"], "method.target"),
    (["stages=[data,trian]"], "stages"),
    (["deepspeed=zero2", "deepspeed.offload_param=cpu"], "offload_param"),
    (["model.packing=yes"], "model.packing"),
    (["eval.benchmarks=[math-500,nope]"], "eval.benchmarks: unknown benchmark"),
    (["eval.select_benchmark=math5000"], "eval.select_benchmark: unknown benchmark"),
    (["model.eval_template=alpaca"], "model.eval_template='alpaca' is unknown"),
    (["model.train_template=llama9"], "model.train_template='llama9' is unknown"),
    (["dataset.path=/nonexistent/train.jsonl"], "dataset.path='/nonexistent/train.jsonl': file not found"),
    (["model.path=/nonexistent/ckpt", "model.init=pretrained"],
     "model.path='/nonexistent/ckpt': no such local model directory"),
    (["teacher=vllm", "teacher.mode=batch"], "teacher.mode=batch needs the Batch API"),
    (["teacher.mode=async"], "teacher.mode='async' is not one of"),
    (["teacher.models=[{name: a},{name: a}]"], "teacher names must be distinct"),
    (["teacher.models=[{name: a, backend: released}]"], "teacher.models[0].backend='released'"),
    (["model=qwen2.5-7b", "dataset.noisy_generator=tiny"], "but model=qwen2.5-7b is pretrained"),
    (["method=cft-sft", "method.sft_ratio=1.0"], "method.sft_ratio=1.0 must be in [0, 1)"),
    (["method=sft", "method.sft_ratio=0.3"], "method.target='response' is not 'critique'"),
])
def test_bad_settings_and_missing_inputs_fail_validation_naming_the_key(compose, overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate(compose(overrides))


def test_missing_benchmark_file_fails_before_the_data_stage(compose, tmp_path):
    """A run whose benchmark file is missing stops before any work, naming the key and the path."""
    (tmp_path / "bench" / "math-500").mkdir(parents=True)  # a user's own set, without gsm8k
    (tmp_path / "bench" / "math-500" / "test.jsonl").write_text('{"problem": "1+1?", "answer": "2"}\n')
    cfg = compose(["eval.benchmarks=[math-500,gsm8k]"], run_dir=tmp_path / "run")
    cfg.paths.benchmarks = str(tmp_path / "bench")
    with pytest.raises(ConfigError, match=re.escape(f"eval.benchmarks: benchmark 'gsm8k' has no test set at "
                                                    f"{tmp_path / 'bench' / 'gsm8k' / 'test.jsonl'}")):
        run(cfg)
    assert not (tmp_path / "run" / "data").exists() and not (tmp_path / "run" / "stages").exists()
