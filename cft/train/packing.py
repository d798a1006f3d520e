"""Micro-batch collation: padding-free packing (default) or right-padded batches.

Packing uses transformers' own ``DataCollatorWithFlattening``: a micro-batch becomes one row of
concatenated samples with ``position_ids`` restarting at 0 per sample, and the first label of
every sample set to -100 so no sample's last token is trained to predict the next sample.
We use the library piece rather than our own because the attention kernels key on exactly its
output: flash_attention_2 turns restarting ``position_ids`` into ``cu_seqlens`` (varlen kernel),
and in transformers 5 sdpa/eager/flex build a block-diagonal causal mask from them
(``masking_utils.find_packed_sequence_indices``). Both were checked numerically on CPU
(tests/test_packing.py: per-sample losses of a packed row equal the one-by-one losses, for
sdpa, eager and flex_attention).

Two traps, both handled by ``prepare_model``:
- that mask path only runs when no KV cache is passed. A config with ``use_cache: true`` (Qwen2's
  default, and our tiny build) makes the model create a DynamicCache even in ``train()`` mode, and
  then the packed row silently attends across samples (max logit error 0.73 on tiny). Training
  never needs a cache, so we switch it off.
- kernels that cannot mask packed rows (anything outside ``PACKING_ATTN``) fall back to padding.

Cost: flash_attention_2/3 run a varlen kernel over a packed row, so attention FLOPs are
sum(L_i^2) and no pad token is processed: that is what packing is for, and it is what
``model.packing=auto`` selects (on a GPU, `model.attn_implementation=auto` picks flash-attn).
flex_attention gets there with a block-sparse mask (torch.compile'd), so ``auto`` packs with it
too: the choice for a GPU without the flash-attn package (its speed there is unmeasured: no GPU
was lent to this project yet). It trains on GPUs only: PyTorch has no flex backward on CPU.
sdpa/eager instead materialise a dense block-diagonal mask over the whole row: still exact,
but attention costs (sum L_i)^2 and torch's masked-sdpa backward on CPU is ~3x the padded one
(measured on tiny, 8 CHAMP samples: 2.6 s vs 0.9 s). So ``auto`` pads with those kernels and
``model.packing=packed`` forces packing anyway (tests, the throughput benchmark).
"""
from __future__ import annotations

from cft.train.format import IGNORE_INDEX


# Attention implementations whose transformers 5 code path honours packed position_ids ...
PACKING_ATTN = ("flash_attention_2", "flash_attention_3", "sdpa", "eager", "flex_attention")
# ... and those that do so without computing attention across samples: the varlen flash kernels,
# and flex_attention, whose block mask skips every block that lies wholly across two samples.
SPARSE_ATTN = ("flash_attention_2", "flash_attention_3", "flex_attention")


class PadCollator:
    """Right-pads a batch; pad labels are IGNORE_INDEX so they carry no loss.
    (The reference recipe's layout: LLaMA-Factory pads, it does not pack, by default.)"""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, features: list[dict]) -> dict:
        import torch

        n = max(len(f["input_ids"]) for f in features)
        ids = torch.full((len(features), n), self.pad_id, dtype=torch.long)
        labels = torch.full((len(features), n), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(features), n), dtype=torch.long)
        for i, f in enumerate(features):
            k = len(f["input_ids"])
            ids[i, :k] = torch.tensor(f["input_ids"])
            labels[i, :k] = torch.tensor(f["labels"])
            mask[i, :k] = 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def packing_enabled(mode: str, attn_implementation: str) -> bool:
    """Whether to pack, given model.packing (auto | packed | padded) and the attention kernel."""
    if mode == "padded":
        return False
    if mode == "auto" and attn_implementation not in SPARSE_ATTN:
        _say(f"packing: auto -> padded batches: {attn_implementation!r} masks a packed row densely "
             f"(packing would be exact but quadratic in the packed row; model.packing=packed forces it)")
        return False
    if attn_implementation not in PACKING_ATTN:
        _say(f"packing: attention {attn_implementation!r} cannot mask packed rows; falling back "
             f"to padded batches (supported: {', '.join(PACKING_ATTN)})")
        return False
    return True


def _say(msg: str) -> None:
    print(f"[cft] {msg}")  # once: a logger line would be echoed to the console by Hydra too


# Kernels that take the packed row's boundaries as cu_seqlens / max lengths.
VARLEN_ATTN = ("flash_attention_2", "flash_attention_3")


def make_collator(packing: bool, pad_id: int, attn_implementation: str | None = None):
    """The collator for the Trainer: packed rows or padded batches. For the flash kernels a
    packed batch also carries the sample boundaries (cu_seq_lens_q/k, max_length_q/k), computed
    once per batch on the host: without them transformers re-derives them from position_ids in
    every layer, forward and recompute, with device syncs (modeling_flash_attention_utils:
    `is_fa_with_varlen_kwargs` skips `_prepare_from_posids`; issue #20 item 4)."""
    if packing:
        from transformers import DataCollatorWithFlattening

        return DataCollatorWithFlattening(return_position_ids=True, separator_id=IGNORE_INDEX,
                                          return_flash_attn_kwargs=attn_implementation in VARLEN_ATTN)
    return PadCollator(pad_id)


def prepare_model(model) -> bool:
    """Switch the KV cache off for training (packing depends on it); returns the old setting,
    which the caller restores before saving final weights so generation keeps its cache."""
    old = bool(getattr(model.config, "use_cache", False))
    model.config.use_cache = False
    return old


def attn_of(model) -> str:
    return getattr(model.config, "_attn_implementation", None) or "eager"


def padding_stats(batch: dict) -> tuple[int, int]:
    """(real tokens, processed tokens) of one collated batch: padding efficiency = real / processed."""
    ids = batch["input_ids"]
    processed = ids.numel()
    real = int(batch["attention_mask"].sum()) if "attention_mask" in batch else processed
    return real, processed
