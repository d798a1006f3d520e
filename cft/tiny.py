"""The `tiny` model: a randomly initialised small Qwen2 + a byte-level BPE trained locally.

Built offline on first use and cached under `paths.cache/tiny/<hash>`; nothing is downloaded.
The tokenizer is trained on CHAMP text (problems, solutions, responses) so that math text
tokenizes sensibly. Build is atomic (temp dir + rename), so concurrent sweep jobs that race
to build it never see a half-written cache.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TOKENIZER_VERSION = 1


def _corpus() -> list[str]:
    import champ_dataset

    ds = champ_dataset.load("v0")
    texts = []
    for p in ds.problems.values():
        texts.append(p.text)
        texts.append(" ".join(s.text for s in p.solution.steps))
        for conv in list(p.conversations.values())[:8]:
            texts.extend(m.text for m in conv.messages if m.text)
    return texts


def _train_tokenizer(vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(_corpus(), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", bos_token=None)


def tiny_dir(arch: dict, cache: str | Path, seed: int = 0) -> Path:
    key = json.dumps({"arch": arch, "seed": seed, "tok": TOKENIZER_VERSION}, sort_keys=True)
    return Path(cache) / "tiny" / hashlib.sha256(key.encode()).hexdigest()[:16]


def build_tiny(arch: dict, cache: str | Path, seed: int = 0) -> Path:
    """Return the directory of the cached tiny model, building it if needed."""
    out = tiny_dir(arch, cache, seed)
    if (out / "config.json").exists():
        return out
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    arch = dict(arch)
    tokenizer = _train_tokenizer(arch["vocab_size"])
    config = AutoConfig.for_model(
        arch.pop("model_type"), **arch,
        bos_token_id=None, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=out.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        model.generation_config.save_pretrained(tmp)
        try:
            os.rename(tmp, out)
        except OSError:  # another process won the race; its copy is identical
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
