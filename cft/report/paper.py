"""The paper's published numbers (cft/report/paper/*.yaml) and which of our runs each row is about.

A sweep's table (cft.report.tables) shows a paper row below the runs it matches when the runs set
`report.paper: <table id>`. A row's `match` names config keys as the table labels them: `model`
means model.name (any key without a dot is a config group's `.name`), a dotted key is the
flattened config key (`dataset.noisy_generator`, `eval.temperature`), and a list accepts any of
its values. A run matches the row whose every key agrees with its config; where several rows do,
the one naming the most keys wins (a self-generated-responses run matches "Self-generated", not the
CFT row that says nothing of the responses). Two rows of one table that tie for a run are an error
in the YAML, reported with both rows' lines.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from cft.config import agrees, config_key, spec_values

PAPER_DIR = Path(__file__).resolve().parent / "paper"
ROW_FIELDS = {"label", "match", "scores", "average", "__line__"}


class PaperError(ValueError):
    """A paper file that cannot be used as it is: the message names the file, line and field."""


@dataclass(frozen=True)
class PaperRow:
    label: str
    match: dict[str, tuple[str, ...]]  # {} for another model's published number
    scores: dict[str, float | None]  # benchmark -> score; None where the paper prints "-"
    average: float | None
    line: int  # in the YAML, for error messages
    earlier: dict = field(default_factory=dict)  # {"v1": {"scores": [...], "average": ...}}

    def matches(self, config: dict) -> bool:
        """Whether a run's flattened config has every value this row names."""
        return bool(self.match) and all(agrees(config.get(config_key(k)), values) for k, values in self.match.items())


@dataclass(frozen=True)
class PaperTable:
    id: str
    title: str
    version: str  # the paper version the numbers are from: "v4"
    source: str  # where to read them
    columns: list[str]
    has_average: bool
    rows: list[PaperRow]
    path: Path

    def row_for(self, config: dict) -> PaperRow | None:
        """The row a run (its flattened config) is about: the most specific match, else None."""
        found = [r for r in self.rows if r.matches(config)]
        if not found:
            return None
        most = max(len(r.match) for r in found)
        best = [r for r in found if len(r.match) == most]
        if len(best) > 1:
            raise PaperError(f"{self.path}: table {self.id}: rows at lines {', '.join(str(r.line) for r in best)} "
                             f"({'; '.join(r.label for r in best)}) both match a run with {_shown(config, best[0])}: "
                             "make one of their `match` more specific")
        return best[0]


def _shown(config: dict, row: PaperRow) -> str:
    return ", ".join(f"{k}={config.get(config_key(k))}" for k in row.match)


class _LineLoader(yaml.SafeLoader):
    """Keeps each mapping's line (`__line__`), so a bad row is named by where it is."""

    def construct_mapping(self, node, deep=False):
        mapping = super().construct_mapping(node, deep=deep)
        mapping["__line__"] = node.start_mark.line + 1
        return mapping




def _table(raw: dict, path: Path) -> PaperTable:
    where = f"{path}:{raw['__line__']}"
    missing = [k for k in ("id", "title", "version", "source", "columns", "rows") if k not in raw]
    if missing:
        raise PaperError(f"{where}: table lacks {missing}")
    columns = list(raw["columns"])
    has_average = raw.get("average", True) is not False
    rows = []
    for r in raw["rows"]:
        line = r["__line__"]
        label = r.get("label")
        scores = r.get("scores")
        if not label or not isinstance(scores, list):
            raise PaperError(f"{path}:{line}: table {raw['id']}: a row needs `label` and a `scores` list")
        if len(scores) != len(columns):
            raise PaperError(f"{path}:{line}: table {raw['id']}, row {label!r}: {len(scores)} scores for "
                             f"{len(columns)} columns {columns}")
        unknown = [k for k in r if k not in ROW_FIELDS and not (k.startswith("v") and k[1:].isdigit())]
        if unknown:  # e.g. an unquoted label with a comma in a {flow: mapping} splits into keys
            raise PaperError(f"{path}:{line}: table {raw['id']}, row {label!r}: unknown fields {unknown} "
                             f"(a row has {sorted(ROW_FIELDS - {'__line__'})} and vN: earlier numbers; quote a "
                             "label that holds a comma)")
        match = {k: spec_values(v) for k, v in (r.get("match") or {}).items() if k != "__line__"}
        earlier = {k: {kk: vv for kk, vv in v.items() if kk != "__line__"} for k, v in r.items()
                   if k.startswith("v") and k[1:].isdigit()}
        rows.append(PaperRow(label, match, dict(zip(columns, scores)), r.get("average"), line, earlier))
    return PaperTable(str(raw["id"]), raw["title"], str(raw["version"]), raw["source"], columns, has_average,
                      rows, path)


@functools.lru_cache(maxsize=None)
def tables(directory: Path = PAPER_DIR) -> dict[str, PaperTable]:
    """Every table of every paper file in `directory`, by id (ids are unique across files)."""
    found: dict[str, PaperTable] = {}
    for path in sorted(directory.glob("*.yaml")):
        raw = yaml.load(path.read_text(), Loader=_LineLoader)
        for t in raw.get("tables", []):
            table = _table(t, path)
            if table.id in found:
                raise PaperError(f"{path}:{t['__line__']}: table id {table.id!r} is also at "
                                 f"{found[table.id].path}")
            found[table.id] = table
    return found


def load(table_id: str) -> PaperTable:
    """One table by id; an unknown id names `report.paper` and the ids there are."""
    known = tables()
    if table_id not in known:
        raise PaperError(f"report.paper={table_id!r} is not a table of {PAPER_DIR}: one of {sorted(known)}")
    return known[table_id]
