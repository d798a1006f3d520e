"""Dataset loaders (library layer: the data stage and the critic evaluation read datasets through
them). Each yields normalized `Record`s.

Hub datasets keep their real `datasets.load_dataset(...)` call; `dataset.path` points the
same code at a local file of the same schema (that is how the tests run it offline).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Iterable, Iterator

from cft.records import RIGHT, UNKNOWN, WRONG, Record, same_example
from cft.io import DataError, iter_jsonl, iter_jsonl_lines
from cft.verdict import parse_verdict

LOADERS: dict[str, Callable] = {}


def loader(name: str):
    def register(fn):
        LOADERS[name] = fn
        return fn
    return register


def load_records(cfg) -> Iterator[Record]:
    if cfg.loader not in LOADERS:
        raise DataError(f"dataset.loader={cfg.loader!r} is unknown; known: {sorted(LOADERS)}")
    return LOADERS[cfg.loader](cfg)


def _hub_rows(cfg) -> Iterable[dict]:
    """Rows of a hub dataset, or of `cfg.path` (jsonl/json/parquet) with the same schema."""
    import datasets

    if cfg.path:
        path = Path(cfg.path)
        if not path.exists():
            raise DataError(f"dataset.path={cfg.path!r}: file not found")
        if path.suffix in (".jsonl", ".json"):
            yield from iter_jsonl(path)  # line-numbered errors for malformed files
            return
        kind = {".parquet": "parquet", ".csv": "csv"}.get(path.suffix)
        if kind is None:
            raise DataError(f"dataset.path={cfg.path!r}: unsupported suffix {path.suffix!r}")
        yield from datasets.load_dataset(kind, data_files=str(path), split="train")
        return
    yield from datasets.load_dataset(cfg.hf_path, cfg.hf_config, split=cfg.split)


def _require(row: dict, keys: tuple[str, ...], where: str) -> None:
    missing = [k for k in keys if not isinstance(row.get(k), str)]
    if missing:
        raise DataError(f"{where}: missing or non-string field(s) {missing}")


# The models whose responses CHAMP ships (its conversation keys are "<model>|<prompting setup>").
CHAMP_MODELS = ("GPT-3.5", "GPT-4", "GPT-4 Turbo", "PaLM 2 Medium")


def champ_records(models=CHAMP_MODELS, prompts=("0-Shot",)) -> Iterator[Record]:
    """CHAMP records outside a dataset config (the critic's held-out pairs)."""
    from omegaconf import OmegaConf

    from cft.config import DatasetConfig

    return load_champ(OmegaConf.structured(DatasetConfig(name="champ", loader="champ", noisy_models=list(models),
                                                         noisy_prompts=list(prompts))))


@loader("champ")
def load_champ(cfg) -> Iterator[Record]:
    """CHAMP: each (problem, model, prompting setup) conversation is one noisy response.

    A conversation is [System, User(problem), Model(response), User(summarize), Model(summary)];
    the one-sentence summary holds the response's final answer, which we check against the
    free-text reference answer (`champ_judge.judge_free_text`, conservative: `unknown` when unsure).
    """
    import champ_dataset

    from cft.answers import Grader
    from cft.datasets.champ_judge import judge_free_text

    ds = champ_dataset.load("v0")
    models, prompts = set(cfg.noisy_models), set(cfg.noisy_prompts)
    known_models = {k.split("|")[0] for p in ds.problems.values() for k in p.conversations}
    if not models <= known_models:
        raise DataError(f"dataset.noisy_models: {sorted(models - known_models)} not in CHAMP "
                        f"(known: {sorted(known_models)})")
    kept = []
    for pid, problem in ds.problems.items():
        for conv_key, conv in problem.conversations.items():
            model, setup = conv_key.split("|")
            if model not in models or setup not in prompts:
                continue
            turns = [m for m in conv.messages if m.role.startswith("Model.")]
            if len(turns) < 2 or turns[0].text is None or turns[-1].text is None:
                continue  # truncated conversations (error LENGTH_*) have no usable answer
            kept.append((pid, problem, conv_key, turns))
    with Grader() as grader:  # the judge runs sympy: under the grader's hard per-item timeout
        judged = grader.run(judge_free_text, [(turns[-1].text, problem.answer, problem.text)
                                              for _, problem, _, turns in kept], fallback=UNKNOWN)
    for (pid, problem, conv_key, turns), correct in zip(kept, judged):
        solution = "\n".join(step.text for step in problem.solution.steps)
        yield Record(
            id=f"{pid}|{conv_key}",
            question=problem.text,
            reference_answer=problem.answer,
            reference_solution=solution,
            noisy_response=turns[0].text,
            noisy_source=f"champ:{conv_key}",
            response_correct=correct,
            extra={"summary": turns[-1].text, "category": problem.category},
        )


_WEBINSTRUCT_INPUT = re.compile(r"\AQuestion:\n(?P<q>.*?)\n\nSolution:\n(?P<r>.*)\Z", re.S)


@loader("webinstruct")
def load_webinstruct(cfg) -> Iterator[Record]:
    """WebInstruct-CFT: `instruction` + `input` ("Question:\\n{q}\\n\\nSolution:\\n{noisy response}\\n")
    and `output`, the paper's GPT-4o critique. Both `instruction` and `input` are kept verbatim in
    `extra`, so training renders the user turn exactly as the official run saw it. There is no
    reference answer, so correctness is unknown to the answer checker (the critique's own
    verdict is kept in `extra`)."""
    where = cfg.path or f"{cfg.hf_path}/{cfg.hf_config}"
    for i, row in enumerate(_hub_rows(cfg)):
        _require(row, ("input", "output"), f"{where}: row {i + 1}")
        m = _WEBINSTRUCT_INPUT.match(row["input"])
        if m is None:
            raise DataError(f"{where}: row {i + 1}: `input` is not 'Question:\\n...\\n\\nSolution:\\n...'")
        verdict = parse_verdict(row["output"])
        yield Record(
            id=f"webinstruct-{i}",
            question=m["q"],
            reference_answer=None,
            reference_solution=None,
            # The input's closing "\n" belongs to the layout, not to the response.
            noisy_response=m["r"].removesuffix("\n"),
            noisy_source="webinstruct",
            response_correct=UNKNOWN,
            released_critique=row["output"],
            extra={"instruction": row.get("instruction") or "", "input": row["input"],
                   "released_verdict": verdict},
        )


_METAMATH_ANSWER = re.compile(r"The answer is:?\s*(.+?)\s*$", re.S)


@loader("metamath")
def load_metamath(cfg) -> Iterator[Record]:
    """MetaMathQA: `query`, `response` (ends "The answer is: X"), `type`, `original_question`."""
    where = cfg.path or cfg.hf_path
    for i, row in enumerate(_hub_rows(cfg)):
        _require(row, ("query", "response"), f"{where}: row {i + 1}")
        m = _METAMATH_ANSWER.search(row["response"])
        yield Record(
            id=f"metamath-{i}", question=row["query"],
            reference_answer=m.group(1) if m else None, reference_solution=row["response"],
            noisy_response=row["response"], noisy_source="metamath",
            # MetaMath responses were filtered for the right answer when the set was built.
            response_correct=RIGHT if m else UNKNOWN,
            extra={"type": row.get("type")},
        )


@loader("numina")
def load_numina(cfg) -> Iterator[Record]:
    """NuminaMath-CoT: `problem`, `solution` (final answer boxed), `source`."""
    from cft.answers import extract_answer

    where = cfg.path or cfg.hf_path
    for i, row in enumerate(_hub_rows(cfg)):
        _require(row, ("problem", "solution"), f"{where}: row {i + 1}")
        yield Record(
            id=f"numina-{i}", question=row["problem"],
            reference_answer=extract_answer(row["solution"], last_number=False), reference_solution=row["solution"],
            noisy_response=row["solution"], noisy_source="numina",
            response_correct=UNKNOWN, extra={"source": row.get("source")},
        )


@loader("jsonl")
def load_jsonl(cfg) -> Iterator[Record]:
    """A user file: `question`, `response` required; `answer`, `solution`, `critique`, `id` optional.

    Record ids must be unique (the critique stage matches critiques to records by id): a row
    without `id` gets `<file stem>-<line>`, and an `id` already given to another example (see
    `cft.records.same_example`) is an error naming both lines. A repeated row is let through: the
    data stage drops it as a duplicate and counts it.
    """
    from cft.answers import Verdict, check, extract_answer

    path = Path(cfg.path)
    if not path.exists():
        raise DataError(f"dataset.path={cfg.path!r}: file not found")
    first_line: dict[str, tuple[int, tuple]] = {}  # id -> (line, same_example) of its first row
    for lineno, row in iter_jsonl_lines(path):
        _require(row, ("question", "response"), f"{path}:{lineno}")
        rec = Record(
            id=str(row.get("id", f"{path.stem}-{lineno}")), question=row["question"],
            reference_answer=None if row.get("answer") is None else str(row["answer"]),
            reference_solution=row.get("solution"), noisy_response=row["response"],
            noisy_source=row.get("source", f"jsonl:{path.name}"), released_critique=row.get("critique"),
        )
        line, example = first_line.setdefault(rec.id, (lineno, same_example(rec)))
        if example != same_example(rec):
            raise DataError(f"{path}:{lineno}: id {rec.id!r} is already the id of line {line} "
                            f"({path}:{line}), a different question, response or critique; "
                            f"record ids must be unique")
        if rec.reference_answer is not None:
            verdict = check(extract_answer(rec.noisy_response, last_number=False), rec.reference_answer)
            rec.response_correct = {Verdict.EQUAL: RIGHT, Verdict.DIFFERENT: WRONG}.get(verdict, UNKNOWN)
        yield rec


from cft.datasets import acemath  # noqa: E402,F401  (registers the `acemath` loader)

from cft.datasets import problems  # noqa: E402,F401  (registers the `problems` loader)
