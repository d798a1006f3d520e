"""Hostile final answers, generated deterministically: what a degenerate model can write.

Shared by `tests/test_hostile_answers.py` (a small scale, in CI) and `bench/hostile_inputs.py`
(full scale, timed). Families, each a list of answer strings:

- numbers of thousands to tens of thousands of digits: plain, decimal, negative, with thousands
  separators, in `\\frac{..}{..}`, `a/b`, mixed numbers, e-notation, `\\times 10^{..}`, percent;
- powers and towers (`9^9^9^9`, `9^{9^{9^9}}`, `(10^{10})!`), huge exponents and factorials;
- repeated operators, deep and unbalanced braces, long lists, tuples and matrices;
- unicode (other scripts' digits, superscripts, fullwidth forms, combining marks);
- e-notation with huge exponents, whitespace and period runs, and random garbage.

`hostile_pairs` pairs each answer with a short real reference, with itself and with a near copy
(the last digit changed), in both orders: maj@k votes compare two predictions.
`hostile_completions` builds degenerate completions of any size for answer extraction.
"""
from __future__ import annotations

import random

REFERENCES = ["2", "\\frac{1}{2}", "0.5", "(1,2)", "x^2+1", "10^{400}", "4.5\\times 10^{33}", "\\{1,2,3\\}"]


def _digits(rng: random.Random, n: int) -> str:
    return str(rng.randint(1, 9)) + "".join(rng.choice("0123456789") for _ in range(n - 1))


def _near(s: str) -> str:
    """`s` with its last digit changed: a different answer of the same shape."""
    for i in range(len(s) - 1, -1, -1):
        if s[i] in "0123456789":
            return s[:i] + str((int(s[i]) + 1) % 10) + s[i + 1:]
    return s + "1"


def families(scale: float = 1.0, seed: int = 0) -> dict[str, list[str]]:
    """{family: answers}. `scale` shrinks the longest strings (CI uses a small one)."""
    rng = random.Random(seed)
    sizes = sorted({max(50, int(n * scale)) for n in (1_000, 2_000, 4_300, 5_000, 10_000, 20_000, 50_000)})
    out: dict[str, list[str]] = {}

    numbers = []
    for n in sizes:
        d, e = _digits(rng, n), _digits(rng, n)
        half = n // 2
        numbers += [d, "-" + d, d[:half] + "." + d[half:], "0." + d, "." + d, d + ".", d + "%",
                    f"{int(d[:3]):,}" + "".join("," + d[i:i + 3] for i in range(3, n - n % 3, 3)),
                    f"${d}$", f"{d}\\text{{ units}}", f"x = {d}", d + "0" * 50]
        numbers += [f"\\frac{{{d}}}{{{e}}}", f"\\dfrac{{{d}}}{{{e}}}", f"-\\frac{{{d}}}{{{e}}}", f"{d}/{e}",
                    f"\\frac{{{d[:half]}.{d[half:]}}}{{{e}}}", f"3\\frac{{{d}}}{{{e}}}", f"\\frac{d[0]}{{{e}}}",
                    f"\\frac{{\\frac{{{d}}}{{{e}}}}}{{{d}}}", f"\\frac{{{d}}}{{{e}}}+\\frac{{{e}}}{{{d}}}",
                    f"\\frac{{{d}}}{{{d}}}", f"\\frac{{1}}{{{e}}}", f"\\sqrt{{{d}}}", f"({d},{e})", f"{d},{e}"]
        numbers += [f"{d[0]}.{d[1:]}e{n}", f"{d[0]}.{d[1:]}e-{n}", f"{d[0]}.{d[1:]}\\times10^{{{rng.randint(1, 9999)}}}",
                    f"1e{d}", f"1e-{d}", f"10^{{{d}}}", f"10^{{-{d}}}", f"{d}^{{{e[:4]}}}", f"{d}!"]
    out["numbers"] = numbers

    out["powers"] = ["9^9^9^9", "9^{9^{9^9}}", "2**3**4**5**6", "((9^9)^9)^9", "(10^{10})!", "10^{10}!",
                     "\\binom{10^{9}}{10^{8}}", "2^{10^{12}}", "x^{10^{9}}", "10^{10^{10}}", "1e99999999999",
                     "1e-99999999999", "9.9e10000", "9.9e-10000", "4.5\\times10^{10000}", "4.5\\times10^{99999}",
                     "e^{e^{e^{9}}}", "99999999999!!", "\\sum_{k=1}^{10^{12}}k^{k}", "\\prod_{k=1}^{10^{9}}k",
                     "2^" * 200 + "2", "1^" * 2_000 + "1", "2^{" * 500 + "2" + "}" * 500,
                     "10^{" + "9" * 4_000 + "}", "(" + "9" * 300 + ")^{" + "9" * 300 + "}"]
    k = max(200, int(20_000 * scale))
    out["operators"] = ["1+" * k + "1", "-" * k + "1", "+-" * k + "1", "1*" * k + "1", "1/" * k + "1", "2" + "!" * k,
                        "1=" * k + "1", "x" + "'" * k, "^" * k, "\\cdot" * k, "\\times" * k, "1\\cup" * k + "1",
                        "\\sqrt" * k + "2", "-" * k, "%" * k, "=" * k, "," * k, "&" * k, "\\\\" * k]
    out["braces"] = ["{" * k + "1" + "}" * k, "(" * k + "1" + ")" * k, "[" * k + "1" + "]" * k, "{" * k, "}" * k,
                     "(" * k, "\\frac{" * (k // 4) + "1" + "}{2}" * (k // 4), "\\sqrt{" * (k // 4) + "2" + "}" * (k // 4),
                     "\\left(" * (k // 4) + "1" + "\\right)" * (k // 4), "\\{" * k + "1" + "\\}" * k,
                     "(" * 50 + "1" + ")" * 50, "{" * 25 + "1,2" + "}" * 25, "\\boxed{" * k + "1",
                     "\\text{" * k + "1" + "}" * k, "$" * k + "1" + "$" * k]
    out["lists"] = [",".join(str(i) for i in range(k // 4)), ",".join(str(i) for i in reversed(range(k // 4))),
                    "(" + ",".join("1" for _ in range(k // 2)) + ")", "\\{" + ",".join(str(i) for i in range(k // 4)) + "\\}",
                    "\\begin{pmatrix}" + "\\\\".join("&".join("1" for _ in range(40)) for _ in range(40)) + "\\end{pmatrix}",
                    "[" + ",".join(f"({i},{i + 1})" for i in range(k // 8)) + "]", "\\cup".join(f"[{i},{i + 1}]" for i in range(k // 8)),
                    "{" + ",".join("{" + ",".join(str(j) for j in range(30)) + "}" for _ in range(30)) + "}",
                    ",".join(f"x^{{{i}}}+{i}" for i in range(k // 8))]
    out["unicode"] = ["١٢٣", "１２３", "²", "2²", "½", "⅓+⅔", "∞", "√2", "π", "3.14…", "1" + "\u0301" * 100, "\u200b1",
                      "٣" * k, "²" * k, "１" * k, "𝟏𝟐𝟑", "Ⅻ", "1\u00a0000", "\u2212" + "1", "१२३४" * (k // 4),
                      "😀" * 100, "\ufeff2", "2\u20133", "a\u0308" * 100, "ﬁ" * 100, "\u0000" * 10]
    out["whitespace"] = [" " * k + "1", "1" + " " * k, "1" + " " * k + "2", "\\text{" + " " * k + "x}",
                         "\\text{" + " " * k + "cm}", "5" + " " * k + "cm", "1" + "." * k, "1" + "\\." * k, ". " * k,
                         "1" + "\\," * k + "2", "1" + "~" * k + "2", "\\quad" * k, "x=" + " " * k + "1",
                         "the" + " answer" * k, "a b " * k, "1" + "\n" * k + "2", "\t" * k]
    alphabet = "x+-*/^(){}[]\\0123456789 .,=!_&$%eE"
    tokens = ["\\frac", "\\sqrt", "\\left(", "\\right)", "\\pi", "\\infty", "\\text{", "\\boxed{", "^{", "_{", "\\cdot",
              "\\times", "10^", "e", "!", "\\binom", "\\begin{pmatrix}", "\\end{pmatrix}", "&", "\\\\", "\\cup", "%", "9" * 50]
    garbage = ["".join(rng.choice(alphabet) for _ in range(rng.randint(50, max(60, int(5_000 * scale))))) for _ in range(30)]
    garbage += ["".join(rng.choice(tokens + list(alphabet)) for _ in range(rng.randint(20, 600))) for _ in range(40)]
    out["garbage"] = garbage
    return out


def hostile_pairs(scale: float = 1.0, seed: int = 0) -> list[tuple[str, str]]:
    """Unique (prediction, reference) pairs: every hostile answer against each short reference
    (both orders), itself and a near copy."""
    rng = random.Random(seed)
    pairs = []
    for answers in families(scale, seed).values():
        for a in answers:
            ref = REFERENCES[rng.randrange(len(REFERENCES))]
            pairs += [(a, ref), (ref, a), (a, a), (a, _near(a)), (_near(a), a)]
    return list(dict.fromkeys(pairs))


def _repeat(unit: str, size: int) -> str:
    return (unit * (size // len(unit) + 1))[:size]


# name -> (build(size), benchmark, the answer and rule extracted at any size). Each repeats a
# unit that a scan restarted at every occurrence would read to the end of the text.
COMPLETIONS = {
    "unclosed_boxed": (lambda n: "So \\boxed{42}. " + _repeat("\\boxed{ x + 1 = ", n), None, ("42", "boxed")),
    "boxed_run": (lambda n: _repeat("\\boxed{", n) + " 7", None, ("7", "last_number")),
    "unfinished_minerva": (lambda n: "The final answer is $5$. I hope it is correct. " + _repeat("final answer is $1 ", n),
                           None, ("5", "minerva")),
    "answer_is_then_spaces": (lambda n: "Thus the answer is 6" + " " * n + ".", None, ("6", "answer_is")),
    "final_answer_then_spaces": (lambda n: "final answer: 8" + " " * n + "\nmore", None, ("8", "final_answer_is")),
    "choice_then_spaces": (lambda n: "The answer" + " " * n + ". Pick (C)", "gpqa", ("C", "choice")),
    "open_braces": (lambda n: "\\boxed{9}" + _repeat("{", n), None, ("9", "boxed")),
    "dots_and_newlines": (lambda n: _repeat(". \n", n) + "so 12", None, ("12", "last_number")),
}


def hostile_completion(name: str, size: int) -> tuple[str, str | None, tuple[str, str]]:
    """(completion of about `size` characters, benchmark, expected (answer, rule)) for COMPLETIONS[name]."""
    build, benchmark, expected = COMPLETIONS[name]
    return build(size), benchmark, expected
