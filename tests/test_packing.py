"""Padding-free packing is exact: no token of a packed row sees another sample.

Tolerance: per-sample mean target-token losses agree to 1e-5 (fp32, CPU); measured ~1e-7.
"""
from __future__ import annotations

import pytest

from cft.train.format import IGNORE_INDEX, example, tokenize
from cft.throughput import per_sample_losses
from cft.train.packing import make_collator, packing_enabled, prepare_model

from test_train import cft_rows

TOL = 1e-5


def _features(tokenizer, n=6, cutoff=512):
    feats = [tokenize(example(r, "critique"), tokenizer, "qwen", cutoff) for r in cft_rows(n)]
    for f in feats:
        f.pop("truncated")
    return feats


def _model(tiny_source, attn):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_source), attn_implementation=attn,
                                                 dtype=torch.float32)
    model.train()  # the training code path (Qwen2 has no dropout, so it is deterministic)
    return model


@pytest.mark.parametrize("attn", ["sdpa", "eager", "flex_attention"])
def test_packed_losses_equal_one_by_one(tiny_source, tiny_tokenizer, attn):
    import torch

    feats = _features(tiny_tokenizer)
    lengths = [len(f["input_ids"]) for f in feats]
    assert len(set(lengths)) > 1  # samples of different lengths, as in real data
    model = _model(tiny_source, attn)
    prepare_model(model)
    batch = make_collator(True, tiny_tokenizer.pad_token_id)(feats)
    assert batch["input_ids"].shape == (1, sum(lengths)) and "attention_mask" not in batch
    with torch.no_grad():
        packed = per_sample_losses(model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]
                                          ).logits[0], batch["labels"][0], lengths)
        single = [per_sample_losses(model(input_ids=torch.tensor([f["input_ids"]])).logits[0],
                                     torch.tensor(f["labels"]), [len(f["input_ids"])])[0] for f in feats]
        # The whole-batch loss the Trainer sees equals the padded batch's.
        padded = make_collator(False, tiny_tokenizer.pad_token_id)(feats)
        loss_packed = model(**batch).loss.item()
        loss_padded = model(**padded).loss.item()
    diff = max(abs(a - b) for a, b in zip(packed, single))
    print(f"[{attn}] packed vs one-by-one per-sample loss: max abs diff {diff:.2e}; "
          f"batch loss packed {loss_packed:.6f} padded {loss_padded:.6f}")
    assert diff <= TOL
    assert abs(loss_packed - loss_padded) <= TOL


def test_a_kv_cache_breaks_packing_so_training_switches_it_off(tiny_source, tiny_tokenizer):
    """transformers 5 builds the block-diagonal mask only without a cache; use_cache=True in the
    model config (Qwen2's default) silently lets packed samples attend to each other."""
    import torch

    feats = _features(tiny_tokenizer, n=3)
    lengths = [len(f["input_ids"]) for f in feats]
    model = _model(tiny_source, "sdpa")
    model.config.use_cache = True
    batch = make_collator(True, tiny_tokenizer.pad_token_id)(feats)
    with torch.no_grad():
        leaky = per_sample_losses(model(**{k: batch[k] for k in ("input_ids", "position_ids")}).logits[0],
                                   batch["labels"][0], lengths)
        prepare_model(model)
        exact = per_sample_losses(model(**{k: batch[k] for k in ("input_ids", "position_ids")}).logits[0],
                                   batch["labels"][0], lengths)
    assert leaky[0] == pytest.approx(exact[0], abs=TOL)  # the first sample has nothing to leak from
    assert max(abs(a - b) for a, b in zip(leaky[1:], exact[1:])) > 1e-3


def test_labels_never_cross_a_sample_boundary(tiny_tokenizer):
    feats = _features(tiny_tokenizer, n=4)
    batch = make_collator(True, tiny_tokenizer.pad_token_id)(feats)
    pos, labels, start = batch["position_ids"][0].tolist(), batch["labels"][0].tolist(), 0
    for f in feats:
        n = len(f["input_ids"])
        assert pos[start:start + n] == list(range(n))
        assert labels[start] == IGNORE_INDEX  # the previous sample's last token predicts nothing here
        assert labels[start + 1:start + n] == f["labels"][1:]  # the prompt mask is kept
        start += n


def test_auto_packs_only_with_sparse_kernels():
    assert packing_enabled("auto", "flash_attention_2") is True
    assert packing_enabled("auto", "flex_attention") is True  # block-sparse document mask
    assert packing_enabled("auto", "sdpa") is False  # exact but quadratic in the packed row
    assert packing_enabled("packed", "sdpa") is True
    assert packing_enabled("packed", "some_kernel") is False  # cannot mask a packed row
    assert packing_enabled("padded", "flash_attention_2") is False
