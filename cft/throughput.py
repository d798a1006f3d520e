"""Training-speed measurement shared by bench/train_throughput.py and the GPU check
(cft/gpu_check.py): CFT-shaped examples, a model of a real architecture built from its config,
timed optimizer steps, model FLOPs and MFU, and per-sample losses of a packed row.

Model FLOPs per trained sample of L real tokens (MFU counts useful work only: pad tokens and
gradient-checkpoint recomputation are not in it):
    6 * N * L                          N = parameters that do a matmul per token (non-embedding
                                       + the LM head; the embedding lookup is free)
  + 6 * n_layers * n_heads * d_head * L^2    causal attention, QK^T and AV, forward + backward
"""
from __future__ import annotations

import statistics
import time

# Qwen2.5-1.5B's architecture (config.json on the hub), random init: nothing is downloaded.
QWEN25_15B = dict(model_type="qwen2", hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                  num_attention_heads=12, num_key_value_heads=2, vocab_size=151936,
                  max_position_embeddings=32768, rope_theta=1_000_000.0, tie_word_embeddings=True,
                  rms_norm_eps=1e-6)

# Dense bf16 peak TFLOP/s by GPU name (vendor datasheets; no sparsity). Matched in order.
PEAK_BF16_TFLOPS = [("H200", 989.0), ("H100 PCIe", 756.0), ("H100", 989.0), ("A100", 312.0)]


def peak_tflops(device_name: str | None) -> float | None:
    """The dense bf16 peak of a GPU from its name, None when the table does not know it."""
    for key, value in PEAK_BF16_TFLOPS:
        if device_name and key.lower() in device_name.lower():
            return value
    return None


def cft_features(tokenizer, n: int, cutoff: int, template: str = "qwen") -> tuple[list[dict], str]:
    """n CFT training examples, tokenized prompt-masked exactly as the train stage does: CHAMP
    records (cft.datasets.champ_records: four models' 0-shot responses) with the reference
    teacher's critiques, rendered with
    `template`. Returns (features, a sentence saying where they come from)."""
    from cft.critique.teachers import ReferenceTeacher
    from cft.datasets import champ_records
    from cft.train.format import example, tokenize

    teacher, feats = ReferenceTeacher(None, {}), []
    for rec in champ_records():
        rec = rec.to_dict()
        critique, finish = teacher._critique(rec)
        if finish != "stop":
            continue
        row = {"id": rec["id"], "question": rec["question"], "noisy_response": rec["noisy_response"],
               "critique": critique}
        f = tokenize(example(row, "critique"), tokenizer, template, cutoff)
        f.pop("truncated")
        feats.append(f)
        if len(feats) == n:
            break
    source = (f"{len(feats)} CFT examples (critique target): CHAMP records + reference-teacher critiques "
              f"(cft.datasets.champ_records, teacher=reference), '{template}' template, cutoff {cutoff}, "
              f"tokenized by the tiny BPE tokenizer (2048 ids, trained on CHAMP; Qwen's own tokenizer "
              f"is not available offline, so token counts differ from Qwen's)")
    return feats, source


def length_stats(feats: list[dict]) -> dict:
    lengths = sorted(len(f["input_ids"]) for f in feats)
    return {"n": len(lengths), "mean": round(statistics.mean(lengths), 1),
            "median": statistics.median(lengths), "min": lengths[0], "max": lengths[-1]}


def random_model(arch: dict, dtype, attn: str, device: str, seed: int = 0):
    """A randomly initialised model of `arch` (a config.json as a dict), built on `device`."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    arch = dict(arch)
    config = AutoConfig.for_model(arch.pop("model_type"), **arch)
    torch.manual_seed(seed)
    with torch.device(device):
        return AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation=attn)


def matmul_params(model) -> int:
    """Parameters that do a matmul per token: all but the input embedding, plus the LM head
    when it is tied to the embedding (it still multiplies)."""
    emb = model.get_input_embeddings().weight.numel()
    total = sum(p.numel() for p in model.parameters())
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    return total - emb + (emb if tied else 0)


def model_flops(model, lengths: list[int]) -> float:
    """Training FLOPs (forward + backward) of one step over samples of these real lengths."""
    c = model.config
    d_attn = c.num_attention_heads * (getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads)
    n = matmul_params(model)
    return sum(6 * n * L + 6 * c.num_hidden_layers * d_attn * L * L for L in lengths)


def timed_steps(model, batches: list[dict], lengths: list[list[int]], device: str, warmup: int,
                lr: float = 1e-5) -> dict:
    """Train steps (forward + backward + AdamW) over the collated `batches`; the first `warmup`
    are not timed. Figures are medians over the timed steps (robust to a recompile)."""
    import torch

    from cft.train.packing import padding_stats

    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    cuda = device == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    steps = []
    for i, (batch, lens) in enumerate(zip(batches, lengths)):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        batch = {k: v.to(device) for k, v in batch.items()}
        model(**batch).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        if i >= warmup:
            real, processed = padding_stats(batch)
            steps.append({"seconds": dt, "real": real, "processed": processed,
                          "flops": model_flops(model, lens)})
    del opt
    med = statistics.median
    return {
        "timed_steps": len(steps),
        "step_seconds_median": med(s["seconds"] for s in steps),
        "real_tokens_per_s": med(s["real"] / s["seconds"] for s in steps),
        "model_flops_per_s": med(s["flops"] / s["seconds"] for s in steps),
        "padding_efficiency": sum(s["real"] for s in steps) / sum(s["processed"] for s in steps),
        "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
    }


def per_sample_losses(logits, labels, lengths: list[int]) -> list[float]:
    """Mean CE over each sample's target tokens, from one (packed or single) row of logits."""
    import torch.nn.functional as F

    from cft.train.format import IGNORE_INDEX

    out, start = [], 0
    for n in lengths:
        lg, lb = logits[start:start + n - 1], labels[start + 1:start + n]
        out.append(F.cross_entropy(lg.float(), lb, ignore_index=IGNORE_INDEX).item())
        start += n
    return out


def packed_vs_single(model, feats: list[dict], pad_id: int, device: str) -> dict:
    """Per-sample losses of one packed row (the training collator) against each sample alone."""
    import torch

    from cft.train.packing import make_collator, prepare_model

    prepare_model(model)
    model.train()  # the training code path (Qwen2 has no dropout: deterministic)
    lengths = [len(f["input_ids"]) for f in feats]
    batch = make_collator(True, pad_id)(feats)
    with torch.no_grad():
        packed = per_sample_losses(model(input_ids=batch["input_ids"].to(device),
                                         position_ids=batch["position_ids"].to(device)).logits[0],
                                   batch["labels"][0].to(device), lengths)
        single = [per_sample_losses(model(input_ids=torch.tensor([f["input_ids"]], device=device)).logits[0],
                                    torch.tensor(f["labels"], device=device), [len(f["input_ids"])])[0]
                  for f in feats]
    diffs = [abs(a - b) for a, b in zip(packed, single)]
    return {"n_samples": len(feats), "max_abs_diff": max(diffs),
            "max_rel_diff": max(d / abs(b) for d, b in zip(diffs, single) if b),
            "mean_loss": statistics.mean(single)}


def tiny_source(cache) -> str:
    """The cached tiny model directory (built from the composed `model=tiny` config on first use)."""
    from cft.config import compose_config
    from cft.models import model_source

    return model_source(compose_config(["model=tiny"]).model, str(cache))
