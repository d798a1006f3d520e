"""The paper-style results table of a sweep (or any directory of runs): Markdown, CSV, LaTeX.

Rows are base model x method, plus every other config key that differs between the runs and
is not already determined by the keys before it (so `dataset.noisy_models` shows up when it
was swept, `method.target` never does: it follows from `method.name`). Columns are the paper's
benchmarks that any run has, in the paper's order, then the average and "Δ CFT vs best SFT".
A run directory with a config but no results.json is a row of "failed"; a benchmark a run
lacks is "—". Formatting is hand-written because every cell needs its own marker (bold best,
failed, missing), which pandas' writers do not express without jinja2/tabulate extras.
"""
from __future__ import annotations

import csv
import io
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from cft.benchmarks import PAPER_BENCHMARKS
from cft.io import atomic_open, read_json

DISPLAY = {"math-500": "MATH-500", "minerva_math": "Minerva-Math", "gsm8k": "GSM8K",
           "olympiadbench": "OlympiadBench", "aime24": "AIME24", "amc23": "AMC23",
           "theoremqa": "TheoremQA"}
METHOD_ORDER = ["sft", "sft-verified", "sft-teacher", "cft", "cft-sft"]
SFT_METHODS = ("sft", "sft-verified", "sft-teacher")
CFT_METHODS = ("cft", "cft-sft")
# Keys that differ between runs without describing the experiment.
IGNORED = ("run_dir", "run_name", "paths.", "tracking.", "stages", "cluster.")
MISSING, FAILED = "—", "failed"
DELTA = "Δ CFT vs best SFT"


@dataclass
class Run:
    run_dir: Path
    config: dict  # flattened: {"dataset.noisy_models": "[GPT-4]", ...}
    results: dict | None  # results.json; None when the run has none (failed or unfinished)


@dataclass
class Row:
    run: Run
    keys: dict[str, str]
    cells: dict[str, float | None]
    average: float | None
    delta: float | None = None
    best: set[str] = field(default_factory=set)

    @property
    def failed(self) -> bool:
        return self.run.results is None


@dataclass
class Table:
    key_columns: list[str]
    benchmarks: list[str]
    rows: list[Row]

    @property
    def has_delta(self) -> bool:
        return any(r.keys.get("method") in CFT_METHODS for r in self.rows)


def _flatten(obj, prefix: str = "") -> dict:
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    if isinstance(obj, list):
        return {prefix[:-1]: "[" + ",".join(str(v) for v in obj) + "]"}
    return {prefix[:-1]: obj}


def collect_runs(root: str | Path) -> list[Run]:
    """Every run directory below `root`: one holding config.yaml and run_info.json."""
    runs = []
    root = Path(root).resolve()
    for config in sorted(root.rglob("config.yaml")):
        run_dir = config.parent
        rel = run_dir.relative_to(root).parts
        if any(p.startswith(".") or p == "wandb" for p in rel) or not (run_dir / "run_info.json").exists():
            continue
        flat = _flatten(OmegaConf.to_container(OmegaConf.load(config), resolve=False))
        results = read_json(run_dir / "results.json") if (run_dir / "results.json").exists() else None
        runs.append(Run(run_dir, flat, results))
    return runs


def row_keys(runs: list[Run]) -> list[str]:
    """model, method, then each differing config key not determined by the keys before it."""
    keys = ["model.name", "method.name"]
    differing = sorted(k for k in {k for r in runs for k in r.config}
                       if not k.startswith(IGNORED) and len({str(r.config.get(k)) for r in runs}) > 1)
    front = [k for k in ("dataset.name", "teacher.name") if k in differing]
    for key in front + [k for k in differing if k not in front and k not in keys]:
        groups = defaultdict(set)
        for r in runs:
            groups[tuple(str(r.config.get(k)) for k in keys)].add(str(r.config.get(key)))
        if any(len(v) > 1 for v in groups.values()):
            keys.append(key)
    return keys


def _label(key: str) -> str:
    return key[: -len(".name")] if key.endswith(".name") else key


def build_table(runs: list[Run]) -> Table:
    keys = row_keys(runs)
    present = {b for r in runs if r.results for b in r.results["accuracy"]}
    benchmarks = [b for b in PAPER_BENCHMARKS if b in present] + sorted(present - set(PAPER_BENCHMARKS))
    rows = []
    for run in runs:
        acc = run.results["accuracy"] if run.results else {}
        cells = {b: acc.get(b) for b in benchmarks}
        values = list(cells.values())
        # The average is over the table's columns, so it is only comparable when none is missing;
        # computed from the rounded accuracies exactly as the report stage does.
        average = round(sum(values) / len(values), 2) if values and None not in values else None
        rows.append(Row(run, {_label(k): str(run.config.get(k)) for k in keys}, cells, average))
    labels = [_label(k) for k in keys]
    method_rank = {m: i for i, m in enumerate(METHOD_ORDER)}
    rows.sort(key=lambda r: ([r.keys[k] for k in labels if k != "method"],
                             method_rank.get(r.keys["method"], len(METHOD_ORDER)), r.keys["method"],
                             str(r.run.run_dir)))
    _mark_best(rows, benchmarks)
    _deltas(rows, labels)
    return Table(labels, benchmarks, rows)


def _mark_best(rows: list[Row], benchmarks: list[str]) -> None:
    """Best value per column within each base model (the paper bolds per model block); ties all."""
    by_model = defaultdict(list)
    for r in rows:
        by_model[r.keys["model"]].append(r)
    for block in by_model.values():
        for col in [*benchmarks, "average"]:
            values = [(r.average if col == "average" else r.cells[col]) for r in block]
            best = max((v for v in values if v is not None), default=None)
            for r, v in zip(block, values):
                if best is not None and v == best:
                    r.best.add(col)


def _deltas(rows: list[Row], labels: list[str]) -> None:
    """A CFT-family average minus the best SFT-family average with the same other row keys."""
    others = [k for k in labels if k != "method"]
    for r in rows:
        if r.keys["method"] not in CFT_METHODS or r.average is None:
            continue
        sft = [s.average for s in rows if s.keys["method"] in SFT_METHODS and s.average is not None
               and all(s.keys[k] == r.keys[k] for k in others)]
        if sft:
            r.delta = round(r.average - max(sft), 2)


# --- rendering -------------------------------------------------------------------------------
def _cell(row: Row, col: str, fmt: str = "{:.1f}") -> tuple[str, bool]:
    """(text, is_best) for a benchmark or "average" cell."""
    if row.failed:
        return FAILED, False
    value = row.average if col == "average" else row.cells[col]
    return (MISSING, False) if value is None else (fmt.format(value), col in row.best)


def _delta_text(row: Row, fmt: str = "{:+.1f}") -> str:
    if row.keys["method"] not in CFT_METHODS:
        return ""
    if row.failed:
        return FAILED
    return MISSING if row.delta is None else fmt.format(row.delta)


def headers(table: Table) -> list[str]:
    return [*table.key_columns, *(DISPLAY.get(b, b) for b in table.benchmarks), "Avg.",
            *([DELTA] if table.has_delta else [])]


def to_markdown(table: Table) -> str:
    lines = ["| " + " | ".join(headers(table)) + " |",
             "|" + "|".join([":--"] * len(table.key_columns) + ["--:"] * (len(headers(table)) - len(table.key_columns))) + "|"]
    for r in table.rows:
        cells = [r.keys[k] for k in table.key_columns]
        for col in [*table.benchmarks, "average"]:
            text, best = _cell(r, col)
            cells.append(f"**{text}**" if best else text)
        if table.has_delta:
            cells.append(_delta_text(r))
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def to_csv(table: Table) -> str:
    """Numbers unrounded as results.json has them; "—"/"failed" cells; `best` lists best columns."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow([*table.key_columns, *table.benchmarks, "average",
                     *(["delta_cft_vs_best_sft"] if table.has_delta else []), "status", "best", "run_dir"])
    for r in table.rows:
        cells = [_cell(r, c, "{}")[0] for c in [*table.benchmarks, "average"]]
        delta = [_delta_text(r, "{:+}")] if table.has_delta else []
        writer.writerow([*(r.keys[k] for k in table.key_columns), *cells, *delta,
                         "failed" if r.failed else "ok", ";".join(c for c in [*table.benchmarks, "average"]
                                                                 if c in r.best), str(r.run.run_dir)])
    return buf.getvalue()


def _tex(text: str) -> str:
    text = text.replace("\\", "\x00")
    for a, b in [("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"), ("$", r"\$"),
                 ("{", r"\{"), ("}", r"\}"), ("—", "--"), ("Δ", r"$\Delta$")]:
        text = text.replace(a, b)
    return text.replace("\x00", r"\textbackslash{}")


def to_latex(table: Table) -> str:
    """A booktabs tabular; a rule between base-model blocks, as in the paper."""
    n_keys = len(table.key_columns)
    spec = "l" * n_keys + "r" * (len(headers(table)) - n_keys)
    lines = [r"\begin{tabular}{" + spec + "}", r"\toprule",
             " & ".join(_tex(h) for h in headers(table)) + r" \\", r"\midrule"]
    previous_model = None
    for r in table.rows:
        if previous_model is not None and r.keys["model"] != previous_model:
            lines.append(r"\midrule")
        previous_model = r.keys["model"]
        cells = [_tex(r.keys[k]) for k in table.key_columns]
        for col in [*table.benchmarks, "average"]:
            text, best = _cell(r, col)
            cells.append(rf"\textbf{{{_tex(text)}}}" if best else _tex(text))
        if table.has_delta:
            cells.append(_tex(_delta_text(r)))
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def write_tables(table: Table, out_dir: str | Path) -> dict[str, Path]:
    """results_table.{md,csv,tex} in out_dir, each written atomically."""
    out_dir = Path(out_dir)
    written = {}
    for ext, text in [("md", to_markdown(table)), ("csv", to_csv(table)), ("tex", to_latex(table))]:
        path = out_dir / f"results_table.{ext}"
        with atomic_open(path) as f:
            f.write(text)
        written[ext] = path
    return written
