"""Teacher backends behind one interface (`generate(requests, store, ledger)`).

- reference: offline; writes a critique from the reference answer/solution, its verdict
  decided by the answer checker. Lets the whole pipeline run with no key and no GPU.
- openai: any OpenAI-compatible endpoint (cft/critique/api.py).
- vllm: a local model behind `vllm serve`, driven as an openai teacher (optional extra).
- released: critiques a dataset already ships; handled by the stage, not a backend.
"""
from __future__ import annotations

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
    """teacher=vllm: a local model served by `vllm serve` (cft.generation.VLLMServer, engine
    settings from the `vllm` config block) and driven through the OpenAI-compatible client
    (cft/critique/api.py), so a local teacher gets the same concurrency, result store, ledger
    and retries as any endpoint, and its model's own chat template. The server runs in its own
    process group and is stopped when generation ends. (pip install '.[vllm]')"""

    def __init__(self, cfg, vllm_cfg=None):
        self.cfg, self.vllm_cfg = cfg, vllm_cfg
        self.model = cfg.model

    def generate(self, requests: Sequence[Request], store: ResultStore, ledger: Ledger) -> dict:
        from omegaconf import OmegaConf

        from cft.config import VLLMConfig
        from cft.critique.api import OpenAITeacher
        from cft.generation import VLLMServer

        if all(r.key in store for r in requests):
            return {"done": 0, "skipped_cached": len(requests), "failed_permanently": 0}
        with VLLMServer(self.cfg.model, self.vllm_cfg or VLLMConfig()) as server:
            cfg = OmegaConf.merge(OmegaConf.structured(self.cfg) if not OmegaConf.is_config(self.cfg) else self.cfg,
                                  {"base_url": server.base_url, "api_key_env": ""})
            return OpenAITeacher(cfg).generate(requests, store, ledger)


def build_teacher(cfg, records_by_id: dict[str, dict], batch_log=None, vllm_cfg=None):
    """The backend for one teacher config; `batch_log` (critique/batches.jsonl) for mode=batch,
    `vllm_cfg` (the `vllm` block) for teacher=vllm."""
    if cfg.backend == "reference":
        return ReferenceTeacher(cfg, records_by_id)
    if cfg.backend == "openai" and getattr(cfg, "mode", "sync") == "batch":
        from cft.critique.batch import BatchTeacher

        return BatchTeacher(cfg, batch_log)
    if cfg.backend == "openai":
        from cft.critique.api import OpenAITeacher

        return OpenAITeacher(cfg)
    if cfg.backend == "vllm":
        return VLLMTeacher(cfg, vllm_cfg)
    raise ValueError(f"teacher.backend={cfg.backend!r} has no generation backend")
