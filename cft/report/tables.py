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

Beside the paper (the runs' `report` settings, cft.config.ReportConfig): `report.paper: table2`
puts the paper's published row (cft/report/paper/*.yaml) right below the runs it is about,
labelled "paper (v4)", with the paper's rows we have no run for in their place, all in the paper's
order (our rows the paper lacks follow); `report.columns` fixes the benchmark columns and so
what the average is over (default: the paper table's, else every benchmark run);
`report.reuse` takes finished runs of another sweep under the same parent by reference
("ours (from main-table)"), never re-running them; `report.notes` writes a note beside the rows a
spec matches ("method=sft-verified": "differs from the paper: ...").

Uncertainty (cft.report.sweep): a single run's score reads "41.2 ± 3.4" (its 95% interval); runs
that differ only in `seed` are one row, "41.2 (sd 1.3)" with a `seeds` column; with a baseline
(`report.baseline` in the runs' config, e.g. "method=sft", or --baseline) a column gives each
row's average minus its baseline row's, with a 95% interval and * where it excludes 0.
"""
from __future__ import annotations

import csv
import io
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from cft.benchmarks import PAPER_BENCHMARKS
from cft.config import flatten, matches
from cft.io import atomic_open, read_json
from cft.report import paper as paper_numbers
from cft.report import sweep

DISPLAY = {"math": "MATH", "math-500": "MATH-500", "minerva_math": "Minerva-Math", "gsm8k": "GSM8K",
           "olympiadbench": "OlympiadBench", "aime24": "AIME24", "amc23": "AMC23",
           "theoremqa": "TheoremQA", "gpqa": "GPQA", "mmlu_pro": "MMLU-Pro", "aime25": "AIME25",
           "ifeval-strict": "IFEval (strict)", "ifeval-loose": "IFEval (loose)", "mt-bench": "MT-Bench"}
METHOD_ORDER = ["sft", "sft-verified", "sft-teacher", "cft", "cft-sft"]
SFT_METHODS = ("sft", "sft-verified", "sft-teacher")
CFT_METHODS = ("cft", "cft-sft")
# Keys that differ between runs without describing the experiment.
IGNORED = ("run_dir", "run_name", "sweep_name", "paths.", "tracking.", "stages", "cluster.", "report.")
MISSING, FAILED = "—", "failed"
DELTA = "Δ CFT vs best SFT"
NOTE = "note"  # the column naming a failed run's missing or damaged file, and report.notes
SOURCE = "source"  # ours / ours (from <sweep>) / paper (<version>), with report.paper or report.reuse


@dataclass
class Run:
    run_dir: Path
    config: dict  # flattened: {"dataset.noisy_models": "[GPT-4]", ...}; {} when unreadable
    results: dict | None  # results.json; None when the run has none (failed or unfinished)
    # Why there are no results: "<file in the run dir>: <what is wrong>".
    problem: str | None = None
    # Keys set on the command line (Hydra's .hydra/overrides.yaml), e.g. {"method.lr"}.
    overridden: frozenset = frozenset()
    # The run's `report` section as written (report.paper, .columns, .reuse, .notes, .baseline).
    settings: dict = field(default_factory=dict)
    # The sweep a run was taken from by reference (report.reuse); "" for the sweep's own runs.
    origin: str = ""

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
    notes: list[str] = field(default_factory=list)  # report.notes whose spec this row matches

    @property
    def source(self) -> str:
        return f"ours (from {self.run.origin})" if self.run.origin else "ours"

    @property
    def note(self) -> str:
        return "; ".join(n for n in [self.run.note, *self.notes] if n)

    @property
    def failed(self) -> bool:
        return self.run.results is None

    @property
    def seeds(self) -> str:
        ok = sum(r.results is not None for r in self.runs)
        return str(ok) if ok == len(self.runs) else f"{ok} of {len(self.runs)}"


@dataclass
class PaperLine:
    """A row of the paper's table, as printed: its numbers under our columns."""
    row: paper_numbers.PaperRow
    version: str
    keys: dict[str, str]
    cells: dict[str, float | None]
    average: float | None

    @property
    def source(self) -> str:
        return f"paper ({self.version})"

    @property
    def note(self) -> str:
        return f"paper: {self.row.label}" if self.row.match else ""


@dataclass
class Table:
    key_columns: list[str]
    benchmarks: list[str]
    rows: list[Row]
    # How the scores were obtained (eval preset and sampling), one entry per protocol in the table.
    protocols: list[str] = field(default_factory=list)
    baseline: str | None = None  # "method=sft": the rows' Δ column is against that row
    seeded: bool = False  # rows aggregate runs that differ only in seed (a `seeds` column)
    paper: paper_numbers.PaperTable | None = None
    # Every line in display order: our rows, each paper row below the rows it is about.
    lines: list = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # e.g. a report.reuse that found no run

    def __post_init__(self):
        self.lines = self.lines or list(self.rows)

    @property
    def has_delta(self) -> bool:
        return any(r.keys.get("method") in CFT_METHODS for r in self.rows)

    @property
    def has_notes(self) -> bool:
        return any(line.note for line in self.lines)

    @property
    def has_source(self) -> bool:
        return self.paper is not None or any(r.run.origin for r in self.rows)


_flatten = flatten  # the run table's dotted keys: cft.config.flatten


def collect_runs(root: str | Path) -> list[Run]:
    """Every run directory below `root`: one holding config.yaml and run_info.json. A damaged
    run (unreadable config.yaml or results.json) is kept, with its problem, never raised."""
    runs = []
    root = Path(root).resolve()
    for config in sorted(root.rglob("config.yaml")):
        run_dir = config.parent
        rel = run_dir.relative_to(root).parts
        if run_dir.name == ".hydra" and not (run_dir.parent / "config.yaml").exists():
            # Hydra's record of a job that stopped before the pipeline wrote its config (a
            # refused value, a crash at start): a failed row, labelled from the composed config.
            job = run_dir.parent
            if any(p.startswith(".") or p == "wandb" for p in job.relative_to(root).parts):
                continue
            flat, _, settings = _read_config(config)
            runs.append(Run(job, flat, None, "config.yaml: missing (the job stopped before its first stage; "
                            "see its log)", _overridden(job), settings))
            continue
        if any(p.startswith(".") or p == "wandb" for p in rel) or not (run_dir / "run_info.json").exists():
            continue
        flat, problem, settings = _read_config(config)
        results, results_problem = _read_results(run_dir / "results.json")
        problem = problem or results_problem
        runs.append(Run(run_dir, flat, None if problem else results, problem, _overridden(run_dir), settings))
    return runs


def _read_config(path: Path) -> tuple[dict, str | None, dict]:
    """(flattened config, None, its report section), or ({}, "config.yaml: <what is wrong>", {})."""
    try:
        config = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except Exception as e:  # any damage (YAML syntax, encoding, an OmegaConf grammar error)
        return {}, f"{path.name}: unreadable ({_first_line(e)})", {}
    if not isinstance(config, dict):
        return {}, f"{path.name}: not a mapping of config keys", {}
    settings = config.get("report") if isinstance(config.get("report"), dict) else {}
    return _flatten(config), None, settings


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
    # Other weights than the model's own (weights=cft-table2, a released fine-tune): always shown,
    # or a one-run table4 reads "qwen2.5-math-7b | base" for table2's CFT model.
    if any(r.config.get("model.release") for r in readable) and "model.release" not in shown:
        keys.append("model.release")
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


def settings_of(runs: list[Run], **given) -> dict:
    """The table's `report` settings: those the sweep's own runs wrote most often (reused runs
    carry their own sweep's), each replaced by a value given here that is not None."""
    own = [r.settings for r in runs if not r.origin and r.settings]
    counted = Counter(json.dumps(s, sort_keys=True, default=str) for s in own)
    chosen = json.loads(counted.most_common(1)[0][0]) if counted else {}
    return {**chosen, **{k: v for k, v in given.items() if v is not None}}


def reused_runs(root: str | Path, reuse: list) -> tuple[list[Run], list[str]]:
    """The runs `report.reuse` names: of each entry's sweep (a folder beside `root`), those whose
    config has the `where` values. Also a warning per entry that found none, for under the table."""
    root = Path(root).resolve()
    runs, warnings = [], []
    for i, entry in enumerate(reuse or []):
        if not isinstance(entry, dict) or not entry.get("sweep"):
            raise ValueError(f"report.reuse[{i}]={entry!r}: expected {{sweep: <name>, where: {{key: value}}}}")
        folder = root.parent / str(entry["sweep"])
        where = dict(entry.get("where") or {})
        found = [r for r in collect_runs(folder) if matches(r.config, where)] if folder.is_dir() else []
        if not found:
            warnings.append(f"report.reuse[{i}]: no run of {folder} has {dict(entry.get('where') or {})}"
                            + ("" if folder.is_dir() else " (no such folder: run that sweep first)"))
        for r in found:
            r.origin = str(entry["sweep"])
        runs += found
    return runs, warnings


def _columns(runs: list[Run], columns, paper) -> list[str]:
    """report.columns, else the paper table's, else every benchmark a run has (MATH-500 beside
    MATH, as v1 reports it; then the others by name)."""
    present = {b for r in runs if r.results for b in r.results["accuracy"]}
    if columns or paper is not None:
        chosen = list(columns or paper.columns)
        unknown = [b for b in chosen if b not in DISPLAY and b not in present]
        if unknown:
            raise ValueError(f"report.columns: {unknown} is no benchmark a run has or the paper reports "
                             f"(known: {sorted(set(DISPLAY) | present)})")
        return chosen
    order = [*PAPER_BENCHMARKS[:1], "math-500", *PAPER_BENCHMARKS[1:]]
    return [b for b in order if b in present] + sorted(present - set(order))


def build_table(runs: list[Run], baseline: str | None = None, paper: str | None = None,
                columns: list[str] | None = None, warnings: list[str] | None = None) -> Table:
    """The table of `runs`; `baseline` ("method=sft"), `paper` (a table id) and `columns` override
    the runs' report settings."""
    settings = settings_of(runs, paper=paper, columns=columns)
    paper_table = paper_numbers.load(settings["paper"]) if settings.get("paper") else None
    keys = row_keys(runs)
    seeded = sweep.SEED in keys
    keys = [k for k in keys if k != sweep.SEED]
    benchmarks = _columns(runs, settings.get("columns"), paper_table)
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
    # Runs that differ only in seed are one row (a damaged config is a row of its own); a reused
    # run never joins a row of this sweep's runs.
    for group in sweep.group_by_seed(runs, lambda r: (r.origin, *shown(r).items()) if r.config else (str(r.run_dir),)):
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
                             r.run.origin, str(r.run.run_dir)))
    _notes(rows, settings.get("notes") or {})
    lines = _beside_paper(rows, paper_table, labels, benchmarks) if paper_table else list(rows)
    rows = [line for line in lines if isinstance(line, Row)]
    _mark_best(rows, benchmarks)
    _deltas(rows, labels)
    baseline = sweep.baseline_of([r for r in runs if not r.origin], baseline)
    if baseline:
        _vs_baseline(rows, labels, sweep.parse_baseline(baseline), benchmarks)
    return Table(labels, benchmarks, rows, sorted({eval_protocol(r.config) for r in runs}), baseline,
                 seeded and any(len(r.runs) > 1 for r in rows), paper_table, lines, list(warnings or []))


def _notes(rows: list[Row], notes: dict) -> None:
    """report.notes: each spec ("method=sft-verified", several pairs space-separated) writes its
    text beside the rows whose config has those values."""
    for spec, text in notes.items():
        wanted = sweep.parse_baseline(str(spec))
        for r in rows:
            if r.run.config and wanted and matches(r.run.config, wanted):
                r.notes.append(str(text))


def _beside_paper(rows: list[Row], paper: paper_numbers.PaperTable, labels: list[str],
                  benchmarks: list[str]) -> list:
    """The paper's rows in its order, each after the rows of ours it is about; ours the paper
    lacks after them. The paper's average is shown where the columns are its own."""
    about = {id(r): paper.row_for(r.run.config) if r.run.config else None for r in rows}
    same_columns = paper.has_average and set(benchmarks) == set(paper.columns)
    lines = []
    for prow in paper.rows:
        lines += [r for r in rows if about[id(r)] is prow]
        keys = {k: "/".join(prow.match[k]) if k in prow.match else "" for k in labels}
        if not prow.match:
            keys[labels[0]] = prow.label
        lines.append(PaperLine(prow, paper.version, keys, {b: prow.scores.get(b) for b in benchmarks},
                               prow.average if same_columns else None))
    return lines + [r for r in rows if about[id(r)] is None]


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
    if isinstance(row, PaperLine):
        value = row.average if col == "average" else row.cells[col]
        return (MISSING if value is None else fmt.format(value)), False
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
    if isinstance(row, PaperLine):
        return ""
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
    if table.paper is not None:
        p = table.paper
        parts.append(f"paper ({p.version}) = the published numbers of {p.id} ({p.title}; {p.source}), "
                     "below the runs they are about; its average only where the columns are its own")
    return "; ".join(parts)


def footer(table: Table) -> list[str]:
    """What the reader must know that is not in a cell: a report.reuse that found nothing."""
    return [f"Warning: {w}" for w in table.warnings]


def _delta_text(row: Row, fmt: str = "{:+.1f}") -> str:
    if isinstance(row, PaperLine) or row.keys["method"] not in CFT_METHODS:
        return ""
    if row.failed:
        return FAILED
    return MISSING if row.delta is None else fmt.format(row.delta)


def headers(table: Table) -> list[str]:
    return [*table.key_columns, *([SOURCE] if table.has_source else []), *(["seeds"] if table.seeded else []),
            *(DISPLAY.get(b, b) for b in table.benchmarks),
            "Avg.", *([f"Δ vs {table.baseline}"] if table.baseline else []),
            *([DELTA] if table.has_delta else []), *([NOTE] if table.has_notes else [])]


def line_cells(table: Table, line, pm: str = "±") -> list[tuple[str, bool, bool]]:
    """(text, is_best, is_number) for each of `headers(table)`, for one of our rows or a paper
    line; every format (Markdown, LaTeX, HTML) escapes and marks them its own way."""
    cells = [(line.keys[k], False, False) for k in table.key_columns]
    cells += [(line.source, False, False)] if table.has_source else []
    cells += [("" if isinstance(line, PaperLine) else line.seeds, False, True)] if table.seeded else []
    cells += [(*_cell(line, col, pm=pm), True) for col in [*table.benchmarks, "average"]]
    cells += [(_baseline_text(line), False, True)] if table.baseline else []
    cells += [(_delta_text(line), False, True)] if table.has_delta else []
    cells += [(line.note, False, False)] if table.has_notes else []
    return cells


def counted_columns(table: Table) -> list[str]:
    """The benchmarks whose number of problems differs between runs."""
    return [b for b in table.benchmarks if any(b in r.counts for r in table.rows)]


def to_markdown(table: Table) -> str:
    lines = ["| " + " | ".join(headers(table)) + " |",
             "|" + "|".join(":--" if h in (*table.key_columns, SOURCE, NOTE) else "--:" for h in headers(table)) + "|"]
    for line in table.lines:
        cells = [f"**{text}**" if best else text for text, best, _ in line_cells(table, line)]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    lines += ["", legend(table)] if legend(table) else []
    lines += ["", *footer(table)] if footer(table) else []
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
    source = [SOURCE, "paper_row"] if table.has_source else []
    writer.writerow([*table.key_columns, *source, *(["seeds"] if table.seeded else []), *table.benchmarks, "average",
                     *(["delta_cft_vs_best_sft"] if table.has_delta else []), *(f"n.{b}" for b in counted),
                     *(f"sd.{c}" for c in spread), *(f"ci95_half.{c}" for c in spread),
                     *(["delta_vs_baseline", "delta_ci95_low", "delta_ci95_high"] if vs else []),
                     "status", "best", "run_dir", "problem"])
    for r in table.lines:
        if isinstance(r, PaperLine):
            writer.writerow([*(r.keys[k] for k in table.key_columns), r.source, r.row.label,
                             *([""] if table.seeded else []),
                             *(_cell(r, c, "{}")[0] for c in [*table.benchmarks, "average"]),
                             *([""] if table.has_delta else []), *([""] * len(counted)), *([""] * 2 * len(spread)),
                             *([""] * 3 if vs else []), "paper", "", table.paper.source, ""])
            continue
        cells = [_cell(r, c, "{}", counts=False)[0] for c in [*table.benchmarks, "average"]]
        delta = [_delta_text(r, "{:+}")] if table.has_delta else []
        n = ["" if r.counts.get(b) is None else r.counts[b] for b in counted]
        n += [r.sd.get(c, "") for c in spread] + [r.half_width.get(c, "") for c in spread]
        if vs:
            n += list(r.vs_baseline) if isinstance(r.vs_baseline, tuple) else [r.vs_baseline or "", "", ""]
        writer.writerow([*(r.keys[k] for k in table.key_columns),
                         *([r.source, ""] if table.has_source else []),
                         *([r.seeds] if table.seeded else []),
                         *cells, *delta, *n,
                         "failed" if r.failed else "ok", ";".join(c for c in [*table.benchmarks, "average"]
                                                                 if c in r.best), str(r.run.run_dir),
                         "; ".join(x for x in [r.run.problem, *r.notes] if x)])
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
    n_keys += table.has_source
    spec = "l" * n_keys + "r" * (len(headers(table)) - n_keys - table.has_notes) + "l" * table.has_notes
    lines = [r"\begin{tabular}{" + spec + "}", r"\toprule",
             " & ".join(_tex(h) for h in headers(table)) + r" \\", r"\midrule"]
    previous_model = None
    for line in table.lines:
        model = line.keys["model"] if isinstance(line, Row) or line.row.match else previous_model
        if previous_model is not None and model != previous_model:
            lines.append(r"\midrule")
        previous_model = model
        cells = []
        for text, best, _ in line_cells(table, line, pm="\x01"):
            text = _tex(text).replace("\x01", r"$\pm$")
            cells.append(rf"\textbf{{{text}}}" if best else text)
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"] + [f"% Scores: {p}" for p in table.protocols]
    lines += [f"% {text}" for text in footer(table)]
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
