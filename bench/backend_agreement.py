"""Do the transformers and vLLM backends evaluate a model the same way?

One model, the same benchmark items, both generators of cft.generation (greedy). Greedy text
of two correct backends diverges wherever the top two logits nearly tie, so identical text is
not the test (issue #13); what must hold is:
  - the same prompt token ids (BOS included) reach both: checked against vLLM's own record of
    the prompt it ran;
  - the same tokens, teacher-forced, get the same per-token log-probs (vLLM prompt_logprobs
    vs a transformers forward pass): prompt + the tokens vLLM generated (before the stop id and
    the cut); the max absolute difference is printed, overall and over generated tokens.
Also printed: the share of identical completions, their mean common prefix (characters), the
accuracy of each backend and problems/s of each (generation only, engine start excluded; the
ratio vLLM / transformers is measured in this process).

    VLLM_CPU_KVCACHE_SPACE=1 python bench/backend_agreement.py               # tiny model, fp32, 32 MATH-500
    python bench/backend_agreement.py --model Qwen/Qwen2.5-Math-7B --dtype bfloat16 --n 500 --max-new-tokens 2048
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def model_dir(name: str, cache: str) -> str:
    if name != "tiny":
        return name
    from cft.throughput import tiny_source

    return tiny_source(cache)


def common_prefix(a: str, b: str) -> int:
    return len(os.path.commonprefix([a, b]))


def accuracy(completions: list[str], items: list[dict], benchmark: str) -> float:
    from cft.answers import Verdict, check, extract_answer

    right = 0
    for text, it in zip(completions, items):
        pred = extract_answer(text, benchmark)
        right += pred is not None and check(pred, it["reference"]) == Verdict.EQUAL
    return 100.0 * right / max(1, len(items))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="tiny", help="tiny (built locally) or a local dir / HF id")
    ap.add_argument("--benchmark", default="math-500")
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--template", default="qwen25-math-cot")
    ap.add_argument("--train-template", default="qwen", help="decides BOS (cft.generation.prepends_bos)")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--cache", default=os.environ.get("CFT_CACHE", str(Path.home() / ".cache" / "cft")))
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

    from omegaconf import OmegaConf

    from cft.benchmarks import SHIPPED, get_benchmark
    from cft.config import ModelConfig, VLLMConfig
    from cft.templates import eval_prompt
    from cft.generation import TransformersGenerator, VLLMGenerator, prepends_bos, prompt_ids

    source = model_dir(args.model, args.cache)
    bench = get_benchmark(args.benchmark)
    items = bench.load(str(SHIPPED), args.n)
    texts = [eval_prompt(args.template, it["question"]) for it in items]
    model_cfg = OmegaConf.structured(ModelConfig(name="bench", path=source, dtype=args.dtype, attn_implementation="sdpa"))

    hf = TransformersGenerator.load(source, model_cfg, batch_size=args.batch_size)
    ids = [prompt_ids(hf.tokenizer, t, prepends_bos(hf.tokenizer, args.train_template)) for t in texts]
    t0 = time.perf_counter()
    hf_out = dict(hf.generate(ids, args.max_new_tokens))
    hf_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    vl = VLLMGenerator(source, OmegaConf.structured(VLLMConfig(dtype=args.dtype)))
    engine_s = time.perf_counter() - t0
    try:
        t0 = time.perf_counter()
        vl_out = dict(vl.generate(ids, args.max_new_tokens))
        vl_s = time.perf_counter() - t0
        # the raw generated tokens (before the stop id and the cut): what gets teacher-forced
        runs = vl.llm.generate([{"prompt_token_ids": p} for p in ids], vl._params(args.max_new_tokens),
                               use_tqdm=False)
        seen = [o.prompt_token_ids for o in runs]
        generated = [list(o.outputs[0].token_ids) for o in runs]
        # what vLLM makes of the same prompt *text* (the old path): BOS or not, its tokenizer
        from_text = [o.prompt_token_ids for o in vl.llm.generate(texts, vl._params(1), use_tqdm=False)]
        diffs, gen_diffs = [], []
        for p, g in zip(ids, generated):
            a, b = hf.token_logprobs(p + g, 1), vl.token_logprobs(p + g, 1)
            d = [abs(x - y) for x, y in zip(a, b)]
            diffs.append(max(d))
            gen_diffs.append(max(d[len(p) - 1:], default=0.0))
    finally:
        vl.close()

    n = len(items)
    hf_c, vl_c = [hf_out[i] for i in range(n)], [vl_out[i] for i in range(n)]
    figures = {
        "model": args.model, "dtype": args.dtype, "benchmark": bench.name, "n": n,
        "max_new_tokens": args.max_new_tokens,
        "identical_prompt_ids": sum(list(s) == p for s, p in zip(seen, ids)) / n,
        "vllm_text_tokenization_matches": sum(list(s) == p for s, p in zip(from_text, ids)) / n,
        "teacher_forced_tokens": sum(len(p) - 1 + len(g) for p, g in zip(ids, generated)),
        "mean_generated_tokens": sum(map(len, generated)) / n,
        "max_logprob_diff": max(diffs),
        "max_logprob_diff_generated_tokens": max(gen_diffs),
        "identical_completions": sum(a == b for a, b in zip(hf_c, vl_c)) / n,
        "mean_common_prefix_chars": sum(common_prefix(a, b) for a, b in zip(hf_c, vl_c)) / n,
        "mean_completion_chars": {"transformers": sum(map(len, hf_c)) / n, "vllm": sum(map(len, vl_c)) / n},
        "accuracy": {"transformers": accuracy(hf_c, items, bench.name), "vllm": accuracy(vl_c, items, bench.name)},
        "problems_per_s": {"transformers": n / hf_s, "vllm": n / vl_s},
        "vllm_over_transformers_speed": hf_s / vl_s,
        "vllm_engine_start_s": engine_s,
    }
    for k, v in figures.items():
        print(f"{k:34s} {json.dumps(v) if not isinstance(v, float) else f'{v:.6g}'}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
