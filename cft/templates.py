"""Every prompt template in one place: how training examples are rendered (LLaMA-Factory's
templates at 3c55976a0, the paper's training framework) and how evaluation prompts look (the
Qwen2.5-Math evaluation toolkit's PROMPT_TEMPLATES), byte for byte, pinned by golden tests.

Train, eval (the critic is prompted as it was trained) and config validation all read them here.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

# The instruction of every CFT row (the released WebInstruct-CFT rows' own).
CFT_INSTRUCTION = "Please critique whether the following solution to the question is correct."
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
    # ms-swift's llama3_2 template (One-Shot CFT trained Llama-3.2-3B-Instruct with ms-swift):
    # BOS, a system turn with the knowledge-cutoff and today's date, no system prompt. ms-swift
    # writes the day of training; we pin the date of the authors' evaluation prompt ("llama").
    "llama3.2": TrainTemplate(
        system="<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n"
               "Today Date: 17 Apr 2025\n\n<|eot_id|>",
        user="<|start_header_id|>user<|end_header_id|>\n\n{prompt}<|eot_id|>"
             "<|start_header_id|>assistant<|end_header_id|>\n\n",
        bos=True, stop_words=("<|eot_id|>",)),
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


EVAL_TEMPLATES: dict[str, str] = {
    "qwen25-math-cot": (
        "<|im_start|>system\nPlease reason step by step, and put your final answer within "
        "\\boxed{}.<|im_end|>\n<|im_start|>user\n{input}<|im_end|>\n<|im_start|>assistant\n"
    ),
    "deepseek-math": (
        "User: {input}\nPlease reason step by step, and put your final answer within "
        "\\boxed{}.\n\nAssistant:"
    ),
    # One-Shot CFT's Llama-3.2 evaluation prompt (its eval/Math_Reasoning_Evaluation/utils.py
    # "llama"), without the leading "<|begin_of_text|>" text: BOS comes from the llama3.2 training
    # template's rule (cft.generation.prepends_bos), once.
    "llama": (
        "<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n"
        "Today Date: 17 Apr 2025\n\n <|eot_id|><|start_header_id|>user<|end_header_id|>\n\n{input}<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    ),
    # One-Shot CFT's candidate-solution prompts (TIGER-AI-Lab/One-Shot-CFT
    # prompts/generate_candidate_solutions.py; arXiv 2506.03295 A.2), for dataset.noisy_generators.
    "candidate-qwen2.5": (
        "<|im_start|>system\nPlease reason step by step, and put your final answer within "
        "\\boxed{}.<|im_end|>\n<|im_start|>user\nQuestion:\n{input}<|im_end|>\n<|im_start|>assistant\n"
    ),
    "candidate-qwen3": (  # also MiMo's
        "<|im_start|>user\nPlease reason step by step to find a solution to the following question, "
        "and put your final answer within \\boxed{}.\nQuestion:\n{input}<|im_end|>\n<|im_start|>assistant\n"
    ),
    "candidate-phi4": (
        "<|im_start|>system<|im_sep|>\nPlease reason step by step, and put your final answer within "
        "\\boxed{}.<|im_end|>\n<|im_start|>user<|im_sep|>\nQuestion:\n{input}<|im_end|>\n"
        "<|im_start|>assistant<|im_sep|>\n"
    ),
    # Ours: the paper names DeepSeek-R1 among the generators but prints no prompt for it; this is
    # the R1-distill chat format with DeepSeek's recommended instruction (BOS added by the caller).
    "candidate-deepseek-r1": (
        "<｜User｜>Please reason step by step, and put your final answer within \\boxed{}.\n"
        "Question:\n{input}<｜Assistant｜><think>\n"
    ),
}
# Evaluation prompts that open with BOS (DeepSeek's family: its tokenizer does not add one to a
# prompt given as text), for callers that build prompts from an eval template alone (noisy
# response generation): cft.generation.prepends_bos decides for the trained model's own prompts.
EVAL_BOS = frozenset({"deepseek-math", "candidate-deepseek-r1"})


def eval_prompt(template: str, question: str) -> str:
    if template not in EVAL_TEMPLATES:
        raise KeyError(f"model.eval_template={template!r} is unknown; known: {sorted(EVAL_TEMPLATES)}")
    # str.replace, not str.format: the templates contain literal braces (\boxed{}).
    return EVAL_TEMPLATES[template].replace("{input}", question.strip())


# The evaluation protocols (`eval.protocol`). zero-shot: the model's chat template
# (model.eval_template), the paper's protocol for every trained model. few-shot-cot: how
# Qwen2.5-Math's evaluation prompts a base model (its `cot` prompt type with `--num_shots`):
# `eval.shots` demonstrations (cft.benchmarks.demos), each turn "Question: {q}\nAnswer: {a}",
# turns joined by "\n\n\n", the prompt's trailing space stripped; math_eval.py adds the stop
# word "\n\nQuestion:" for it, where a base model starts inventing the next problem.
# self-critique: zero-shot answers that the model then critiques and redoes (cft.eval.self_critique).
PROTOCOLS = ("zero-shot", "few-shot-cot", "self-critique")
COT_TURN = "Question: {input}\nAnswer: "
COT_SPLITTER = "\n\n\n"
COT_STOPS = ("\n\nQuestion:",)


def few_shot_prompt(question: str, demos) -> str:
    """Qwen2.5-Math's `cot` prompt: the (question, answer) demos, then the question."""
    turns = [COT_TURN.replace("{input}", q) + a for q, a in demos]
    turns.append(COT_TURN.replace("{input}", question.strip()))
    return COT_SPLITTER.join(turns).strip(" ")


# Multiple choice (cft.benchmarks.choice), zero-shot, as the CFT paper's evaluation prompted it
# (TIGER-AI-Lab/CritiqueFineTuning@44b83b8, tools/scripts/evaluate.sh): GPQA through
# `tools/evaluate_gpqa/run_open.py --form qwen` (prompt_utils.get_qwen_prompt: the Qwen chat turn
# with the default system prompt; greedy, its stop list), MMLU-Pro through
# `tools/evaluate_mmlu-pro/evaluate_from_local.py` (cot_prompt_lib/initial_prompt_1.txt as the
# system turn, the user turn from cft.benchmarks.choice; its stop list). Both wrote the Qwen chat
# format by hand, so there is a prompt for chat templates in that format only.
@dataclass(frozen=True)
class ChoicePrompt:
    system: str
    stops: tuple[str, ...]


CHOICE_PROMPTS = {
    "gpqa": ChoicePrompt("You are a helpful assistant.",
                         ("USER:", "ASSISTANT:", "### Instruction:", "Response:", "\n\nProblem", "\nProblem",
                          "Problem:", "<|eot_id|>", "####")),
    "mmlu_pro": ChoicePrompt('Please reason step by step, and put your answer with "the answer is (X)" where X '
                             'is the correct letter choice.', ("</s>", "<|im_end|>", "<|endoftext|>", "Question:")),
}
# model.eval_template -> its chat turn with a system prompt of the benchmark's own.
CHOICE_CHAT = {"qwen25-math-cot": "<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{input}<|im_end|>\n"
                                  "<|im_start|>assistant\n"}


def choice_prompt(template: str, question: str, benchmark: str) -> str:
    """A multiple-choice benchmark's prompt: its system turn, the question with its options as
    the user turn, verbatim (not stripped: MMLU-Pro's user turn ends in a newline)."""
    if template not in CHOICE_CHAT:
        raise ValueError(f"model.eval_template={template}: {benchmark} is prompted as the paper's evaluation "
                         f"prompted it, in the Qwen chat format ({sorted(CHOICE_CHAT)}); there is none for "
                         f"{template}")
    return CHOICE_CHAT[template].replace("{system}", CHOICE_PROMPTS[benchmark].system).replace("{input}", question)


@dataclass(frozen=True)
class EvalProtocol:
    """How a benchmark question becomes a prompt, and where a completion ends beyond the
    generator's own stop strings; recorded in eval/results.json so a table can say which
    protocol produced its numbers."""

    name: str
    template: str
    shots: int = 0
    stops: tuple[str, ...] = ()

    def prompt(self, question: str, benchmark: str) -> str:
        if benchmark in CHOICE_PROMPTS:
            return choice_prompt(self.template, question, benchmark)
        if self.name == "few-shot-cot":
            from cft.benchmarks.demos import demonstrations

            return few_shot_prompt(question, demonstrations(benchmark)[: self.shots])
        return eval_prompt(self.template, question)

    def finish(self, completion: str) -> tuple[str, bool]:
        """The completion cut before the first of the protocol's stop strings (stripped, as the
        official evaluation cuts), and whether one was found."""
        from cft.generation import cut

        if not any(s in completion for s in self.stops):
            return completion, False
        return cut(completion, self.stops), True

    def for_benchmark(self, benchmark: str) -> "EvalProtocol":
        """This protocol with the benchmark's own stop strings added (multiple choice: those of
        the script that evaluated it)."""
        extra = CHOICE_PROMPTS[benchmark].stops if benchmark in CHOICE_PROMPTS else ()
        return replace(self, stops=self.stops + extra) if extra else self

    def finish_samples(self, samples: list[list[dict]]) -> list[list[dict]]:
        """Each stored sample {completion, finish_reason, ...} finished by `finish`: a cut one
        ended at a stop ("stop"), whatever the generator ran on to (the generator does not know
        the protocol's stops, so it generates past them; the text kept is the same)."""
        out = []
        for problem in samples:
            done = []
            for s in problem:
                text, cut = self.finish(s["completion"])
                done.append(dict(s, completion=text, finish_reason="stop") if cut else s)
            out.append(done)
        return out

    def check(self, benchmarks) -> None:
        """Every benchmark (registry names) has `shots` demonstrations; else a ValueError naming
        eval.shots (GSM8K has 8, MATH 5, Minerva-Math 4)."""
        from cft.benchmarks.demos import demonstrations

        for name in benchmarks:
            if name in CHOICE_PROMPTS and self.name != "zero-shot":
                raise ValueError(f"eval.protocol={self.name}: {name} is evaluated zero-shot, as the paper's "
                                 f"evaluation ran it (eval.protocol=zero-shot)")
            if name in CHOICE_PROMPTS:
                choice_prompt(self.template, "", name)  # a chat format it has a prompt for
        for name in benchmarks if self.name == "few-shot-cot" else ():
            have = len(demonstrations(name))
            if not 0 < self.shots <= have:
                raise ValueError(f"eval.shots={self.shots}: eval.protocol=few-shot-cot has 1 to {have} "
                                 f"demonstrations for {name}")

    def to_dict(self) -> dict:
        return {"name": self.name, "template": self.template, "shots": self.shots, "stops": list(self.stops)}


def check_self_critique(eval_cfg) -> None:
    """eval.protocol=self-critique's keys make sense together (cft.eval.self_critique); a
    ValueError naming the key otherwise."""
    rounds = int(eval_cfg.self_critique_rounds)
    if rounds < 1:
        raise ValueError(f"eval.self_critique_rounds={rounds}: the most solutions per problem, >= 1 "
                         f"(the paper: 8)")
    if int(eval_cfg.n) != 1:
        raise ValueError(f"eval.n={eval_cfg.n}: eval.protocol=self-critique follows one solution per problem")
    if float(eval_cfg.temperature) == 0 and rounds > 1:
        raise ValueError(f"eval.self_critique_rounds={rounds} at eval.temperature=0: a rejected solution is "
                         f"answered again by sampling the same prompt, and greedy decoding gives the same "
                         f"solution every time; set eval.temperature (the paper: 0.1, 0.3, 0.6) or "
                         f"eval.self_critique_rounds=1")
    tokens = eval_cfg.self_critique_max_new_tokens
    if tokens is not None and int(tokens) < 1:
        raise ValueError(f"eval.self_critique_max_new_tokens={tokens} must be >= 1 (null: eval.max_new_tokens)")


def eval_protocol(eval_cfg, model_cfg) -> EvalProtocol:
    """The protocol `eval.protocol` names (eval.shots demonstrations for few-shot-cot)."""
    if eval_cfg.protocol == "zero-shot":
        return EvalProtocol("zero-shot", model_cfg.eval_template)
    if eval_cfg.protocol == "self-critique":  # zero-shot answers, then cft.eval.self_critique's loop
        check_self_critique(eval_cfg)
        return EvalProtocol("self-critique", model_cfg.eval_template)
    if eval_cfg.protocol == "few-shot-cot":
        return EvalProtocol("few-shot-cot", "cot", int(eval_cfg.shots), COT_STOPS)
    raise ValueError(f"eval.protocol={eval_cfg.protocol!r} is not one of {list(PROTOCOLS)}")
