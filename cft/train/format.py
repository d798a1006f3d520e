"""What the model sees for each method: (prompt, target) pairs, rendered by a chat template.

CFT:          prompt = critique instruction + "Question:\\n{q}\\n\\nSolution:\\n{noisy response}"
              (WebInstruct-CFT's own `instruction` + `input` layout), target = critique.
SFT:          prompt = question, target = the dataset's response.
SFT-verified: as SFT, records whose response the checker judged correct.
SFT-teacher:  prompt = question, target = the teacher's solution.
Only target tokens carry loss (labels of prompt tokens are -100).
"""
from __future__ import annotations

CFT_INSTRUCTION = "Please critique whether the following solution to the question is correct."
IGNORE_INDEX = -100

# Chat templates of the training framework the paper used (LLaMA-Factory `qwen` / `deepseek`).
TRAIN_TEMPLATES = {
    "qwen": ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
             "<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n", "{target}<|im_end|>"),
    "deepseek": ("User: {prompt}\n\nAssistant:", "{target}"),
}


def cft_prompt(question: str, noisy_response: str) -> str:
    return f"{CFT_INSTRUCTION}\nQuestion:\n{question}\n\nSolution:\n{noisy_response}"


def example(row: dict, target: str) -> dict:
    """Raw (prompt, target) strings for one row of critiques.jsonl / records.jsonl."""
    if target == "critique":
        return {"id": row["id"], "prompt": cft_prompt(row["question"], row["noisy_response"]),
                "target": row["critique"]}
    if target == "response":
        return {"id": row["id"], "prompt": row["question"], "target": row["noisy_response"]}
    if target == "teacher_solution":
        return {"id": row["id"], "prompt": row["question"], "target": row["teacher_solution"]}
    raise ValueError(f"method.target={target!r} is unknown")


def render(ex: dict, template: str) -> tuple[str, str]:
    if template not in TRAIN_TEMPLATES:
        raise KeyError(f"model.train_template={template!r}; known: {sorted(TRAIN_TEMPLATES)}")
    prompt_t, target_t = TRAIN_TEMPLATES[template]
    return (prompt_t.replace("{prompt}", ex["prompt"]), target_t.replace("{target}", ex["target"]))


def tokenize(ex: dict, tokenizer, template: str, cutoff_len: int) -> dict:
    """input_ids + labels with the prompt masked. Prompt and target are tokenized apart so the
    mask boundary is exact; over-long pairs keep the prompt's head and as much target as fits
    (at least half the budget), as LLaMA-Factory does."""
    prompt, target = render(ex, template)
    p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    t = tokenizer(target, add_special_tokens=False)["input_ids"]
    if template == "deepseek" and tokenizer.eos_token_id is not None:
        t = t + [tokenizer.eos_token_id]
    if tokenizer.bos_token_id is not None and template == "deepseek":
        p = [tokenizer.bos_token_id] + p
    truncated = len(p) + len(t) > cutoff_len
    if truncated:
        t_keep = min(len(t), max(cutoff_len - len(p), cutoff_len // 2))
        p, t = p[: cutoff_len - t_keep], t[:t_keep]
    return {"input_ids": p + t, "labels": [IGNORE_INDEX] * len(p) + t, "truncated": truncated}
