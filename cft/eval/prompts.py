"""Evaluation prompt templates, byte for byte those of the paper's evaluation toolkit
(Qwen2.5-Math evaluation, `utils.py` PROMPT_TEMPLATES), pinned by golden tests."""
from __future__ import annotations

TEMPLATES: dict[str, str] = {
    "qwen25-math-cot": (
        "<|im_start|>system\nPlease reason step by step, and put your final answer within "
        "\\boxed{}.<|im_end|>\n<|im_start|>user\n{input}<|im_end|>\n<|im_start|>assistant\n"
    ),
    "deepseek-math": (
        "User: {input}\nPlease reason step by step, and put your final answer within "
        "\\boxed{}.\n\nAssistant:"
    ),
}


def eval_prompt(template: str, question: str) -> str:
    if template not in TEMPLATES:
        raise KeyError(f"model.eval_template={template!r} is unknown; known: {sorted(TEMPLATES)}")
    # str.replace, not str.format: the templates contain literal braces (\boxed{}).
    return TEMPLATES[template].replace("{input}", question.strip())
