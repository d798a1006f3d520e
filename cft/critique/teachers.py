"""Teacher backends behind one interface (`generate(requests, store, ledger)`).

- reference: offline; writes a critique from the reference answer/solution, its verdict
  decided by the answer checker. Lets the whole pipeline run with no key and no GPU.
- openai: any OpenAI-compatible endpoint (cft/critique/api.py).
- vllm: offline batched generation with a local model on GPU (optional extra).
- released: critiques a dataset already ships; handled by the stage, not a backend.
"""
from __future__ import annotations

import time
from typing import Sequence

from cft.critique.base import Request
from cft.store import Ledger, ResultStore
from cft.records import RIGHT, WRONG


class ReferenceTeacher:
    """Writes what a careful grader with the answer key would say.

    Critiques follow the paper's output shape (explanation, then `Conclusion: right/wrong [END]`).
    Records whose correctness the checker cannot decide get no verdict (rejected downstream):
    we never guess.
    """

    model = "reference"

    def __init__(self, cfg, records_by_id: dict[str, dict]):
        self.records = records_by_id

    def _critique(self, rec: dict) -> tuple[str, str]:
        from cft.answers import extract_answer

        ref = rec["reference_answer"]
        pred = (rec.get("extra") or {}).get("summary") or extract_answer(rec["noisy_response"] or "", last_number=False)
        if rec["response_correct"] == RIGHT:
            return (f"The solution concludes that {pred.strip() if pred else 'the answer is correct'}, "
                    f"which agrees with the correct answer, {ref}. The reasoning supports this "
                    "result.\nConclusion: right [END]"), "stop"
        if rec["response_correct"] == WRONG:
            solution = rec.get("reference_solution") or ""
            return (f"The solution's final answer ({pred.strip() if pred else 'none given'}) is "
                    f"not correct; the correct answer is {ref}.\n{solution}\n"
                    "Conclusion: wrong [END]"), "stop"
        return "", "undecided"

    def _solution(self, rec: dict) -> tuple[str, str]:
        solution = rec.get("reference_solution") or ""
        return f"{solution}\nThe final answer is $\\boxed{{{rec['reference_answer']}}}$.", "stop"

    def generate(self, requests: Sequence[Request], store: ResultStore, ledger: Ledger) -> dict:
        done = skipped = 0
        for req in requests:
            if req.key in store:
                skipped += 1
                continue
            rec = self.records[req.meta["id"]]
            write = self._solution if req.meta["target"] == "teacher_solution" else self._critique
            text, finish = write(rec)
            store.append({"key": req.key, "text": text, "finish_reason": finish,
                          "model": self.model, "prompt_tokens": 0, "completion_tokens": 0,
                          "attempts": 1, "meta": req.meta})
            ledger.record(key=req.key, attempt=1, status="ok")
            done += 1
        return {"done": done, "skipped_cached": skipped, "failed_permanently": 0}


class VLLMTeacher:
    """Batched offline generation with vLLM on a local GPU (pip install '.[vllm]')."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.model = cfg.model

    def generate(self, requests: Sequence[Request], store: ResultStore, ledger: Ledger) -> dict:
        from vllm import LLM, SamplingParams

        todo = [r for r in requests if r.key not in store]
        if not todo:
            return {"done": 0, "skipped_cached": len(requests), "failed_permanently": 0}
        llm = LLM(model=self.cfg.model, trust_remote_code=False)
        params = SamplingParams(temperature=self.cfg.temperature, top_p=self.cfg.top_p,
                                max_tokens=self.cfg.max_tokens)
        start = time.time()
        outputs = llm.chat([r.messages for r in todo], params, use_tqdm=True)
        for req, out in zip(todo, outputs):
            gen = out.outputs[0]
            store.append({"key": req.key, "text": gen.text, "finish_reason": gen.finish_reason,
                          "model": self.model, "prompt_tokens": len(out.prompt_token_ids),
                          "completion_tokens": len(gen.token_ids), "attempts": 1, "meta": req.meta})
            ledger.record(key=req.key, attempt=1, status="ok",
                          prompt_tokens=len(out.prompt_token_ids),
                          completion_tokens=len(gen.token_ids))
        return {"done": len(todo), "skipped_cached": len(requests) - len(todo),
                "failed_permanently": 0, "elapsed_s": time.time() - start}


def build_teacher(cfg, records_by_id: dict[str, dict], batch_log=None):
    """The backend for one teacher config; `batch_log` (critique/batches.jsonl) for mode=batch."""
    if cfg.backend == "reference":
        return ReferenceTeacher(cfg, records_by_id)
    if cfg.backend == "openai" and getattr(cfg, "mode", "sync") == "batch":
        from cft.critique.batch import BatchTeacher

        return BatchTeacher(cfg, batch_log)
    if cfg.backend == "openai":
        from cft.critique.api import OpenAITeacher

        return OpenAITeacher(cfg)
    if cfg.backend == "vllm":
        return VLLMTeacher(cfg)
    raise ValueError(f"teacher.backend={cfg.backend!r} has no generation backend")
