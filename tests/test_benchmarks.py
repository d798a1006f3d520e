"""The benchmark test sets ship inside the package, byte for byte the pinned files."""
from __future__ import annotations

import gzip
import hashlib
import subprocess

import pytest

from cft.benchmarks import BENCHMARKS, SHIPPED, USER_SUPPLIED, get_benchmark
from cft.io import DataError
from helpers import ROOT

SHIPS = [b for name, b in BENCHMARKS.items() if name not in USER_SUPPLIED]


def test_shipped_test_sets_match_their_sha256sums():
    pinned = dict(reversed(line.split()) for line in (SHIPPED / "SHA256SUMS").read_text().splitlines())
    assert sorted(pinned) == sorted(b.path(SHIPPED).relative_to(SHIPPED).as_posix() for b in SHIPS)
    for name, digest in pinned.items():
        assert hashlib.sha256((SHIPPED / name).read_bytes()).hexdigest() == digest, name


def test_every_registered_benchmark_loads_from_the_package():
    counts = {b.name: len(b.load(SHIPPED)) for b in SHIPS}
    assert counts == {"math": 5000, "math-500": 500, "minerva_math": 272, "gsm8k": 1319, "olympiadbench": 675,
                      "aime24": 30, "aime25": 30, "amc23": 40, "theoremqa": 800, "math-validation": 500,
                      "math-500-validation": 500}
    # GPQA and MMLU-Pro do not ship: asking for them says how to point at a copy
    with pytest.raises(DataError, match=r"'gpqa' does not ship.*eval.benchmarks=\[gpqa:/data/gpqa_diamond.csv\]"):
        BENCHMARKS["gpqa"].load(SHIPPED)


def test_aime25_is_both_2025_exams_with_their_answer_keys():
    """AIME 2025 I then II, 15 problems each; the answers as AoPS's answer keys give them (every
    odd problem of I and even of II checked there by an independent source; all 30 equal in
    Zhuofeng-Li/math-evaluation-harness's copy, data/aime25/test.jsonl)."""
    items = get_benchmark("AIME2025").load(SHIPPED)
    assert [it["reference"] for it in items] == [
        "70", "588", "16", "117", "279", "504", "821", "77", "62", "81", "259", "510", "204", "60", "735",
        "468", "49", "82", "106", "336", "293", "237", "610", "149", "907", "113", "19", "248", "104", "240"]
    assert items[0]["question"].startswith("Find the sum of all integer bases $b>9$")


def test_a_benchmarks_directory_may_hold_plain_or_gzipped_files(tmp_path):
    """$CFT_BENCHMARKS / paths.benchmarks: NAME/test.jsonl or NAME/test.jsonl.gz, the plain one
    first when both are there."""
    rows = (SHIPPED / "aime24" / "test.jsonl").read_bytes()
    (tmp_path / "gz" / "aime24").mkdir(parents=True)
    (tmp_path / "gz" / "aime24" / "test.jsonl.gz").write_bytes(gzip.compress(rows))
    (tmp_path / "both" / "aime24").mkdir(parents=True)
    (tmp_path / "both" / "aime24" / "test.jsonl").write_bytes(rows.splitlines(keepends=True)[0])
    (tmp_path / "both" / "aime24" / "test.jsonl.gz").write_bytes(gzip.compress(rows))
    aime = BENCHMARKS["aime24"]
    assert aime.load(tmp_path / "gz") == aime.load(SHIPPED)
    assert aime.load(tmp_path / "both") == aime.load(SHIPPED)[:1]
    with pytest.raises(DataError, match=r"aime24/test.jsonl not found \(set paths.benchmarks\)"):
        aime.load(tmp_path)
    (tmp_path / "gz" / "aime24" / "test.jsonl.gz").write_bytes(gzip.compress(rows)[:-20])
    with pytest.raises(DataError, match="test.jsonl.gz: not a readable gzip file"):
        aime.load(tmp_path / "gz")


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
