"""The train stage's dataset: its examples tokenized once per run, by one process, into a
memory-mapped Arrow dataset in the run directory that every rank reads.

Before (issue #24), every rank tokenized every example one by one into Python lists, on every
run and requeue: 120K WebInstruct-CFT rows took minutes and GBs per rank. Now the main process
(rank 0) makes one pass over the examples: it streams them to
`train/tokenized/<key>/examples.jsonl` and, 2,000 at a time, encodes them with the tokenizer's
Rust backend (`tokenize_batch`: one call per batch, spread over the cores by the Rust threads)
and appends the int32 ids to one Arrow stream file, data/tokens.arrow. The other ranks wait for
its marker (meta.json, written last), and every rank opens the file memory-mapped
(`datasets.Dataset.from_file`): a rank holds the batches it reads, not the dataset.
LLaMA-Factory and TRL also tokenize once on the main process (with datasets.map, whose
JSON -> Arrow -> map -> save writes the data several times and runs the tokenizer's Python
__call__ per batch; writing the stream once is what we measured faster, bench/data_scale.py).

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
import itertools
import json
import os
import shutil
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
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
                 "max_steps", "bf16", "max_grad_norm", "save_steps", "save_total_limit",
                 "snapshot_steps")
BATCH_SIZE = 2_000  # examples per encoder call: enough for the Rust threads, a few MB of ids


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
    with _ExamplesFile(target) as text:
        text.write(rows)
    meta = text.summary()
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


def build(cfg, folder: Path, tokenizer, examples: Iterable[dict], key: str) -> dict:
    """Write `folder`: examples.jsonl, data/ (the tokenized Arrow dataset) and meta.json. Built
    in a temp folder renamed into place, so `folder` is complete or absent; a failure (e.g. a
    mix the data cannot fill, raised while the examples stream) leaves no temp folder behind."""
    tmp = folder.with_name(f".{folder.name}.tmp")
    try:
        return _build(cfg, folder, tmp, tokenizer, examples, key)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _build(cfg, folder: Path, tmp: Path, tokenizer, examples: Iterable[dict], key: str) -> dict:
    _datasets()  # the reader (load) needs it: say so before any work
    import pyarrow as pa

    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "data").mkdir(parents=True)
    threads, schema = encoder_threads(), _arrow_schema()
    print(f"[cft] train: tokenizing the examples once, {threads} thread(s) ({folder})", flush=True)
    t0, cpu0 = time.time(), _cpu_s()
    template, cutoff_len = cfg.model.train_template, int(cfg.method.cutoff_len)
    counts = {"n_tokens": 0, "n_truncated": 0}

    def encode(batch: list[dict]) -> dict:
        return tokenize_batch([ex["prompt"] for ex in batch], [ex["target"] for ex in batch],
                              tokenizer, template, cutoff_len)

    def append(cols: dict) -> None:
        arrow.write_batch(_record_batch(cols, schema))
        counts["n_tokens"] += sum(map(len, cols["input_ids"]))
        counts["n_truncated"] += sum(cols["truncated"])

    # A batch encodes in a thread (the Rust encoder releases the GIL) while this one reads and
    # writes the next batch's examples; at most two batches are held.
    with _ExamplesFile(tmp / "examples.jsonl") as text, pa.OSFile(str(tmp / "data" / "tokens.arrow"), "wb") as sink, \
            pa.ipc.new_stream(sink, schema) as arrow, ThreadPoolExecutor(max_workers=1) as encoder:
        pending = None
        for batch in _batches(examples, BATCH_SIZE):
            text.write(batch)
            if pending is not None:
                append(pending.result())
            pending = encoder.submit(encode, batch)
        if pending is not None:
            append(pending.result())
    meta = {"fingerprint": key, **text.summary(), **counts,
            "tokenized_by": {"rank": distributed.rank(), "world_size": distributed.world_size()},
            "workers": threads, "seconds": {"tokenize": round(time.time() - t0, 2)},
            "cpu_seconds": {"tokenize": round(_cpu_s() - cpu0, 2)}}
    write_json(tmp / "meta.json", meta)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    print(f"[cft] train: tokenized {meta['n_examples']} examples ({meta['n_tokens']} tokens, "
          f"{meta['n_truncated']} truncated) in {meta['seconds']['tokenize']}s", flush=True)
    return meta


def _record_batch(cols: dict, schema):
    """One Arrow record batch of tokenize_batch's columns: the ids flattened once into an int32
    buffer with list offsets (half the bytes of int64, and no per-row Python objects in Arrow)."""
    import numpy as np
    import pyarrow as pa

    lengths = np.fromiter(map(len, cols["input_ids"]), dtype=np.int32, count=len(cols["input_ids"]))
    offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    flat = np.fromiter(itertools.chain.from_iterable(cols["input_ids"]), dtype=np.int32, count=int(offsets[-1]))
    ids = pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat))
    return pa.record_batch([ids, pa.array(cols["prompt_len"], pa.int32()), pa.array(cols["truncated"], pa.bool_())],
                           schema=schema)


def _batches(items: Iterable[dict], size: int):
    it = iter(items)
    while batch := list(itertools.islice(it, size)):
        yield batch


def load(folder: Path):
    """The tokenized dataset, memory-mapped, as the Trainer reads it: rows {input_ids, labels}."""
    return _shards(folder).with_transform(_with_labels, columns=["input_ids", "prompt_len"])


def _shards(folder: Path):
    datasets = _datasets()
    shards = [datasets.Dataset.from_file(str(p)) for p in sorted((folder / "data").glob("*.arrow"))]
    return shards[0] if len(shards) == 1 else datasets.concatenate_datasets(shards)


def encoder_threads() -> int:
    """Threads the Rust encoder spreads a batch over: every core this process may use, unless
    TOKENIZERS_PARALLELISM turns it off (tokenizers' own switch) or RAYON_NUM_THREADS sets it."""
    if os.environ.get("TOKENIZERS_PARALLELISM", "").lower() in ("0", "false", "off", "no"):
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return int(os.environ.get("RAYON_NUM_THREADS") or 0) or cores


def _cpu_s() -> float:
    """CPU seconds of this process (all its threads, the Rust encoder's included) and its finished children."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class _ExamplesFile:
    """train/examples.jsonl written as the examples stream by: their count, SFT share, polarity
    counts and the file's sha256 (what a checkpoint's resume key depends on)."""

    def __init__(self, path: Path):
        self.path, self.digest, self.n, self.n_sft, self.polarity = path, hashlib.sha256(), 0, 0, Counter()

    def __enter__(self):
        self.file = open(self.path, "w", encoding="utf-8")
        return self

    def __exit__(self, *exc):
        self.file.close()

    def write(self, examples: Iterable[dict]) -> None:
        for ex in examples:
            line = json.dumps(ex, ensure_ascii=False) + "\n"
            self.file.write(line)
            self.digest.update(line.encode())
            self.n += 1
            self.n_sft += str(ex["id"]).startswith("sft:")
            if "polarity" in ex:
                self.polarity[ex["polarity"]] += 1

    def summary(self) -> dict:
        return {"n_examples": self.n, "n_sft_mixed": self.n_sft, "polarity": dict(self.polarity),
                "examples_sha256": self.digest.hexdigest()}


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


def _arrow_schema():
    import pyarrow as pa

    return pa.schema([("input_ids", pa.list_(pa.int32())), ("prompt_len", pa.int32()), ("truncated", pa.bool_())])


def _datasets():
    try:
        import datasets
    except ImportError:
        raise RuntimeError('the train stage tokenizes with `datasets`, which is not installed: '
                           'pip install "cft[hub]"') from None
    return datasets
