"""Generation backends: transformers (CPU or GPU without vLLM) and vLLM (GPU, optional).

Both do greedy decoding of one sample per prompt (the paper's protocol) and yield
(index, completion) as batches finish, so the caller can persist progress.
"""
from __future__ import annotations

from typing import Iterator, Sequence

STOP_STRINGS = ["<|im_end|>", "<|endoftext|>", "\n\n\n\n"]


def _cut(text: str) -> str:
    for stop in STOP_STRINGS:
        i = text.find(stop)
        if i >= 0:
            text = text[:i]
    return text


def generate_transformers(model, tokenizer, prompts: Sequence[str], max_new_tokens: int,
                          batch_size: int) -> Iterator[tuple[int, str]]:
    """Batches sorted by prompt length (less padding), left-padded, greedy."""
    import torch
    from tqdm import tqdm

    tokenizer.padding_side = "left"
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]), reverse=True)
    device = next(model.parameters()).device
    model.eval()
    with tqdm(total=len(prompts), desc="generate", unit="q") as bar:
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            enc = tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True,
                            add_special_tokens=False).to(device)
            with torch.no_grad():
                out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                     pad_token_id=tokenizer.pad_token_id,
                                     eos_token_id=tokenizer.eos_token_id)
            texts = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=False)
            for i, text in zip(idx, texts):
                yield i, _cut(text.replace(tokenizer.pad_token or "\0", ""))
            bar.update(len(idx))


def generate_vllm(model_path: str, prompts: Sequence[str], max_new_tokens: int,
                  trust_remote_code: bool = False) -> Iterator[tuple[int, str]]:
    from vllm import LLM, SamplingParams

    llm = LLM(model=model_path, trust_remote_code=trust_remote_code)
    params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens, n=1, stop=STOP_STRINGS)
    for i, out in enumerate(llm.generate(list(prompts), params, use_tqdm=True)):
        yield i, out.outputs[0].text
