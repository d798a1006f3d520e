"""Sweep plots (PNG, matplotlib Agg): training loss, accuracy bars, checkpoint selection, training
dynamics (and one run's dynamics, for its report stage)."""
from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

from cft.io import DataError, atomic_open, iter_jsonl, read_json
from cft.paths import RunPaths
from cft.report.tables import DISPLAY, FAILED, Table



def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=120, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def row_label(table: Table, row, skip=()) -> str:
    return " / ".join(row.keys[k] for k in table.key_columns if k not in skip)


def _skipped(path: Path, error: Exception) -> None:
    """A damaged file costs its run a curve, never the report; said on stderr."""
    print(f"[cft.report] {path}: skipped in the plots ({error})", file=sys.stderr)


def train_loss(run_dir: Path) -> list[tuple[int, float]]:
    """(step, loss) of the train stage; a resumed run's repeated steps keep the latest value."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    try:
        by_step = {r["step"]: r["loss"] for r in iter_jsonl(path)
                   if r.get("stage") == "train" and "loss" in r and "step" in r}
    except (DataError, OSError) as e:
        _skipped(path, e)
        return []
    return sorted(by_step.items())


def loss_curves(table: Table, out: Path, title: str) -> Path | None:
    curves = [(row_label(table, r), train_loss(r.run.run_dir)) for r in table.rows]
    curves = [(label, c) for label, c in curves if c]
    if not curves:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for label, curve in curves:
        ax.plot(*zip(*curve), label=label, marker="." if len(curve) < 30 else None)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set(xlabel="step", ylabel="training loss", title=f"Training loss — {title}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, out)


def accuracy_bars(table: Table, out: Path, title: str) -> Path | None:
    """One panel per setting (row keys other than method), bars per method over benchmarks + avg."""
    if not table.rows:
        return None
    plt = _pyplot()
    panels = defaultdict(list)
    for r in table.rows:
        panels[row_label(table, r, skip=("method",))].append(r)
    columns = [*table.benchmarks, "average"]
    names = [DISPLAY.get(b, b) for b in table.benchmarks] + ["Avg."]
    fig, axes = plt.subplots(len(panels), 1, figsize=(max(6.0, 1.3 * len(columns) + 2), 3.2 * len(panels)),
                             squeeze=False)
    for ax, (setting, rows) in zip(axes[:, 0], panels.items()):
        width = 0.8 / len(rows)
        for i, r in enumerate(rows):
            xs = [j + (i - (len(rows) - 1) / 2) * width for j in range(len(columns))]
            values = [r.average if c == "average" else r.cells[c] for c in columns]
            bars = ax.bar(xs, [v or 0.0 for v in values], width, label=r.keys["method"])
            for x, v, bar in zip(xs, values, bars):
                text = FAILED if r.failed else ("—" if v is None else f"{v:.1f}")
                ax.annotate(text, (x, bar.get_height()), ha="center", va="bottom", fontsize=7,
                            xytext=(0, 2), textcoords="offset points")
        ax.set_xticks(range(len(columns)), names)
        ax.set_ylabel("accuracy (%)")
        ax.set_title(setting, fontsize=9)
        ax.set_ylim(0, max(5.0, ax.get_ylim()[1] * 1.3))  # headroom for labels + legend
        ax.legend(fontsize=8, ncols=min(4, len(rows)), loc="upper left")
    fig.suptitle(f"Accuracy by benchmark and method — {title}")
    fig.tight_layout()
    return _save(fig, out)


def selection_curves(table: Table, out: Path, title: str) -> Path | None:
    """Selection-set accuracy (eval.select_benchmark: held-out MATH by default) vs checkpoint step
    for runs with eval/selection.json; None when none."""
    curves, benchmarks = [], set()
    for r in table.rows:
        path = RunPaths.of(r.run.run_dir).selection
        if path.exists():
            try:
                selection = read_json(path)
                points = sorted((p["step"], p["accuracy"]) for p in selection["curve"])
                best = (selection["best"]["step"], selection["best"]["accuracy"])
            except (ValueError, OSError, KeyError, TypeError) as e:  # JSONDecodeError is a ValueError
                _skipped(path, e)
                continue
            if points:
                curves.append((row_label(table, r), points, best))
                benchmarks.add(str(selection.get("benchmark", "selection set")))
    if not curves:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for label, points, (step, acc) in curves:
        line, = ax.plot(*zip(*points), marker="o", label=label)
        ax.scatter([step], [acc], marker="*", s=160, color=line.get_color(), zorder=3)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set(xlabel="checkpoint step", ylabel=f"{' / '.join(sorted(benchmarks))} accuracy (%)",
           title=f"Checkpoint selection (★ = selected) — {title}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, out)


def training_dynamics(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """{benchmark: [(step, accuracy)...]} from a run's eval/dynamics.json; {} without one."""
    path = RunPaths.of(run_dir).dynamics
    if not path.exists():
        return {}
    try:
        steps = read_json(path)["steps"]
        out: dict[str, list] = defaultdict(list)
        for step, scores in sorted(steps.items(), key=lambda kv: int(kv[0])):
            for bench, score in scores.items():
                out[bench].append((int(step), float(score["accuracy"])))
        return dict(out)
    except (ValueError, OSError, KeyError, TypeError, AttributeError) as e:
        _skipped(path, e)
        return {}


def dynamics_figure(series: list[tuple[str, dict]], out: Path, title: str) -> Path | None:
    """One panel per benchmark, accuracy against training step, one line per run (the paper's
    training-dynamics figure: SFT and CFT on four benchmarks); None when no run has any."""
    series = [(label, d) for label, d in series if d]
    if not series:
        return None
    benchmarks = list(dict.fromkeys(b for _, d in series for b in d))
    plt = _pyplot()
    cols = min(2, len(benchmarks))
    rows = -(-len(benchmarks) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.4 * rows), squeeze=False)
    for ax, bench in zip(axes.flat, benchmarks):
        for label, d in series:
            if bench in d:
                ax.plot(*zip(*d[bench]), marker="o", markersize=3, label=label)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set(xlabel="training step", ylabel="accuracy (%)", title=DISPLAY.get(bench, bench))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(benchmarks):]:
        ax.set_visible(False)
    fig.suptitle(f"Training dynamics — {title}")
    fig.tight_layout()
    return _save(fig, out)


def dynamics_curves(table: Table, out: Path, title: str) -> Path | None:
    """The sweep's runs with eval/dynamics.json overlaid (e.g. SFT vs CFT)."""
    return dynamics_figure([(row_label(table, r), training_dynamics(r.run.run_dir)) for r in table.rows], out, title)


def run_dynamics_plot(paths: RunPaths, title: str) -> Path | None:
    """One run's training_dynamics.png (its report stage), None without eval/dynamics.json."""
    return dynamics_figure([(title, training_dynamics(paths.root))], paths.dynamics_plot, title)


def write_plots(table: Table, out_dir: str | Path, title: str) -> dict[str, Path]:
    out_dir = Path(out_dir)
    made = {"loss": loss_curves(table, out_dir / "train_loss.png", title),
            "accuracy": accuracy_bars(table, out_dir / "accuracy.png", title),
            "selection": selection_curves(table, out_dir / "checkpoint_selection.png", title),
            "dynamics": dynamics_curves(table, out_dir / "training_dynamics.png", title)}
    return {k: v for k, v in made.items() if v is not None}
