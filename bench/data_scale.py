"""Paper-scale data (issue #24): each stage's time and peak memory on rows of WebInstruct-CFT's
released schema, and the train stage's tokenization two ways in the same run: the per-example
path it had before (every rank: `tokenize()` example by example into Python lists) and the
tokenize-once path (cft/train/dataset.py: one pass, the Rust encoder over batches, one int32
Arrow stream file that every rank maps).

    python bench/data_scale.py                        # 60K and 120K rows
    python bench/data_scale.py --rows 600000 --no-old # the new path alone (the old one needs ~19 GB)
    python bench/data_scale.py --rows 60000 120000 600000 --old-up-to 120000

Per size, each stage runs as `python -m cft.main ... stages=[<stage>]` in a process of its own
(tiny model, dataset=webinstruct-cft-600k dataset.path=<rows> teacher=released,
method.max_steps=1), and memory is that process tree's: the peak of the summed PSS of the
process and its children (tokenization workers), sampled every 0.2 s, and the largest single
RSS (wait4). Then the train stage again with only method.max_steps changed (2): it must reuse
the tokenized data; "first step" is the time from its process start to its first logged
training step. The old path runs in its own process on the same critiques.jsonl (rows ->
examples -> tokenize, as the train stage did) and its tokenization time is compared with the
new path's (critiques -> examples.jsonl + tokens.arrow, from the train stage's meta.json). Both
are given as wall time and as CPU seconds: on a shared 2-core box the wall time depends on the
other processes' load, the CPU seconds on the work each path does.

Rows are built from the shipped benchmarks' problems and solutions (MATH-500, GSM8K,
Minerva-Math): question = one problem, noisy response = 1-2 solutions, critique = 1-3 solutions
+ a verdict, in the released layout (`instruction` ends "\\n\\n", `input` is "Question:\\n..."
"\\n\\nSolution:\\n...\\n"): about 1,100 tiny-tokenizer tokens per example before the 1024 cutoff.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cft.templates import CFT_INSTRUCTION  # noqa: E402


def _pool() -> list[tuple[str, str]]:
    from cft.benchmarks import SHIPPED

    pool = []
    for name, q, s in (("math-500", "problem", "solution"), ("gsm8k", "question", "answer"),
                       ("minerva_math", "problem", "solution")):
        with open(SHIPPED / name / "test.jsonl", encoding="utf-8") as f:
            pool += [(row[q], row[s]) for row in map(json.loads, f)]
    return pool


def released_rows(n: int, seed: int = 0):
    """n rows of WebInstruct-CFT's released schema (instruction, input, output), all distinct."""
    pool, rng = _pool(), random.Random(seed)
    for i in range(n):
        question = rng.choice(pool)[0]
        response = "\n\n".join(rng.choice(pool)[1] for _ in range(rng.randint(1, 2)))
        verdict = rng.choice(("right", "wrong"))
        critique = "\n\n".join(rng.choice(pool)[1] for _ in range(rng.randint(1, 3)))
        yield {"instruction": CFT_INSTRUCTION + "\n\n",
               "input": f"Question:\n{question} (#{i})\n\nSolution:\n{response}\n",
               "output": f"{critique}\n\nConclusion: {verdict} [END]"}


def write_rows(path: Path, n: int) -> None:
    if path.exists() and sum(1 for _ in open(path, "rb")) == n:
        return
    with open(path, "w", encoding="utf-8") as f:
        for row in released_rows(n):
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


class Peak:
    """The peak summed PSS of a process tree, sampled in a thread."""

    def __init__(self, pid: int, every_s: float = 0.2):
        import psutil

        self.proc, self.every_s, self.bytes = psutil.Process(pid), every_s, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            total = 0
            try:
                for p in [self.proc, *self.proc.children(recursive=True)]:
                    try:
                        total += p.memory_full_info().pss
                    except (psutil.NoSuchProcess, psutil.AccessDenied):
                        pass
            except psutil.NoSuchProcess:
                return
            self.bytes = max(self.bytes, total)
            self._stop.wait(self.every_s)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.bytes / 1e9


def measured(cmd: list[str], env: dict, log: Path) -> dict:
    """Run `cmd`; its wall time, peak tree PSS and largest single RSS (GB), and the box's 1-minute
    load average as it started and ended (other processes share these cores)."""
    t0, load0 = time.time(), os.getloadavg()[0]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        peak = Peak(proc.pid)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    pss = peak.stop()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}); see {log}")
    return {"wall_s": round(time.time() - t0, 1), "start": t0, "peak_pss_gb": round(pss, 2),
            "max_rss_gb": round(usage.ru_maxrss / 1e6, 2), "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
            "load": [round(load0, 1), round(os.getloadavg()[0], 1)]}


OLD_PATH = r"""
import json, resource, sys, time
from omegaconf import OmegaConf
from cft.io import read_jsonl
from cft.models import load_tokenizer, model_source
from cft.train.format import example, prepare_tokenizer, tokenize
cfg = OmegaConf.load(sys.argv[1])
tokenizer = load_tokenizer(model_source(cfg.model, cfg.paths.cache), cfg.model.trust_remote_code)
prepare_tokenizer(tokenizer, cfg.model.train_template)
cpu = lambda: sum(resource.getrusage(resource.RUSAGE_SELF)[:2])  # noqa: E731
t0, c0 = time.time(), cpu()
examples = [example(r, "critique") for r in read_jsonl(sys.argv[2])]
t1, c1 = time.time(), cpu()
features = [tokenize(ex, tokenizer, cfg.model.train_template, cfg.method.cutoff_len) for ex in examples]
n_truncated = sum(f.pop("truncated") for f in features)
t2, c2 = time.time(), cpu()
print("OLD", json.dumps({"examples_s": round(t1 - t0, 2), "tokenize_s": round(t2 - t1, 2),
                         "examples_cpu_s": round(c1 - c0, 2), "tokenize_cpu_s": round(c2 - c1, 2),
                         "n_examples": len(features), "n_truncated": n_truncated,
                         "n_tokens": sum(len(f["input_ids"]) for f in features)}))
"""


def bench_size(n: int, work: Path, old: bool) -> dict:
    from cft.io import read_json, read_jsonl
    from cft.paths import RunPaths

    rows = work / f"rows-{n}.jsonl"
    t = time.time()
    write_rows(rows, n)
    print(f"[{n}] rows: {rows} ({rows.stat().st_size / 1e9:.2f} GB, {time.time() - t:.0f} s)", flush=True)
    outputs = work / f"outputs-{n}"
    shutil.rmtree(outputs, ignore_errors=True)  # every stage runs: nothing resumes from an earlier bench
    env = {**os.environ, "CFT_OUTPUTS": str(outputs), "WANDB_MODE": "disabled", "HF_DATASETS_OFFLINE": "1"}
    base = [sys.executable, "-m", "cft.main", "dataset=webinstruct-cft-600k", f"dataset.path={rows}",
            "dataset.limit=null", "teacher=released", "check_resources=false"]
    out: dict = {"rows": n}
    for stage, extra in (("data", []), ("critique", []), ("train", ["method.max_steps=1"]),
                         ("train_again", ["method.max_steps=2"])):
        name = stage.removesuffix("_again")
        res = measured([*base, f"stages=[{name}]", *extra], env, work / f"{n}-{stage}.log")
        paths = next(RunPaths.of(p) for p in (outputs / "runs").iterdir())
        res["stage_s"] = read_json(paths.stage_done(name))["elapsed_s"]
        if name == "train":
            meta = read_json(next(paths.tokenized_dir.glob("*/meta.json")))
            res["tokenized"] = meta
            steps = [r["time"] for r in read_jsonl(paths.metrics) if r.get("stage") == "train" and "loss" in r]
            # a step's own time (the re-run logs two): training started about one step earlier
            first = steps[-1] if stage == "train" else steps[-2]
            res["first_step_s"] = round(first - res["start"], 1)
            if stage == "train_again":
                res["step_s"] = round(steps[-1] - steps[-2], 1)
        out[stage] = res
        print(f"[{n}] {stage}: {json.dumps({k: v for k, v in res.items() if k != 'tokenized'})}", flush=True)
    if old:
        script = work / "old_path.py"
        script.write_text(OLD_PATH)
        res = measured([sys.executable, str(script), str(paths.resolved_config), str(paths.critiques)],
                       {**env, "PYTHONPATH": str(ROOT)}, work / f"{n}-old.log")
        line = next(l for l in (work / f"{n}-old.log").read_text().splitlines() if l.startswith("OLD "))
        res.update(json.loads(line[4:]))
        out["old"] = res
        print(f"[{n}] old per-example path: {json.dumps(res)}", flush=True)
    return out


def table(results: list[dict]) -> str:
    """One row per size; tokenization = rows -> examples -> token ids on disk or in lists. Wall
    time depends on the cores this box has free; CPU seconds are the work done."""
    lines = ["| rows | data stage | critique stage | train stage (1 step) | tokenization, per-example "
             "(before) | tokenization, tokenize-once | before / now: wall, CPU | re-run, max_steps 1 -> 2 | "
             "box load (1 min) as old / new ran |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]

    def stage(s):
        return f"{s['stage_s']:.1f} s, {s['peak_pss_gb']:.2f} GB"

    def cpu(x):
        return f", CPU {x:.0f} s" if x is not None else ""

    for r in results:
        meta, old, again = r["train"]["tokenized"], r.get("old"), r["train_again"]
        step = f", a step takes {again['step_s']:.1f} s" if "step_s" in again else ""
        new_s = sum(meta["seconds"].values())
        new_cpu = sum(meta["cpu_seconds"].values()) if "cpu_seconds" in meta else None
        if old:
            old_s = old["examples_s"] + old["tokenize_s"]
            old_cpu = old["examples_cpu_s"] + old["tokenize_cpu_s"] if "tokenize_cpu_s" in old else None
            before = f"{old_s:.0f} s{cpu(old_cpu)}, {old['peak_pss_gb']:.2f} GB"
            ratio = f"{old_s / new_s:.1f}x" + (f", {old_cpu / new_cpu:.2f}x" if old_cpu and new_cpu else "")
        else:
            before, ratio = "not run", "-"
        lines.append(f"| {r['rows']:,} | {stage(r['data'])} | {stage(r['critique'])} | {stage(r['train'])} | "
                     f"{before} | {new_s:.0f} s{cpu(new_cpu)}, {meta['workers']} encoder threads | {ratio} | "
                     f"{again['stage_s']:.1f} s (first step logged at {again['first_step_s']:.1f} s{step}), "
                     f"{again['peak_pss_gb']:.2f} GB | {_load(old)} / {_load(r['train'])} |")
    return "\n".join(lines)


def _load(res: dict | None) -> str:
    return "-" if not res or "load" not in res else "{}-{}".format(*res["load"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[60_000, 120_000])
    parser.add_argument("--work", type=Path, default=ROOT / "outputs" / "bench-data-scale")
    parser.add_argument("--no-old", action="store_true", help="skip the per-example path (its memory grows with the rows)")
    parser.add_argument("--old-up-to", type=int, default=None,
                        help="run the per-example path only for sizes up to this many rows")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    results = []
    for n in args.rows:
        old = not args.no_old and (args.old_up_to is None or n <= args.old_up_to)
        results.append(bench_size(n, args.work, old))
        (args.work / "results.json").write_text(json.dumps(results, indent=1, default=str))
    print(table(results))
    if len(results) > 1:
        a, b = results[0], results[-1]
        growth = {s: round(b[s]["stage_s"] / a[s]["stage_s"], 2) for s in ("data", "critique", "train")}
        print(f"growth {a['rows']:,} -> {b['rows']:,} rows ({b['rows'] / a['rows']:.1f}x): stage time x {growth}")


if __name__ == "__main__":
    main()
