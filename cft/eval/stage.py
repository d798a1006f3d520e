"""The `eval` stage: generate on each benchmark, extract the final answer, grade, accuracy.

Per-sample progress is appended to eval/<benchmark>.progress.jsonl as batches finish (a
re-run resumes from it); the graded eval/<benchmark>.jsonl and results.json are written
atomically at the end.
"""
from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from cft.store import ResultStore
from cft.benchmarks import get_benchmark
from cft.templates import eval_prompt
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
    """Evaluate `model_path` on benchmarks; write per-sample JSONL + results into out_dir."""
    from cft.answers import Grader, Verdict, extract_with_rule

    benchmarks = list(benchmarks or cfg.eval.benchmarks)
    limit = cfg.eval.limit if limit is None else limit
    results = {}
    out_dir.mkdir(parents=True, exist_ok=True)
    # One worker pool (and answer cache) for every benchmark of this call; closed below, or when collected.
    grader = Grader(timeout=cfg.eval.grader_timeout_s, workers=cfg.eval.grader_workers, checker=cfg.eval.checker)
    for bench in map(get_benchmark, benchmarks):  # names were checked in cft.validation.validate
        name = bench.name
        items = bench.load(cfg.paths.benchmarks, limit)
        prompts = [eval_prompt(cfg.model.eval_template, it["question"]) for it in items]
        progress = out_dir / f"{name}.progress.jsonl"
        t0 = time.time()
        with ResultStore(progress) as store:
            todo = [i for i in range(len(items)) if f"{name}:{i}" not in store]
            if todo:
                from cft.generation import prepends_bos, prompt_ids

                gen = generator(cfg, model_path, tokenizer_path)
                bos = prepends_bos(gen.tokenizer, cfg.model.train_template)
                ids = [prompt_ids(gen.tokenizer, prompts[i], bos) for i in todo]
                gen = ((todo[j], text) for j, text in gen.generate(ids, cfg.eval.max_new_tokens))
                for i, text in gen:
                    store.append({"key": f"{name}:{i}", "completion": text,
                                  "time": time.time()})
            completions = [store.get(f"{name}:{i}")["completion"] for i in range(len(items))]
        gen_s = time.time() - t0
        extracted, rules = zip(*(extract_with_rule(c, name) for c in completions)) if completions else ((), ())
        verdicts = grader.grade([(p, it["reference"]) for p, it in zip(extracted, items)])
        rows = [{"idx": it["idx"], "question": it["question"], "prompt": pr, "completion": c,
                 "prediction": p, "extraction_rule": rule, "reference": it["reference"], "verdict": str(v.value if hasattr(v, "value") else v),
                 "correct": v == Verdict.EQUAL}
                for it, pr, c, p, rule, v in zip(items, prompts, completions, extracted, rules, verdicts)]
        write_jsonl(out_dir / f"{name}.jsonl", rows)
        counts = Counter(r["verdict"] for r in rows)
        results[name] = {"accuracy": 100.0 * sum(r["correct"] for r in rows) / max(1, len(rows)),
                         "n": len(rows), "verdicts": dict(counts),
                         "timeouts": counts.get("timeout", 0), "generation_s": round(gen_s, 2),
                         # Which extraction rule found each answer, and how many of those were right.
                         "extraction_rules": dict(Counter(r["extraction_rule"] for r in rows)),
                         "correct_by_rule": dict(Counter(r["extraction_rule"] for r in rows if r["correct"]))}
    grader.close()
    write_json(out_dir / "results.json", {"model": model_path, "benchmarks": results})
    return results


def checkpoints(paths: RunPaths) -> list[tuple[int, Path]]:
    """Saved training checkpoints by step: only those the trainer marked COMPLETE."""
    from cft.checkpoints import checkpoints as saved, is_complete

    return [(int(c.name.split("-")[1]), c) for c in saved(paths.checkpoints) if is_complete(c)]


def select_checkpoint(cfg, paths: RunPaths, tokenizer_path: str) -> dict:
    """Evaluate every saved checkpoint on eval.select_benchmark and pick the best, as the paper
    does with MATH-500. Ties go to the later step. Written to eval/selection.json."""
    candidates = checkpoints(paths)
    if not candidates:
        raise FileNotFoundError(f"eval.select_checkpoint=true but no checkpoints in {paths.checkpoints}")
    bench = get_benchmark(cfg.eval.select_benchmark).name
    curve = []
    for step, path in candidates:
        res = evaluate(cfg, str(path), paths.eval_dir / "selection" / f"checkpoint-{step}",
                       benchmarks=[bench], limit=cfg.eval.select_limit, tokenizer_path=tokenizer_path)
        curve.append({"step": step, "path": str(path), "accuracy": res[bench]["accuracy"]})
    best = max(curve, key=lambda c: (c["accuracy"], c["step"]))
    selection = {"benchmark": bench, "curve": curve, "best": best}
    write_json(paths.selection, selection)
    return selection


def run(cfg, paths: RunPaths) -> dict:
    try:
        return _run(cfg, paths)
    finally:
        close_generator()  # shared within this stage only; a later stage may rewrite the weights


def _run(cfg, paths: RunPaths) -> dict:
    model_path = tokenizer_path = model_under_test(cfg, paths)
    summary: dict = {}
    if cfg.eval.select_checkpoint:
        selection = select_checkpoint(cfg, paths, tokenizer_path)
        model_path = selection["best"]["path"]
        summary["selected_step"] = selection["best"]["step"]
    results = evaluate(cfg, model_path, paths.eval_dir, tokenizer_path=tokenizer_path)
    summary.update({name: round(r["accuracy"], 2) for name, r in results.items()})
    if cfg.eval.critic:
        from cft.eval.critic import evaluate_critic

        trained_on = {r["id"] for r in read_jsonl(paths.records)} if paths.records.exists() else set()
        critic = evaluate_critic(cfg, generator(cfg, model_path, tokenizer_path), paths, trained_on)
        summary["critic_accuracy"] = critic["accuracy"]
    return summary
