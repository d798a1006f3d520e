"""One-Shot CFT (arXiv 2506.03295): the paper's recipe as a composed config, the CPU recipe end to
end, the critique filter's rule, and candidates from several generators."""
from __future__ import annotations

import json
from collections import Counter

import pytest
from omegaconf import OmegaConf

from cft.config import compose_config
from cft.critique.stage import apply_filters, example_length
from cft.critique.teachers import ReferenceTeacher
from cft.critique.verdict import parse_verdict
from cft.data.generated import generate_noisy_responses
from cft.datasets import load_records
from cft.io import DataError, read_json, read_jsonl
from cft.paths import RunPaths
from cft.pipeline import run
from cft.validation import ConfigError, validate
from helpers import cli

PAPER_MODELS = "qwen2.5-math-1.5b,llama-3.2-3b-instruct,qwen2.5-math-7b,qwen2.5-14b"


def test_paper_recipe_composes_with_the_papers_values(tmp_path):
    """`--cfg job` shows what the paper ran; the sweep covers its four backbones (+ base rows)."""
    out = cli("+experiment=one-shot-cft", "--cfg", "job", outputs=tmp_path)
    job = OmegaConf.create(out.stdout)
    assert job.dataset.name == "one-shot-pi1" and job.dataset.loader == "problems"
    gens = job.dataset.noisy_generators
    assert len(gens) == 10 and job.dataset.noisy_n == 10  # 100 candidates
    assert {"Qwen/Qwen2.5-Math-7B-Instruct", "microsoft/Phi-4-reasoning-plus"} <= {g.path for g in gens}
    assert len(job.teacher.models) == 7 and job.teacher.prompt == "critique-one-shot"
    assert job.teacher.keep == "verdict_matches_reference" and job.teacher.max_critiques == 600
    m = job.method
    assert (m.name, m.lr, m.global_batch_size, m.epochs, m.cutoff_len) == ("cft", 5e-6, 512, 50, 4096)
    assert list(job.eval.benchmarks) == ["math-500", "minerva_math", "olympiadbench", "aime24", "aime25", "amc23"]
    assert job.eval.max_new_tokens == 4096 and job.eval.backend == "vllm"
    assert job.eval.select_checkpoint and job.eval.select_benchmark == "math-500-validation"
    hydra = compose_config(["+experiment=one-shot-cft"], return_hydra_config=True).hydra
    assert hydra.sweeper.params.model == PAPER_MODELS and hydra.sweeper.params.method == "cft,base"


@pytest.mark.parametrize("model", PAPER_MODELS.split(","))
def test_each_paper_model_validates_up_to_its_benchmarks(compose, model):
    """Every sweep job is a valid config (the benchmarks checked as far as they ship here)."""
    from cft.benchmarks import get_benchmark

    cfg = compose(["+experiment=one-shot-cft", f"model={model}"])
    shipped = []
    for name in cfg.eval.benchmarks:
        try:
            get_benchmark(name)
            shipped.append(name)
        except KeyError:  # aime25 lands with its own change
            pass
    cfg.eval.benchmarks = shipped
    validate(cfg)


def test_seed_problem_ships_with_its_label(compose):
    cfg = compose(["+experiment=one-shot-cft", "stages=[data]"])
    [rec] = list(load_records(cfg.dataset))
    assert rec.id == "dsr-pi1" and rec.reference_answer == "12.8"
    assert rec.question.startswith("The pressure \\( P \\) exerted by wind on a sail") and rec.noisy_response is None


def test_problems_loader_names_the_bad_line(compose, tmp_path):
    bad = tmp_path / "seed.jsonl"
    bad.write_text(json.dumps({"question": "1+1?", "answer": "2"}) + "\n" + json.dumps({"question": "2+2?"}) + "\n")
    cfg = compose(["+experiment=one-shot-cft", f"dataset.path={bad}"])
    with pytest.raises(DataError, match=rf"{bad}:2: needs `answer`"):
        list(load_records(cfg.dataset))


def test_problems_without_generators_fail_before_any_stage(compose):
    cfg = compose(["+experiment=one-shot-cft", "dataset.noisy_generators=[]", "eval.benchmarks=[math-500]"])
    with pytest.raises(ConfigError, match="loader=problems.*noisy_generators"):
        validate(cfg)


def _row(i, agrees, length, teacher="t"):
    return {"id": f"r{i}", "teacher": teacher, "question": "q", "noisy_response": "",
            "critique": "x" * length, "teacher_verdict": "right", "agrees_with_reference": agrees}


def test_filter_keeps_matching_verdicts_then_trims_length_extremes():
    rows = ([_row(i, True, 10 + i) for i in range(10)] + [_row(10, False, 15), _row(11, None, 16)])
    teacher = OmegaConf.create({"keep": "verdict_matches_reference", "max_critiques": 6,
                                "drop_disagreements": False, "balance_verdicts": False})
    dropped: dict = {}
    kept = apply_filters(rows, teacher, seed=0, dropped=dropped)
    # the mismatch and the undecided go; of the 10 matching (lengths 11..20), the 2 longest and
    # the 2 shortest go, in turn from the longest
    assert [r["id"] for r in kept] == ["r2", "r3", "r4", "r5", "r6", "r7"]
    assert dropped == {"keep:undecided": 1, "keep:verdict_mismatch": 1, "max_critiques": 4}
    assert apply_filters(rows, OmegaConf.merge(teacher, {"keep": "all", "max_critiques": None}), 0) == rows


@pytest.fixture(scope="module")
def cpu_run(cache_dir, tmp_path_factory):
    from conftest import make_compose

    root = tmp_path_factory.mktemp("one_shot_cpu")
    cfg = make_compose(cache_dir, root / "run", root / "outputs")(["+experiment=one-shot-cft-cpu"])
    return cfg, run(cfg)


@pytest.mark.slow
def test_cpu_recipe_runs_end_to_end(cpu_run):
    cfg, out = cpu_run
    paths = RunPaths.of(cfg.run_dir)
    records = read_jsonl(paths.records)
    assert len(records) == 72 and {r["id"].split("|")[0] for r in records} == {"P_Combinatorics_2"}
    assert out["train"]["n_examples"] == 100 and "math-500" in out["eval"]


@pytest.mark.slow
def test_cpu_recipe_critiques_are_what_the_filter_says(cpu_run):
    cfg, _ = cpu_run
    paths = RunPaths.of(cfg.run_dir)
    records = {r["id"]: r for r in read_jsonl(paths.records)}
    critiques = read_jsonl(paths.critiques)
    summary = read_json(paths.critique_summary)
    # what the two (reference) teachers wrote, and which of it the verdict rule lets through. A
    # request is keyed by (question, response), so a response that CHAMP holds twice gets one
    # critique, written from its first record; CHAMP judges correctness from each conversation's
    # summary, so a copy judged the other way gets a critique whose verdict the rule rejects.
    teacher = ReferenceTeacher(cfg.teacher, records)
    first: dict = {}
    for r in records.values():
        first.setdefault((r["question"], r["noisy_response"]), r)
    written = [dict(r, critique=teacher._critique(first[r["question"], r["noisy_response"]])[0])
               for r in records.values() for _ in ("a", "b")]
    passing = [w for w in written if parse_verdict(w["critique"]) == w["response_correct"]]
    assert len(critiques) == 100 and all(c["agrees_with_reference"] is True for c in critiques)
    assert all(c["teacher_verdict"] == records[c["id"]]["response_correct"] for c in critiques)
    assert Counter(c["teacher"] for c in critiques).keys() == {"teacher-a", "teacher-b"}
    assert summary["n_filtered"] == {"keep:verdict_mismatch": len(written) - len(passing),
                                     "max_critiques": len(passing) - 100}
    # the cap dropped from both ends of the length order: the kept lengths are the middle ones
    lengths = sorted(example_length(w) for w in passing)
    excess = len(lengths) - 100
    assert sorted(example_length(c) for c in critiques) == lengths[excess // 2: len(lengths) - (excess + 1) // 2]


def test_several_generators_give_n_candidates_each(compose):
    """The tiny model twice, as two generators, sampled: n candidates per generator per problem."""
    gens = ("[{name: gen-a, path: tiny, n: 3, temperature: 1.0}, "
            "{name: gen-b, path: tiny, n: 2, temperature: 1.0, top_p: 0.9}]")
    cfg = compose(["+experiment=one-shot-cft-cpu", "dataset=one-shot-pi1", "dataset.problems=[]",
                   f"dataset.noisy_generators={gens}", "dataset.noisy_max_new_tokens=12", "stages=[data]"])
    validate(cfg)
    [seed] = load_records(cfg.dataset)  # pi_1
    out = generate_noisy_responses([seed], cfg.dataset, cfg.model, cfg.paths.cache)
    assert Counter(r.noisy_source for r in out) == {"generated:gen-a": 3, "generated:gen-b": 2}
    assert len({r.id for r in out}) == 5 and all(r.question == seed.question for r in out)
    assert [r.extra["sample"] for r in out] == [0, 1, 2, 0, 1]
    assert len({r.noisy_response for r in out if r.noisy_source == "generated:gen-a"}) > 1  # sampled, not greedy
    again = generate_noisy_responses([seed], cfg.dataset, cfg.model, cfg.paths.cache)
    assert [r.noisy_response for r in again] == [r.noisy_response for r in out]  # seeded


def test_greedy_generator_with_n_above_one_fails_at_validation(compose):
    cfg = compose(["+experiment=one-shot-cft-cpu", "dataset.noisy_generators=[{name: g, path: tiny, n: 4}]"])
    with pytest.raises(ConfigError, match=r"noisy_generators\[0\] \(g\): n=4 greedy samples"):
        validate(cfg)


def test_generator_prompts_open_with_bos_only_for_the_deepseek_family():
    """Noisy-response generation builds prompts from an eval template alone; which of them open
    with BOS is one table (cft.templates.EVAL_BOS), the one DeepSeek's training template agrees with."""
    from cft.templates import EVAL_BOS, EVAL_TEMPLATES, get_template

    assert EVAL_BOS <= set(EVAL_TEMPLATES)
    assert "deepseek-math" in EVAL_BOS and get_template("deepseek").bos and not get_template("qwen").bos
    assert not [t for t in EVAL_TEMPLATES if "qwen" in t and t in EVAL_BOS]
