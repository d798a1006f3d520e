"""The train stage's dataset: its examples tokenized once per run, by one process, into a
memory-mapped Arrow dataset in the run directory that every rank reads.

Before (issue #24), every rank tokenized every example one by one into Python lists, on every
run and requeue: 120K WebInstruct-CFT rows took minutes and GBs per rank. Now the main process
(rank 0) streams the examples to `train/tokenized/<key>/examples.jsonl`, tokenizes them with
`datasets.map` (batched: `tokenize_batch`; one worker per CPU core it may use) and saves the
result as Arrow files; the other ranks wait for its marker (meta.json, written last), and
every rank opens them memory-mapped: a rank holds the batches it reads, not
the dataset. LLaMA-Factory and TRL do the same (datasets.map on the main process first).

The key is everything the token ids depend on: the content of the files the examples come
from, the method's data fields (all of `method` but the optimisation and schedule fields), the
seed, the tokenizer's full definition, the template and cutoff_len. A re-run, a requeue or a
change elsewhere (method.max_steps, method.lr, ...) reuses the folder; another key builds its own
folder and removes the old one. `train/examples.jsonl` is a hard link to the folder's copy.

Rows hold input_ids and prompt_len; the Trainer reads {input_ids, labels} (labels =
`masked_labels`), the features `tokenize` gives, in the examples' order.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Callable, Iterable

from cft import distributed
from cft.io import read_json, write_json
from cft.paths import RunPaths
from cft.train.format import masked_labels, tokenize_batch

# Bump when the tokenization changes what it writes: every run then tokenizes again.
FORMAT_VERSION = 1
# method fields that shape the optimisation, not the examples: changing them keeps the data.
TRAINING_ONLY = ("name", "lr", "scheduler", "warmup_ratio", "weight_decay", "global_batch_size", "epochs",
                 "max_steps", "bf16", "max_grad_norm", "save_steps", "save_total_limit")
ROWS_PER_WORKER = 5_000  # below this a tokenization worker costs more to start than it saves
MAX_WORKERS = 32


def prepare(cfg, paths: RunPaths, tokenizer, examples: Callable[[], Iterable[dict]],
            inputs: list[Path]):
    """(the tokenized dataset, its meta) for this run, on every rank: the main process builds it
    unless a complete one with this key exists; the others wait for it. `examples()` streams
    the examples, read from the `inputs` files."""
    if importlib.util.find_spec("datasets") is None:
        return in_memory(cfg, paths, tokenizer, examples)
    key = data_key(cfg, inputs, tokenizer)
    folder = paths.tokenized(key)
    marker = folder / "meta.json"
    if distributed.is_main():
        meta = _complete(marker, key)
        if meta is None:
            meta = build(cfg, folder, tokenizer, examples(), key)
        else:
            print(f"[cft] train: reusing {meta['n_examples']} tokenized examples ({folder})", flush=True)
        _link(folder / "examples.jsonl", paths.train_examples)
        for other in paths.tokenized_dir.iterdir():
            if other != folder:
                shutil.rmtree(other, ignore_errors=True)
    else:
        print(f"[cft] train: rank {distributed.rank()} waits for rank 0's tokenized examples", flush=True)
        meta = distributed.wait_for_marker(marker, key)
    return load(folder), meta


def in_memory(cfg, paths: RunPaths, tokenizer, examples: Callable[[], Iterable[dict]]):
    """Without `datasets` (an air-gapped node given only the offline bundle's core wheels): every
    rank tokenizes the examples in memory, one at a time, as before the memory-mapped path. The
    same ids, labels and order (tests/test_tokenized.py checks tokenize_batch against tokenize);
    only memory and time differ, so it says so and trains."""
    from cft.train.format import tokenize

    print('[cft] train: `datasets` is not installed, so every rank tokenizes in memory '
          '(pip install "cft[hub]" for the tokenize-once, memory-mapped path)', flush=True)
    paths.train_examples.parent.mkdir(parents=True, exist_ok=True)
    target = paths.train_examples if distributed.is_main() else Path(os.devnull)
    rows = list(examples())
    meta = _write_examples(rows, target)
    features = [tokenize(ex, tokenizer, cfg.model.train_template, int(cfg.method.cutoff_len)) for ex in rows]
    meta["n_truncated"] = sum(f.pop("truncated") for f in features)
    return features, meta


def data_key(cfg, inputs: list[Path], tokenizer) -> str:
    """Hash of what the token ids depend on (see the module docstring)."""
    from omegaconf import OmegaConf

    method = OmegaConf.to_container(cfg.method, resolve=True)
    blob = {"version": FORMAT_VERSION, "seed": cfg.seed,
            "method": {k: v for k, v in method.items() if k not in TRAINING_ONLY},
            "template": cfg.model.train_template, "tokenizer": tokenizer_digest(tokenizer),
            "inputs": {p.name: _file_digest(p) for p in inputs}}
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:16]


def tokenizer_digest(tokenizer) -> str:
    """The tokenizer's full definition (vocabulary, merges, normalizer, pre-tokenizer, added
    tokens: a fast tokenizer's JSON) and the special ids the template uses."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        definition = backend.to_str()
    else:  # no Rust backend: datasets' own fingerprint of the object
        from datasets.fingerprint import Hasher

        definition = Hasher.hash(tokenizer)
    h = hashlib.sha256(definition.encode())
    h.update(repr((type(tokenizer).__name__, len(tokenizer), tokenizer.bos_token_id,
                   tokenizer.eos_token_id)).encode())
    return h.hexdigest()


def _file_digest(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _complete(marker: Path, key: str) -> dict | None:
    try:
        meta = read_json(marker)
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and meta.get("fingerprint") == key else None


def build(cfg, folder: Path, tokenizer, examples: Iterable[dict], key: str, workers: int | None = None) -> dict:
    """Write `folder`: examples.jsonl, data/ (the tokenized Arrow dataset) and meta.json. Built
    in a temp folder renamed into place, so `folder` is complete or absent; a failure (e.g. a
    mix the data cannot fill, raised while the examples stream) leaves no temp folder behind."""
    tmp = folder.with_name(f".{folder.name}.tmp")
    try:
        return _build(cfg, folder, tmp, tokenizer, examples, key, workers)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _build(cfg, folder: Path, tmp: Path, tokenizer, examples: Iterable[dict], key: str, workers: int | None) -> dict:
    datasets = _datasets()
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    t0, cpu0 = time.time(), _cpu_s()
    meta = {"fingerprint": key, **_write_examples(examples, tmp / "examples.jsonl")}
    t1, cpu1 = time.time(), _cpu_s()
    workers = workers or num_workers(meta["n_examples"])
    print(f"[cft] train: tokenizing {meta['n_examples']} examples once, {workers} worker(s) ({folder})",
          flush=True)
    text = datasets.Dataset.from_generator(_read_examples, gen_kwargs={"path": str(tmp / "examples.jsonl")},
                                           features=_text_features(), cache_dir=str(tmp / "cache"))
    # Each worker writes its contiguous shard straight into data/ (tokens[_0000k_of_0000n].arrow):
    # no copy, and load() reads the shards in name order, which is the examples' order.
    (tmp / "data").mkdir()
    text.map(_tokenize_rows, batched=True, batch_size=1000, num_proc=workers if workers > 1 else None,
             remove_columns=text.column_names, features=_token_features(),
             fn_kwargs={"tokenizer": tokenizer, "template": cfg.model.train_template,
                        "cutoff_len": int(cfg.method.cutoff_len)},
             cache_file_name=str(tmp / "data" / "tokens.arrow"), load_from_cache_file=False,
             new_fingerprint=key, desc="[cft] train: tokenizing")
    import pyarrow.compute as pc

    table = _shards(tmp).data
    meta.update(n_truncated=int(pc.sum(table.column("truncated")).as_py() or 0),
                n_tokens=int(pc.sum(pc.list_value_length(table.column("input_ids"))).as_py() or 0),
                tokenized_by={"rank": distributed.rank(), "world_size": distributed.world_size()},
                workers=workers, seconds={"examples": round(t1 - t0, 2), "tokenize": round(time.time() - t1, 2)},
                cpu_seconds={"examples": round(cpu1 - cpu0, 2), "tokenize": round(_cpu_s() - cpu1, 2)})
    del text, table
    shutil.rmtree(tmp / "cache")
    write_json(tmp / "meta.json", meta)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    print(f"[cft] train: tokenized {meta['n_examples']} examples ({meta['n_tokens']} tokens, "
          f"{meta['n_truncated']} truncated) in {meta['seconds']['tokenize']}s", flush=True)
    return meta


def load(folder: Path):
    """The tokenized dataset, memory-mapped, as the Trainer reads it: rows {input_ids, labels}."""
    return _shards(folder).with_transform(_with_labels, columns=["input_ids", "prompt_len"])


def _shards(folder: Path):
    datasets = _datasets()
    shards = [datasets.Dataset.from_file(str(p)) for p in sorted((folder / "data").glob("*.arrow"))]
    return shards[0] if len(shards) == 1 else datasets.concatenate_datasets(shards)


def num_workers(n_examples: int) -> int:
    """Tokenization processes: one per CPU core this process may use, fewer for small data."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(cores, n_examples // ROWS_PER_WORKER, MAX_WORKERS))


def _cpu_s() -> float:
    """CPU seconds of this process and its finished children (the tokenization workers)."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _write_examples(examples: Iterable[dict], path: Path) -> dict:
    """Stream the examples to `path` (train/examples.jsonl's format); their count, SFT share,
    polarity counts and the file's sha256 (what a checkpoint's resume key depends on)."""
    digest, n, n_sft, polarity = hashlib.sha256(), 0, 0, Counter()
    with open(path, "w", encoding="utf-8") as f:
        for ex in examples:
            line = json.dumps(ex, ensure_ascii=False) + "\n"
            f.write(line)
            digest.update(line.encode())
            n += 1
            n_sft += str(ex["id"]).startswith("sft:")
            if "polarity" in ex:
                polarity[ex["polarity"]] += 1
    return {"n_examples": n, "n_sft_mixed": n_sft, "polarity": dict(polarity),
            "examples_sha256": digest.hexdigest()}


def _read_examples(path: str):
    with open(path, encoding="utf-8") as f:
        for line in f:
            ex = json.loads(line)
            yield {"prompt": ex["prompt"], "target": ex["target"]}


def _tokenize_rows(batch: dict, tokenizer, template: str, cutoff_len: int) -> dict:
    return tokenize_batch(batch["prompt"], batch["target"], tokenizer, template, cutoff_len)


def _with_labels(batch: dict) -> dict:
    return {"input_ids": batch["input_ids"],
            "labels": [masked_labels(ids, n) for ids, n in zip(batch["input_ids"], batch["prompt_len"])]}


def _link(src: Path, dst: Path) -> None:
    """`dst` becomes `src` (a hard link; a copy where the filesystem has none), atomically."""
    if dst.exists() and os.path.samefile(src, dst):
        return
    tmp = dst.with_name(f".{dst.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def _text_features():
    from datasets import Features, Value

    return Features({"prompt": Value("string"), "target": Value("string")})


def _token_features():
    from datasets import Features, Value

    try:
        from datasets import List  # datasets >= 4
    except ImportError:
        from datasets import Sequence as List
    return Features({"input_ids": List(Value("int32")), "prompt_len": Value("int32"), "truncated": Value("bool")})


def _datasets():
    try:
        import datasets
    except ImportError:
        raise RuntimeError('the train stage tokenizes with `datasets`, which is not installed: '
                           'pip install "cft[hub]"') from None
    return datasets
