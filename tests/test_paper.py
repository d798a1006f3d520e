"""The paper's numbers (cft/report/paper/*.yaml): transcribed faithfully, and each row names runs
our configs can make."""
from __future__ import annotations

import fnmatch
import functools
import tomllib
from pathlib import Path

import pytest
import yaml
from omegaconf import DictConfig, OmegaConf

from cft.config import CFTConfig
from cft.report import paper
from cft.report.tables import DISPLAY

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
TABLES = paper.tables()


def _rows():
    return [(t, r) for t in TABLES.values() for r in t.rows]


@functools.lru_cache(maxsize=None)
def _names(group: str) -> set[str]:
    """The `name:` of every option of a config group (model files keep theirs under `model:`),
    and the names experiments give it (`method: {name: cft+acemath-mix}`)."""
    names = set()
    for path in [*(CONF / group).glob("*.yaml"), *(CONF / "experiment").rglob("*.yaml")]:
        data = yaml.safe_load(path.read_text()) or {}
        if path.parent.name == group:
            names.add(data.get("name"))
        section = data.get(group)
        names.add(section.get("name") if isinstance(section, dict) else None)
    return names - {None}


@functools.lru_cache(maxsize=None)
def _schema_has(key: str) -> bool:
    """A dotted key is a field of the typed config (cft/config.py)."""
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(OmegaConf.structured(CFTConfig), parent)
    return isinstance(node, DictConfig) and leaf in list(node.keys())


def test_the_paper_tables_are_there_under_unique_ids():
    assert {"table2", "table3", "table4", "table5", "table6", "table7", "table8", "table9", "table10",
            "table11", "v2-table4"} <= set(TABLES)
    assert TABLES["table2"].version == "v4" and TABLES["v2-table4"].version == "v2"


def test_a_second_table_with_an_id_already_used_is_refused(tmp_path):
    text = (paper.PAPER_DIR / "cft-2501.17703.yaml").read_text()
    (tmp_path / "a.yaml").write_text(text)
    (tmp_path / "b.yaml").write_text(text)
    with pytest.raises(paper.PaperError, match=r"b\.yaml:\d+: table id 'table2' is also at .*a\.yaml"):
        paper.tables(tmp_path)


@pytest.mark.parametrize("table,row", _rows(), ids=lambda x: getattr(x, "id", None) or getattr(x, "label", ""))
def test_every_average_is_the_mean_of_its_row_within_the_papers_rounding(table, row):
    """Cells and average are printed to 0.1: the mean of the printed cells is within 0.05 (the
    cells' rounding) + 0.05 (the average's) of the printed average. Catches a mistyped cell."""
    versions = [(table.version, row.scores, row.average)]
    versions += [(v, dict(zip(table.columns, e["scores"])), e.get("average")) for v, e in row.earlier.items()]
    for version, scores, average in versions:
        assert len(scores) == len(table.columns)
        if not table.has_average:
            assert average is None, f"{table.id} {row.label}: an average in a table without one"
            continue
        values = list(scores.values())
        if None in values:  # the paper prints "-" for a cell and for the average
            assert average is None
            continue
        assert abs(sum(values) / len(values) - average) <= 0.1 + 1e-9, (table.id, row.label, version)


def test_v1_differs_where_the_paper_reselected_its_qwen_math_cft_checkpoint():
    cft = next(r for r in TABLES["table2"].rows if r.label == "Qwen2.5-Math-7B WebInstruct-CFT")
    assert (cft.scores["math"], cft.average) == (80.2, 57.1)
    assert cft.earlier["v1"]["average"] == 56.0 and cft.earlier["v1"]["scores"][0] == 79.4
    # The SimpleRL comparison reports MATH-500 for the same model (79.6), not MATH (80.2).
    simple = TABLES["table4"]
    assert simple.columns[0] == "math-500" and "gsm8k" not in simple.columns
    assert next(r for r in simple.rows if r.match).scores["math-500"] == 79.6


def test_columns_are_benchmarks_the_report_names():
    for table in TABLES.values():
        assert [c for c in table.columns if c not in DISPLAY] == [], table.id


def test_every_match_names_config_keys_and_values_that_exist_in_conf():
    groups = {p.name for p in CONF.iterdir() if p.is_dir()}
    for table, row in _rows():
        for key, values in row.match.items():
            if "." in key:
                assert _schema_has(key), f"{table.id} line {row.line}: {key} is no config key"
                continue
            assert key in groups, f"{table.id} line {row.line}: no config group {key}"
            unknown = set(values) - _names(key)
            assert not unknown, f"{table.id} line {row.line}: {key}={sorted(unknown)} is not in conf/{key}/"


def _config(**keys) -> dict:
    """A run's flattened config as the report reads it."""
    base = {"model.name": "qwen2.5-math-7b", "method.name": "cft", "dataset.name": "webinstruct-cft-50k",
            "teacher.name": "released", "dataset.noisy_generator": "", "eval.temperature": 0.0}
    return {**base, **keys}


def test_a_run_is_about_the_most_specific_row_that_matches_it():
    six = TABLES["table6"]
    assert six.row_for(_config(**{"dataset.noisy_generator": "/models/Qwen2.5-Math-7B",
                                  "dataset.noisy_generator_backend": "vllm"})).label == "Self-generated"
    assert six.row_for(_config()).label.startswith("Other-generated")
    assert six.row_for(_config(**{"method.name": "base"})).label == "Base"
    seven = TABLES["table7"]
    assert seven.row_for(_config(**{"teacher.name": "gpt-4o-mini"})).label == "GPT-4o-mini-CFT"
    assert seven.row_for(_config(**{"teacher.name": "gpt-4o"})).label == "GPT-4o-1120-CFT"  # any of a list
    assert seven.row_for(_config(**{"method.name": "sft"})) is None  # SFT is not in Table 7
    # Numbers match by value: a run's eval.temperature 0 is the paper's 0.0.
    assert TABLES["table11"].row_for(_config(**{"eval.temperature": 0})).label == "Direct inference, T=0.0"


def test_two_rows_tied_for_a_run_are_an_error_naming_their_lines(tmp_path):
    (tmp_path / "p.yaml").write_text(yaml.safe_dump({"tables": [{
        "id": "t", "title": "t", "version": "v4", "source": "s", "columns": ["math"],
        "rows": [{"label": "a", "match": {"method": "cft"}, "scores": [1.0], "average": 1.0},
                 {"label": "b", "match": {"model": "tiny"}, "scores": [2.0], "average": 2.0}]}]}))
    table = paper.tables(tmp_path)["t"]
    with pytest.raises(paper.PaperError, match=r"p\.yaml: table t: rows at lines \d+, \d+ \(a; b\)"):
        table.row_for({"method.name": "cft", "model.name": "tiny"})


def test_a_row_with_the_wrong_number_of_scores_names_its_line(tmp_path):
    (tmp_path / "p.yaml").write_text("tables:\n  - id: t\n    title: t\n    version: v4\n    source: s\n"
                                     "    columns: [math, gsm8k]\n    rows:\n      - {label: a, scores: [1.0]}\n")
    with pytest.raises(paper.PaperError, match=r"p\.yaml:8: table t, row 'a': 1 scores for 2 columns"):
        paper.tables(tmp_path)


def test_an_unknown_table_id_names_report_paper_and_the_ids():
    with pytest.raises(paper.PaperError, match=r"report\.paper='table99'.*'table2'"):
        paper.load("table99")


def test_the_paper_files_ship_in_the_package():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["cft.report"]
    for path in paper.PAPER_DIR.glob("*"):
        rel = str(path.relative_to(paper.PAPER_DIR.parent))
        assert any(fnmatch.fnmatch(rel, pattern) for pattern in data), rel


def test_a_label_split_by_an_unquoted_comma_is_refused(tmp_path):
    (tmp_path / "p.yaml").write_text("tables:\n  - id: t\n    title: t\n    version: v4\n    source: s\n"
                                     "    columns: [math]\n    rows:\n      - {label: Direct, T=0.1, scores: [1.0]}\n")
    with pytest.raises(paper.PaperError, match=r"p\.yaml:8: .*unknown fields \['T=0\.1'\].*quote a label"):
        paper.tables(tmp_path)


def _finished_run(root: Path, name: str, seed: int, select: bool) -> "RunPaths":
    """A run dir as the pipeline leaves it (config, markers, weights), without training."""
    import json
    import os

    from cft.paths import RunPaths

    paths = RunPaths.of(root / "multirun" / "table2" / name)
    (paths.final_model).mkdir(parents=True)
    (paths.final_model / "config.json").write_text("{}")
    paths.root.joinpath("config.yaml").write_text(yaml.safe_dump(
        {"model": {"name": "qwen2.5-math-7b"}, "method": {"name": "cft"}, "seed": seed,
         "eval": {"select_checkpoint": select}}))
    paths.root.joinpath("run_info.json").write_text("{}")
    paths.stages_dir.mkdir(parents=True, exist_ok=True)
    paths.stage_done("train").write_text(json.dumps({"outputs": {"model/config.json": {"sha256": "a"}}}))
    os.utime(paths.stage_done("train"), (1_000, 1_000))
    return paths


def test_from_run_takes_the_selected_weights_only_once_selection_finished(tmp_path):
    """model.from_run never falls back to train/final while the referenced run still scores its
    snapshots, nor uses a selection older than its last training (retrained since)."""
    import json
    import os

    from cft.models import run_weights
    from cft.validation import ConfigError

    spec = "table2 model=qwen2.5-math-7b method=cft seed=42"
    paths = _finished_run(tmp_path, "method=cft,seed=42", 42, select=True)
    _finished_run(tmp_path, "method=cft,seed=43", 43, select=True)  # another seed: not matched
    with pytest.raises(ConfigError, match="eval stage has not finished"):
        run_weights(spec, str(tmp_path))
    best = paths.root / "train" / "snapshots" / "step-6"
    best.mkdir(parents=True)
    (best / "config.json").write_text("{}")
    paths.eval_dir.mkdir(parents=True)
    paths.selection.write_text(json.dumps({"best": {"path": str(best), "step": 6}}))
    paths.stage_done("eval").write_text(json.dumps({"outputs": {"eval/selection.json": {"sha256": "b"}}}))
    weights, before = run_weights(spec, str(tmp_path))
    assert weights == best
    paths.stage_done("eval").write_text(json.dumps({"outputs": {"eval/selection.json": {"sha256": "c"}}}))
    assert run_weights(spec, str(tmp_path))[1] != before  # reselected: dependent cells see other weights
    # Numbers match by value, as the report matches rows: seed "42.0" is seed 42.
    assert run_weights("table2 model=qwen2.5-math-7b method=cft seed=42.0", str(tmp_path))[0] == best
    os.utime(paths.stage_done("train"), None)  # retrained after that selection
    os.utime(paths.stage_done("eval"), (2_000, 2_000))
    with pytest.raises(ConfigError, match="eval stage has not finished"):
        run_weights(spec, str(tmp_path))
    with pytest.raises(ConfigError, match="found no run"):
        run_weights("table2 model=qwen2.5-math-7b method=sft seed=42", str(tmp_path))
