"""Sweep report: paper-style tables (md/csv/tex), plots, local report; and a real tiny sweep."""
from __future__ import annotations

import csv
import importlib.util
import io
import json
import os
from pathlib import Path

import pytest
import yaml

from cft.report.__main__ import build_report, main
from cft.report.tables import build_table, collect_runs, to_csv, to_latex, to_markdown
from cft.paths import RunPaths
from helpers import assert_no_secret, cli, cli_env, train_metrics
from wandb_offline import read_run

BENCHES = ["math", "minerva_math", "gsm8k", "olympiadbench", "aime24", "amc23"]  # the paper's Table 2 columns


def _fake_run(sweep: Path, num: int, method: str, noisy: str, accuracy: dict | None,
              selection: list | None = None) -> Path:
    run_dir = sweep / f"{num}_dataset.noisy_models=[{noisy}],method={method}"
    run_dir.mkdir(parents=True)
    target = "critique" if method == "cft" else "response"
    config = {"model": {"name": "tiny"}, "run_name": f"tiny-{method}-champ-reference",
              "run_dir": str(run_dir), "paths": {"cache": "/c"}, "tracking": {"mode": "disabled"},
              "method": {"name": method, "target": target, "lr": 1e-3},
              "dataset": {"name": "champ", "noisy_models": [noisy]}, "teacher": {"name": "reference"}}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    (run_dir / "run_info.json").write_text("{}")
    (run_dir / "metrics.jsonl").write_text("".join(
        json.dumps({"stage": "train", "step": s, "loss": 3.0 / s + num / 10}) + "\n" for s in (1, 2, 3)))
    if accuracy is not None:
        avg = round(sum(accuracy.values()) / len(accuracy), 2)
        (run_dir / "results.json").write_text(json.dumps(
            {"run_name": config["run_name"], "model": "tiny", "method": method, "dataset": "champ",
             "teacher": "reference", "accuracy": accuracy, "average": avg,
             "n": {b: 10 for b in accuracy}, "grader_timeouts": {b: 0 for b in accuracy}}))
    if selection is not None:
        (run_dir / "eval").mkdir()
        best = max(selection, key=lambda p: (p["accuracy"], p["step"]))  # as select_checkpoint writes it
        (run_dir / "eval" / "selection.json").write_text(json.dumps(
            {"benchmark": "math-500", "curve": selection, "best": best}))
    return run_dir


@pytest.fixture
def sweep(tmp_path) -> Path:
    """sft/sft-verified/cft x GPT-4/GPT-3.5; sft-verified on GPT-3.5 failed; cft/GPT-3.5 lacks AMC23."""
    root = tmp_path / "multirun" / "noisy-source"
    acc = lambda base: {b: round(base + i * 1.5, 2) for i, b in enumerate(BENCHES)}  # noqa: E731
    _fake_run(root, 0, "sft", "GPT-4", acc(10.0))
    _fake_run(root, 1, "sft-verified", "GPT-4", acc(12.0))
    _fake_run(root, 2, "cft", "GPT-4", acc(15.25),
              selection=[{"step": 10, "accuracy": 20.0}, {"step": 20, "accuracy": 26.4},
                         {"step": 30, "accuracy": 24.0}])  # the curve of eval/selection.json
    _fake_run(root, 3, "sft", "GPT-3.5", acc(8.0))
    _fake_run(root, 4, "sft-verified", "GPT-3.5", None)
    _fake_run(root, 5, "cft", "GPT-3.5", {b: v for b, v in acc(9.0).items() if b != "amc23"})
    return root


def _csv_rows(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


def test_rows_are_model_method_and_swept_keys_with_results_numbers(sweep):
    table = build_table(collect_runs(sweep))
    assert table.key_columns == ["model", "method", "dataset.noisy_models"]  # not method.target
    assert table.benchmarks == BENCHES
    rows = _csv_rows(to_csv(table))
    assert [(r["method"], r["dataset.noisy_models"]) for r in rows] == [
        ("sft", "[GPT-3.5]"), ("sft-verified", "[GPT-3.5]"), ("cft", "[GPT-3.5]"),
        ("sft", "[GPT-4]"), ("sft-verified", "[GPT-4]"), ("cft", "[GPT-4]")]
    for row in [r for r in rows if r["status"] != "failed"]:
        results = json.loads((Path(row["run_dir"]) / "results.json").read_text())
        for b in BENCHES:
            expected = results["accuracy"].get(b)
            assert row[b] == ("—" if expected is None else str(expected))
        if len(results["accuracy"]) == len(BENCHES):
            assert float(row["average"]) == results["average"]


def test_missing_and_failed_cells_are_shown_not_dropped(sweep):
    table = build_table(collect_runs(sweep))
    rows = {(r["method"], r["dataset.noisy_models"]): r for r in _csv_rows(to_csv(table))}
    failed = rows[("sft-verified", "[GPT-3.5]")]
    assert failed["status"] == "failed" and failed["math"] == "failed"
    partial = rows[("cft", "[GPT-3.5]")]
    assert partial["amc23"] == "—" and partial["average"] == "—" and partial["math"] == "9.0"
    md = to_markdown(table)
    assert "| tiny | sft-verified | [GPT-3.5] | failed | failed |" in md
    assert "| tiny | cft | [GPT-3.5] | 9.0 |" in md and "| — | — | — |" in md
    assert r"failed & failed" in to_latex(table)


def test_best_per_column_and_delta_vs_best_sft(sweep):
    table = build_table(collect_runs(sweep))
    rows = {(r["method"], r["dataset.noisy_models"]): r for r in _csv_rows(to_csv(table))}
    # cft/GPT-4 is best everywhere but AMC23, where cft/GPT-3.5 is missing and cft/GPT-4 still wins.
    assert rows[("cft", "[GPT-4]")]["best"] == ";".join([*BENCHES, "average"])
    assert rows[("sft", "[GPT-4]")]["best"] == ""
    # Δ = cft avg - max(sft, sft-verified) avg on the same noisy source: 15.25 - 12.0.
    assert rows[("cft", "[GPT-4]")]["delta_cft_vs_best_sft"] == "+3.25"
    assert rows[("cft", "[GPT-3.5]")]["delta_cft_vs_best_sft"] == "—"  # its average is incomplete
    assert rows[("sft", "[GPT-4]")]["delta_cft_vs_best_sft"] == ""
    md = to_markdown(table)
    assert "| tiny | cft | [GPT-4] | **15.2** |" in md and "| +3.2 |" in md  # 15.25 -> 15.2 (banker's)
    tex = to_latex(table)
    assert r"\textbf{15.2}" in tex and r"$\Delta$ CFT vs best SFT" in tex and r"& MATH &" in tex


def _edit(run_dir: Path, name: str, change) -> None:
    """Rewrite run_dir/name (config.yaml or results.json) through `change(dict)`."""
    path = run_dir / name
    data = yaml.safe_load(path.read_text()) if name.endswith(".yaml") else json.loads(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data) if name.endswith(".yaml") else json.dumps(data))


def test_columns_are_every_key_that_differs_not_only_the_ones_that_split_a_group(sweep):
    """method.lr differs, in step with the noisy source: a column of its own, not hidden behind it."""
    for run_dir in sweep.glob("*GPT-3.5*"):
        _edit(run_dir, "config.yaml", lambda c: c["method"].update(lr=2e-3))
    table = build_table(collect_runs(sweep))
    assert table.key_columns == ["model", "method", "dataset.noisy_models", "method.lr"]
    assert {(r.keys["dataset.noisy_models"], r.keys["method.lr"]) for r in table.rows} == {
        ("[GPT-4]", "0.001"), ("[GPT-3.5]", "0.002")}


def test_a_key_set_on_the_command_line_is_a_column_even_in_step_with_the_method(tmp_path):
    """Two runs, sft at lr 1e-3 and cft at 2e-3: from the configs alone lr could be the methods'
    preset; Hydra's record of the overrides says the user set it, so it is shown."""
    root = tmp_path / "runs"
    dirs = [_fake_run(root, 0, "sft", "GPT-4", {"math-500": 10.0}), _fake_run(root, 1, "cft", "GPT-4", {"math-500": 12.0})]
    _edit(dirs[1], "config.yaml", lambda c: c["method"].update(lr=2e-3))
    assert build_table(collect_runs(root)).key_columns == ["model", "method"]  # method.target neither
    for d, lr in zip(dirs, ("0.001", "0.002")):
        (d / ".hydra").mkdir()
        (d / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"method={d.name[-3:]}", f"method.lr={lr}"]))
    assert build_table(collect_runs(root)).key_columns == ["model", "method", "method.lr"]


def test_a_score_says_how_many_problems_it_is_over_when_that_differs(sweep):
    _edit(sweep / "0_dataset.noisy_models=[GPT-4],method=sft", "results.json",
          lambda r: r["n"].update({"math": 8}))
    table = build_table(collect_runs(sweep))
    md = to_markdown(table)
    assert "| tiny | sft | [GPT-4] | 10.0 (n=8) | 11.5 |" in md  # gsm8k etc.: n=10 everywhere, unsaid
    assert "| tiny | cft | [GPT-4] | **15.2 (n=10)** | **16.8** |" in md
    rows = {(r["method"], r["dataset.noisy_models"]): r for r in _csv_rows(to_csv(table))}
    assert rows[("sft", "[GPT-4]")]["math"] == "10.0" and rows[("sft", "[GPT-4]")]["n.math"] == "8"
    assert "n.gsm8k" not in rows[("sft", "[GPT-4]")]
    assert "15.2 (n=10)" in to_latex(table)


def test_cli_writes_three_table_formats_plots_and_local_report(sweep, tmp_path, capsys):
    out = tmp_path / "report"
    assert main([str(sweep), "--out", str(out), "--wandb", "disabled"]) == 0
    assert "| model | method | dataset.noisy_models | MATH | Minerva-Math |" in capsys.readouterr().out
    for name in ["results_table.md", "results_table.csv", "results_table.tex", "report.md", "report.html"]:
        assert (out / name).stat().st_size > 0, name
    for png in ["train_loss.png", "accuracy.png", "checkpoint_selection.png"]:
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    report = (out / "report.md").read_text()
    assert "](accuracy.png)" in report and "](checkpoint_selection.png)" in report
    assert str(sweep / "4_dataset.noisy_models=[GPT-3.5],method=sft-verified") in report
    assert '<img src="train_loss.png"' in (out / "report.html").read_text()
    assert not list(out.glob(".*.tmp"))


def test_selection_plot_only_when_a_run_has_selection_results(sweep, tmp_path):
    (sweep / "2_dataset.noisy_models=[GPT-4],method=cft" / "eval" / "selection.json").unlink()
    written = build_report(sweep, tmp_path / "r")["written"]
    assert "selection" not in written and not (tmp_path / "r" / "checkpoint_selection.png").exists()


def test_cli_on_a_dir_without_runs_says_so(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    assert "no run directories" in capsys.readouterr().err


def test_online_report_without_wandb_workspaces_says_how_and_keeps_local_files(sweep, tmp_path, capsys):
    if importlib.util.find_spec("wandb_workspaces") is not None:
        pytest.skip("wandb-workspaces is installed (the [report] extra)")
    out = tmp_path / "report"
    assert main([str(sweep), "--out", str(out), "--wandb", "online"]) == 2
    assert 'pip install -e ".[report]"' in capsys.readouterr().err
    assert (out / "report.html").exists() and (out / "results_table.csv").exists()


# --- a real tiny sweep -----------------------------------------------------------------------
FAKE_OPENAI = "sk-test-FAKE-0123456789abcdef"
FAKE_WANDB = "fakewandbkey-0123456789abcdef"


@pytest.fixture(scope="module")
def real_sweep(tmp_path_factory, cache_dir) -> Path:
    """2 methods x 2 CHAMP noisy sources, W&B offline, fake API keys in the environment."""
    out = tmp_path_factory.mktemp("outputs")
    sweep_dir = out / "multirun" / "tiny-noisy-source"
    methods = os.environ.get("CFT_TEST_SWEEP_METHODS", "sft,cft")
    env = cli_env(out, cache_dir, WANDB_MODE="offline", OPENAI_API_KEY=FAKE_OPENAI, WANDB_API_KEY=FAKE_WANDB)
    cli("--multirun", f"method={methods}", "dataset.noisy_models=[GPT-4],[GPT-3.5]", "method.max_steps=2",
        "eval.limit=2", "dataset.limit=32", "sweep_name=tiny-noisy-source", outputs=out, cache=cache_dir,
        env=env, timeout=1800, check=True)
    return sweep_dir


@pytest.mark.slow
def test_real_sweep_report_matches_each_runs_results(real_sweep, tmp_path):
    out = tmp_path / "report"
    cli(str(real_sweep), "--out", str(out), module="cft.report", env={**os.environ, "WANDB_MODE": "offline"},
        timeout=300, check=True)
    for name in ["results_table.md", "results_table.csv", "results_table.tex", "report.md",
                 "report.html", "train_loss.png", "accuracy.png"]:
        assert (out / name).stat().st_size > 0, name
    rows = _csv_rows((out / "results_table.csv").read_text())
    assert len(rows) == 4 and {r["status"] for r in rows} == {"ok"}
    for row in rows:
        results = json.loads((Path(row["run_dir"]) / "results.json").read_text())
        assert (row["model"], row["method"]) == (results["model"], results["method"])
        config = yaml.safe_load((Path(row["run_dir"]) / "config.yaml").read_text())
        assert row["dataset.noisy_models"] == "[" + ",".join(config["dataset"]["noisy_models"]) + "]"
        assert row["math-500"] == str(results["accuracy"]["math-500"])
        assert float(row["average"]) == results["average"]
    assert {(r["method"], r["dataset.noisy_models"]) for r in rows} == {
        (m, n) for m in os.environ.get("CFT_TEST_SWEEP_METHODS", "sft,cft").split(",")
        for n in ("[GPT-4]", "[GPT-3.5]")}


@pytest.mark.slow
def test_real_sweep_has_an_offline_wandb_run_per_job_with_metrics(real_sweep):
    jobs = sorted(p.parent for p in real_sweep.glob("*/results.json"))
    assert len(jobs) == 4
    for job in jobs:
        record = read_run(job)
        run_id = (job / "wandb_run_id.txt").read_text().strip()
        assert [r["id"] for r in record["runs"]] == [run_id]
        assert record["runs"][0]["group"] == "tiny-noisy-source"
        assert record["runs"][0]["name"].endswith("/" + job.name)
        train = [h for h in record["history"] if "train/loss" in h]
        assert [(h["train/global_step"], h["train/loss"]) for h in train] == \
            [(r["step"], r["loss"]) for r in train_metrics(RunPaths.of(job))]
        assert "train/learning_rate" in train[-1]
        results = json.loads((job / "results.json").read_text())
        assert record["summary"]["eval/math-500/accuracy"] == results["accuracy"]["math-500"]
        assert record["summary"]["eval/math-500/predictions/nrows"] == results["n"]["math-500"]
        assert record["config"]["teacher"]["api_key_env"] == "OPENAI_API_KEY"


@pytest.mark.slow
def test_real_sweep_writes_no_secret_value_anywhere(real_sweep):
    assert assert_no_secret(real_sweep, FAKE_OPENAI, FAKE_WANDB) > 50 and list(real_sweep.rglob("*.wandb"))


# --- beside the paper (report.paper / columns / reuse / notes) --------------------------------
def _paper_run(sweep: Path, num: int, model: str, method: str, accuracy: dict | None, report: dict | None = None,
               **sections) -> Path:
    """A finished run of `model` x `method` as the pipeline leaves it (config.yaml, run_info.json,
    results.json), with the sweep's `report` settings."""
    run_dir = sweep / f"{num}_method={method},model={model}"
    run_dir.mkdir(parents=True)
    config = {"model": {"name": model}, "method": {"name": method}, "run_dir": str(run_dir),
              "dataset": {"name": "webinstruct-cft-50k", "noisy_generator": ""}, "teacher": {"name": "released"},
              "eval": {"name": "paper", "n": 1, "temperature": 0.0}, "sweep_name": sweep.name,
              "report": {"baseline": None, "paper": None, "columns": None, "reuse": [], "notes": {}, **(report or {})}}
    for section, values in sections.items():
        config[section].update(values)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    (run_dir / "run_info.json").write_text("{}")
    if accuracy is not None:
        (run_dir / "results.json").write_text(json.dumps(
            {"model": model, "method": method, "accuracy": accuracy,
             "average": round(sum(accuracy.values()) / len(accuracy), 2), "n": {b: 10 for b in accuracy}}))
    return run_dir


def _md_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("| ")]


def _scores(*values) -> dict:
    return dict(zip(BENCHES, values))


def test_the_papers_row_is_right_below_ours_and_its_other_rows_in_its_order(tmp_path):
    sweep = tmp_path / "multirun" / "main-table"
    report = {"paper": "table2"}
    _paper_run(sweep, 0, "qwen2.5-math-7b", "cft", _scores(70.0, 30.0, 80.0, 30.0, 10.0, 50.0), report)
    _paper_run(sweep, 1, "qwen2.5-math-7b", "sft", _scores(50.0, 10.0, 70.0, 10.0, 0.0, 30.0), report)
    _paper_run(sweep, 2, "qwen2.5-math-7b", "cft-sft", _scores(60.0, 20.0, 75.0, 20.0, 5.0, 40.0), report)
    md = build_report(sweep)["written"]["md"].read_text()
    lines = _md_lines(md)
    assert lines[0].startswith("| model | method | source | MATH | Minerva-Math | GSM8K |")
    ours_cft = lines.index("| qwen2.5-math-7b | cft | ours | **70.0** | **30.0** | **80.0** | **30.0** | **10.0** "
                           "| **50.0** | **45.0** | +16.7 |  |")
    assert lines[ours_cft + 1] == ("| qwen2.5-math-7b | cft | paper (v4) | 80.2 | 42.3 | 90.9 | 41.6 | 20.0 | 67.5 | 57.1 "
                                   "|  | paper: Qwen2.5-Math-7B WebInstruct-CFT |")  # never bold, no Δ
    ours_sft = lines.index("| qwen2.5-math-7b | sft | ours | 50.0 | 10.0 | 70.0 | 10.0 | 0.0 | 30.0 | 28.3 |  |  |")
    assert lines[ours_sft + 1].startswith("| qwen2.5-math-7b | sft | paper (v4) | 59.0 | 13.2 | 77.4 |")
    # The paper's rows we have no run for are there too, in the paper's order (DeepSeek first);
    # our cft-sft row, which the paper lacks, comes after all of them.
    sources = [line.split(" | ")[2] for line in lines[1:]]
    assert sources == ["paper (v4)"] * 11 + ["ours", "paper (v4)", "paper (v4)", "paper (v4)", "ours", "paper (v4)", "ours"]
    assert lines[1].startswith("| deepseek-math | base | paper (v4) | 33.8 | 9.2 | 64.3 | 4.5 | 0.0 | 10.0 | 20.3 |")
    assert lines[-1].startswith("| qwen2.5-math-7b | cft-sft | ours | 60.0 |")
    assert "paper (v4) = the published numbers of table2" in md
    csv_rows = _csv_rows((sweep / "report" / "results_table.csv").read_text())
    paper_cft = [r for r in csv_rows if r["status"] == "paper" and r["paper_row"] == "Qwen2.5-Math-7B WebInstruct-CFT"]
    assert len(paper_cft) == 1 and paper_cft[0]["math"] == "80.2" and paper_cft[0]["average"] == "57.1"
    assert "paper (v4)" in (sweep / "report" / "results_table.tex").read_text()
    assert "<td>paper (v4)</td>" in (sweep / "report" / "report.html").read_text()


def test_reuse_takes_the_other_sweeps_runs_by_reference_and_says_so(tmp_path):
    multirun = tmp_path / "multirun"
    main_cft = _paper_run(multirun / "main-table", 0, "qwen2.5-math-7b", "cft", _scores(80.0, 40.0, 90.0, 40.0, 20.0, 60.0))
    _paper_run(multirun / "main-table", 1, "qwen2.5-math-7b", "sft", _scores(60.0, 10.0, 70.0, 20.0, 0.0, 40.0))
    _paper_run(multirun / "main-table", 2, "qwen2.5-7b", "cft", _scores(70.0, 20.0, 80.0, 30.0, 10.0, 50.0))
    sweep = multirun / "dataset-ablation"
    report = {"paper": "table5", "reuse": [{"sweep": "main-table", "where": {"model": "qwen2.5-math-7b",
                                                                              "method": ["sft", "cft"]}}]}
    _paper_run(sweep, 0, "qwen2.5-math-7b", "cft", _scores(74.0, 40.0, 85.0, 36.0, 23.3, 57.5), report,
               dataset={"name": "metamath"}, teacher={"name": "gpt-4o"})
    build_report(sweep)
    lines = _md_lines((sweep / "report" / "results_table.md").read_text())
    reused = [line for line in lines if "ours (from main-table)" in line]
    assert len(reused) == 2 and not any("qwen2.5-7b" in line for line in lines)  # the where filter
    below = lines[lines.index(reused[-1]) + 1]
    assert reused[-1].startswith("| qwen2.5-math-7b | cft | webinstruct-cft-50k | released | ours (from main-table) | **80.0** |")
    assert below.startswith("| qwen2.5-math-7b | cft | webinstruct-cft-50k |  | paper (v4) | 80.2 |")
    rows = _csv_rows((sweep / "report" / "results_table.csv").read_text())
    assert str(main_cft) in {r["run_dir"] for r in rows}
    assert not (multirun / "main-table" / "report").exists()  # read, never run or written


def test_a_reuse_that_finds_nothing_is_said_under_the_table(tmp_path):
    sweep = tmp_path / "multirun" / "dataset-ablation"
    _paper_run(sweep, 0, "qwen2.5-math-7b", "cft", _scores(74.0, 40.0, 85.0, 36.0, 23.3, 57.5),
               {"reuse": [{"sweep": "main-table", "where": {"method": "sft"}}]})
    md = build_report(sweep)["written"]["md"].read_text()
    assert "Warning: report.reuse[0]: no run of " in md and "(no such folder: run that sweep first)" in md


def test_columns_define_the_table_and_its_average(tmp_path):
    """The SimpleRL comparison: five benchmarks, MATH-500 and no GSM8K, averaged over those five."""
    sweep = tmp_path / "multirun" / "simplerl"
    accuracy = {"math-500": 80.0, "minerva_math": 40.0, "gsm8k": 90.0, "olympiadbench": 40.0, "aime24": 20.0,
                "amc23": 70.0, "math": 81.0}
    _paper_run(sweep, 0, "qwen2.5-math-7b", "cft", accuracy,
               {"paper": "table4", "columns": ["math-500", "minerva_math", "olympiadbench", "aime24", "amc23"]})
    lines = _md_lines(build_report(sweep)["written"]["md"].read_text())
    assert lines[0].startswith("| model | method | source | MATH-500 | Minerva-Math | OlympiadBench | AIME24 | AMC23 | Avg. |")
    ours = next(line for line in lines if "| ours |" in line)
    assert ours.startswith("| qwen2.5-math-7b | cft | ours | **80.0** | **40.0** | **40.0** | **20.0** | **70.0** | **50.0** |")  # 250 / 5
    assert any(line.startswith("| SimpleRL-Zero (8K×12 samples, 1152 H100 h) |  | paper (v4) | 77.2 | 33.5 | 37.9 | 33.3 "
                               "| 62.5 | 48.9 |") for line in lines)
    # Without report.columns the paper table's columns are the default: the same five.
    assert build_table(collect_runs(sweep), paper="table4", columns=None).benchmarks[0] == "math-500"
    with pytest.raises(ValueError, match=r"report\.columns: \['gsm8'\] is no benchmark"):
        build_table(collect_runs(sweep), columns=["gsm8"])


def test_notes_are_written_beside_the_rows_they_name(tmp_path):
    sweep = tmp_path / "multirun" / "main-table"
    notes = {"method=sft-verified": "ours keeps the ~28K right-judged of the 50K; the paper the top 50K"}
    _paper_run(sweep, 0, "qwen2.5-math-7b", "sft-verified", _scores(60.0, 10.0, 70.0, 20.0, 10.0, 40.0), {"notes": notes})
    _paper_run(sweep, 1, "qwen2.5-math-7b", "cft", _scores(70.0, 30.0, 80.0, 30.0, 10.0, 50.0), {"notes": notes})
    lines = _md_lines(to_markdown(build_table(collect_runs(sweep))))
    assert lines[0].endswith("| note |")
    assert lines[1].startswith("| qwen2.5-math-7b | sft-verified |") and lines[1].endswith(f"| {notes['method=sft-verified']} |")
    assert lines[2].startswith("| qwen2.5-math-7b | cft |") and lines[2].endswith("|  |")


def test_a_job_that_stopped_before_its_first_stage_is_a_failed_row(tmp_path):
    """Hydra wrote .hydra/config.yaml, the pipeline refused the config: the sweep's table says so."""
    sweep = tmp_path / "multirun" / "main-table"
    _paper_run(sweep, 0, "qwen2.5-math-7b", "cft", _scores(70.0, 30.0, 80.0, 30.0, 10.0, 50.0))
    job = sweep / "1_method=sft,model=qwen2.5-math-7b"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"model": {"name": "qwen2.5-math-7b"},
                                                                "method": {"name": "sft"}}))
    rows = {r["method"]: r for r in _csv_rows(to_csv(build_table(collect_runs(sweep))))}
    assert rows["sft"]["status"] == "failed" and rows["sft"]["math"] == "failed"
    assert "stopped before its first stage" in rows["sft"]["problem"]
