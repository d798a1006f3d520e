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


def test_flash_batches_carry_their_sample_boundaries(tiny_tokenizer):
    """For flash_attention_2/3 a packed batch brings cu_seq_lens / max lengths from the host, so
    transformers does not re-derive them from position_ids in every layer (with device syncs);
    the other kernels get the plain packed batch they mask from position_ids."""
    feats = _features(tiny_tokenizer)
    lengths = [len(f["input_ids"]) for f in feats]
    flash = make_collator(True, tiny_tokenizer.pad_token_id, "flash_attention_2")(feats)
    bounds = [sum(lengths[:k]) for k in range(len(lengths) + 1)]
    assert flash["cu_seq_lens_q"].tolist() == flash["cu_seq_lens_k"].tolist() == bounds
    assert flash["max_length_q"] == flash["max_length_k"] == max(lengths)
    for attn in ("sdpa", "flex_attention", None):
        assert "cu_seq_lens_q" not in make_collator(True, tiny_tokenizer.pad_token_id, attn)(feats)


def test_broken_flash_attn_is_not_chosen(tmp_path, monkeypatch):
    """A flash-attn wheel built for another torch imports as a package and dies at its first
    forward: `auto` must see that before the run, not after data and critique were paid for.
    On a GPU without a usable flash-attn, training gets flex_attention (so `auto` still packs)
    and generation sdpa."""
    import sys

    from cft.models import attn_implementation, flash_attn_usable

    pkg = tmp_path / "flash_attn"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        "raise ImportError('flash_attn_2_cuda.so: undefined symbol: _ZN3c105ErrorC2ENS_14SourceLocation')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "flash_attn", raising=False)
    assert flash_attn_usable() is False
    assert attn_implementation("auto", training=True, cuda=True) == "flex_attention"
    assert attn_implementation("auto", training=False, cuda=True) == "sdpa"
    assert attn_implementation("auto", training=True, cuda=True, flash=True) == "flash_attention_2"
    assert attn_implementation("auto", training=True, cuda=False, flash=True) == "sdpa"
    assert packing_enabled("auto", attn_implementation("auto", training=True, cuda=True))
    assert attn_implementation("eager", cuda=True, flash=True) == "eager"  # an explicit choice stands
