"""cft.generation on CPU without vLLM: stop tokens from the tokenizer, the cut at stop strings
(golden: tests/golden/stop_cut.json), the same prompt ids as training (BOS), and a model whose
eos is not its template's end-of-turn (as Qwen base models) stopping where its turn ends."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import ROOT
from cft.generation import STOP_STRINGS, Stopping, cut, prepends_bos, prompt_ids, stop_token_ids

GOLDEN = json.loads((ROOT / "tests" / "golden" / "stop_cut.json").read_text())
# What the base-like model was trained to write: an answer, its end of turn, then a next turn.
ANSWER = "The answer is $\\boxed{1}$."
PAST_THE_END = "<|im_end|>\n<|im_start|>user\nAnd now? $\\boxed{2}$"


def test_stop_strings_are_the_official_ones():
    assert list(STOP_STRINGS) == GOLDEN["stop_strings"]


@pytest.mark.parametrize("case", GOLDEN["cases"], ids=lambda c: c["name"])
def test_cut_golden(case):
    assert cut(case["raw"]) == case["cut"]


def retokenized(source: Path, out: Path, **tokens) -> Path:
    """A copy of a tiny model whose tokenizer/config name other special tokens (eos, pad)."""
    from transformers import AutoConfig

    from cft.models import load_tokenizer

    shutil.copytree(source, out, dirs_exist_ok=True)
    tok_cfg = json.loads((out / "tokenizer_config.json").read_text())
    (out / "tokenizer_config.json").write_text(json.dumps({**tok_cfg, **tokens}))
    tok = load_tokenizer(str(out))
    config = AutoConfig.from_pretrained(out)
    config.eos_token_id, config.pad_token_id = tok.eos_token_id, tok.pad_token_id
    config.save_pretrained(out)
    gen = json.loads((out / "generation_config.json").read_text())
    gen.update(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    (out / "generation_config.json").write_text(json.dumps(gen))
    return out


def base_like_model(tiny_source: Path, out: Path, prompts: list[str]) -> Path:
    """The tiny model with a Qwen-base tokenizer layout (eos <|endoftext|>, end of turn
    <|im_end|>), trained to answer each prompt with ANSWER, its end of turn and an invented next
    turn: a backend that does not stop at <|im_end|> by id shows text past the end."""
    from test_eval import overfit

    model = retokenized(tiny_source, out, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    assert overfit(model, model, [(p, ANSWER + PAST_THE_END) for p in prompts], steps=60) < 0.05
    return model


def math_prompts(n: int) -> list[str]:
    from cft.benchmarks import SHIPPED, get_benchmark
    from cft.templates import eval_prompt

    return [eval_prompt("qwen25-math-cot", it["question"]) for it in get_benchmark("math-500").load(str(SHIPPED), n)]


def test_stop_ids_come_from_the_tokenizer(tiny_source, tmp_path, tiny_tokenizer):
    from cft.models import load_tokenizer

    ids = tiny_tokenizer.convert_tokens_to_ids
    # tiny: eos is <|im_end|>; <|endoftext|> (its pad) is an end token too
    assert stop_token_ids(tiny_tokenizer) == [ids("<|im_end|>"), ids("<|endoftext|>")]
    # a Qwen base model's layout: eos <|endoftext|>, and the template's <|im_end|> still stops
    base = load_tokenizer(str(retokenized(tiny_source, tmp_path / "base", eos_token="<|endoftext|>")))
    assert stop_token_ids(base) == [ids("<|endoftext|>"), ids("<|im_end|>")]


def test_pad_that_ends_the_turn_is_where_the_completion_ends(tiny_source, tmp_path):
    """Instruct models whose pad is <|im_end|>: the old backend removed the pad's text before
    cutting, so the end of turn vanished and the invented next turn stayed."""
    from cft.models import load_tokenizer

    tok = load_tokenizer(str(retokenized(tiny_source, tmp_path / "m", pad_token="<|im_end|>")))
    ids = tok(ANSWER + PAST_THE_END, add_special_tokens=False)["input_ids"]
    assert Stopping.of(tok).finish(tok, ids) == ANSWER
    # even with no stop id at all, the cut at the stop string still ends it
    assert Stopping((), STOP_STRINGS).finish(tok, ids) == ANSWER


@pytest.mark.parametrize("template", ["qwen", "deepseek"])
def test_eval_prompt_ids_open_like_training(tiny_source, tmp_path, template):
    """Issue #11 point 8: the leading tokens the model was trained with (BOS for DeepSeek) are
    the leading tokens both eval backends get."""
    from cft.templates import render
    from cft.train.format import tokenize
    from cft.models import load_tokenizer

    tok = load_tokenizer(str(retokenized(tiny_source, tmp_path / "m", bos_token="<|endoftext|>")))
    ex = {"id": "x", "prompt": "What is $1+1$?", "target": "2"}
    trained = tokenize(ex, tok, template, 512)["input_ids"]
    ids = prompt_ids(tok, render(ex, template)[0], prepends_bos(tok, template))
    assert trained[: len(ids)] == ids
    assert (ids[0] == tok.bos_token_id) == (template == "deepseek")


def test_transformers_stops_at_the_end_of_turn(tiny_source, tmp_path):
    """A model whose eos (<|endoftext|>) is not its template's end of turn stops at <|im_end|>:
    no completion holds text past it."""
    from cft.config import ModelConfig
    from cft.generation import TransformersGenerator
    from omegaconf import OmegaConf

    prompts = math_prompts(3)
    model = base_like_model(tiny_source, tmp_path / "base", prompts)
    cfg = OmegaConf.structured(ModelConfig(name="base", path=str(model), dtype="float32", attn_implementation="sdpa"))
    gen = TransformersGenerator.load(str(model), cfg, batch_size=2)
    out = dict(gen.generate([prompt_ids(gen.tokenizer, p) for p in prompts], max_new_tokens=40))
    assert [out[i] for i in range(3)] == [ANSWER] * 3


def test_vllm_settings_reach_the_engine_and_the_server():
    from omegaconf import OmegaConf

    from cft.config import VLLMConfig
    from cft.generation import VLLMServer, visible_gpus, vllm_engine_args

    cfg = OmegaConf.structured(VLLMConfig(tensor_parallel_size=0, max_model_len=4096, dtype="bfloat16", seed=3))
    args = vllm_engine_args(cfg, "/m")
    assert args["tensor_parallel_size"] == 1  # 0 = chosen by the layout (test_plan), never "every GPU"
    assert (args["max_model_len"], args["dtype"], args["seed"]) == (4096, "bfloat16", 3)
    assert args["enforce_eager"] == (visible_gpus() == 0)
    server = VLLMServer("/m", cfg, served_name="teacher")
    server.port = 8123
    cmd = " ".join(server.command())
    assert "--port 8123 --served-model-name teacher" in cmd and "--max-model-len 4096" in cmd
    assert "--tensor-parallel-size" in cmd and "--host 127.0.0.1" in cmd


def test_greedy_ignores_the_models_sampling_defaults(tiny_source, tmp_path):
    """Qwen2.5-Instruct ships generation_config.json with repetition_penalty 1.05 (and sampling
    knobs): transformers fills every field generate() leaves unset from it, so "greedy" was
    penalised. Now both backends decode greedily with the library's neutral settings: the same
    completions as the same weights without those fields."""
    from omegaconf import OmegaConf

    from cft.config import ModelConfig
    from cft.generation import TransformersGenerator

    chatty = tmp_path / "chatty"
    shutil.copytree(tiny_source, chatty)
    gen_cfg = json.loads((chatty / "generation_config.json").read_text())
    gen_cfg.update(repetition_penalty=1.5, do_sample=True, temperature=0.7, top_p=0.8, top_k=20)
    (chatty / "generation_config.json").write_text(json.dumps(gen_cfg))
    outs = []
    for source in (tiny_source, chatty):
        cfg = OmegaConf.structured(ModelConfig(name="m", path=str(source), dtype="float32", attn_implementation="sdpa"))
        gen = TransformersGenerator.load(str(source), cfg, batch_size=4)
        # What generate() resolves when a call leaves a field unset (transformers 5,
        # GenerationMixin._prepare_generation_config): the library's defaults, not the file's.
        used = gen.model._prepare_generation_config(None)[0]
        assert (used.repetition_penalty, used.do_sample, used.temperature, used.top_k) == (1.0, False, 1.0, 50)
        outs.append(dict(gen.generate([prompt_ids(gen.tokenizer, p) for p in math_prompts(4)], max_new_tokens=24)))
    assert outs[0] == outs[1]


def test_engine_workers_shard_prompts_and_merge_them_in_order(tiny_source):
    """Data-parallel generation (one engine per GPU on a node): two engine processes on CPU, each
    on its shard, give exactly the one-engine completions under the same prompt indices."""
    from omegaconf import OmegaConf

    from cft.config import ModelConfig
    from cft.generation import DataParallelGenerator, TransformersGenerator
    from cft.resources import EngineLayout

    cfg = OmegaConf.structured(ModelConfig(name="m", path=str(tiny_source), dtype="float32", attn_implementation="sdpa"))
    one = TransformersGenerator.load(str(tiny_source), cfg, batch_size=4)
    ids = [prompt_ids(one.tokenizer, p) for p in math_prompts(5)]
    expected = dict(one.generate(ids, max_new_tokens=12))
    two = DataParallelGenerator("transformers", str(tiny_source), cfg, None, None, 4,
                                EngineLayout(2, 1, 0, 0, True, "two CPU engines"))
    try:
        got = list(two.generate(ids, max_new_tokens=12))
        again = dict(two.generate(ids[:3], max_new_tokens=12))  # the same workers serve the next call
    finally:
        two.close()
    assert sorted(i for i, _ in got) == list(range(5)) and dict(got) == expected
    assert again == {i: expected[i] for i in range(3)}
    assert not two.dir.exists()  # both engines exited cleanly: their logs went with them


def test_every_child_gets_a_clean_single_process_environment():
    """Under torchrun, rank 0 starts the eval stage, engine workers and `vllm serve`: none of
    them may see the launcher's rendezvous (vLLM's process-group setup would pick it up), vLLM
    workers are spawned, not forked, and each engine sees its own GPUs; a vLLM engine asked for
    inside a launched process goes to a worker."""
    from cft.distributed import child_env
    from cft.generation import in_workers
    from cft.resources import EngineLayout

    torchrun = {"RANK": "0", "WORLD_SIZE": "8", "LOCAL_RANK": "0", "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29500",
                "TORCHELASTIC_USE_AGENT_STORE": "True", "TORCHELASTIC_RUN_ID": "x", "PATH": "/bin",
                "CUDA_VISIBLE_DEVICES": "0,1,2,3,4,5,6,7"}
    env = child_env("6", torchrun)
    assert not {k for k in env if k in torchrun and k not in ("PATH", "CUDA_VISIBLE_DEVICES")}
    assert env["VLLM_WORKER_MULTIPROC_METHOD"] == "spawn" and env["CUDA_VISIBLE_DEVICES"] == "6"
    assert env["PATH"] == "/bin" and str(ROOT) in env["PYTHONPATH"]
    one = EngineLayout(1, 1, 1, 0, True, "")
    assert in_workers("vllm", one, torchrun) and not in_workers("vllm", one, {"PATH": "/bin"})
    assert not in_workers("transformers", one, torchrun)
    assert in_workers("transformers", EngineLayout(8, 1, 8, 0, True, ""), {})
