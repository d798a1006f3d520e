"""The `eval` stage: generate eval.n samples per problem on each benchmark, extract the final
answers, grade them, vote, score (acc, avg@n, pass@k, maj@k: cft.eval.metrics).

Generations are appended to eval/<benchmark>.progress.jsonl as batches finish, keyed by
everything that determines them (cft.eval.sampling), so a re-run with the same settings resumes
and one with changed settings generates again; the graded eval/<benchmark>.jsonl and
results.json are written atomically at the end.
"""
from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from cft.store import ResultStore
from cft.benchmarks import get_benchmark
from cft.templates import eval_protocol
from cft.io import read_jsonl, write_json, write_jsonl
from cft.paths import RunPaths


def model_under_test(cfg, paths: RunPaths) -> str:
    """The trained model of this run when it has one, else `model.path` / the base model."""
    from cft.models import model_source

    if "train" in cfg.stages or (paths.final_model / "config.json").exists():
        if (paths.final_model / "config.json").exists():
            return str(paths.final_model)
        raise FileNotFoundError(f"no trained model at {paths.final_model}; run the train stage")
    return model_source(cfg.model, cfg.paths.cache)


_GENERATOR: dict = {}  # {"key": (model_path, tokenizer_path), "gen": the generator}


def generator(cfg, model_path: str, tokenizer_path: str | None = None):
    """The stage's generator for `model_path`, built once and shared by every benchmark and the
    critic eval; asking for another model (checkpoint selection) closes the previous one first,
    so one model or engine is in memory at a time."""
    from cft.generation import build_generator

    key = (model_path, tokenizer_path)
    if _GENERATOR.get("key") != key:
        close_generator()
        _GENERATOR.update(key=key, gen=build_generator(cfg.eval.backend, model_path, cfg.model, cfg.vllm,
                                                       tokenizer_path, cfg.eval.batch_size))
    return _GENERATOR["gen"]


def close_generator() -> None:
    gen = _GENERATOR.pop("gen", None)
    _GENERATOR.clear()
    if gen is not None:
        gen.close()


def evaluate(cfg, model_path: str, out_dir: Path, benchmarks=None, limit=None,
             tokenizer_path: str | None = None) -> dict:
    """Evaluate `model_path` on benchmarks with eval.n samples per problem: generate (or resume),
    extract, grade, vote, score; per-problem JSONL + results.json into out_dir."""
    from cft.answers import Grader
    from cft.eval.metrics import macro_average
    from cft.eval.sampling import Sampling, generation_settings

    sampling = Sampling.of(cfg.eval)
    protocol = eval_protocol(cfg.eval, cfg.model)  # zero-shot or few-shot-cot prompts (eval.protocol)
    benchmarks = list(benchmarks or cfg.eval.benchmarks)
    limit = cfg.eval.limit if limit is None else limit
    settings = generation_settings(cfg, model_path, tokenizer_path, sampling)
    results = {}
    out_dir.mkdir(parents=True, exist_ok=True)
    # One worker pool (and answer cache) for every benchmark of this call; closed below, or when collected.
    grader = Grader(timeout=cfg.eval.grader_timeout_s, workers=cfg.eval.grader_workers, checker=cfg.eval.checker)
    try:
        for bench in map(get_benchmark, benchmarks):  # names were checked in cft.validation.validate
            items = bench.load(cfg.paths.benchmarks, limit)
            asked = protocol.for_benchmark(bench.name)  # + a multiple-choice benchmark's own stop strings
            prompts = [asked.prompt(it["question"], bench.name) for it in items]
            t0 = time.time()
            samples = asked.finish_samples(generated_samples(cfg, bench.name, items, prompts, out_dir, settings,
                                                             sampling, model_path, tokenizer_path))
            gen_s = time.time() - t0
            rows, results[bench.name] = score(bench.name, items, prompts, samples, grader, sampling)
            results[bench.name]["generation_s"] = round(gen_s, 2)
            write_jsonl(out_dir / f"{bench.name}.jsonl", rows)
    finally:
        grader.close()
    write_json(out_dir / "results.json", {
        "model": model_path, "benchmarks": results, "macro": macro_average(results), "protocol": protocol.to_dict(),
        "sampling": {"preset": cfg.eval.name, "backend": cfg.eval.backend,
                     "max_new_tokens": int(cfg.eval.max_new_tokens), **sampling.to_dict()}})
    return results


def generated_samples(cfg, name: str, items: list[dict], prompts: list[str], out_dir: Path, settings: dict,
                      sampling, model_path: str, tokenizer_path: str | None) -> list[list[dict]]:
    """Each problem's n samples {completion, finish_reason, tokens}: those stored in
    eval/<name>.progress.jsonl under the same key (cft.eval.sampling.generation_key), the rest
    generated now and appended as they finish."""
    from cft.eval.sampling import generation_key

    seeds = [None if sampling.greedy else sampling.problem_seed(name, it["idx"]) for it in items]
    keys = [generation_key(settings, prompt, seed) for prompt, seed in zip(prompts, seeds)]
    with ResultStore(out_dir / f"{name}.progress.jsonl") as store:
        todo = [i for i, key in enumerate(keys) if key not in store]
        if todo:
            from cft.generation import prepends_bos, prompt_ids

            gen = generator(cfg, model_path, tokenizer_path)
            bos = prepends_bos(gen.tokenizer, cfg.model.train_template)
            ids = [prompt_ids(gen.tokenizer, prompts[i], bos) for i in todo]
            for j, completions in gen.sample(ids, cfg.eval.max_new_tokens, sampling.n, sampling.temperature,
                                             sampling.top_p, None if sampling.greedy else [seeds[i] for i in todo]):
                i = todo[j]
                store.append({"key": keys[i], "item": f"{name}:{items[i]['idx']}", "time": time.time(),
                              "samples": [{"completion": c.text, "finish_reason": c.finish_reason,
                                           "tokens": c.tokens} for c in completions]})
        return [store.get(key)["samples"] for key in keys]


def score(name: str, items: list[dict], prompts: list[str], samples: list[list[dict]], grader,
          sampling) -> tuple[list[dict], dict]:
    """Per-problem rows (sample 0's fields, as with greedy decoding, plus every sample) and the
    benchmark's results: `accuracy` (= avg@n: acc when n=1), the scores of cft.eval.metrics,
    verdict and extraction-rule counts over all samples, grading and vote timeouts."""
    from cft.answers import Verdict, extract_with_rule
    from cft.eval.metrics import benchmark_metrics
    from cft.eval.votes import answer_classes

    for problem in samples:
        for s in problem:
            s["prediction"], s["extraction_rule"] = extract_with_rule(s["completion"], name)
    flat = [s for problem in samples for s in problem]
    verdicts = grader.grade([(s["prediction"], it["reference"]) for it, problem in zip(items, samples) for s in problem])
    for s, v in zip(flat, verdicts):
        s["verdict"], s["correct"] = str(v.value if hasattr(v, "value") else v), v == Verdict.EQUAL
    n = sampling.n
    graded = [verdicts[p * n: (p + 1) * n] for p in range(len(samples))]
    classes, vote_timeouts = answer_classes([[s["prediction"] for s in problem] for problem in samples], grader, graded)
    rows = []
    for it, prompt, problem, cls in zip(items, prompts, samples, classes):
        first = problem[0]
        rows.append({"idx": it["idx"], "question": it["question"], "prompt": prompt,
                     "completion": first["completion"], "prediction": first["prediction"],
                     "extraction_rule": first["extraction_rule"], "reference": it["reference"],
                     "verdict": first["verdict"], "correct": first["correct"],
                     "finish_reason": first["finish_reason"], "tokens": first["tokens"],
                     "samples": [{**s, "answer_class": c} for s, c in zip(problem, cls)]})
    metrics = benchmark_metrics([[s["correct"] for s in problem] for problem in samples], classes,
                                [[s["finish_reason"] for s in problem] for problem in samples], sampling.ks,
                                sampling.n)
    counts = Counter(s["verdict"] for s in flat)
    result = {"accuracy": metrics[f"avg@{sampling.n}"], "n": len(rows), "verdicts": dict(counts),
              "timeouts": counts.get("timeout", 0), "generation_s": 0.0,
              # Which extraction rule found each answer, and how many of those were right.
              "extraction_rules": dict(Counter(s["extraction_rule"] for s in flat)),
              "correct_by_rule": dict(Counter(s["extraction_rule"] for s in flat if s["correct"])),
              **metrics, "vote_timeouts": vote_timeouts}
    return rows, result


def run(cfg, paths: RunPaths) -> dict:
    try:
        return _run(cfg, paths)
    finally:
        close_generator()  # shared within this stage only; a later stage may rewrite the weights


def _run(cfg, paths: RunPaths) -> dict:
    from cft.eval.sampling import Sampling

    Sampling.of(cfg.eval)  # a wrong eval.n / temperature fails before any model is loaded
    model_path = tokenizer_path = model_under_test(cfg, paths)
    summary: dict = {}
    if cfg.eval.select_checkpoint or cfg.eval.get("dynamics"):
        # selection over checkpoints and snapshots, training dynamics (cft/eval/selection.py)
        from cft.eval.selection import score_saved_weights

        scored = score_saved_weights(cfg, paths, tokenizer_path, evaluate, close_generator)
        if scored["selection"]:
            model_path = scored["model_path"]
            summary["selected_step"] = scored["selection"]["best"]["step"]
    results = evaluate(cfg, model_path, paths.eval_dir, tokenizer_path=tokenizer_path)
    if cfg.eval.protocol == "self-critique":  # critique those answers, answer again while wrong
        from cft.eval.self_critique import self_critique

        results = self_critique(cfg, lambda: generator(cfg, model_path, tokenizer_path), model_path,
                                paths.eval_dir, results, tokenizer_path)
    summary.update({name: round(r["accuracy"], 2) for name, r in results.items()})
    if cfg.eval.critic:
        from cft.eval.critic import evaluate_critic

        trained_on = {r["id"] for r in read_jsonl(paths.records)} if paths.records.exists() else set()
        critic = evaluate_critic(cfg, generator(cfg, model_path, tokenizer_path), paths, trained_on)
        summary["critic_accuracy"] = critic["accuracy"]
    return summary
