"""Tables, plots and a report for a sweep or a directory of runs: `python -m cft.report DIR`.

    python -m cft.report outputs/multirun/tiny-cft-champ-reference        # -> DIR/report/
    python -m cft.report outputs/runs --out /tmp/table                     # every single run
    WANDB_MODE=online python -m cft.report DIR --project cft               # + a W&B Report (needs the [report] extra)

Writes results_table.{md,csv,tex}, train_loss.png, accuracy.png, checkpoint_selection.png (when
a run has eval/selection.json), report.md and report.html into --out (default DIR/report).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from cft.report.plots import write_plots
from cft.report.tables import build_table, collect_runs, to_markdown, write_tables
from cft.report.wandb_report import create_online, write_local


def build_report(root: str | Path, out: str | Path | None = None, mode: str = "disabled",
                 project: str = "cft", entity: str | None = None, group: str | None = None) -> dict:
    """Aggregate every run below `root` into `out`; returns the paths written (and a URL online)."""
    root = Path(root).resolve()
    out = Path(out).resolve() if out else root / "report"
    runs = collect_runs(root)
    if not runs:
        raise FileNotFoundError(f"no run directories (config.yaml + run_info.json) below {root}")
    table = build_table(runs)
    title = root.name
    written = {**write_tables(table, out), **write_plots(table, out, title)}
    plots = {k: written[k] for k in ("loss", "accuracy", "selection") if k in written}
    written.update({f"report_{k}": v for k, v in write_local(table, plots, out, title).items()})
    if mode == "online":
        written["wandb_report"] = create_online(table, plots, title, group or root.name, project, entity)
    return {"table": table, "written": written}


def main(argv=None) -> int:
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
    args = parser.parse_args(argv)
    try:
        report = build_report(args.dir, args.out, args.wandb, args.project, args.entity, args.group)
    except (FileNotFoundError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(to_markdown(report["table"]))
    for name, path in report["written"].items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
