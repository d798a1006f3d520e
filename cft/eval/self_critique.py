"""Inference-time self-critique (`eval.protocol=self-critique`): the model critiques its own
answer in its CFT training format and answers again while it judges the answer wrong.

This is the paper's "two-stage self-critique" (arXiv 2501.17703v4, App. A.4 and Table 11; v2/v3
Table 9, v1 Table 8), run with Qwen2.5-Math-7B-CFT at temperatures 0.1, 0.3 and 0.6:

    for i in 1..8:
        1. generate a solution with the direct prompt        (sampled at temperature T)
        2. critique it in a separate pass: "Please critique whether the following solution to
           the question is correct. Question: ... Solution: ..."    (the CFT training input)
        3. conclusion "Correct": return this solution
        4. i == 8: return this solution (the last one)

A rejected solution is not revised from its critique: step 1 draws a fresh sample of the same
prompt (the critique is never shown to the solver). There is no voting. The paper compares this
against direct inference at the same temperature (its 80.2 MATH at T=0 falls to 78.8 direct and
77.9 self-critiqued at T=0.1); both scores come out of one run here: `accuracy_before` is attempt
1, the stage's own direct answer at eval.temperature, and `accuracy_after` the returned solution.

Here `eval.self_critique_rounds` is the paper's 8 tries, eval.temperature its T for solutions and
critiques alike (the paper gives one temperature per row), attempts after the first are seeded per
(problem, attempt), and critiques get `eval.self_critique_max_new_tokens` (null:
eval.max_new_tokens). The verdict is `cft.verdict.parse_verdict`'s, the parser of the training
data: "right" stops the loop; "wrong" and a critique with no readable conclusion go on (in the
paper only "Correct" stops it). The paper's single-pass variant (one generation that solves,
critiques and corrects itself, prompted in a format the model was never trained on) is not
implemented. Checkpoint selection (eval.select_checkpoint) scores direct answers, as the paper's
selection of its CFT checkpoint did.

Every attempt (solution, its grade, critique, verdict) is kept per problem in
eval/<benchmark>.jsonl under `self_critique`; generations are stored as they finish in
eval/<benchmark>.self-critique.progress.jsonl, keyed like the stage's own, so a re-run resumes.
"""
from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

from cft.io import read_json, read_jsonl, write_json, write_jsonl
from cft.store import ResultStore
from cft.templates import check_self_critique, cft_prompt, render
from cft.verdict import parse_verdict


def attempt_seed(seed: int, benchmark: str, idx, attempt: int, role: str) -> int:
    """The seed of one problem's attempt-th solution or critique, whatever else is generated with
    it. Attempt 1's solution is the stage's own (cft.eval.sampling.Sampling.problem_seed)."""
    digest = hashlib.sha256(f"{seed}:{benchmark}:{idx}:{attempt}:{role}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def critique_prompt(question: str, solution: str, train_template: str) -> str:
    """The model's own answer in the CFT input it was trained on, as the critic evaluation
    prompts it (cft.eval.critic)."""
    return render({"prompt": cft_prompt({"question": question, "noisy_response": solution}), "target": ""},
                  train_template)[0]


class _Generations:
    """Solutions and critiques, generated once: stored as they finish under a key of everything
    that determines them (cft.eval.sampling.generation_key), read back on a re-run, where the
    model is not even loaded (`generator` is called only when something is missing)."""

    def __init__(self, cfg, generator, store: ResultStore, settings: dict, sampling):
        self.cfg, self.generator, self.store, self.settings, self.sampling = cfg, generator, store, settings, sampling

    def __call__(self, role: str, prompts: list[str], seeds: list[int], max_new_tokens: int) -> list[dict]:
        from cft.eval.sampling import generation_key
        from cft.generation import prepends_bos, prompt_ids

        settings = {**self.settings, "self_critique": role, "max_new_tokens": max_new_tokens}
        seeds = [None if self.sampling.greedy else s for s in seeds]
        keys = [generation_key(settings, p, s) for p, s in zip(prompts, seeds)]
        todo = [i for i, k in enumerate(keys) if k not in self.store]
        if todo:
            gen = self.generator()
            bos = prepends_bos(gen.tokenizer, self.cfg.model.train_template)
            ids = [prompt_ids(gen.tokenizer, prompts[i], bos) for i in todo]
            for j, (c,) in gen.sample(ids, max_new_tokens, 1, self.sampling.temperature, self.sampling.top_p,
                                      None if self.sampling.greedy else [seeds[i] for i in todo]):
                self.store.append({"key": keys[todo[j]], "role": role, "completion": c.text,
                                   "finish_reason": c.finish_reason, "tokens": c.tokens})
        return [self.store.get(k) for k in keys]


def self_critique(cfg, generator, model_path: str, out_dir: Path, direct: dict,
                  tokenizer_path: str | None = None) -> dict:
    """Run the loop on every benchmark that `cft.eval.stage.evaluate` just scored into out_dir
    (`direct`: its results, attempt 1) with `generator()`'s model (cft.generation), rewrite eval/<benchmark>.jsonl with every attempt and
    results.json with the returned solutions' scores plus the before/after comparison."""
    from cft.answers import Grader
    from cft.eval.metrics import macro_average
    from cft.eval.sampling import Sampling, generation_settings

    check_self_critique(cfg.eval)
    sampling = Sampling.of(cfg.eval)
    settings = generation_settings(cfg, model_path, tokenizer_path, sampling)
    results = {}
    grader = Grader(timeout=cfg.eval.grader_timeout_s, workers=cfg.eval.grader_workers, checker=cfg.eval.checker)
    try:
        for name in direct:
            with ResultStore(out_dir / f"{name}.self-critique.progress.jsonl") as store:
                generations = _Generations(cfg, generator, store, settings, sampling)
                rows = read_jsonl(out_dir / f"{name}.jsonl")
                rows, results[name] = _benchmark(cfg, name, rows, generations, grader, sampling, direct[name])
            write_jsonl(out_dir / f"{name}.jsonl", rows)
    finally:
        grader.close()
    summary = read_json(out_dir / "results.json")
    summary.update(benchmarks=results, macro=macro_average(results),
                   self_critique={"variant": "two-stage (paper v4 App. A.4)",
                                  "rounds": int(cfg.eval.self_critique_rounds),
                                  "temperature": sampling.temperature,
                                  "critique_max_new_tokens": _critique_tokens(cfg.eval)})
    write_json(out_dir / "results.json", summary)
    return results


def _critique_tokens(eval_cfg) -> int:
    tokens = eval_cfg.self_critique_max_new_tokens
    return int(eval_cfg.max_new_tokens if tokens is None else tokens)


def _benchmark(cfg, name: str, rows: list[dict], generations: _Generations, grader, sampling,
               direct: dict) -> tuple[list[dict], dict]:
    from cft.eval.stage import score

    rounds, critique_tokens = int(cfg.eval.self_critique_rounds), _critique_tokens(cfg.eval)
    first = [r["samples"][0] for r in rows]
    attempts = [[{"attempt": 1, **{k: s[k] for k in ("completion", "finish_reason", "tokens")}}] for s in first]
    stopped: dict[int, str] = {}
    active = list(range(len(rows)))
    for attempt in range(1, rounds + 1):
        seeds = [attempt_seed(sampling.seed, name, rows[p]["idx"], attempt, "critique") for p in active]
        prompts = [critique_prompt(rows[p]["question"], attempts[p][-1]["completion"], cfg.model.train_template)
                   for p in active]
        again = []
        for p, critique in zip(active, generations("critique", prompts, seeds, critique_tokens)):
            verdict = parse_verdict(critique["completion"])
            attempts[p][-1].update(critique=critique["completion"], critique_verdict=verdict,
                                   critique_finish_reason=critique["finish_reason"],
                                   critique_tokens=critique["tokens"])
            if verdict == "right":
                stopped[p] = "right"
            elif attempt == rounds:
                stopped[p] = "max_rounds"
            else:
                again.append(p)
        if not again:
            break
        seeds = [attempt_seed(sampling.seed, name, rows[p]["idx"], attempt + 1, "solution") for p in again]
        for p, solution in zip(again, generations("solution", [rows[p]["prompt"] for p in again], seeds,
                                                  int(cfg.eval.max_new_tokens))):
            attempts[p].append({"attempt": attempt + 1, "completion": solution["completion"],
                                "finish_reason": solution["finish_reason"], "tokens": solution["tokens"]})
        active = again
    _grade_attempts(name, rows, attempts, grader)
    items = [{"idx": r["idx"], "question": r["question"], "reference": r["reference"]} for r in rows]
    final = [[{k: a[-1][k] for k in ("completion", "finish_reason", "tokens")}] for a in attempts]
    scored, result = score(name, items, [r["prompt"] for r in rows], final, grader, sampling)
    for p, row in enumerate(scored):
        row["self_critique"] = {"stopped": stopped[p], "n_attempts": len(attempts[p]),
                                "correct_before": attempts[p][0]["correct"], "attempts": attempts[p]}
    before = sum(a[0]["correct"] for a in attempts)
    after = sum(row["correct"] for row in scored)
    n = max(1, len(rows))
    result["self_critique"] = {
        "accuracy_before": 100.0 * before / n, "accuracy_after": 100.0 * after / n,
        "wrong_to_right": sum(not a[0]["correct"] and r["correct"] for a, r in zip(attempts, scored)),
        "right_to_wrong": sum(a[0]["correct"] and not r["correct"] for a, r in zip(attempts, scored)),
        "stopped": dict(Counter(stopped.values())),
        "critique_verdicts": dict(Counter(str(t.get("critique_verdict")) for a in attempts for t in a)),
        "mean_attempts": sum(len(a) for a in attempts) / n,
        "direct_accuracy": direct["accuracy"]}
    return scored, result


def _grade_attempts(name: str, rows: list[dict], attempts: list[list[dict]], grader) -> None:
    """Each attempt's extracted answer and whether it is right, graded as the stage grades."""
    from cft.answers import Verdict, extract_with_rule

    flat = [(p, t) for p, a in enumerate(attempts) for t in a]
    for _, t in flat:
        t["prediction"], _rule = extract_with_rule(t["completion"], name)
    verdicts = grader.grade([(t["prediction"], rows[p]["reference"]) for p, t in flat])
    for (_, t), v in zip(flat, verdicts):
        t["correct"] = v == Verdict.EQUAL
