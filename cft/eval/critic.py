"""Critic evaluation (beyond the paper's tables): does a CFT model's `Conclusion:` verdict
match the ground-truth correctness of a response it has not trained on?

Held-out pairs are CHAMP (question, response) pairs whose id is not among the run's training
records and whose correctness the answer checker decided (right or wrong; never unknown).
"""
from __future__ import annotations

import random

from cft.verdict import parse_verdict
from cft.io import write_json, write_jsonl
from cft.paths import RunPaths
from cft.templates import cft_prompt, render


def heldout_pairs(cfg, exclude_ids: set[str], limit: int | None) -> list[dict]:
    from cft.datasets import champ_records

    pairs = [r.to_dict() for r in champ_records()  # every CHAMP model's 0-shot responses
             if r.id not in exclude_ids and r.response_correct in ("right", "wrong")]
    random.Random(cfg.seed).shuffle(pairs)
    if limit is not None:
        # Balanced, so that "always say wrong" cannot score well.
        by = {v: [p for p in pairs if p["response_correct"] == v] for v in ("right", "wrong")}
        pairs = by["right"][: limit // 2] + by["wrong"][: limit - limit // 2]
    return pairs


def _accuracy(rows: list[dict]) -> float | None:
    return 100.0 * sum(r["verdict"] == r["truth"] for r in rows) / len(rows) if rows else None


def critic_metrics(rows: list[dict]) -> dict:
    """Verdict accuracy overall and on correct and incorrect candidates apart (a critic that
    calls everything wrong scores 100 on the incorrect ones and 0 on the others), and `f1`, the
    harmonic mean of those two accuracies (ProcessBench's F1): high only when both are. A
    missing verdict counts as a miss."""
    n = len(rows)
    tp = sum(r["verdict"] == "wrong" and r["truth"] == "wrong" for r in rows)
    said_wrong = sum(r["verdict"] == "wrong" for r in rows)
    is_wrong = sum(r["truth"] == "wrong" for r in rows)
    on_correct = _accuracy([r for r in rows if r["truth"] == "right"])
    on_incorrect = _accuracy([r for r in rows if r["truth"] == "wrong"])
    f1 = (None if on_correct is None or on_incorrect is None else
          0.0 if on_correct + on_incorrect == 0 else 2 * on_correct * on_incorrect / (on_correct + on_incorrect))
    return {"n": n, "accuracy": _accuracy(rows),
            "n_correct": n - is_wrong, "accuracy_on_correct": on_correct,
            "n_incorrect": is_wrong, "accuracy_on_incorrect": on_incorrect, "f1": f1,
            "precision_wrong": tp / said_wrong if said_wrong else None,
            "recall_wrong": tp / is_wrong if is_wrong else None,
            "no_verdict": sum(r["verdict"] is None for r in rows)}


def evaluate_critic(cfg, generator, paths: RunPaths, exclude_ids: set[str]) -> dict:
    """Critiques from `generator` (cft.generation) on held-out pairs, scored by their verdicts."""
    from cft.generation import prepends_bos, prompt_ids

    pairs = heldout_pairs(cfg, exclude_ids, cfg.eval.critic_limit)
    prompts = [render({"prompt": cft_prompt(p), "target": ""},
                      cfg.model.train_template)[0] for p in pairs]
    bos = prepends_bos(generator.tokenizer, cfg.model.train_template)
    ids = [prompt_ids(generator.tokenizer, p, bos) for p in prompts]
    completions = dict(generator.generate(ids, cfg.eval.max_new_tokens))
    rows = [{"id": p["id"], "truth": p["response_correct"], "critique": completions[i],
             "verdict": parse_verdict(completions[i])} for i, p in enumerate(pairs)]
    write_jsonl(paths.eval_dir / "critic.jsonl", rows)
    metrics = critic_metrics(rows)
    write_json(paths.critic_metrics, metrics)
    return metrics
