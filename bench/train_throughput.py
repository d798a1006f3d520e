"""Training throughput: our packed micro-batches vs the reference recipe's padded ones.

Same model, same CFT-formatted CHAMP examples (CHAMP records + the reference teacher's
critiques, rendered with the qwen template), same micro-batch size, in one process. Prints real
(non-pad) tokens/s for both and their ratio, MFU, peak memory, and padding efficiency
(real tokens / processed tokens).

    python bench/train_throughput.py                                   # CPU, tiny model
    python bench/train_throughput.py --model-config qwen2.5-1.5b --attn flash_attention_2 \
        --dtype bfloat16 --peak-tflops 989                             # one H100 (bf16 dense)

"reference" = LLaMA-Factory's default as the paper ran it: right-padded batches, no packing.
"ours" = DataCollatorWithFlattening rows (cft/train/packing.py). MFU = 6 * N * tokens/s /
peak FLOP/s (N = non-embedding parameters; attention FLOPs ignored); on CPU the peak is a
nominal flag value, so MFU there is only a relative figure.
"""
from __future__ import annotations

import argparse
import itertools
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Qwen2.5-1.5B's architecture (config.json on the hub), random init: nothing is downloaded.
QWEN25_15B = dict(model_type="qwen2", hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                  num_attention_heads=12, num_key_value_heads=2, vocab_size=151936,
                  max_position_embeddings=32768, rope_theta=1_000_000.0, tie_word_embeddings=True,
                  rms_norm_eps=1e-6)


def cft_features(tokenizer, n: int, cutoff: int, template: str = "qwen") -> list[dict]:
    """n CFT training examples from CHAMP (reference-teacher critiques), tokenized prompt-masked."""
    from omegaconf import OmegaConf

    from cft.critique.teachers import ReferenceTeacher
    from cft.datasets import load_records
    from cft.train.format import example, tokenize

    dataset = OmegaConf.load(ROOT / "conf" / "dataset" / "champ.yaml")
    teacher, feats = ReferenceTeacher(None, {}), []
    for rec in load_records(dataset):
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
    return feats


def tiny_source() -> Path:
    """The cached tiny model directory (built from conf/model/tiny.yaml on first use)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from cft.config import register_configs
    from cft.tiny import build_tiny

    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["model=tiny"])
    return build_tiny(OmegaConf.to_container(cfg.model.arch),
                      os.environ.get("CFT_CACHE", Path.home() / ".cache" / "cft"))


def build(args):
    """(model, tokenizer). qwen2.5-1.5b is random-init from its hard-coded config; its text is
    tokenized with the tiny tokenizer (ids < 2048 index into the 151936 vocab): token counts
    differ from Qwen's tokenizer, packing/padding behaviour does not."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from cft.models import load_tokenizer

    dtype = getattr(torch, args.dtype)
    source = tiny_source()
    tokenizer = load_tokenizer(str(source))
    if args.model_config == "tiny":
        model = AutoModelForCausalLM.from_pretrained(str(source), dtype=dtype, attn_implementation=args.attn)
    else:
        arch = dict(QWEN25_15B)
        if args.num_layers:
            arch["num_hidden_layers"] = args.num_layers
        config = AutoConfig.for_model(arch.pop("model_type"), **arch)
        torch.manual_seed(0)
        with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
            model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation=args.attn)
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    return model, tokenizer


def n_params(model) -> int:
    """Non-embedding parameters (the N of 6*N*D)."""
    emb = model.get_input_embeddings().weight.numel()
    return sum(p.numel() for p in model.parameters()) - emb


def measure(model, batches, device, warmup: int) -> dict:
    """Train steps (fwd + bwd + AdamW) over `batches`; times all but the first `warmup`."""
    import torch

    from cft.train.packing import padding_stats

    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    model.train()
    real = processed = 0
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.synchronize()
    t0 = None
    for i, batch in enumerate(batches):
        if i == warmup:
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        batch = {k: v.to(device) for k, v in batch.items()}
        loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= warmup:
            r, p = padding_stats(batch)
            real, processed = real + r, processed + p
    if device == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**30
    else:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # process max RSS, GiB
    elapsed = time.perf_counter() - t0
    return {"real_tokens": real, "processed_tokens": processed, "seconds": elapsed,
            "tokens_per_s": real / elapsed, "padding_efficiency": real / processed, "peak_mem_gib": peak}


def main() -> None:
    import torch

    from cft.train.packing import make_collator, prepare_model

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model-config", default="tiny", choices=["tiny", "qwen2.5-1.5b"])
    ap.add_argument("--attn", default="sdpa", help="sdpa | eager | flash_attention_2 | flex_attention")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--batch-size", type=int, default=8, help="samples per micro-batch")
    ap.add_argument("--cutoff", type=int, default=1024)
    ap.add_argument("--examples", type=int, default=96)
    ap.add_argument("--warmup", type=int, default=2, help="micro-batches not timed")
    ap.add_argument("--steps", type=int, default=8, help="timed micro-batches per recipe")
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help="peak dense FLOP/s of the device in TFLOP/s (H100 SXM bf16: 989); "
                         "default: 1.0 on CPU (nominal), 989 on CUDA")
    ap.add_argument("--gradient-checkpointing", action="store_true")
    ap.add_argument("--num-layers", type=int, default=0, help="qwen2.5-1.5b: fewer layers (smoke runs)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    device = "cuda" if torch.cuda.is_available() else "cpu"
    peak = args.peak_tflops or (989.0 if device == "cuda" else 1.0)
    model, tokenizer = build(args)
    prepare_model(model)
    model.to(device)
    feats = cft_features(tokenizer, args.examples, args.cutoff)
    order = list(range(len(feats)))
    random.Random(args.seed).shuffle(order)  # the same random sampler for both recipes
    need = (args.warmup + args.steps) * args.batch_size
    order = list(itertools.islice(itertools.cycle(order), need))
    groups = [[feats[j] for j in order[i:i + args.batch_size]] for i in range(0, need, args.batch_size)]
    N = n_params(model)
    print(f"model {args.model_config} ({N / 1e6:.2f}M non-embedding params, attn {args.attn}, "
          f"{args.dtype}, {device}); {len(feats)} CFT examples, cutoff {args.cutoff}, "
          f"micro-batch {args.batch_size}, {args.steps} timed steps")

    results = {}
    for name, packed in (("reference (padded)", False), ("ours (packed)", True)):
        collate = make_collator(packed, tokenizer.pad_token_id)
        r = measure(model, [collate(g) for g in groups], device, args.warmup)
        r["mfu"] = 6 * N * r["tokens_per_s"] / (peak * 1e12)
        results[name] = r
        print(f"{name:20s} real tokens/s {r['tokens_per_s']:10.1f}  padding efficiency "
              f"{r['padding_efficiency']:.3f}  MFU {100 * r['mfu']:.3f}%"
              f"{' (nominal peak)' if device == 'cpu' else ''}  peak mem {r['peak_mem_gib']:.2f} GiB"
              f"{' (process max RSS)' if device == 'cpu' else ''}")
    ours, ref = results["ours (packed)"], results["reference (padded)"]
    print(f"ratio ours / reference real tokens/s: {ours['tokens_per_s'] / ref['tokens_per_s']:.2f}x; "
          f"padding efficiency {ours['padding_efficiency']:.3f} vs {ref['padding_efficiency']:.3f}")
    if device == "cpu" and args.attn != "flash_attention_2":
        print("note: on CPU, sdpa masks a packed row densely ((sum L)^2 attention), so packing saves "
              "pad tokens but not attention FLOPs; the GPU figure needs flash_attention_2.")


if __name__ == "__main__":
    main()
