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

from dataclasses import dataclass

CFT_INSTRUCTION = "Please critique whether the following solution to the question is correct."
IGNORE_INDEX = -100


@dataclass(frozen=True)
class TrainTemplate:
    """A LLaMA-Factory template, reduced to what single-turn SFT uses: an optional BOS prefix,
    the system turn and the user turn, each tokenized on its own (as `_convert_elements_to_ids`
    does), and stop words that become special tokens when the tokenizer lacks them."""

    system: str
    user: str
    bos: bool = False
    stop_words: tuple[str, ...] = ()


TRAIN_TEMPLATES = {
    "qwen": TrainTemplate(system="<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n",
                          user="<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n",
                          stop_words=("<|im_end|>",)),
    "deepseek": TrainTemplate(system="", user="User: {prompt}\n\nAssistant:", bos=True),
}


def cft_fields(question: str, noisy_response: str) -> tuple[str, str]:
    """(instruction, input) of a CFT row, laid out exactly as the released WebInstruct-CFT rows."""
    return CFT_INSTRUCTION + "\n\n", f"Question:\n{question}\n\nSolution:\n{noisy_response}\n"


def user_turn(instruction: str, input: str) -> str:
    """LLaMA-Factory's alpaca aligner: the non-empty parts of (instruction, input) joined by "\\n"."""
    return "\n".join(part for part in (instruction, input) if part)


def cft_prompt(row: dict) -> str:
    """The CFT user turn of a record or critique row: the dataset's own instruction and input when
    it ships them (WebInstruct-CFT, rendered verbatim), else built from question and response."""
    extra = row.get("extra") or {}
    if extra.get("input"):
        return user_turn(extra.get("instruction") or "", extra["input"])
    return user_turn(*cft_fields(row["question"], row["noisy_response"]))


def example(row: dict, target: str) -> dict:
    """Raw (prompt, target) strings for one row of critiques.jsonl / records.jsonl."""
    if target == "critique":
        return {"id": row["id"], "prompt": cft_prompt(row), "target": row["critique"]}
    if target == "response":
        return {"id": row["id"], "prompt": row["question"], "target": row["noisy_response"]}
    if target == "teacher_solution":
        return {"id": row["id"], "prompt": row["question"], "target": row["teacher_solution"]}
    raise ValueError(f"method.target={target!r} is unknown")


def get_template(name: str) -> TrainTemplate:
    if name not in TRAIN_TEMPLATES:
        raise KeyError(f"model.train_template={name!r}; known: {sorted(TRAIN_TEMPLATES)}")
    return TRAIN_TEMPLATES[name]


def render(ex: dict, template: str, bos_token: str | None = None, eos_token: str | None = None) -> tuple[str, str]:
    """The example as text: (prompt, target), with the BOS/EOS token texts where the template puts
    them (pass the tokenizer's; None leaves them out, e.g. for a generation prompt)."""
    t = get_template(template)
    prefix = bos_token if t.bos and bos_token else ""
    return prefix + t.system + t.user.replace("{prompt}", ex["prompt"]), ex["target"] + (eos_token or "")


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


def tokenize(ex: dict, tokenizer, template: str, cutoff_len: int) -> dict:
    """input_ids + labels with the prompt masked; target = content + eos id; over-long pairs are
    cut by `infer_seqlen` (prompt head and target head kept)."""
    p = prompt_ids(tokenizer, template, ex["prompt"])
    t = tokenizer(ex["target"], add_special_tokens=False)["input_ids"]
    if tokenizer.eos_token_id is not None:
        t = t + [tokenizer.eos_token_id]
    truncated = len(p) + len(t) > cutoff_len
    if truncated:
        n_p, n_t = infer_seqlen(len(p), len(t), cutoff_len)
        p, t = p[:n_p], t[:n_t]
    return {"input_ids": p + t, "labels": [IGNORE_INDEX] * len(p) + t, "truncated": truncated}
