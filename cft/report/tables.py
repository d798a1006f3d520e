"""The paper-style results table of a sweep (or any directory of runs): Markdown, CSV, LaTeX.

Rows are base model x method, plus every other config key that differs between the runs (see
`row_keys`: `dataset.noisy_models` or `method.lr` shows up when it differs, `method.target`
never does: it is the value that `method=<name>` sets). Columns are the paper's benchmarks that
any run has, in the paper's order, then the average and "Δ CFT vs best SFT"; a score says how
many problems it is over ("41.2 (n=8)") when that number differs between runs. A run directory
with a config but no readable results.json (missing, truncated, or a damaged config.yaml) is a
row of "failed" whose note names the file and what is wrong with it; a benchmark a run lacks is
"—". Formatting is hand-written because every cell needs its own marker (bold best,
failed, missing), which pandas' writers do not express without jinja2/tabulate extras.

Uncertainty (cft.report.sweep): a single run's score reads "41.2 ± 3.4" (its 95% interval); runs
that differ only in `seed` are one row, "41.2 (sd 1.3)" with a `seeds` column; with a baseline
(`report.baseline` in the runs' config, e.g. "method=sft", or --baseline) a column gives each
row's average minus its baseline row's, with a 95% interval and * where it excludes 0.
"""
from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from cft.benchmarks import PAPER_BENCHMARKS
from cft.io import atomic_open, read_json
from cft.report import sweep

DISPLAY = {"math": "MATH", "math-500": "MATH-500", "minerva_math": "Minerva-Math", "gsm8k": "GSM8K",
           "olympiadbench": "OlympiadBench", "aime24": "AIME24", "amc23": "AMC23",
           "theoremqa": "TheoremQA"}
METHOD_ORDER = ["sft", "sft-verified", "sft-teacher", "cft", "cft-sft"]
SFT_METHODS = ("sft", "sft-verified", "sft-teacher")
CFT_METHODS = ("cft", "cft-sft")
# Keys that differ between runs without describing the experiment.
IGNORED = ("run_dir", "run_name", "sweep_name", "paths.", "tracking.", "stages", "cluster.", "report.")
MISSING, FAILED = "—", "failed"
DELTA = "Δ CFT vs best SFT"
NOTE = "note"  # the column naming a failed run's missing or damaged file


@dataclass
class Run:
    run_dir: Path
    config: dict  # flattened: {"dataset.noisy_models": "[GPT-4]", ...}; {} when unreadable
    results: dict | None  # results.json; None when the run has none (failed or unfinished)
    # Why there are no results: "<file in the run dir>: <what is wrong>".
    problem: str | None = None
    # Keys set on the command line (Hydra's .hydra/overrides.yaml), e.g. {"method.lr"}.
    overridden: frozenset = frozenset()

    @property
    def note(self) -> str:
        """The problem, under the run directory's name (a damaged config leaves no other label)."""
        return f"{self.run_dir.name}/{self.problem}" if self.problem else ""


@dataclass
class Row:
    run: Run
    keys: dict[str, str]
    cells: dict[str, float | None]
    average: float | None
    delta: float | None = None
    best: set[str] = field(default_factory=set)
    # Problems per benchmark, for the columns whose number of problems differs between runs.
    counts: dict[str, int | None] = field(default_factory=dict)
    # The runs this row aggregates (differing only in seed), and how many of them have results.
    runs: list[Run] = field(default_factory=list)
    # Per column ("average" too): sd over seeds (several runs), or the 95% half-width (one run).
    sd: dict[str, float] = field(default_factory=dict)
    half_width: dict[str, float] = field(default_factory=dict)
    # Against the baseline row: (Δ average, 95% low, high) or (Δ, None, None); "baseline" for it.
    vs_baseline: tuple | str | None = None

    @property
    def failed(self) -> bool:
        return self.run.results is None

    @property
    def seeds(self) -> str:
        ok = sum(r.results is not None for r in self.runs)
        return str(ok) if ok == len(self.runs) else f"{ok} of {len(self.runs)}"


@dataclass
class Table:
    key_columns: list[str]
    benchmarks: list[str]
    rows: list[Row]
    # How the scores were obtained (eval preset and sampling), one entry per protocol in the table.
    protocols: list[str] = field(default_factory=list)
    baseline: str | None = None  # "method=sft": the rows' Δ column is against that row
    seeded: bool = False  # rows aggregate runs that differ only in seed (a `seeds` column)

    @property
    def has_delta(self) -> bool:
        return any(r.keys.get("method") in CFT_METHODS for r in self.rows)

    @property
    def has_notes(self) -> bool:
        return any(r.run.problem for r in self.rows)


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
    """Every run directory below `root`: one holding config.yaml and run_info.json. A damaged
    run (unreadable config.yaml or results.json) is kept, with its problem, never raised."""
    runs = []
    root = Path(root).resolve()
    for config in sorted(root.rglob("config.yaml")):
        run_dir = config.parent
        rel = run_dir.relative_to(root).parts
        if any(p.startswith(".") or p == "wandb" for p in rel) or not (run_dir / "run_info.json").exists():
            continue
        flat, problem = _read_config(config)
        results, results_problem = _read_results(run_dir / "results.json")
        problem = problem or results_problem
        runs.append(Run(run_dir, flat, None if problem else results, problem, _overridden(run_dir)))
    return runs


def _read_config(path: Path) -> tuple[dict, str | None]:
    """(flattened config, None), or ({}, "config.yaml: <what is wrong>")."""
    try:
        config = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except Exception as e:  # any damage (YAML syntax, encoding, an OmegaConf grammar error)
        return {}, f"{path.name}: unreadable ({_first_line(e)})"
    if not isinstance(config, dict):
        return {}, f"{path.name}: not a mapping of config keys"
    return _flatten(config), None


def _read_results(path: Path) -> tuple[dict | None, str | None]:
    """(results.json, None), or (None, "results.json: <missing or what is wrong>")."""
    if not path.exists():
        return None, f"{path.name}: missing (the run failed or has not finished)"
    try:
        results = read_json(path)
    except json.JSONDecodeError as e:
        return None, f"{path.name}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno})"
    except (OSError, UnicodeDecodeError) as e:
        return None, f"{path.name}: unreadable ({_first_line(e)})"
    accuracy = results.get("accuracy") if isinstance(results, dict) else None
    if not isinstance(accuracy, dict) or not all(isinstance(v, (int, float)) for v in accuracy.values()):
        return None, f"{path.name}: no `accuracy` table of numbers"
    return results, None


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _overridden(run_dir: Path) -> frozenset:
    """The config keys a run set on the command line, from Hydra's record of its overrides
    (none for a run made without Hydra, or whose record is unreadable)."""
    try:
        overrides = OmegaConf.to_container(OmegaConf.load(run_dir / ".hydra" / "overrides.yaml"))
    except Exception:
        return frozenset()
    if not isinstance(overrides, list):
        return frozenset()
    return frozenset(str(o).split("=", 1)[0].lstrip("+~") for o in overrides if "=" in str(o))


def _is_choice(key: str) -> bool:
    """A config group's selection (`dataset.name` for `dataset=champ`)."""
    return key.count(".") == 1 and key.endswith(".name")


def row_keys(runs: list[Run]) -> list[str]:
    """model, method, then every other config key that differs between the runs: each group
    selection (dataset, teacher, then the others), and each other key unless its values are only
    those the selections set (`method.target` follows from `method.name`: every run with the same
    selections has the same value) and no run set it on the command line."""
    readable = [r for r in runs if r.config]
    differing = sorted(k for k in {k for r in readable for k in r.config}
                       if not k.startswith(IGNORED) and len({str(r.config.get(k)) for r in readable}) > 1)
    choices = sorted({k for r in readable for k in r.config if _is_choice(k) and not k.startswith(IGNORED)})
    overridden = frozenset().union(*(r.overridden for r in readable))

    def set_by_choices(key: str) -> bool:
        value_of: dict[tuple, str] = {}
        for r in readable:
            value = str(r.config.get(key))
            if value_of.setdefault(tuple(str(r.config.get(c)) for c in choices), value) != value:
                return False
        return True

    shown = [k for k in differing if _is_choice(k) or k in overridden or not set_by_choices(k)]
    keys = ["model.name", "method.name"] + [k for k in ("dataset.name", "teacher.name") if k in shown]
    keys += [k for k in shown if _is_choice(k) and k not in keys]
    return keys + [k for k in shown if not _is_choice(k)]


def eval_protocol(config: dict) -> str:
    """A run's evaluation protocol from its flattened config: the eval preset, greedy or its
    sampling (n, T, top_p), and so what its scores are (a run from before sampling is greedy)."""
    name = f"eval={config['eval.name']}" if config.get("eval.name") else "eval"
    try:
        n, temperature = int(config.get("eval.n") or 1), float(config.get("eval.temperature") or 0)
    except (TypeError, ValueError):  # an unresolved interpolation: say so rather than guess
        return f"{name}: sampling {config.get('eval.n')!r} / {config.get('eval.temperature')!r}"
    if temperature == 0:
        return f"{name}: greedy, accuracy of one completion"
    return f"{name}: n={n}, T={temperature:g}, top_p={float(config.get('eval.top_p') or 1):g}, scores are avg@{n}"


def _label(key: str) -> str:
    return key[: -len(".name")] if key.endswith(".name") else key


def build_table(runs: list[Run], baseline: str | None = None) -> Table:
    """The table of `runs`; `baseline` ("method=sft") overrides the runs' report.baseline."""
    keys = row_keys(runs)
    seeded = sweep.SEED in keys
    keys = [k for k in keys if k != sweep.SEED]
    present = {b for r in runs if r.results for b in r.results["accuracy"]}
    order = [*PAPER_BENCHMARKS[:1], "math-500", *PAPER_BENCHMARKS[1:]]  # MATH-500 beside MATH, as v1 reports it
    benchmarks = [b for b in order if b in present] + sorted(present - set(order))
    # Problems per score, shown where they differ between runs (a slice beside a full set).
    counts = {b: {_count(r, b) for r in runs if r.results and b in r.results["accuracy"]} for b in benchmarks}
    counted = [b for b in benchmarks if len(counts[b]) > 1]
    def average_of(run: Run) -> float | None:
        # The average is over the table's columns, so it is only comparable when none is missing;
        # computed from the rounded accuracies exactly as the report stage does.
        values = [run.results["accuracy"].get(b) for b in benchmarks]
        return round(sum(values) / len(values), 2) if values and None not in values else None

    def shown(run: Run) -> dict[str, str]:
        return {_label(k): str(run.config.get(k)) if run.config else "?" for k in keys}

    rows = []
    # Runs that differ only in seed are one row (a damaged config is a row of its own).
    for group in sweep.group_by_seed(runs, lambda r: tuple(shown(r).items()) if r.config else (str(r.run_dir),)):
        ok = [r for r in group if r.results]
        run = ok[0] if ok else group[0]
        acc = run.results["accuracy"] if run.results else {}
        cells, average, sd = sweep.aggregate(ok, benchmarks, average_of)
        rows.append(Row(run, shown(run), cells, average,
                        counts={b: _count(run, b) for b in counted if run.results and b in acc},
                        runs=group, sd=sd, half_width=sweep.half_widths(run, benchmarks) if len(ok) == 1 else {}))
    labels = [_label(k) for k in keys]
    method_rank = {m: i for i, m in enumerate(METHOD_ORDER)}
    rows.sort(key=lambda r: ([r.keys[k] for k in labels if k != "method"],
                             method_rank.get(r.keys["method"], len(METHOD_ORDER)), r.keys["method"],
                             str(r.run.run_dir)))
    _mark_best(rows, benchmarks)
    _deltas(rows, labels)
    baseline = sweep.baseline_of(runs, baseline)
    if baseline:
        _vs_baseline(rows, labels, sweep.parse_baseline(baseline), benchmarks)
    return Table(labels, benchmarks, rows, sorted({eval_protocol(r.config) for r in runs}), baseline,
                 seeded and any(len(r.runs) > 1 for r in rows))


def _count(run: Run, benchmark: str) -> int | None:
    n = (run.results or {}).get("n")
    return n.get(benchmark) if isinstance(n, dict) else None


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


def _vs_baseline(rows: list[Row], labels: list[str], spec: dict[str, str], benchmarks: list[str]) -> None:
    """Each row's average minus its baseline row's (the row with the spec's values and the same
    other keys), with the paired bootstrap interval where both have per-problem rows."""
    unknown = [k for k in spec if k not in labels]
    if unknown:
        raise ValueError(f"report.baseline names {unknown}, not a column of this table ({labels})")
    for r in rows:
        if r.failed or r.average is None:
            continue
        if all(r.keys[k] == v for k, v in spec.items()):
            r.vs_baseline = "baseline"
            continue
        base = [s for s in rows if not s.failed and s.average is not None
                and all(s.keys[k] == (spec[k] if k in spec else r.keys[k]) for k in labels)]
        if not base:
            continue
        dirs = lambda row: [x.run_dir for x in row.runs if x.results]  # noqa: E731
        measured = sweep.delta_interval(dirs(r), dirs(base[0]), benchmarks)
        r.vs_baseline = measured or (round(r.average - base[0].average, 2), None, None)


# --- rendering -------------------------------------------------------------------------------
def _cell(row: Row, col: str, fmt: str = "{:.1f}", counts: bool = True, pm: str = "±") -> tuple[str, bool]:
    """(text, is_best) for a benchmark or "average" cell: "41.2 ± 3.4" (one run, its 95%
    interval) or "41.2 (sd 1.3)" (several seeds), and "(n=8)" where the column's number of
    problems differs between runs (`counts`; the CSV has all of these in columns of their own)."""
    if row.failed:
        return FAILED, False
    value = row.average if col == "average" else row.cells[col]
    if value is None:
        return MISSING, False
    spread = ""
    if counts and col in row.sd:
        spread = f" (sd {fmt.format(row.sd[col])})"
    elif counts and col in row.half_width:
        spread = f" {pm} {fmt.format(row.half_width[col])}"
    n = f" (n={'?' if row.counts[col] is None else row.counts[col]})" if counts and col in row.counts else ""
    return fmt.format(value) + spread + n, col in row.best


def _baseline_text(row: Row) -> str:
    """"+3.1 [+0.4, +5.8]*": Δ average and its 95% interval, * where it excludes 0."""
    if row.failed:
        return FAILED
    if row.vs_baseline is None or isinstance(row.vs_baseline, str):
        return row.vs_baseline or MISSING
    delta, lo, hi = row.vs_baseline
    if lo is None:
        return f"{delta:+.1f}"
    return f"{delta:+.1f} [{lo:+.1f}, {hi:+.1f}]" + ("*" if lo > 0 or hi < 0 else "")


def legend(table: Table) -> str:
    """How to read the table's ±, sd and Δ-vs-baseline cells."""
    parts = []
    if any(r.half_width for r in table.rows):
        parts.append("± = 95% interval half-width of one run (Wilson, or problem-clustered with n samples)")
    if table.seeded:
        parts.append("sd = standard deviation over the seeds in `seeds`")
    if table.baseline:
        parts.append(f"Δ vs {table.baseline}: average minus the baseline row's, [95% paired bootstrap interval "
                     "over problems], * where it excludes 0")
    return "; ".join(parts)


def _delta_text(row: Row, fmt: str = "{:+.1f}") -> str:
    if row.keys["method"] not in CFT_METHODS:
        return ""
    if row.failed:
        return FAILED
    return MISSING if row.delta is None else fmt.format(row.delta)


def headers(table: Table) -> list[str]:
    return [*table.key_columns, *(["seeds"] if table.seeded else []), *(DISPLAY.get(b, b) for b in table.benchmarks),
            "Avg.", *([f"Δ vs {table.baseline}"] if table.baseline else []),
            *([DELTA] if table.has_delta else []), *([NOTE] if table.has_notes else [])]


def counted_columns(table: Table) -> list[str]:
    """The benchmarks whose number of problems differs between runs."""
    return [b for b in table.benchmarks if any(b in r.counts for r in table.rows)]


def to_markdown(table: Table) -> str:
    lines = ["| " + " | ".join(headers(table)) + " |",
             "|" + "|".join(":--" if h in table.key_columns or h == NOTE else "--:" for h in headers(table)) + "|"]
    for r in table.rows:
        cells = [r.keys[k] for k in table.key_columns] + ([r.seeds] if table.seeded else [])
        for col in [*table.benchmarks, "average"]:
            text, best = _cell(r, col)
            cells.append(f"**{text}**" if best else text)
        if table.baseline:
            cells.append(_baseline_text(r))
        if table.has_delta:
            cells.append(_delta_text(r))
        if table.has_notes:
            cells.append(r.run.note)
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    lines += ["", legend(table)] if legend(table) else []
    lines += ["", "Scores: " + "; ".join(table.protocols)] if table.protocols else []
    return "\n".join(lines) + "\n"


def to_csv(table: Table) -> str:
    """Numbers unrounded as results.json has them; "—"/"failed" cells; `best` lists best columns."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    counted = counted_columns(table)
    columns = [*table.benchmarks, "average"]
    spread = [c for c in columns if any(c in r.sd or c in r.half_width for r in table.rows)]
    vs = table.baseline is not None
    writer.writerow([*table.key_columns, *(["seeds"] if table.seeded else []), *table.benchmarks, "average",
                     *(["delta_cft_vs_best_sft"] if table.has_delta else []), *(f"n.{b}" for b in counted),
                     *(f"sd.{c}" for c in spread), *(f"ci95_half.{c}" for c in spread),
                     *(["delta_vs_baseline", "delta_ci95_low", "delta_ci95_high"] if vs else []),
                     "status", "best", "run_dir", "problem"])
    for r in table.rows:
        cells = [_cell(r, c, "{}", counts=False)[0] for c in [*table.benchmarks, "average"]]
        delta = [_delta_text(r, "{:+}")] if table.has_delta else []
        n = ["" if r.counts.get(b) is None else r.counts[b] for b in counted]
        n += [r.sd.get(c, "") for c in spread] + [r.half_width.get(c, "") for c in spread]
        if vs:
            n += list(r.vs_baseline) if isinstance(r.vs_baseline, tuple) else [r.vs_baseline or "", "", ""]
        writer.writerow([*(r.keys[k] for k in table.key_columns), *([r.seeds] if table.seeded else []),
                         *cells, *delta, *n,
                         "failed" if r.failed else "ok", ";".join(c for c in [*table.benchmarks, "average"]
                                                                 if c in r.best), str(r.run.run_dir),
                         r.run.problem or ""])
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
    spec = "l" * n_keys + "r" * (len(headers(table)) - n_keys - table.has_notes) + "l" * table.has_notes
    lines = [r"\begin{tabular}{" + spec + "}", r"\toprule",
             " & ".join(_tex(h) for h in headers(table)) + r" \\", r"\midrule"]
    previous_model = None
    for r in table.rows:
        if previous_model is not None and r.keys["model"] != previous_model:
            lines.append(r"\midrule")
        previous_model = r.keys["model"]
        cells = [_tex(r.keys[k]) for k in table.key_columns] + ([r.seeds] if table.seeded else [])
        for col in [*table.benchmarks, "average"]:
            text, best = _cell(r, col, pm="\x01")
            text = _tex(text).replace("\x01", r"$\pm$")
            cells.append(rf"\textbf{{{text}}}" if best else text)
        if table.baseline:
            cells.append(_tex(_baseline_text(r)))
        if table.has_delta:
            cells.append(_tex(_delta_text(r)))
        if table.has_notes:
            cells.append(_tex(r.run.note))
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"] + [f"% Scores: {p}" for p in table.protocols]
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
