"""The base-model protocol: Qwen2.5-Math's few-shot chain-of-thought prompts, byte for byte, chosen
per run with `eval.protocol`, and recorded in eval/results.json beside the numbers it produced."""
from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from cft.io import read_json, read_jsonl
from cft.paths import RunPaths
from cft.pipeline import run
from cft.templates import COT_STOPS, eval_protocol
from cft.validation import ConfigError, validate
from helpers import ROOT

GOLDEN = json.loads((ROOT / "tests" / "golden" / "few_shot_cot.json").read_text())


def _protocol(name: str, shots: int = 4, template: str = "qwen25-math-cot"):
    return eval_protocol(OmegaConf.create({"protocol": name, "shots": shots}),
                         OmegaConf.create({"eval_template": template}))


@pytest.mark.parametrize("case", GOLDEN["cases"], ids=lambda c: f"{c['benchmark']}-{c['protocol']}-{c['shots']}")
def test_prompts_are_the_official_evaluations(case):
    """Each golden prompt was built by Qwen2.5-Math's own construct_prompt (see the file's source)."""
    protocol = _protocol(case["protocol"], case["shots"])
    assert protocol.prompt(case["question"], case["benchmark"]) == case["prompt"]


def test_a_completion_ends_where_the_model_starts_the_next_question():
    protocol = _protocol("few-shot-cot")
    invented = "So 2 + 2 = 4. The answer is 4.\n\nQuestion: What is 3 + 3?\nAnswer: 6."
    [[done, untouched]] = protocol.finish_samples([[{"completion": invented, "finish_reason": "length"},
                                                    {"completion": "The answer is 5.", "finish_reason": "stop"}]])
    assert done == {"completion": "So 2 + 2 = 4. The answer is 4.", "finish_reason": "stop"}
    assert untouched == {"completion": "The answer is 5.", "finish_reason": "stop"}
    assert _protocol("zero-shot").finish(invented) == (invented, False)  # the paper's protocol cuts nothing more


def test_the_protocol_is_checked_before_any_work(compose):
    validate(compose(["eval.protocol=few-shot-cot", "eval.shots=8", "eval.benchmarks=[gsm8k]"]))
    with pytest.raises(ConfigError, match="eval.shots=5: eval.protocol=few-shot-cot has 1 to 4 demonstrations "
                                          "for minerva_math"):
        validate(compose(["eval.protocol=few-shot-cot", "eval.shots=5", "eval.benchmarks=[math,minerva_math]"]))
    with pytest.raises(ConfigError, match="eval.protocol='four-shot' is not one of"):
        validate(compose(["eval.protocol=four-shot"]))


def test_results_say_which_protocol_produced_them(compose, tiny_source):
    cfg = compose(["stages=[eval]", "eval.protocol=few-shot-cot", "eval.shots=2", "eval.benchmarks=[gsm8k]",
                   "eval.limit=1", "eval.max_new_tokens=4", "eval.critic=false"])
    run(cfg)
    paths = RunPaths.of(cfg.run_dir)
    assert read_json(paths.eval_results)["protocol"] == {"name": "few-shot-cot", "template": "cot", "shots": 2,
                                                         "stops": list(COT_STOPS)}
    [row] = read_jsonl(paths.eval_samples("gsm8k"))
    assert row["prompt"].startswith("Question: There are 15 trees in the grove.")
    assert row["prompt"].count("Question: ") == 3 and row["prompt"].endswith("\nAnswer:")
