"""Which of a problem's sampled answers are the same answer: the classes that maj@k counts.

Grouping never compares every pair symbolically. In two steps:
1. canonical forms, in microseconds and in this process (`cft.answers.canonical_form`: the
   checker's normalization, a plain number by its exact value, so `1/2`, `0.5` and `\\frac{1}{2}`
   are one form; bounded in size, an answer beyond its limits is its own form, its text).
   Equal forms are equal answers by the checker's rules.
2. the checker only across what is left: the first answer of each class is graded against the
   first answer of every later class by `cft.answers.Grader` (its fast path in process, the rest
   in workers under a hard per-pair timeout); classes it calls EQUAL merge (union-find, so
   equality is taken as transitive). A pair that times out does not merge, and is counted.
   When the samples' verdicts against the reference are given (the eval stage has them), two
   classes both EQUAL to the reference are one answer, and one EQUAL and one DIFFERENT are two,
   without a check (transitivity again); only the other pairs reach the checker.
A problem with m classes after step 1 costs at most m(m-1)/2 checks instead of n(n-1)/2;
samples of a model that agrees with itself leave m small.
"""
from __future__ import annotations

from typing import Sequence


def form_key(answer: str) -> tuple:
    """The grouping key of an answer: its canonical form read as the checker reads a prediction
    (`x = 7` is 7), or the answer itself where `canonical_form` declines (too long or deep to
    know cheaply, prose)."""
    from cft.answers import canonical_form, normalize

    form = canonical_form(answer)
    if form is None:
        return ("raw", answer)
    value = normalize(answer, is_prediction=True)  # cheap: canonical_form accepted its size
    if value != normalize(answer):  # an `x =` the checker drops from a prediction
        form = canonical_form(value) or form
    return ("form", form)


def answer_classes(problems: Sequence[Sequence[str | None]], grader,
                   graded: Sequence[Sequence] | None = None) -> tuple[list[list[int | None]], int]:
    """For each problem, a class number per sample (None: no answer), numbered by first
    appearance; and how many cross-class checks timed out. `grader` is a cft.answers.Grader:
    all problems' cross-class pairs go to it in one batch. `graded`: each sample's Verdict
    against the reference, when known."""
    from cft.answers import Verdict

    firsts: list[list[str]] = []  # per problem: the first answer of each canonical class, in order
    labels: list[list] = []  # per problem: that first answer's verdict against the reference
    local: list[list[int | None]] = []  # per problem: canonical class per sample
    for p, answers in enumerate(problems):
        index: dict[tuple, int] = {}
        reps, row, verdict_of = [], [], []
        for j, a in enumerate(answers):
            if a is None:
                row.append(None)
                continue
            key = form_key(a)
            if key not in index:
                index[key] = len(reps)
                reps.append(a)
                verdict_of.append(graded[p][j] if graded is not None else None)
            row.append(index[key])
        firsts.append(reps)
        labels.append(verdict_of)
        local.append(row)
    settled = {Verdict.EQUAL, Verdict.DIFFERENT}
    pairs, merged = [], []
    for p, reps in enumerate(firsts):
        for i in range(len(reps)):
            for j in range(i + 1, len(reps)):
                a, b = labels[p][i], labels[p][j]
                if a == b == Verdict.EQUAL:
                    merged.append((p, i, j))
                elif not (a in settled and b in settled and Verdict.EQUAL in (a, b)):
                    pairs.append((p, i, j))
    verdicts = grader.grade([(firsts[p][i], firsts[p][j]) for p, i, j in pairs]) if pairs else []
    parents = [list(range(len(reps))) for reps in firsts]

    def root(p: int, i: int) -> int:
        while parents[p][i] != i:
            parents[p][i] = parents[p][parents[p][i]]
            i = parents[p][i]
        return i

    for p, i, j in merged + [pair for pair, verdict in zip(pairs, verdicts) if verdict == Verdict.EQUAL]:
        a, b = root(p, i), root(p, j)
        parents[p][max(a, b)] = min(a, b)  # the earlier class names the merged one
    classes = []
    for p, row in enumerate(local):
        renumber: dict[int, int] = {}
        classes.append([None if c is None else renumber.setdefault(root(p, c), len(renumber)) for c in row])
    return classes, sum(v == Verdict.TIMEOUT for v in verdicts)
