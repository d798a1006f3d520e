"""Tables, plots and a report for a sweep or a directory of runs: `python -m cft.report DIR`.

    python -m cft.report outputs/multirun/tiny-cft-champ-reference        # -> DIR/report/
    python -m cft.report outputs/runs --out /tmp/table                     # every single run
    python -m cft.report outputs/multirun/main-table --paper table2        # the paper's rows beside ours
    WANDB_MODE=online python -m cft.report DIR --project cft               # + a W&B Report (needs the [report] extra)

Writes results_table.{md,csv,tex}, train_loss.png, accuracy.png, checkpoint_selection.png (when
a run has eval/selection.json), training_dynamics.png (when one has eval/dynamics.json), report.md and report.html into --out (default DIR/report).
The runs' `report` settings shape the table (cft.report.tables): the paper's numbers beside ours
(report.paper), the columns and the average (report.columns), runs of another sweep taken by
reference (report.reuse), notes (report.notes). A --multirun builds this report itself when it
ends (cft.report.callback).

Two runs, problem by problem (README "Comparing runs"):

    python -m cft.report compare RUN_A RUN_B [--json]    # Δ, 95% CI, p-value, flips, warnings
    python -m cft.report diff RUN_A RUN_B [--show 5]     # which problems differ, and where first
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from cft.report.plots import write_plots
from cft.report.tables import build_table, collect_runs, reused_runs, settings_of, to_markdown, write_tables
from cft.report.wandb_report import create_online, write_local


def build_report(root: str | Path, out: str | Path | None = None, mode: str = "disabled",
                 project: str = "cft", entity: str | None = None, group: str | None = None,
                 baseline: str | None = None, paper: str | None = None, columns: list[str] | None = None) -> dict:
    """Aggregate every run below `root` (and those report.reuse names) into `out`; returns the
    paths written (and a URL online)."""
    root = Path(root).resolve()
    out = Path(out).resolve() if out else root / "report"
    runs = collect_runs(root)
    if not runs:
        raise FileNotFoundError(f"no run directories (config.yaml + run_info.json) below {root}")
    reused, warnings = reused_runs(root, settings_of(runs).get("reuse"))
    table = build_table(runs + reused, baseline, paper, columns, warnings)
    title = root.name
    written = {**write_tables(table, out), **write_plots(table, out, title)}
    plots = {k: written[k] for k in ("loss", "accuracy", "selection", "dynamics") if k in written}
    written.update({f"report_{k}": v for k, v in write_local(table, plots, out, title).items()})
    if mode == "online":
        written["wandb_report"] = create_online(table, plots, title, group or root.name, project, entity)
    return {"table": table, "written": written}


def two_runs(argv: list[str]) -> int:
    """`compare` and `diff`: thin readers of two run directories (cft.report.compare, .diff)."""
    import json

    from cft.report import compare, diff
    from cft.report.evidence import run_dir_of

    command = argv[0]
    parser = argparse.ArgumentParser(prog=f"python -m cft.report {command}",
                                     description=(compare if command == "compare" else diff).__doc__.split("\n")[0])
    parser.add_argument("run_a", type=Path, help="run directory A (the reference)")
    parser.add_argument("run_b", type=Path, help="run directory B (Δ = B - A)")
    parser.add_argument("--json", action="store_true", help="JSON on stdout instead of text")
    if command == "compare":
        parser.add_argument("--resamples", type=int, default=10_000, help="bootstrap resamples (default 10000)")
        parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    else:
        parser.add_argument("--show", type=int, default=3, help="problems shown side by side per benchmark")
    args = parser.parse_args(argv[1:])
    try:
        a, b = run_dir_of(args.run_a), run_dir_of(args.run_b)
        if command == "compare":
            result = compare.compare(a, b, args.resamples, args.seed)
            text = compare.to_text(result)
        else:
            result = diff.diff(a, b, args.show)
            text = diff.to_text(result)
    except (FileNotFoundError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=1, default=str) if args.json else text, end="" if not args.json else "\n")
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in ("compare", "diff"):
        return two_runs(argv)
    parser = argparse.ArgumentParser(prog="python -m cft.report", description=__doc__.split("\n")[0])
    parser.add_argument("dir", type=Path, help="a sweep dir (outputs/multirun/<name>) or any dir of runs")
    parser.add_argument("--out", type=Path, default=None, help="output dir (default: DIR/report)")
    parser.add_argument("--wandb", choices=["disabled", "offline", "online"],
                        default=os.environ.get("WANDB_MODE", "disabled"),
                        help="online also creates a W&B Report (needs wandb-workspaces); "
                             "default $WANDB_MODE, else disabled")
    parser.add_argument("--project", default="cft")
    parser.add_argument("--entity", default=None)
    parser.add_argument("--group", default=None, help="W&B group of the sweep (default: DIR's name)")
    parser.add_argument("--baseline", default=None,
                        help='the row each row is compared with, e.g. "method=sft" (default: the runs\' '
                             "report.baseline)")
    parser.add_argument("--paper", default=None,
                        help="a table of the paper (cft/report/paper/*.yaml), e.g. table2 (default: the runs' report.paper)")
    parser.add_argument("--columns", default=None,
                        help="benchmarks, comma-separated: the columns and the average (default: the runs' report.columns)")
    args = parser.parse_args(argv)
    try:
        report = build_report(args.dir, args.out, args.wandb, args.project, args.entity, args.group, args.baseline,
                              args.paper, args.columns.split(",") if args.columns else None)
    except (FileNotFoundError, RuntimeError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(to_markdown(report["table"]))
    for name, path in report["written"].items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
