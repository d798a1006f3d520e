"""The sweep report: a local report.md + report.html always, and a W&B Report when online.

Online, the PNGs and the table are logged to one `job_type=report` run in the sweep's group,
and a W&B Report (wandb-workspaces) holds the table, those images and native panels over the
sweep's runs. That path cannot run without the W&B cloud and is untested here.
"""
from __future__ import annotations

import html
from pathlib import Path

from cft.io import atomic_open
from cft.report.tables import Table, footer, headers, legend, line_cells, to_markdown

CAPTIONS = {"loss": "Training loss per run", "accuracy": "Accuracy by benchmark and method",
            "selection": "Checkpoint selection: MATH-500 accuracy vs step",
            "dynamics": "Training dynamics: accuracy per benchmark vs training step"}


def _failed_runs(table: Table) -> list[str]:
    """Each failed run's directory and what is missing or damaged in it."""
    return [f"{r.run.run_dir}/{r.run.problem}" if r.run.problem else str(r.run.run_dir)
            for r in table.rows if r.failed]


def write_local(table: Table, plots: dict[str, Path], out_dir: str | Path, title: str) -> dict[str, Path]:
    """report.md and report.html beside the images (relative links, so the folder travels)."""
    out_dir = Path(out_dir)
    failed = _failed_runs(table)
    md = [f"# {title}\n", f"{sum(len(r.runs) or 1 for r in table.rows)} runs. Best value per column (within a base model) "
          f"in bold; `—` = benchmark not evaluated, `failed` = run without readable results.\n",
          to_markdown(table)]
    if failed:
        md.append("Runs without results:\n\n" + "".join(f"- `{d}`\n" for d in failed))
    for key, path in plots.items():
        md.append(f"## {CAPTIONS[key]}\n\n![{CAPTIONS[key]}]({path.name})\n")
    with atomic_open(out_dir / "report.md") as f:
        f.write("\n".join(md))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers(table))
    body = []
    for line in table.lines:  # our rows and, with report.paper, the paper's below them
        cells = [f"<td{' class=num' if number else ''}>{'<b>' + html.escape(text) + '</b>' if best else html.escape(text)}</td>"
                 for text, best, number in line_cells(table, line)]
        body.append("<tr>" + "".join(cells) + "</tr>")
    figures = "".join(f'<figure><img src="{p.name}" alt="{CAPTIONS[k]}"><figcaption>{CAPTIONS[k]}'
                      f"</figcaption></figure>" for k, p in plots.items())
    failed_html = ("<p>Runs without results:</p><ul>" + "".join(f"<li><code>{html.escape(d)}</code></li>"
                                                              for d in failed) + "</ul>") if failed else ""
    page = (f"<!doctype html><meta charset=utf-8><title>{html.escape(title)}</title>"
            "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}"
            "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px}"
            "td.num{text-align:right}img{max-width:100%}</style>"
            f"<h1>{html.escape(title)}</h1><table><tr>{head}</tr>{''.join(body)}</table>"
            f"<p>{html.escape(legend(table))}</p>" + "".join(f"<p>{html.escape(w)}</p>" for w in footer(table)) +
            f"{failed_html}{figures}\n")
    with atomic_open(out_dir / "report.html") as f:
        f.write(page)
    return {"md": out_dir / "report.md", "html": out_dir / "report.html"}


def create_online(table: Table, plots: dict[str, Path], title: str, group: str, project: str,
                  entity: str | None = None) -> str:
    """Log the table and images to a report run in `group`, then save a W&B Report; its URL.

    Needs `pip install -e ".[report]"` (wandb-workspaces) and WANDB_API_KEY in the environment.
    Untested here: it needs the network.
    """
    import wandb

    try:
        import wandb_workspaces.reports.v2 as wr
    except ImportError:
        raise RuntimeError('an online W&B Report needs wandb-workspaces: pip install -e ".[report]" '
                           "(the local report.md/html were written)") from None

    with wandb.init(project=project, entity=entity, group=group, job_type="report",
                    name=f"{group}/report") as run:
        entity = entity or run.entity
        run.log({"report/table": wandb.Table(dataframe=_dataframe(table)),
                 **{f"report/{k}": wandb.Image(str(p), caption=CAPTIONS[k]) for k, p in plots.items()}})
    runset = wr.Runset(entity=entity, project=project, name=group, filters=f"Group = '{group}'")
    bench_metrics = [f"eval/{b}/accuracy" for b in table.benchmarks] + ["eval/average"]
    report = wr.Report(project=project, entity=entity, title=title, blocks=[
        wr.H1(title),
        wr.MarkdownBlock(to_markdown(table)),
        wr.PanelGrid(runsets=[runset], panels=[
            wr.MediaBrowser(title="Sweep plots", media_keys=[f"report/{k}" for k in plots]),
            wr.LinePlot(title="Training loss", x="train/global_step", y=["train/loss"]),
            wr.BarPlot(title="Accuracy", metrics=bench_metrics, groupby="method.name"),
        ]),
    ])
    report.save()
    return report.url


def _dataframe(table: Table):
    import pandas as pd

    rows = []
    for r in table.rows:
        row = dict(r.keys)
        for col in [*table.benchmarks, "average"]:
            row[col] = _cell(r, col, "{}", counts=False)[0]
        row["delta_cft_vs_best_sft"] = _delta_text(r, "{:+}")
        row["problem"] = r.run.problem or ""
        rows.append(row)
    return pd.DataFrame(rows)
