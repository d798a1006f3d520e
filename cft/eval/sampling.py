"""The evaluation's sampling protocol (eval.n, temperature, top_p, seed, ks) and the key of a
stored generation.

A stored generation (eval/<benchmark>.progress.jsonl) is reused only when everything that
determines it is unchanged: the model's weights and tokenizer (path plus each file's size and
mtime), the prompt text, the training template (it decides the BOS), the backend and its dtype,
max_new_tokens, the stop strings, n, temperature, top_p and the problem's seed. Change any of
them and the problem is generated again; change none and a re-run resumes.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Sampling:
    n: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    ks: tuple[int, ...] = (1,)

    @classmethod
    def of(cls, eval_cfg) -> "Sampling":
        """The protocol of an `eval` config section; wrong values fail here, naming the key."""
        s = cls(int(eval_cfg.n), float(eval_cfg.temperature), float(eval_cfg.top_p), int(eval_cfg.seed),
                tuple(int(k) for k in eval_cfg.ks))
        if s.n < 1:
            raise ValueError(f"eval.n={s.n}: samples per problem must be >= 1")
        if s.temperature < 0 or not 0 < s.top_p <= 1:
            raise ValueError(f"eval.temperature={s.temperature}, eval.top_p={s.top_p}: need temperature >= 0 "
                             "and 0 < top_p <= 1")
        if s.n > 1 and s.greedy:
            raise ValueError(f"eval.n={s.n} with eval.temperature=0: greedy samples are all the same; "
                             "set eval.temperature (e.g. 0.6, eval=sampled)")
        if any(k < 1 for k in s.ks):
            raise ValueError(f"eval.ks={list(s.ks)}: every k must be >= 1")
        return s

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def problem_seed(self, benchmark: str, idx: int) -> int:
        """The seed of one problem's samples: the same problem gets the same samples, whichever
        other problems are generated with it."""
        digest = hashlib.sha256(f"{self.seed}:{benchmark}:{idx}".encode()).digest()
        return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF

    def describe(self) -> str:
        return "greedy" if self.greedy else f"n={self.n}, T={self.temperature:g}, top_p={self.top_p:g}"

    def to_dict(self) -> dict:
        return {**asdict(self), "ks": [k for k in self.ks if k <= self.n]}


def model_identity(path: str | None) -> object:
    """A local model directory as (resolved path, [(file, size, mtime_ns)...]); a hub id as itself.
    Retraining into the same directory changes the mtimes, so it counts as another model."""
    if path is None:
        return None
    root = Path(path)
    if not root.is_dir():
        return str(path)
    files = sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in root.iterdir()
                   if f.is_file() and not f.name.startswith("."))
    return [str(root.resolve()), files]


def generation_settings(cfg, model_path: str, tokenizer_path: str | None, sampling: Sampling) -> dict:
    """What determines a stored generation besides its prompt and seed."""
    from cft.generation import STOP_STRINGS

    backend = cfg.eval.backend
    return {"model": model_identity(model_path), "tokenizer": model_identity(tokenizer_path or model_path),
            "backend": backend, "dtype": cfg.vllm.dtype if backend == "vllm" else cfg.model.dtype,
            "train_template": cfg.model.train_template, "max_new_tokens": int(cfg.eval.max_new_tokens),
            "stop": list(STOP_STRINGS), "n": sampling.n, "temperature": sampling.temperature,
            "top_p": sampling.top_p}


def generation_key(settings: dict, prompt: str, seed: int | None) -> str:
    """The store key of one problem's samples (seed None when greedy)."""
    blob = json.dumps({**settings, "prompt": prompt, "seed": seed}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()
