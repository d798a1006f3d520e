"""The `report` stage: one run's results table (printed, results.json, results.md), each score with
its 95 % interval (cft.stats, from the per-problem rows of eval/<benchmark>.jsonl)."""
from __future__ import annotations

from cft.benchmarks import PAPER_BENCHMARKS
from cft.io import atomic_open, read_json, write_json
from cft.paths import RunPaths
from cft.report.evidence import pm, uncertainty


def run(cfg, paths: RunPaths) -> dict:
    if not paths.eval_results.exists():
        raise FileNotFoundError(f"{paths.eval_results} not found: run the eval stage first")
    evald = read_json(paths.eval_results)["benchmarks"]
    names = [b for b in PAPER_BENCHMARKS if b in evald] + [b for b in evald if b not in PAPER_BENCHMARKS]
    accuracy = {b: round(evald[b]["accuracy"], 2) for b in names}
    average = round(sum(accuracy.values()) / len(accuracy), 2) if accuracy else None
    results = {
        "run_name": cfg.run_name, "model": cfg.model.name, "method": cfg.method.name,
        "dataset": cfg.dataset.name, "teacher": cfg.teacher.name,
        "accuracy": accuracy, "average": average,
        "n": {b: evald[b]["n"] for b in names},
        "grader_timeouts": {b: evald[b]["timeouts"] for b in names},
        # Per benchmark and "macro": se, ci95, half_width (points), problem_points, method.
        "uncertainty": uncertainty(paths),
    }
    if paths.critic_metrics.exists():
        results["critic"] = read_json(paths.critic_metrics)
    if paths.selection.exists():
        results["selected_checkpoint_step"] = read_json(paths.selection)["best"]["step"]
    if paths.dynamics.exists():  # eval.dynamics: accuracy over training steps, plotted
        from cft.report.plots import run_dynamics_plot

        results["training_dynamics"] = read_json(paths.dynamics)["steps"]
        run_dynamics_plot(paths, cfg.run_name)
    write_json(paths.results, results)
    header = "| model | method | dataset | teacher | " + " | ".join(names) + " | avg |"
    sep = "|" + "---|" * (5 + len(names))
    row = (f"| {cfg.model.name} | {cfg.method.name} | {cfg.dataset.name} | {cfg.teacher.name} | "
           + " | ".join(_cell(results, b) for b in names) + f" | {_cell(results, 'macro')} |")
    with atomic_open(paths.results_md) as f:
        f.write(f"# {cfg.run_name}\n\n{header}\n{sep}\n{row}\n\n"
                f"n per benchmark: {results['n']}\n\n{_legend(results, names)}\n")
    _print_table(results, names)
    return {"average": average}


def _print_table(results: dict, names: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"results: {results['run_name']}")
    for col in ["model", "method", *names, "avg"]:
        table.add_column(col, justify="right" if col not in ("model", "method") else "left")
    table.add_row(results["model"], results["method"],
                  *[f"{_cell(results, b)} (n={results['n'][b]})" for b in names], _cell(results, "macro"))
    Console().print(table)
    print(_legend(results, names))


def _cell(results: dict, name: str) -> str:
    """`score ± half-width of its 95 % interval` (the average for "macro"), the bare score when
    the run has no per-problem rows to measure it on."""
    score = results["average"] if name == "macro" else results["accuracy"][name]
    return pm(score, (results["uncertainty"].get(name) or {}).get("half_width"))


def _legend(results: dict, names: list[str]) -> str:
    """How to read ±: the interval, and what one problem is worth on each benchmark."""
    u = results["uncertainty"]
    if not u:
        return "(no per-problem rows: scores without intervals)"
    worth = ", ".join(f"{b} {u[b]['problem_points']:.2f}" for b in names if b in u)
    kinds = sorted({u[b]["method"] for b in names if b in u})
    how = {"wilson": "Wilson (1 sample/problem)", "clustered": "problem-clustered SE (n samples/problem)"}
    return (f"± = half-width of the 95% interval ({', '.join(how.get(k, k) for k in kinds)}; "
            f"avg: from the benchmarks' SEs). One problem is worth (points): {worth}.")
