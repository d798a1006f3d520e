"""Checkpoint selection and critic evaluation on tiny models."""
from __future__ import annotations

import shutil
from collections import Counter

import pytest

from cft.benchmarks import get_benchmark
from cft.distributed import single_process_env as child_env
from cft.eval.critic import critic_metrics, heldout_pairs
from cft.eval.stage import run as evaluate
from cft.io import read_json, read_jsonl
from cft.paths import RunPaths
from cft.pipeline import IN_CHILD
from cft.templates import eval_prompt
from helpers import cli, free_port, torchrun_env


def overfit(source, out_dir, pairs, steps=80):
    """Train the tiny model to answer `pairs` (prompt -> target) exactly: the 'better' checkpoint."""
    import torch

    from cft.models import load_tokenizer
    from transformers import AutoModelForCausalLM

    tok = load_tokenizer(str(source))
    model = AutoModelForCausalLM.from_pretrained(source)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    batch = []
    for prompt, target in pairs:
        p = tok(prompt, add_special_tokens=False)["input_ids"]
        t = tok(target, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        batch.append((torch.tensor([p + t]), torch.tensor([[-100] * len(p) + t])))
    torch.manual_seed(0)
    for _ in range(steps):
        for ids, labels in batch:
            loss = model(input_ids=ids, labels=labels).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
    model.save_pretrained(out_dir)
    return loss.item()


@pytest.fixture(scope="module")
def answering_model(tiny_source, tmp_path_factory):
    """The tiny model trained to answer the first two GSM8K questions right (not the third),
    with its tokenizer: a model whose scores are neither 0 nor 100."""
    from cft.benchmarks import SHIPPED

    out = tmp_path_factory.mktemp("answering") / "model"
    items = get_benchmark("gsm8k").load(SHIPPED, 2)
    pairs = [(eval_prompt("qwen25-math-cot", it["question"]), f"The answer is $\\boxed{{{it['reference']}}}$.")
             for it in items]
    assert overfit(tiny_source, out, pairs) < 0.05
    for f in tiny_source.iterdir():
        if f.name.startswith("tokenizer") or f.name == "special_tokens_map.json":
            shutil.copy(f, out)
    return out


def test_checkpoint_selection_picks_the_better_checkpoint(compose, tiny_source, answering_model):
    cfg = compose(["stages=[eval]", "eval.select_checkpoint=true", "eval.select_benchmark=gsm8k",
                   "eval.select_limit=2", "eval.benchmarks=[gsm8k]", "eval.limit=2",
                   "eval.critic=false", "eval.max_new_tokens=24"])
    paths = RunPaths.of(cfg.run_dir)
    for step, source in ((10, tiny_source), (20, answering_model), (30, tiny_source), (40, tiny_source)):
        (paths.checkpoints / f"checkpoint-{step}").mkdir(parents=True)
        shutil.copy(source / "config.json", paths.checkpoints / f"checkpoint-{step}")
        shutil.copy(source / "model.safetensors", paths.checkpoints / f"checkpoint-{step}")
    for step in (10, 20, 30):  # checkpoint-40 was killed before the trainer marked it COMPLETE
        (paths.checkpoints / f"checkpoint-{step}" / "COMPLETE").write_text("{}")

    summary = evaluate(cfg, paths)

    assert summary["selected_step"] == 20
    selection = read_json(paths.selection)
    assert [c["step"] for c in selection["curve"]] == [10, 20, 30]
    assert [c["accuracy"] for c in selection["curve"]] == [0.0, 100.0, 0.0]
    assert summary["gsm8k"] == 100.0  # the final eval used the selected checkpoint


def test_critic_metrics_precision_recall():
    rows = [{"verdict": "wrong", "truth": "wrong"}, {"verdict": "wrong", "truth": "right"},
            {"verdict": "right", "truth": "right"}, {"verdict": None, "truth": "wrong"}]
    m = critic_metrics(rows)
    assert (m["accuracy"], m["precision_wrong"], m["recall_wrong"], m["no_verdict"]) == (50.0, 0.5, 0.5, 1)


def test_critic_heldout_pairs_exclude_training_ids_and_are_balanced(compose):
    cfg = compose([])
    first = heldout_pairs(cfg, set(), 20)
    again = heldout_pairs(cfg, {first[0]["id"]}, 20)
    assert first[0]["id"] not in {p["id"] for p in again}
    truths = [p["response_correct"] for p in again]
    assert truths.count("right") == 10 and truths.count("wrong") == 10


@pytest.mark.parametrize("spelling,name", [("math500", "math-500"), ("MATH-500", "math-500"),
                                           ("Minerva-Math", "minerva_math"), ("aime2024", "aime24"),
                                           ("OlympiadBench", "olympiadbench")])
def test_benchmark_names_accept_their_usual_spellings(spelling, name):
    assert get_benchmark(spelling).name == name


def test_unknown_benchmark_lists_the_known_ones():
    with pytest.raises(KeyError, match="eval.benchmarks: unknown benchmark 'math5000'.*gsm8k"):
        get_benchmark("math5000")


@pytest.mark.slow
def test_zero3_torchrun_then_eval_in_its_own_process(tmp_path, cache_dir):
    """One torchrun command: 2-rank DeepSpeed ZeRO-3 training, then evaluation (critic included)
    in a fresh child of rank 0 while rank 1 leaves. In-process, rank 0's from_pretrained entered
    ZeRO-3's zero.Init and waited for rank 1 (gloo: "Connection closed by peer")."""
    run_dir = tmp_path / "run"
    cli("--nproc_per_node=2", f"--master_port={free_port()}", "-m", "cft.main", "deepspeed=zero3",
        "eval.limit=2", "eval.critic_limit=4", "eval.max_new_tokens=16", "method.max_steps=2",
        "dataset.limit=32", f"hydra.run.dir={run_dir}", module="torch.distributed.run",
        env=torchrun_env(cache_dir, CFT_CACHE=str(cache_dir)), timeout=900, check=True)
    paths = RunPaths.of(run_dir)
    assert read_json(paths.stage_done("train"))["summary"]["world_size"] == 2
    assert read_json(paths.eval_results)["benchmarks"]["math-500"]["n"] == 2
    assert read_json(paths.critic_metrics)["n"] == 4
    assert (paths.stages_dir / "eval.result.json").is_file()
    assert paths.results.is_file()  # the report stage ran after it


def test_eval_child_sees_no_distributed_environment():
    env = child_env({"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "h", "MASTER_PORT": "1",
                     "TORCHELASTIC_RUN_ID": "x", "ACCELERATE_USE_DEEPSPEED": "true", "CUDA_VISIBLE_DEVICES": "0,1",
                     "CFT_CACHE": "/c"})
    assert "eval" in IN_CHILD
    assert env == {"CUDA_VISIBLE_DEVICES": "0,1", "CFT_CACHE": "/c"}  # every GPU stays visible to vLLM


# --- sampling evaluation (issue #21) and stored generations keyed by their settings (issue #25) ---
@pytest.fixture(scope="module")
def answering_evals(answering_model, cache_dir, tmp_path_factory):
    """The eval stage, in process, on three GSM8K problems (two the model answers), greedy (n=1)
    and sampled (n=4, T=0.6): {"greedy"|"sampled": (cfg, RunPaths, summary)}."""
    from conftest import make_compose

    out = {}
    for name, extra in (("greedy", []), ("sampled", ["eval.n=4", "eval.temperature=0.6", "eval.seed=1"])):
        run_dir = tmp_path_factory.mktemp(name) / "run"
        cfg = make_compose(cache_dir, run_dir, run_dir.parent / "outputs")(
            ["stages=[eval]", "model.init=pretrained", f"model.path={answering_model}", "eval.benchmarks=[gsm8k]",
             "eval.limit=3", "eval.critic=false", "eval.max_new_tokens=24", *extra])
        out[name] = (cfg, RunPaths.of(run_dir), evaluate(cfg, RunPaths.of(run_dir)))
    return out


def test_greedy_results_keep_their_fields_and_every_score_is_the_accuracy(answering_evals):
    cfg, paths, summary = answering_evals["greedy"]
    results = read_json(paths.eval_results)
    gsm8k = results["benchmarks"]["gsm8k"]
    rows = read_jsonl(paths.eval_samples("gsm8k"))
    assert [r["correct"] for r in rows] == [True, True, False]
    # today's fields first, computed as before over the rows
    assert list(gsm8k)[:7] == ["accuracy", "n", "verdicts", "timeouts", "generation_s", "extraction_rules",
                               "correct_by_rule"]
    assert gsm8k["accuracy"] == 100.0 * 2 / 3 and summary["gsm8k"] == round(gsm8k["accuracy"], 2)
    assert gsm8k["verdicts"] == dict(Counter(r["verdict"] for r in rows)) and gsm8k["n"] == 3
    assert gsm8k["extraction_rules"] == dict(Counter(r["extraction_rule"] for r in rows))
    assert gsm8k["acc"] == gsm8k["avg@1"] == gsm8k["pass@1"] == gsm8k["maj@1"] == gsm8k["accuracy"]
    assert not any(k in gsm8k for k in ("pass@2", "maj@2"))
    assert results["sampling"] == {"preset": "quick", "backend": "transformers", "max_new_tokens": 24, "n": 1,
                                   "temperature": 0.0, "top_p": 1.0, "seed": 0, "ks": [1]}
    for r in rows:  # the row is sample 0, as before; the sample list holds it too
        assert len(r["samples"]) == 1 and r["samples"][0]["completion"] == r["completion"]
        assert r["samples"][0]["finish_reason"] == r["finish_reason"] and 0 < r["tokens"] <= 24


def test_sampled_eval_stores_every_sample_and_scores_them(answering_evals):
    from cft.eval.metrics import majority, pass_at_k

    cfg, paths, summary = answering_evals["sampled"]
    results = read_json(paths.eval_results)
    gsm8k = results["benchmarks"]["gsm8k"]
    rows = read_jsonl(paths.eval_samples("gsm8k"))
    samples = [r["samples"] for r in rows]
    assert [len(s) for s in samples] == [4, 4, 4]
    for s in (s for problem in samples for s in problem):
        assert {"completion", "prediction", "extraction_rule", "verdict", "correct", "finish_reason", "tokens",
                "answer_class"} <= set(s)
        assert s["finish_reason"] in ("stop", "length") and 0 < s["tokens"] <= 24
        assert s["finish_reason"] == "stop" or s["tokens"] == 24
    right = [sum(s["correct"] for s in problem) for problem in samples]
    assert gsm8k["avg@4"] == gsm8k["accuracy"] == pytest.approx(100 * sum(right) / 12)
    assert summary["gsm8k"] == round(gsm8k["avg@4"], 2)
    assert gsm8k["acc"] == pytest.approx(100 * sum(problem[0]["correct"] for problem in samples) / 3)
    for k in (1, 2, 4):
        assert gsm8k[f"pass@{k}"] == pytest.approx(100 * sum(pass_at_k(4, c, k) for c in right) / 3)
        wins = [majority([s["answer_class"] for s in problem], k) for problem in samples]
        assert gsm8k[f"maj@{k}"] == pytest.approx(100 * sum(w is not None and p[w]["correct"]
                                                            for w, p in zip(wins, samples)) / 3)
    assert "pass@8" not in gsm8k and gsm8k["maj@1"] == gsm8k["acc"]
    assert gsm8k["cut_by_max_tokens"] == pytest.approx(
        100 * sum(s["finish_reason"] == "length" for p in samples for s in p) / 12)
    assert 0 < gsm8k["pass@4"] and gsm8k["avg@4"] < 100  # the trained problems are answered, the third is not
    assert results["macro"]["avg@4"] == gsm8k["avg@4"] and results["sampling"]["ks"] == [1, 2, 4]


def test_samples_depend_on_the_problem_seed_only(answering_evals):
    """The same problem and seed give the same samples alone or batched with another problem;
    another seed gives other samples."""
    from cft.eval.stage import close_generator, generator
    from cft.generation import prompt_ids

    cfg, paths, _ = answering_evals["sampled"]
    gen = generator(cfg, cfg.model.path)
    try:
        ids = [prompt_ids(gen.tokenizer, r["prompt"]) for r in read_jsonl(paths.eval_samples("gsm8k"))[1:]]

        def texts(prompts, seeds):
            return {i: [c.text for c in cs] for i, cs in gen.sample(prompts, 24, n=3, temperature=1.0, seeds=seeds)}

        both = texts(ids, [11, 12])
        assert texts(ids[1:], [12])[0] == both[1]
        assert texts(ids[1:], [13])[0] != both[1]
    finally:
        close_generator()


def test_changed_generation_settings_regenerate_and_unchanged_ones_resume(compose, tiny_source, monkeypatch,
                                                                         tmp_path):
    """Issue #25 item 11: max_new_tokens 16 then 64 in the same directory generates again (it used
    to reuse the 16-token completions); the same settings resume without generating; retrained
    weights (same path, new files) generate again."""
    import os

    from cft.eval import stage

    model = tmp_path / "model"
    shutil.copytree(tiny_source, model)
    calls = []
    real = stage.generator
    monkeypatch.setattr(stage, "generator", lambda *a, **kw: calls.append(1) or real(*a, **kw))

    def run(tokens):
        cfg = compose(["stages=[eval]", "model.init=pretrained", f"model.path={model}", "eval.benchmarks=[gsm8k]",
                       "eval.limit=2", "eval.critic=false", f"eval.max_new_tokens={tokens}"])
        before = len(calls)
        stage.evaluate(cfg, str(model), tmp_path / "eval")
        return len(calls) > before, [r["tokens"] for r in read_jsonl(tmp_path / "eval" / "gsm8k.jsonl")]

    try:
        generated, short = run(16)
        assert generated and max(short) <= 16
        generated, long = run(64)
        assert generated and max(long) > 16
        generated, again = run(64)
        assert not generated and again == long
        weights = model / "model.safetensors"
        os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 1))
        generated, _ = run(64)
        assert generated
    finally:
        stage.close_generator()
