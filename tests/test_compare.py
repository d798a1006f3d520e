"""`python -m cft.report compare` / `diff`, the report's intervals, seed rows and baseline column,
and provenance.json: on copies of the session's default run, with per-problem rows perturbed."""
from __future__ import annotations

import hashlib
import json
import shutil

import pytest
import yaml
from scipy import stats as sps

from cft.benchmarks import SHIPPED
from cft.generation import STOP_STRINGS
from cft.io import read_json, read_jsonl, write_json, write_jsonl
from cft.paths import RunPaths
from cft.report.__main__ import main
from cft.report.tables import build_table, collect_runs, to_csv, to_markdown
from test_pipeline import copy_run, default_run_once

mcnemar = pytest.importorskip("statsmodels.stats.contingency_tables").mcnemar
BENCH = "math-500"


@pytest.fixture(scope="module")
def default(tmp_path_factory, cache_dir) -> RunPaths:
    return default_run_once(tmp_path_factory, cache_dir)[0]


def _set(row: dict, sample: int = 0, **fields) -> None:
    """Change a sample's fields, in its `samples` entry and, for sample 0, in the row itself."""
    if row.get("samples"):
        row["samples"][sample].update(fields)
    if sample == 0:
        row.update({k: v for k, v in fields.items() if k in row or k in ("correct", "verdict")})


def _edit_rows(paths: RunPaths, change) -> list[dict]:
    rows = read_jsonl(paths.eval_samples(BENCH))
    change(rows)
    write_jsonl(paths.eval_samples(BENCH), rows)
    return rows


@pytest.fixture
def pair(default, tmp_path) -> tuple[RunPaths, RunPaths]:
    """Two copies of the default run; B diverges from A on five of its eight problems, each at
    another place: A is right only on idx 4 (B's grader timed out there), B on idx 0-3."""
    a, b = copy_run(default, tmp_path / "a"), copy_run(default, tmp_path / "b")

    def base(rows):
        for r in rows:
            _set(r, correct=False, verdict="different")
    _edit_rows(a, lambda rows: (base(rows), _set(rows[4], correct=True, verdict="equal")))

    def perturb(rows):
        base(rows)
        _set(rows[0], correct=True, verdict="equal")                                  # grading
        _set(rows[1], prediction="\\frac{14}{3}", correct=True, verdict="equal")      # extraction
        _set(rows[2], completion="So the answer is 9.", prediction="9", correct=True, verdict="equal")
        rows[3]["prompt"] += " "                                                        # prompt
        _set(rows[3], completion="42", prediction="42", correct=True, verdict="equal")
        _set(rows[4], verdict="timeout", correct=False)                                 # timeout
    _edit_rows(b, perturb)
    prov = read_json(b.provenance)
    prov["software"]["torch"] = "9.9.9"
    write_json(b.provenance, prov)
    return a, b


def _json(capsys, *argv) -> dict:
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


def test_compare_reports_delta_interval_exact_mcnemar_and_flips(pair, capsys):
    a, b = pair
    got = _json(capsys, "compare", str(a.root), str(b.root), "--json")
    m = got["benchmarks"][BENCH]
    assert (m["n_items"], m["a_only"], m["b_only"], m["both_right"], m["both_wrong"]) == (8, 1, 4, 0, 3)
    assert m["delta"] == pytest.approx(100 * (4 - 1) / 8)
    assert m["p_value"] == pytest.approx(mcnemar([[0, 1], [4, 3]], exact=True).pvalue)
    assert m["test"] == "exact McNemar" and m["ci95"][0] <= m["delta"] <= m["ci95"][1]
    assert got["macro"]["delta"] == pytest.approx(m["delta"]) and got["macro"]["ci95"] == m["ci95"]
    # same seed, same interval; the prompt change and the size of the benchmark are warned about
    assert _json(capsys, "compare", str(a.root), str(b.root), "--json")["benchmarks"][BENCH]["ci95"] == m["ci95"]
    warnings = "\n".join(got["warnings"])
    assert "not see the same prompts on 1 of 8 problems (first: idx 3)" in warnings
    assert "too small for this difference" in warnings and "problems would detect it" in warnings

    assert main(["compare", str(a.root), str(b.root)]) == 0
    text = capsys.readouterr().out
    assert f"{BENCH:<14} {8:>5} {12.5:>7.1f} {50.0:>7.1f} {37.5:>+7.1f}" in text and "exact McNemar" in text


def test_compare_with_several_samples_uses_the_paired_t_test(pair, capsys):
    a, b = pair
    means = {}
    for paths, shift in ((a, 0), (b, 1)):
        def sampled(rows, shift=shift):
            for r in rows:  # eval.n=4 rows, whichever format the run's rows had
                first = (r.get("samples") or [{k: r[k] for k in ("completion", "prediction")}])[0]
                verdicts = [(r["idx"] + j + shift) % 3 == 0 for j in range(4)]
                r["samples"] = [{**first, "correct": v, "verdict": "equal" if v else "different"}
                                for v in verdicts]
        means[paths] = [sum(s["correct"] for s in r["samples"]) / 4 for r in _edit_rows(paths, sampled)]
    m = _json(capsys, "compare", str(a.root), str(b.root), "--json")["benchmarks"][BENCH]
    assert m["test"].startswith("paired t-test") and m["samples_a"] == m["samples_b"] == 4
    assert m["p_value"] == pytest.approx(sps.ttest_rel(means[b], means[a]).pvalue)
    assert m["wilcoxon_p"] == pytest.approx(sps.wilcoxon(means[b], means[a]).pvalue)
    assert m["delta"] == pytest.approx(100 * (sum(means[b]) - sum(means[a])) / 8)


def test_compare_warns_when_the_runs_saw_different_problems(pair, capsys):
    a, b = pair
    _edit_rows(b, lambda rows: rows.pop())
    got = _json(capsys, "compare", str(a.root), str(b.root), "--json")
    assert got["benchmarks"][BENCH]["n_items"] == 7
    assert any("did not see the same problems (A 8, B 7)" in w for w in got["warnings"])


def test_diff_labels_where_each_problem_first_diverges_and_the_provenance_that_differs(pair, capsys):
    a, b = pair
    got = _json(capsys, "diff", str(a.root), str(b.root), "--json", "--show", "8")
    d = got["benchmarks"][BENCH]
    assert d["by_label"] == {"prompt": 1, "generation": 1, "extraction": 1, "timeout": 1, "grading": 1}
    assert {p["idx"]: p["label"] for p in d["problems"]} == {0: "grading", 1: "extraction", 2: "generation",
                                                            3: "prompt", 4: "timeout"}
    assert (d["a_right_b_wrong"], d["b_right_a_wrong"]) == (1, 4)
    # the copies' own paths compare equal; the one field changed is what differs
    assert got["provenance"] == {"missing": [], "differ": [{"key": "software.torch", "a": read_json(a.provenance)[
        "software"]["torch"], "b": "9.9.9"}]}
    assert main(["diff", str(a.root), str(b.root)]) == 0
    text = capsys.readouterr().out
    assert "5 of 8 problems differ" in text and "-- idx 0: grading" in text and "software.torch" in text
    assert "-- idx 3" not in text  # --show 3 by default


def test_report_stage_scores_carry_a_wilson_interval(default):
    results = read_json(default.results)
    rows = read_jsonl(default.eval_samples(BENCH))
    right = sum(r["correct"] for r in rows)
    from statsmodels.stats.proportion import proportion_confint

    u = results["uncertainty"][BENCH]
    assert u["method"] == "wilson" and u["problem_points"] == pytest.approx(100 / len(rows))
    assert u["ci95"] == pytest.approx([100 * x for x in proportion_confint(right, len(rows), method="wilson")], abs=1e-3)
    assert f"± {u['half_width']:.1f}" in default.results_md.read_text()


def test_provenance_records_versions_hashes_and_sampling(default):
    prov = read_json(default.provenance)
    sums = dict(line.split()[::-1] for line in (SHIPPED / "SHA256SUMS").read_text().splitlines() if line.strip())
    assert prov["hashes"]["benchmarks"][BENCH]["sha256"] == sums[f"{BENCH}/test.jsonl"]
    weights = default.final_model / "model.safetensors"
    assert prov["hashes"]["weights"]["files"]["model.safetensors"]["sha256"] == hashlib.sha256(
        weights.read_bytes()).hexdigest()
    assert prov["sampling"]["stop_strings"] == list(STOP_STRINGS) and prov["sampling"]["stop_token_ids"]
    assert prov["software"]["torch"] and prov["software"]["python"]
    assert prov["engine"]["layout"]["engines"] == 1 and prov["grader"]["checker"] == "cft"
    assert not any("error" in section for section in prov.values() if isinstance(section, dict))


def _seeded_copy(default: RunPaths, dest, method: str, seed: int, right: set[int]) -> None:
    """A copy of the default run as `method` with `seed`, right exactly on problems `right`."""
    paths = copy_run(default, dest)
    config = yaml.safe_load(paths.resolved_config.read_text())
    config["method"]["name"], config["seed"], config["report"] = method, seed, {"baseline": "method=sft"}
    paths.resolved_config.write_text(yaml.safe_dump(config))
    rows = _edit_rows(paths, lambda rows: [_set(r, correct=r["idx"] in right) for r in rows])
    results = read_json(paths.results)
    results["accuracy"] = {BENCH: 100 * sum(r["correct"] for r in rows) / len(rows)}
    results.pop("uncertainty")
    write_json(paths.results, results)


def test_sweep_rows_aggregate_seeds_and_differ_from_the_baseline_with_an_interval(default, tmp_path):
    sweep = tmp_path / "sweep"
    for seed, shift in ((1, 0), (2, 1)):
        _seeded_copy(default, sweep / f"sft-{seed}", "sft", seed, {shift})
        _seeded_copy(default, sweep / f"cft-{seed}", "cft", seed, {shift, 2, 3, 4, 5, 6, 7})
    table = build_table(collect_runs(sweep))
    assert table.key_columns == ["model", "method"] and table.seeded and table.baseline == "method=sft"
    sft, cft = sorted(table.rows, key=lambda r: r.keys["method"] != "sft")
    assert sft.seeds == cft.seeds == "2" and sft.vs_baseline == "baseline"
    assert (sft.cells[BENCH], cft.cells[BENCH]) == (12.5, 87.5) and cft.sd == {BENCH: 0.0, "average": 0.0}
    delta, lo, hi = cft.vs_baseline
    assert delta == pytest.approx(75.0) and 0 < lo <= delta <= hi
    md = to_markdown(table)
    assert "| tiny | cft | 2 | **87.5 (sd 0.0)** | **87.5 (sd 0.0)** | +75.0 [" in md and "]* |" in md
    assert "Δ vs method=sft" in md and "sd = standard deviation over the seeds" in md
    assert "delta_ci95_low" in to_csv(table)
    # one seed of each: no seeds column, each score with its 95% interval
    for d in ("sft-2", "cft-2"):
        shutil.rmtree(sweep / d)
    single = to_markdown(build_table(collect_runs(sweep)))
    assert "seeds" not in single.splitlines()[0] and "± " in single
