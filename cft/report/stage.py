"""The `report` stage: one run's results table (printed, results.json, results.md)."""
from __future__ import annotations

from cft.benchmarks import PAPER_BENCHMARKS
from cft.io import atomic_open, read_json, write_json
from cft.paths import RunPaths


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
    }
    if paths.critic_metrics.exists():
        results["critic"] = read_json(paths.critic_metrics)
    if paths.selection.exists():
        results["selected_checkpoint_step"] = read_json(paths.selection)["best"]["step"]
    write_json(paths.results, results)
    header = "| model | method | dataset | teacher | " + " | ".join(names) + " | avg |"
    sep = "|" + "---|" * (5 + len(names))
    row = (f"| {cfg.model.name} | {cfg.method.name} | {cfg.dataset.name} | {cfg.teacher.name} | "
           + " | ".join(f"{accuracy[b]:.1f}" for b in names) + f" | {average:.1f} |")
    with atomic_open(paths.results_md) as f:
        f.write(f"# {cfg.run_name}\n\n{header}\n{sep}\n{row}\n\n"
                f"n per benchmark: {results['n']}\n")
    _print_table(results, names)
    return {"average": average}


def _print_table(results: dict, names: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"results: {results['run_name']}")
    for col in ["model", "method", *names, "avg"]:
        table.add_column(col, justify="right" if col not in ("model", "method") else "left")
    table.add_row(results["model"], results["method"],
                  *[f"{results['accuracy'][b]:.1f} (n={results['n'][b]})" for b in names],
                  f"{results['average']:.1f}")
    Console().print(table)
