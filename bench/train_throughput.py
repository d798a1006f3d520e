"""Training throughput: our packed micro-batches vs the reference recipe's padded ones.

Same model, same CFT-formatted CHAMP examples (CHAMP records + the reference teacher's
critiques, rendered with the qwen template), same micro-batch size, in one process. Prints real
(non-pad) tokens/s for both and their ratio, MFU, peak memory, and padding efficiency
(real tokens / processed tokens).

    python bench/train_throughput.py                                   # CPU, tiny model
    python bench/train_throughput.py --model-config qwen2.5-1.5b --attn flash_attention_2 \
        --dtype bfloat16 --peak-tflops 989                             # one H100 (bf16 dense)

"reference" = LLaMA-Factory's default as the paper ran it: right-padded batches, no packing.
"ours" = DataCollatorWithFlattening rows (cft/train/packing.py). MFU = model FLOPs/s (of real
tokens; cft/train/throughput.py) / peak FLOP/s; on CPU the peak is a nominal flag value, so MFU
there is only a relative figure. The shared pieces live in cft/train/throughput.py (the GPU check,
cft/gpu_check.py, uses them too).
"""
from __future__ import annotations

import argparse
import itertools
import os
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def tiny_source() -> str:
    from cft.throughput import tiny_source as build

    return build(os.environ.get("CFT_CACHE", Path.home() / ".cache" / "cft"))


def build(args):
    """(model, tokenizer). qwen2.5-1.5b is random-init from its hard-coded config; its text is
    tokenized with the tiny tokenizer (ids < 2048 index into the 151936 vocab): token counts
    differ from Qwen's tokenizer, packing/padding behaviour does not."""
    import torch
    from transformers import AutoModelForCausalLM

    from cft.models import load_tokenizer
    from cft.throughput import QWEN25_15B, random_model

    dtype = getattr(torch, args.dtype)
    source = tiny_source()
    tokenizer = load_tokenizer(str(source))
    if args.model_config == "tiny":
        model = AutoModelForCausalLM.from_pretrained(str(source), dtype=dtype, attn_implementation=args.attn)
    else:
        arch = dict(QWEN25_15B, **({"num_hidden_layers": args.num_layers} if args.num_layers else {}))
        model = random_model(arch, dtype, args.attn, "cuda" if torch.cuda.is_available() else "cpu")
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    return model, tokenizer


def main() -> None:
    import torch

    from cft.train.packing import make_collator, prepare_model
    from cft.throughput import cft_features, matmul_params, timed_steps

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
    feats, _ = cft_features(tokenizer, args.examples, args.cutoff)
    order = list(range(len(feats)))
    random.Random(args.seed).shuffle(order)  # the same random sampler for both recipes
    need = (args.warmup + args.steps) * args.batch_size
    order = list(itertools.islice(itertools.cycle(order), need))
    groups = [[feats[j] for j in order[i:i + args.batch_size]] for i in range(0, need, args.batch_size)]
    lengths = [[len(f["input_ids"]) for f in g] for g in groups]
    print(f"model {args.model_config} ({matmul_params(model) / 1e6:.2f}M matmul params, attn {args.attn}, "
          f"{args.dtype}, {device}); {len(feats)} CFT examples, cutoff {args.cutoff}, "
          f"micro-batch {args.batch_size}, {args.steps} timed steps")

    results = {}
    for name, packed in (("reference (padded)", False), ("ours (packed)", True)):
        collate = make_collator(packed, tokenizer.pad_token_id)
        r = timed_steps(model, [collate(g) for g in groups], lengths, device, args.warmup)
        r["mfu"] = r["model_flops_per_s"] / (peak * 1e12)
        results[name] = r
        mem = f"{r['peak_mem_gib']:.2f} GiB" if r["peak_mem_gib"] is not None else "n/a (CPU)"
        print(f"{name:20s} real tokens/s {r['real_tokens_per_s']:10.1f}  padding efficiency "
              f"{r['padding_efficiency']:.3f}  MFU {100 * r['mfu']:.3f}%"
              f"{' (nominal peak)' if device == 'cpu' else ''}  peak mem {mem}")
    ours, ref = results["ours (packed)"], results["reference (padded)"]
    print(f"ratio ours / reference real tokens/s: {ours['real_tokens_per_s'] / ref['real_tokens_per_s']:.2f}x; "
          f"padding efficiency {ours['padding_efficiency']:.3f} vs {ref['padding_efficiency']:.3f}")
    if device == "cpu" and args.attn != "flash_attention_2":
        print("note: on CPU, sdpa masks a packed row densely ((sum L)^2 attention), so packing saves "
              "pad tokens but not attention FLOPs; the GPU figure needs flash_attention_2.")


if __name__ == "__main__":
    main()
