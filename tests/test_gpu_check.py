"""The GPU check's CPU rehearsal (`python -m cft.gpu_check OUT --smoke`) and the offline bundle.

The smoke run goes through the functions the GPU run uses; here we check that it passes and that
its JSON holds every field a GPU run fills, each null one with its reason.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import ROOT

# Every field a GPU run fills (dotted paths into gpu_check.json).
FIELDS = [
    "mode", "passed", "elapsed_s", "skipped", "errors", "null_reasons",
    "environment.python", "environment.torch", "environment.cuda", "environment.transformers",
    "environment.gpu_name", "environment.gpu_count", "environment.gpu_memory_gib",
    "environment.attention.sdpa", "environment.attention.flex_attention", "environment.attention.flash_attention_2",
    "environment.packages.deepspeed", "environment.packages.vllm", "environment.auto_attn_implementation",
    "environment.auto_packing", "environment.recipe_7b.per_device_batch_size", "environment.recipe_7b.cutoff_len",
    "throughput.model", "throughput.dtype", "throughput.data_source", "throughput.lengths.mean",
    "throughput.micro_batch", "throughput.global_batch", "throughput.warmup_steps", "throughput.timed_steps",
    "throughput.real_tokens_per_recipe", "throughput.peak_tflops", "throughput.matmul_params",
    "throughput.ratio_real_tokens_per_s",
    *(f"throughput.{r}.{k}" for r in ("reference", "ours")
      for k in ("attn", "packed", "gradient_checkpointing", "real_tokens_per_s", "model_flops_per_s", "mfu",
                "peak_mem_gib", "padding_efficiency", "step_seconds_median", "predicted_peak_gb",
                "measured_over_predicted")),
    "environment.plan_7b",
    "packed_loss.attn", "packed_loss.passed",
    *(f"packed_loss.{dt}.{k}" for dt in ("bfloat16", "float32") for k in ("max_abs_diff", "max_rel_diff", "n_samples")),
    "pipeline.command", "pipeline.passed", "pipeline.seconds", "pipeline.stage_seconds.train",
    "pipeline.train.attn_implementation", "pipeline.train.packing", "pipeline.train.deepspeed_stage",
    "pipeline.eval", "zero2.ran", "zero2.global_step",
    "generation.items", "generation.max_new_tokens", "generation.vllm",
    "step_seconds.throughput", "step_seconds.pipeline",
]


def _get(d: dict, path: str):
    for key in path.split("."):
        assert isinstance(d, dict) and key in d, f"gpu_check.json lacks {path!r}"
        d = d[key]
    return d


def _check_json(out: Path) -> dict:
    d = json.loads((out / "gpu_check.json").read_text())
    assert d["passed"] is True and not d["errors"], d["errors"]
    for path in FIELDS:
        if _get(d, path) is None:
            assert d["null_reasons"].get(path), f"{path} is null without a reason"
    assert len(_get(d, "generation.transformers")) == 2  # two batch sizes
    assert all(v["problems_per_s"] > 0 for v in d["generation"]["transformers"].values())
    for recipe in ("reference", "ours"):
        assert d["throughput"][recipe]["real_tokens_per_s"] > 0
    assert d["throughput"]["ours"]["packed"] and not d["throughput"]["reference"]["packed"]
    assert d["packed_loss"]["float32"]["max_abs_diff"] < 1e-4
    assert all(d["pipeline"]["stage_seconds"].values())  # data, critique, train, eval, report all ran
    assert "PASSED" in (out / "summary.md").read_text()
    return d


def _env(cache_dir: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(CFT_CACHE=str(cache_dir), WANDB_MODE="disabled", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return env


def test_peak_table_and_model_flops(tiny_source):
    from transformers import AutoModelForCausalLM

    from cft.throughput import matmul_params, model_flops, peak_tflops

    assert peak_tflops("NVIDIA H100 80GB HBM3") == 989.0 and peak_tflops("NVIDIA H200") == 989.0
    assert peak_tflops("NVIDIA H100 PCIe") == 756.0 and peak_tflops("Tesla T4") is None
    model = AutoModelForCausalLM.from_pretrained(str(tiny_source))
    c = model.config
    n = matmul_params(model)  # tied LM head counted: it multiplies even though it is the embedding
    assert n == sum(p.numel() for p in model.parameters())
    by_hand = 6 * n * 100 + 6 * c.num_hidden_layers * c.num_attention_heads * c.head_dim * 100 ** 2
    assert model_flops(model, [100]) == by_hand
    assert model_flops(model, [60, 40]) < model_flops(model, [100])  # packing: attention is per sample


@pytest.mark.slow
def test_offline_bundle_installs_without_index_and_runs_the_smoke_check(tmp_path, cache_dir):
    """A fresh venv holding only torch 2.13.0 + transformers 5 (the node's own stack) gets cft from
    the bundle with --no-index; its torch/transformers stay as they were; the smoke run passes
    and fills every field (the one smoke run of the suite: it runs from the installed wheel)."""
    node = tmp_path / "node"
    subprocess.run([sys.executable, "-m", "venv", str(node)], check=True)
    py = str(node / "bin" / "python")
    env = _env(cache_dir)

    def sh(*cmd, **kw):
        r = subprocess.run(list(cmd), env=env, capture_output=True, text=True, **kw)
        assert r.returncode == 0, f"{cmd}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
        return r.stdout

    sh(py, "-m", "pip", "install", "-q", "torch==2.13.0", "transformers>=5,<6")
    freeze = sh(py, "-m", "pip", "freeze")
    (tmp_path / "node-freeze.txt").write_text(freeze)
    bundle = tmp_path / "bundle"
    sh(sys.executable, str(ROOT / "launch" / "offline_bundle.py"), str(bundle),
       "--python-version", f"{sys.version_info.major}.{sys.version_info.minor}",
       "--node-freeze", str(tmp_path / "node-freeze.txt"))
    assert not list(bundle.glob("torch-*")) and not list(bundle.glob("transformers-*"))
    sh(py, "-m", "pip", "install", "-q", "--no-index", "--find-links", str(bundle), "cft")
    after = sh(py, "-m", "pip", "freeze")
    for pkg in ("torch==", "transformers=="):
        assert [x for x in freeze.splitlines() if x.startswith(pkg)] == [x for x in after.splitlines() if x.startswith(pkg)]
    where = sh(py, "-c", "import cft, cft.config; print(cft.__file__); print(cft.config.CONF_DIR)", cwd=tmp_path)
    assert str(node) in where and "cft/conf" in where  # the installed wheel and its own config
    out = tmp_path / "check"
    sh(py, "-m", "cft.gpu_check", str(out), "--smoke", cwd=tmp_path)
    assert _check_json(out)["mode"] == "smoke"


def test_a_run_needing_a_missing_extra_stops_at_once_naming_it(compose, monkeypatch):
    """The bundle leaves out the optional extras: a run that needs one says which, before any work."""
    import importlib.util

    from cft.pipeline import check_packages
    from cft.validation import ConfigError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in ("wandb", "openai") else real(name, *a))
    check_packages(compose(["+experiment=gpu-check"]))  # the GPU check's run needs none of them
    with pytest.raises(ConfigError, match=r"cft\[wandb\]"):
        check_packages(compose(["tracking.mode=offline"]))
    with pytest.raises(ConfigError, match=r"cft\[api\]"):
        check_packages(compose(["teacher=openai", "teacher.model=m", "teacher.base_url=http://x"]))


def test_fp32_loss_check_never_runs_on_flash():
    """flash-attn takes only fp16/bf16: the fp32 packed-loss comparison runs flex_attention
    where our kernel is flash (it reported FAILED on every node with flash-attn)."""
    from cft.gpu_check import loss_check_kernels

    assert loss_check_kernels("flash_attention_2") == {"bfloat16": "flash_attention_2", "float32": "flex_attention"}
    assert loss_check_kernels("flex_attention") == {"bfloat16": "flex_attention", "float32": "flex_attention"}
    assert loss_check_kernels("sdpa") == {"bfloat16": "sdpa", "float32": "sdpa"}
