"""The resource plan (cft/resources.py, `python -m cft.plan`): engine layouts over a table of real
models and GPU counts, the data-parallel shard/merge round trip, the training-memory estimate
against the published rules, and the two commands of issue #20."""
from __future__ import annotations

import json

import pytest

from cft.config import compose_config
from cft.plan import PlanError, check_fits
from cft.resources import (KNOWN_ARCHS, Arch, arch_of, cuda_visible_devices,
                           engine_layout, layout_for, merge, plan, shard, train_memory,
                           valid_tensor_parallel_sizes)
from cft.validation import ConfigError

QWEN7B, QWEN32B = KNOWN_ARCHS["Qwen/Qwen2.5-Math-7B"], KNOWN_ARCHS["Qwen/Qwen2.5-32B-Instruct"]
QWEN15B, DEEPSEEK = KNOWN_ARCHS["Qwen/Qwen2.5-Math-1.5B"], KNOWN_ARCHS["deepseek-ai/deepseek-math-7b-base"]
# A model whose 30 heads (2 x 3 x 5) rule out tp=4 and 8, about the size of DeepSeek-Math-7B.
HEADS30 = Arch(3840, 30, 30, 30, 11008, 102400, 4096, tie_word_embeddings=False)


def layout(arch, gpus, memory, max_len=None, tp=0):
    return engine_layout(arch.num_attention_heads, arch.num_key_value_heads, arch.n_params(), 2, gpus, memory,
                         0.9, max_len or arch.max_position_embeddings, tp, num_layers=arch.num_hidden_layers,
                         head_dim=arch.dim)


def test_parameter_counts_match_the_model_cards():
    """Counted from the architecture numbers: the sizes the hub reports."""
    got = {name: round(a.n_params() / 1e9, 2) for name, a in KNOWN_ARCHS.items()}
    assert got["Qwen/Qwen2.5-Math-7B"] == 7.62 and got["Qwen/Qwen2.5-32B-Instruct"] == 32.76
    assert got["Qwen/Qwen2.5-Math-1.5B"] == 1.54 and got["deepseek-ai/deepseek-math-7b-base"] == 6.91


# (model, GPUs, GB per GPU, max_model_len) -> (engines, tensor-parallel size, idle GPUs)
LAYOUTS = [
    (QWEN7B, 8, 80, None, (8, 1, 0)),        # never tp=8: 8 does not divide 28 heads
    (QWEN7B, 8, 24, None, (8, 1, 0)),
    (QWEN7B, 8, 16, None, (4, 2, 0)),        # 15.2 GB of weights: two GPUs per engine
    (QWEN15B, 8, 80, None, (8, 1, 0)),
    (QWEN32B, 8, 80, None, (4, 2, 0)),       # its 32K context needs a second GPU's KV room ...
    (QWEN32B, 8, 80, 4096, (8, 1, 0)),       # ... a 4K one fits a single GPU
    (QWEN32B, 8, 24, None, (2, 4, 0)),
    (QWEN32B, 4, 24, None, (1, 4, 0)),
    (DEEPSEEK, 8, 80, None, (8, 1, 0)),
    (DEEPSEEK, 8, 16, None, (4, 2, 0)),
    (HEADS30, 8, 8, None, (2, 3, 2)),        # tp=3: the smallest that fits and divides 30; 2 GPUs idle
    (QWEN7B, 1, 80, None, (1, 1, 0)),
]


@pytest.mark.parametrize("arch,gpus,memory,max_len,want", LAYOUTS)
def test_engine_layout_table(arch, gpus, memory, max_len, want):
    got = layout(arch, gpus, memory, max_len)
    assert got.fits, got.reason
    assert (got.engines, got.tensor_parallel_size, got.idle_gpus) == want, got.reason
    assert arch.num_attention_heads % got.tensor_parallel_size == 0
    assert got.kv_cache_tokens >= got.max_model_len  # vLLM starts only with room for one full sequence
    assert got.device_groups == [list(range(e * want[1], (e + 1) * want[1])) for e in range(want[0])]


def test_tensor_parallel_sizes_are_those_vllm_accepts():
    """Divide the attention heads; divide the KV heads or replicate them (a multiple of them)."""
    assert valid_tensor_parallel_sizes(28, 4, 8) == [1, 2, 4]
    assert valid_tensor_parallel_sizes(12, 2, 12) == [1, 2, 4, 6, 12]
    assert valid_tensor_parallel_sizes(40, 8, 8) == [1, 2, 4, 8]
    assert valid_tensor_parallel_sizes(30, 30, 8) == [1, 2, 3, 5, 6]


def test_a_requested_size_that_does_not_divide_the_heads_names_the_key_and_what_works():
    with pytest.raises(ConfigError, match=r"vllm.tensor_parallel_size=8 .*28 attention heads.*\[1, 2, 4\]"):
        layout(QWEN7B, 8, 80, tp=8)
    with pytest.raises(ConfigError, match="needs 4 GPUs; 2 visible"):
        layout(QWEN7B, 2, 80, tp=4)
    got = layout(QWEN7B, 8, 80, tp=2)  # a valid request is kept: 4 engines of 2 GPUs
    assert (got.engines, got.tensor_parallel_size) == (4, 2)


def test_a_model_too_large_for_every_size_says_so():
    got = layout(QWEN32B, 2, 24)
    assert not got.fits and "does not fit" in got.reason


def test_cpu_layout_and_transformers_backend():
    assert (lambda l: (l.engines, l.tensor_parallel_size, l.fits))(layout(QWEN7B, 0, None)) == (1, 1, True)
    tf = layout_for(QWEN32B, 8, 24, backend="transformers", batch_size=16, max_new_tokens=2048)
    assert tf.tensor_parallel_size == 1 and not tf.fits and "cannot split" in tf.reason
    kv = QWEN7B.kv_bytes_per_token(2)
    assert kv == 2 * 28 * 4 * 128 * 2  # per-token K and V: 56 KiB for Qwen2.5-7B in bf16


def test_cuda_visible_devices_maps_through_the_parent():
    assert cuda_visible_devices([2, 3], "4,5,6,7") == "6,7"
    assert cuda_visible_devices([1], "") == "1"


@pytest.mark.parametrize("strided", [False, True])
def test_shard_merge_round_trip(strided):
    for n in range(0, 12):
        items = [f"q{i}" for i in range(n)]
        for engines in (1, 2, 3, 5):
            shards = shard(items, engines, strided)
            assert len(shards) == engines and max(map(len, shards)) - min(map(len, shards)) <= 1
            results = [[f"answer to {q}" for q in s] for s in shards]  # each engine answers its shard
            assert merge(results, n, strided) == [f"answer to {q}" for q in items]
    assert shard(list("abcde"), 2) == [["a", "b", "c"], ["d", "e"]]
    assert shard(list("abcde"), 2, strided=True) == [["a", "c", "e"], ["b", "d"]]
    with pytest.raises(ValueError, match="expected"):  # a lost result is an error, not a shift
        merge([["x", "y"], ["z"]], 4, strided)


def test_model_states_follow_the_16_bytes_per_parameter_rule():
    """ZeRO paper: mixed-precision Adam keeps 2 + 2 + 12 bytes per parameter; stage 1 splits the
    12 over N GPUs, stage 2 also the gradients' 2, stage 3 also the weights' 2."""
    n = QWEN7B.n_params()
    kw = dict(hidden=3584, layers=28, vocab=152064, intermediate=18944, seq_len=2048, micro_batch=8,
              largest_layer_params=QWEN7B.largest_layer_params())
    one = train_memory(n, zero_stage=2, world_size=1, **kw)
    assert one.model_states == pytest.approx(16 * n / 1e9) and 120 < one.model_states < 124  # ~122 GB
    assert train_memory(n, zero_stage=0, precision="fp32-master", **kw).model_states == pytest.approx(16 * n / 1e9)
    for stage, per_param in ((1, 2 + 2 + 12 / 8), (2, 2 + (2 + 12) / 8), (3, (2 + 2 + 12) / 8)):
        got = train_memory(n, zero_stage=stage, world_size=8, **kw)
        working_set = 4 * QWEN7B.largest_layer_params() / 1e9 if stage == 3 else 0
        assert got.model_states == pytest.approx(per_param * n / 1e9 + working_set), stage
    off = train_memory(n, zero_stage=2, world_size=1, offload_optimizer=True, **kw)
    assert off.optimizer == 0 and off.gradients == 0 and off.cpu_memory_gb == pytest.approx(16 * n * 1.5 / 1e9)


def test_activations_follow_korthikanti_et_al():
    """sbh(34 + 5as/h) bytes per layer without recomputation (GPT's MLP, eager attention), the
    score term gone with flash-attention, 2sbh per layer plus one recomputed layer with it."""
    s, b, h, a, layers = 2048, 4, 1024, 16, 10
    kw = dict(hidden=h, layers=layers, vocab=1000, heads=a, seq_len=s, micro_batch=b)
    full = train_memory(10**8, attention="eager", gradient_checkpointing=False, **kw)
    assert full.activations * 1e9 == pytest.approx(layers * s * b * h * (34 + 5 * a * s / h))
    flash = train_memory(10**8, attention="flash", gradient_checkpointing=True, **kw)
    assert flash.activations * 1e9 == pytest.approx(layers * 2 * s * b * h + s * b * h * 34)
    assert flash.logits * 1e9 == pytest.approx(s * b * 1000 * 10)  # bf16 + fp32 upcast + fp32 log-softmax
    assert flash.peak(False) > flash.peak(True)


def plan_json(tmp_path, *args):
    from cft.plan import main

    out = tmp_path / "plan.json"
    rc = main(["model=qwen2.5-math-7b", *args, "--gpu-memory-gb", "80", "--json", str(out)])
    return rc, json.loads(out.read_text())


def test_plan_cli_7b_on_8_gpus_fits(tmp_path, capsys):
    rc, p = plan_json(tmp_path, "--gpus", "8")
    assert rc == 0 and p["train"]["fits"] is True and p["train"]["zero_stage"] == 2
    assert p["train"]["world_size"] == 8 and p["train"]["grad_accum"] == 8
    assert 40 < p["train"]["peak_memory_gb"] < 80
    assert (p["eval"]["engines"], p["eval"]["tensor_parallel_size"]) == (8, 1)
    assert "fits" in capsys.readouterr().out


def test_plan_cli_7b_on_1_gpu_is_refused_naming_what_fits(tmp_path, capsys):
    rc, p = plan_json(tmp_path, "--gpus", "1")
    assert rc == 1 and p["train"]["fits"] is False and p["train"]["peak_memory_gb"] > 120
    options = p["train"]["fitting_overrides"]
    assert ["deepspeed.offload_optimizer=cpu"] in [o["overrides"] for o in options]
    assert any(o["gpus"] > 1 and o["overrides"] == [] for o in options)
    text = capsys.readouterr().out
    assert "DOES NOT FIT" in text and "would fit" in text and "LoRA" in text
    # Each proposal, composed as a user would type it, gives a plan that fits.
    for o in options:
        cfg = compose_config(["model=qwen2.5-math-7b", *o["overrides"]])
        assert plan(cfg, o["gpus"], 80)["train"]["fits"], o


def test_check_fits_stops_before_any_stage():
    cfg = compose_config(["model=qwen2.5-math-7b"])
    with pytest.raises(PlanError, match="(?s)will not fit.*would fit"):
        check_fits(cfg, gpus=1, gpu_memory_gb=80)
    # 8 GPUs visible but one process (no torchrun): ZeRO-2 has nothing to split over.
    with pytest.raises(PlanError, match="torchrun --nproc_per_node 8 -m cft.main"):
        check_fits(cfg, gpus=8, gpu_memory_gb=80)
    assert check_fits(cfg, gpus=8, gpu_memory_gb=80, world_size=8)["eval"]["engines"] == 8
    assert check_fits(cfg, gpus=0) is None  # CPU: nothing to check


def test_the_headline_command_on_one_gpu_stops_before_the_data_stage(compose, tmp_path, monkeypatch):
    """`python -m cft.main model=qwen2.5-math-7b` where one 80 GB GPU is visible: refused before
    any stage wrote anything (it used to run data and critique, then run out of memory at
    train); check_resources=false runs anyway."""
    import cft.plan
    from cft import pipeline

    monkeypatch.setattr(cft.plan, "detect_gpus", lambda: (1, 80.0))  # what NVML would report there
    cfg = compose(["model=qwen2.5-math-7b"], run_dir=tmp_path / "run")
    with pytest.raises(PlanError, match="deepspeed.offload_optimizer=cpu"):
        pipeline.run(cfg)
    assert not (tmp_path / "run").exists()


def test_plan_reads_the_architecture_it_will_run(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2", "hidden_size": 64, "num_hidden_layers": 2,
                                                      "num_attention_heads": 4, "num_key_value_heads": 2,
                                                      "intermediate_size": 128, "vocab_size": 100}))
    assert arch_of(str(tmp_path)).num_key_value_heads == 2
    tiny = compose_config([])
    assert arch_of("", tiny.model).hidden_size == tiny.model.arch.hidden_size
    with pytest.raises(ConfigError, match="KNOWN_ARCHS"):
        arch_of("nobody/no-such-model")
    p = plan(compose_config(["teacher=vllm", "teacher.model=Qwen/Qwen2.5-32B-Instruct"]), 8, 80)
    assert p["generation"]["teacher"]["tensor_parallel_size"] == 2


def test_an_engine_waits_for_the_memory_it_claims_and_names_a_gpu_that_stays_full():
    """vLLM aborts when less than gpu_memory_utilization of a GPU is free; the training ranks
    and the previous engine free theirs moments before: wait, then fail naming the GPU."""
    from cft.resources import wait_for_gpu_memory

    readings = iter([[("0", 30.0, 80.0), ("1", 79.0, 80.0)], [("0", 60.0, 80.0), ("1", 79.0, 80.0)],
                     [("0", 78.0, 80.0), ("1", 79.0, 80.0)]])
    slept = []
    assert wait_for_gpu_memory(0.9, read=lambda: next(readings), sleep=slept.append, poll_s=2) == 4.0
    assert slept == [2, 2]
    with pytest.raises(RuntimeError, match=r"GPU 3: 10.0 of 80.0 GB free.*vllm.gpu_memory_utilization"):
        wait_for_gpu_memory(0.9, timeout_s=6, read=lambda: [("3", 10.0, 80.0)], sleep=lambda s: None)
    assert wait_for_gpu_memory(0.9, read=list) == 0.0  # no NVML (CPU): nothing to wait for
