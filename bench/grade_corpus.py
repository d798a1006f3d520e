"""The answer checker on a labelled corpus built from the shipped benchmarks: ours vs today's vs math-verify.

    python bench/grade_corpus.py [--baseline-rev REV] [--workers 2] [--timeout 5] [--limit N] [--mv-sample N] [--no-hostile]

The corpus (deterministic, unique pairs):
- true: every benchmark reference against its cosmetic variants (delimiters, spacing, `\\dfrac`,
  a trailing period, `x =`, a unit, an equal number written another way);
- different: a reference against another item's reference of the same benchmark (skipping those
  whose normal forms or plain numeric values coincide);
- hostile: power towers, huge factorials and exponents, deep nesting, long garbage.

"Today's" checker is `cft/answers` as it was at `--baseline-rev`, materialized from git into a
temporary package and run in the same process, so both rates come from one run on one machine.
Prints pairs/s of each checker and the ratio, per-class accuracy, false positives, crashes,
every verdict that changed against today's, and the hostile set's time and worst overrun.
"""
from __future__ import annotations

import argparse
import collections
import importlib
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BASELINE_REV = "2ff8c65"  # the checker before issue #15
BASELINE_PACKAGE = "cft_answers_baseline"


# -- the corpus ----------------------------------------------------------------------------------
def references() -> list[tuple[str, str]]:
    """(benchmark, reference) for every item of every shipped benchmark."""
    from cft.benchmarks import BENCHMARKS, SHIPPED

    out = []
    for bench in BENCHMARKS.values():
        out += [(bench.name, it["reference"]) for it in bench.load(SHIPPED) if it["reference"]]
    return out


def _number_forms(ref: str) -> list[str]:
    from fractions import Fraction

    from cft.answers.check import parse_number
    from cft.answers.normalize import normalize

    parsed = parse_number(normalize(ref))
    if parsed is None:
        return []
    value: Fraction = parsed[0]
    forms = [f"{float(value):.12g}"]
    if value.denominator == 1 and abs(value) >= 1000:
        forms.append(f"{int(value):,}")
    if value.denominator != 1 and value.denominator < 1000:
        forms.append(f"\\frac{{{value.numerator}}}{{{value.denominator}}}")
    return forms


def true_pairs(refs) -> list[tuple[str, str]]:
    pairs = []
    for _, ref in refs:
        variants = [f"${ref}$", f" {ref}. ", ref.replace("\\frac", "\\dfrac"), ref.replace(" ", ""),
                    f"\\({ref}\\)", f"x = {ref}" if "=" not in ref else ref]
        numbers = _number_forms(ref)
        variants += numbers + [f"{n}\\text{{ units}}" for n in numbers[:1]]
        pairs += [(v, ref) for v in variants if v != ref]
    return list(dict.fromkeys(pairs))


def different_pairs(refs, per_ref: int = 1, seed: int = 0) -> list[tuple[str, str]]:
    from cft.answers.check import parse_number
    from cft.answers.normalize import normalize

    rng = random.Random(seed)
    by_bench = collections.defaultdict(list)
    for bench, ref in refs:
        by_bench[bench].append(ref)
    pairs = []
    for bench, ref in refs:
        pool = by_bench[bench]
        for _ in range(per_ref):
            other = pool[rng.randrange(len(pool))]
            a, b = normalize(other), normalize(ref)
            pa, pb = parse_number(a), parse_number(b)
            if a == b or (pa and pb and pa[0] == pb[0]):
                continue
            pairs.append((other, ref))
    return list(dict.fromkeys(pairs))


def hostile_pairs(refs, seed: int = 0) -> list[tuple[str, str]]:
    sys.path.insert(0, str(REPO / "tests"))
    from test_grader import adversarial_corpus

    rng = random.Random(seed)
    preds = [p for p, _, _ in adversarial_corpus(seed)]
    preds += [f"{rng.randint(2, 9)}^{{" * n + "9" + "}" * n for n in range(3, 12)]
    preds += [f"({rng.randint(10, 99)}^{{{rng.randint(10, 99)}}})^{{{rng.randint(10**5, 10**6)}}}" for _ in range(10)]
    preds += [f"{rng.randint(10**4, 10**7)}!" for _ in range(10)] + [f"{n}!!" for n in (100, 1000, 10**5)]
    preds += [f"\\binom{{{10**n}}}{{{10**(n - 1)}}}" for n in range(5, 10)]
    preds += [f"2^{{{10**n}}}" for n in range(5, 12)] + [f"e^{{e^{{e^{{{n}}}}}}}" for n in range(5, 9)]
    preds += ["\\frac{" * n + "1" + "}{2}" * n for n in (20, 100, 500)]
    preds += ["".join(rng.choice("x+-*/^(){}\\0123456789 ") for _ in range(rng.randint(50, 3000))) for _ in range(40)]
    preds += [" ".join("lorem ipsum dolor sit amet".split() * n) for n in (1, 50, 500)]
    preds += ["\\sum_{k=1}^{10^{12}} k^{k}", "\\prod_{k=1}^{10^{9}} k", "\\int_0^1 x^{10^{9}} dx", "x^{x^{x^{x^{x}}}}"]
    ref_pool = [r for _, r in refs]
    return list(dict.fromkeys((p, ref_pool[rng.randrange(len(ref_pool))]) for p in preds))


# -- the checkers --------------------------------------------------------------------------------
def baseline_grader_class(rev: str, into: Path):
    """`Grader` of `cft/answers` at `rev`, importable as its own package (workers included)."""
    package = into / BASELINE_PACKAGE
    package.mkdir()
    names = subprocess.run(["git", "ls-tree", "--name-only", rev, "cft/answers/"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split()
    for name in names:
        source = subprocess.run(["git", "show", f"{rev}:{name}"], cwd=REPO, capture_output=True,
                                text=True, check=True).stdout
        (package / Path(name).name).write_text(source.replace("cft.answers", BASELINE_PACKAGE))
    sys.path.insert(0, str(into))
    os.environ["PYTHONPATH"] = os.pathsep.join([str(into), os.environ.get("PYTHONPATH", "")])
    return importlib.import_module(f"{BASELINE_PACKAGE}.grader").Grader


def timed(grader_class, pairs, **kwargs):
    """(verdict strings, seconds, durations, stats) with the workers started outside the timing."""
    with grader_class(**kwargs) as grader:
        # Start and warm every worker: distinct pairs (a repeated one runs once) that need sympy.
        grader.grade([(f"x^{k}+1", f"1+x^{k}") for k in range(2, 2 + grader.workers)])
        grader.stats.clear()
        start = time.perf_counter()
        verdicts = grader.grade(pairs)
        seconds = time.perf_counter() - start
        return [str(v.value) for v in verdicts], seconds, list(grader.durations), dict(grader.stats)


def _accuracy(verdicts, labels) -> str:
    out = []
    for cls in ("true", "different"):
        idx = [i for i, lab in enumerate(labels) if lab == cls]
        hits = sum((verdicts[i] == "equal") == (cls == "true") for i in idx)
        out.append(f"{cls} {hits}/{len(idx)} ({100 * hits / max(1, len(idx)):.2f}%)")
    fp = sum(v == "equal" and lab == "different" for v, lab in zip(verdicts, labels))
    return "  ".join(out) + f"  false positives {fp}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-rev", default=BASELINE_REV, help="git revision of today's checker")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--limit", type=int, default=None, help="use only N references (spread over benchmarks)")
    parser.add_argument("--mv-sample", type=int, default=1500,
                        help="math-verify (~10x slower than today's) grades this spread sample of the pairs; 0: all")
    parser.add_argument("--no-hostile", action="store_true")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from cft.answers import Grader

    refs = references()
    if args.limit:
        refs = random.Random(0).sample(refs, args.limit)
    trues, diffs = true_pairs(refs), different_pairs(refs)
    pairs = trues + diffs
    labels = ["true"] * len(trues) + ["different"] * len(diffs)
    hostile = hostile_pairs(refs)
    print(f"corpus: {len(refs)} references -> {len(trues)} true + {len(diffs)} different pairs; "
          f"{len(hostile)} hostile; workers={args.workers} timeout={args.timeout}s")
    kw = dict(timeout=args.timeout, workers=args.workers)

    with tempfile.TemporaryDirectory() as tmp:
        Baseline = baseline_grader_class(args.baseline_rev, Path(tmp))
        # One forkserver per process serves every Grader: warm both checkers in it, so neither
        # pays for importing sympy in its workers (replacements after a timeout included).
        import multiprocessing as mp
        from multiprocessing import forkserver

        mp.get_context("forkserver").set_forkserver_preload(["cft.answers._warm", f"{BASELINE_PACKAGE}._warm"])
        forkserver.ensure_running()
        old, t_old, _, s_old = timed(Baseline, pairs, **kw)
    new, t_new, _, s_new = timed(Grader, pairs, **kw)
    n = len(pairs)
    print(f"today's ({args.baseline_rev}): {n / t_old:9.1f} pairs/s ({t_old:.1f}s)  {_accuracy(old, labels)}  "
          f"crashed {s_old.get('crashed', 0)}")
    print(f"ours:              {n / t_new:9.1f} pairs/s ({t_new:.2f}s)  {_accuracy(new, labels)}  "
          f"crashed {s_new.get('crashed', 0)}  fast path {s_new.get('fast_path', 0)}, cached {s_new.get('cached', 0)}")
    print(f"speed-up over today's: {t_old / t_new:.1f}x")
    step = max(1, n // args.mv_sample) if args.mv_sample else 1
    sample = list(range(0, n, step))
    mv, t_mv, _, s_mv = timed(Grader, [pairs[i] for i in sample], checker="math-verify", **kw)
    print(f"math-verify:       {len(sample) / t_mv:9.1f} pairs/s ({t_mv:.1f}s on every {step}th pair: {len(sample)})  "
          f"{_accuracy(mv, [labels[i] for i in sample])}  crashed {s_mv.get('crashed', 0)}  "
          f"(ours is {(n / t_new) / (len(sample) / t_mv):.1f}x faster)")
    changed = [i for i in range(n) if old[i] != new[i]]
    print(f"verdicts changed against today's: {len(changed)}")
    for i in changed:
        print(f"  [{labels[i]}] today={old[i]} ours={new[i]}  pred={pairs[i][0][:70]!r} ref={pairs[i][1][:70]!r}")
    wrong = [i for i in range(n) if (new[i] == "equal") != (labels[i] == "true")]
    print(f"ours wrong on {len(wrong)} labelled pairs:")
    for i in wrong:
        print(f"  [{labels[i]}] ours={new[i]}  pred={pairs[i][0][:70]!r} ref={pairs[i][1][:70]!r}")

    if not args.no_hostile:
        verdicts, t_h, durations, stats = timed(Grader, hostile, **kw)
        counts = collections.Counter(verdicts)
        overrun = max(d - args.timeout for d in durations)
        print(f"hostile: {len(hostile)} pairs in {t_h:.1f}s  equal={counts['equal']}  "
              f"{dict(counts)}  slowest pair {max(durations):.3f}s (overrun vs timeout {overrun:+.3f}s)  "
              f"killed {stats.get('killed', 0)} crashed {stats.get('crashed', 0)}")
        for i, v in enumerate(verdicts):
            if v == "equal":
                print(f"  EQUAL: pred={hostile[i][0][:70]!r} ref={hostile[i][1][:70]!r}")


if __name__ == "__main__":
    main()
