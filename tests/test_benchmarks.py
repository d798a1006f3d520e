"""The benchmark test sets ship inside the package, byte for byte the pinned files."""
from __future__ import annotations

import hashlib
import subprocess

from cft.benchmarks import BENCHMARKS, SHIPPED
from helpers import ROOT


def test_shipped_test_sets_match_their_sha256sums():
    pinned = dict(reversed(line.split()) for line in (SHIPPED / "SHA256SUMS").read_text().splitlines())
    assert sorted(pinned) == sorted(f"{b.dirname}/test.jsonl" for b in BENCHMARKS.values())
    for name, digest in pinned.items():
        assert hashlib.sha256((SHIPPED / name).read_bytes()).hexdigest() == digest, name


def test_every_registered_benchmark_loads_from_the_package():
    counts = {name: len(b.load(SHIPPED)) for name, b in BENCHMARKS.items()}
    assert counts == {"math": 5000, "math-500": 500, "minerva_math": 272, "gsm8k": 1319, "olympiadbench": 675,
                      "aime24": 30, "amc23": 40, "theoremqa": 800, "math-validation": 500,
                      "math-500-validation": 500}


# The sibling folder the test sets were first copied from; spelled in pieces so that this file
# does not itself name it.
# the folder named in a string path, or quoted as one component of a Path expression.
SIBLING = ("/".join(("..", "sha" + "red")), '"sha' + 'red"')


def test_nothing_reads_a_sibling_folder():
    """A user's clone has nothing beside it: no code, config or test may reach outside it."""
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    hits = [f for f in tracked.split() if f.endswith((".py", ".yaml", ".sh", ".toml"))
            and any(s in (ROOT / f).read_text() for s in SIBLING)]
    assert hits == []
