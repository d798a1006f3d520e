"""What the model sees for each method: (prompt, target) pairs, tokenized as the paper's training
framework did (LLaMA-Factory at 3c55976a0, the fork in TIGER-AI-Lab/CritiqueFineTuning).

CFT:          user turn = instruction + "\\n" + input, where the released WebInstruct-CFT rows
              carry instruction "Please critique ... is correct.\\n\\n" and input
              "Question:\\n{q}\\n\\nSolution:\\n{noisy response}\\n" (LLaMA-Factory's alpaca
              aligner joins the two with "\\n"); our own CFT rows are built the same way.
              Target = the critique.
SFT:          user turn = question, target = the dataset's response.
SFT-verified: as SFT, records whose response the checker judged correct.
SFT-teacher:  user turn = question, target = the teacher's solution.

Every target ends with the tokenizer's own eos token (LLaMA-Factory's default assistant turn is
`{content}` + eos; `<|im_end|>` as the qwen template's assistant suffix only came on 2025-01-09).
Only target tokens carry loss (labels of prompt tokens are -100).
"""
from __future__ import annotations

from cft.templates import cft_prompt, get_template

IGNORE_INDEX = -100


def example(row: dict, target: str) -> dict:
    """Raw (prompt, target) strings for one row of critiques.jsonl / records.jsonl."""
    if target == "critique":
        return {"id": row["id"], "prompt": cft_prompt(row), "target": row["critique"]}
    if target == "response":
        return {"id": row["id"], "prompt": row["question"], "target": row["noisy_response"]}
    if target == "teacher_solution":
        return {"id": row["id"], "prompt": row["question"], "target": row["teacher_solution"]}
    raise ValueError(f"method.target={target!r} is unknown")


def prepare_tokenizer(tokenizer, template: str) -> int:
    """Fix the tokenizer as LLaMA-Factory's `get_template_and_fix_tokenizer` does: pad = eos when
    unset, the template's stop words added as special tokens (e.g. `<|im_end|>` for DeepSeek-Math
    under the qwen template). Returns how many tokens were added."""
    t = get_template(template)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not t.stop_words:
        return 0
    # add_tokens(special_tokens=True) keeps the existing special tokens, in transformers 4 and 5
    return tokenizer.add_tokens(list(t.stop_words), special_tokens=True)


def infer_seqlen(source_len: int, target_len: int, cutoff_len: int) -> tuple[int, int]:
    """LLaMA-Factory's truncation rule (data/processors/processor_utils.py): keep the whole target
    when it is under half the budget, the whole prompt when that is under half, and otherwise
    split the budget in proportion to the two lengths."""
    if target_len * 2 < cutoff_len:
        max_target_len = cutoff_len
    elif source_len * 2 < cutoff_len:
        max_target_len = cutoff_len - source_len
    else:
        max_target_len = int(cutoff_len * (target_len / (source_len + target_len)))
    new_target_len = min(max_target_len, target_len)
    new_source_len = min(max(cutoff_len - new_target_len, 0), source_len)
    return new_source_len, new_target_len


def prompt_ids(tokenizer, template: str, prompt: str) -> list[int]:
    """Token ids of the prompt side: [BOS] + system + user turn, each segment tokenized apart."""
    t = get_template(template)
    ids = [tokenizer.bos_token_id] if t.bos and tokenizer.bos_token_id is not None else []
    for segment in (t.system, t.user.replace("{prompt}", prompt)):
        if segment:
            ids += tokenizer(segment, add_special_tokens=False)["input_ids"]
    return ids


def _join(prompt: list[int], target: list[int], eos_id: int | None, cutoff_len: int) -> tuple[list[int], int, bool]:
    """(input ids, prompt length, truncated): target + eos id after the prompt, over-long pairs
    cut by `infer_seqlen` (prompt head and target head kept)."""
    if eos_id is not None:
        target = target + [eos_id]
    truncated = len(prompt) + len(target) > cutoff_len
    if truncated:
        n_p, n_t = infer_seqlen(len(prompt), len(target), cutoff_len)
        prompt, target = prompt[:n_p], target[:n_t]
    return prompt + target, len(prompt), truncated


def masked_labels(input_ids: list[int], prompt_len: int) -> list[int]:
    """Labels of an example: the prompt's masked (IGNORE_INDEX), the target's its own ids."""
    return [IGNORE_INDEX] * prompt_len + input_ids[prompt_len:]


def tokenize(ex: dict, tokenizer, template: str, cutoff_len: int) -> dict:
    """input_ids + labels with the prompt masked; target = content + eos id; over-long pairs are
    cut by `infer_seqlen` (prompt head and target head kept). One example at a time: the
    reference that `tokenize_batch` (what the train stage runs) must equal."""
    target = tokenizer(ex["target"], add_special_tokens=False)["input_ids"]
    ids, n_prompt, truncated = _join(prompt_ids(tokenizer, template, ex["prompt"]), target,
                                     tokenizer.eos_token_id, cutoff_len)
    return {"input_ids": ids, "labels": masked_labels(ids, n_prompt), "truncated": truncated}


def tokenize_batch(prompts: list[str], targets: list[str], tokenizer, template: str, cutoff_len: int) -> dict:
    """`tokenize` over many examples, as columns: input_ids, prompt_len (the labels are
    masked_labels(input_ids, prompt_len)) and truncated. Two encoder calls per batch (all user
    turns, all targets) instead of three tokenizer calls per example, and the constant
    [BOS] + system ids computed once. Each segment is still tokenized on its own, so the ids are
    tokenize()'s (tests/test_tokenized.py compares them)."""
    t = get_template(template)
    prefix = [tokenizer.bos_token_id] if t.bos and tokenizer.bos_token_id is not None else []
    if t.system:
        prefix += tokenizer(t.system, add_special_tokens=False)["input_ids"]
    encode = batch_encoder(tokenizer)
    users = encode([t.user.replace("{prompt}", p) for p in prompts])
    targets = encode(list(targets))
    out: dict[str, list] = {"input_ids": [], "prompt_len": [], "truncated": []}
    eos_id = tokenizer.eos_token_id
    for user, target in zip(users, targets):
        ids, n_prompt, truncated = _join(prefix + user, target, eos_id, cutoff_len)
        out["input_ids"].append(ids)
        out["prompt_len"].append(n_prompt)
        out["truncated"].append(truncated)
    return out


# What `tokenizer(texts, add_special_tokens=False)` runs on a fast tokenizer; a subclass that
# overrides any of them (LayoutLM, LUKE, CodeLlama, ...) keeps its own __call__.
_CALL_PATH = ("__call__", "_call_one", "encode_plus", "batch_encode_plus", "_encode_plus", "_batch_encode_plus",
              "prepare_for_tokenization", "_convert_encoding")


def batch_encoder(tokenizer):
    """A function texts -> token-id lists equal to `tokenizer(texts, add_special_tokens=False)
    ["input_ids"]`. For a fast tokenizer whose class keeps the library's call path, that call is
    the Rust backend's `encode_batch` after transformers sets no truncation, no padding and
    `encode_special_tokens = split_special_tokens` (TokenizersBackend._encode_plus in
    transformers 5, _batch_encode_plus in 4); we make the same settings and call
    `encode_batch_fast` (tokenizers >= 0.20: the same ids without char offsets), skipping the
    per-call Python of __call__ and BatchEncoding. Anything else goes through __call__."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    base = _fast_base()
    if backend is None or base is None or not isinstance(tokenizer, base) or any(
            getattr(type(tokenizer), name, None) is not getattr(base, name, None) for name in _CALL_PATH):
        return lambda texts: tokenizer(texts, add_special_tokens=False)["input_ids"]
    encode = getattr(backend, "encode_batch_fast", backend.encode_batch)

    def fast(texts: list[str]) -> list[list[int]]:
        if backend.truncation is not None:
            backend.no_truncation()
        if backend.padding is not None:
            backend.no_padding()
        split = bool(getattr(tokenizer, "split_special_tokens", False))
        if backend.encode_special_tokens != split:
            backend.encode_special_tokens = split
        return [e.ids for e in encode(texts, add_special_tokens=False)]

    return fast


def _fast_base():
    try:
        from transformers import TokenizersBackend as base  # transformers >= 5
    except ImportError:
        try:
            from transformers import PreTrainedTokenizerFast as base
        except ImportError:
            return None
    return base
