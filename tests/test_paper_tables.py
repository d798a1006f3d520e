"""Every table of the paper, shrunk to the CPU: each `conf/experiment/table*.yaml` (and the v2-*
tables that v4 dropped) runs as the one `--multirun` command the README gives, on the tiny model,
a few released-layout rows, two training steps and one item per benchmark, and its sweep report
sets the paper's numbers beside ours.

The tables share runs as the paper's tables do: table2 runs first (module fixture) and the others
take its cells by reference (`report.reuse`, `model.from_run`), so a test that needs a cell of
table2 neither retrains it nor finds it missing. Teachers that are paid APIs (GPT-4o, GPT-4o-mini)
are the localhost OpenAI-protocol server of tests/openai_server.py.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from cft.critique.prompts import load_prompt
from cft.io import read_json
from cft.paths import RunPaths
from helpers import bind_user_benchmarks, cli, cli_env, user_benchmarks
from openai_server import ServerProcess
from test_data import WEBINSTRUCT_ROWS

pytestmark = pytest.mark.slow

# The same table on the CPU: the tiny model (one model, one seed), two optimizer steps, one item
# per benchmark with short generations, transformers instead of vLLM. Selection still runs: the
# paper's eval snapshots the weights every 2 steps and scores them on one held-out item.
SHRINK = ["model=tiny", "seed=42", "method.max_steps=2", "method.global_batch_size=8",
          "dataset.limit=16", "eval.backend=transformers", "eval.limit=1", "eval.select_limit=1",
          "eval.max_new_tokens=16", "eval.batch_size=8", "eval.critic=false"]


def _rows(n: int = 16) -> list[dict]:
    """Released WebInstruct-CFT rows (instruction/input/output), both verdicts; every other
    response is long, so its critique is the shorter text (what CFT-Short keeps)."""
    rows = []
    for i in range(n):
        row = WEBINSTRUCT_ROWS[i % len(WEBINSTRUCT_ROWS)]
        solution = "We check each step of the computation carefully before answering. " * 8 if i % 2 else ""
        rows.append(dict(row, input=row["input"].replace("Question:\n", f"Question:\n({i}) ")
                         .replace("Solution:\n", "Solution:\n" + solution)))
    return rows


@pytest.fixture(scope="module")
def world(tmp_path_factory, cache_dir):
    """outputs/, the released rows, the user's GPQA/MMLU-Pro copies, and a localhost API."""
    root = tmp_path_factory.mktemp("paper")
    data = root / "webinstruct.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in _rows()))
    with ServerProcess() as api:
        yield {"outputs": root / "outputs", "cache": cache_dir, "data": data, "api": api,
               "files": user_benchmarks(root / "user-benchmarks")}


def table(world, experiment: str, *overrides: str, api: bool = False) -> Path:
    """Run `--multirun +experiment=<experiment>` shrunk; the sweep dir, every job finished."""
    env = cli_env(world["outputs"], world["cache"])
    if api:
        env["OPENAI_API_KEY"] = "sk-test-not-a-secret"
        overrides += (f"teacher.base_url={world['api'].base_url}",)
    if not any(o.startswith("dataset.path=") for o in overrides):
        overrides += (f"dataset.path={world['data']}",)
    proc = cli("--multirun", f"+experiment={experiment}", *SHRINK, *overrides, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    sweep = world["outputs"] / "multirun" / experiment.split("-sft-gpt4o")[0]
    return sweep


def jobs(sweep: Path) -> dict[str, dict]:
    """{job dir name: results.json} of the sweep's runs (not runs it reuses)."""
    out = {}
    for config in sorted(sweep.rglob("config.yaml")):  # a path in an override nests the job dir
        if "report" in config.relative_to(sweep).parts or ".hydra" in config.parts:
            continue
        assert (config.parent / "results.json").exists(), f"{config.parent.name}: no results.json"
        out[str(config.parent.relative_to(sweep))] = read_json(config.parent / "results.json")
    return out


def report(sweep: Path) -> str:
    path = sweep / "report" / "results_table.md"
    assert path.exists(), f"the sweep's report was not built: {sorted(p.name for p in sweep.iterdir())}"
    return path.read_text()


@pytest.fixture(scope="module")
def table2(world):
    sweep = table(world, "table2")
    return sweep


def _config(run: Path):
    return OmegaConf.load(run / "config.yaml")


def test_table2_base_sft_verified_cft_and_the_papers_rows(world, table2):
    results = jobs(table2)
    assert sorted(r["method"] for r in results.values()) == ["base", "cft", "sft", "sft-verified"]
    for name, res in results.items():
        assert list(res["accuracy"]) == ["math", "minerva_math", "gsm8k", "olympiadbench", "aime24", "amc23"]
        run = table2 / name
        if res["method"] == "base":  # scored as it is: nothing trained, nothing selected
            assert list(_config(run).stages) == ["eval", "report"]
            assert not RunPaths.of(run).final_model.exists() and "selected_checkpoint_step" not in res
        else:  # the paper's selection: weights saved every 2 steps, the best on held-out MATH
            assert res["selected_checkpoint_step"] == 2
    text = report(table2)
    assert "57.1" in text and "20.3" in text  # the paper's Qwen2.5-Math-7B CFT and DeepSeek base averages
    assert "top 50K GPT-4o-verified" in text  # the SFT-verified difference, next to the result


def test_table2_sft_gpt4o_rows_ask_the_teacher_with_the_papers_prompt(world, table2):
    sweep = table(world, "table2-sft-gpt4o", api=True)
    gpt4o = [name for name, r in jobs(sweep).items() if r["method"] == "sft-teacher"]
    assert len(gpt4o) == 1
    # Every question answered by the API, with the paper's A.2 prompt (no \boxed{}: "Answer: ...").
    assert world["api"].stats()["total_successes"] >= 16
    assert _config(sweep / gpt4o[0]).teacher.solution_prompt == "solution-paper"
    assert load_prompt("solution-paper").system.endswith("conclude your answer with 'Answer: [YOUR ANSWER]'")
    assert "73.2" in report(sweep)  # the paper's Qwen2.5-Math-7B GPT4o-SFT MATH


def test_table3_scores_table2s_cft_model_by_reference_with_gpqa_and_mmlu_pro(world, table2):
    benchmarks = ["math", "gpqa", "theoremqa", "mmlu_pro", "olympiadbench", "aime24", "amc23"]
    sweep = table(world, "table3", "weights=none,cft-table2", bind_user_benchmarks(benchmarks, world["files"]))
    results = jobs(sweep)
    assert len(results) == 2
    cft_run = next(table2 / n for n, r in jobs(table2).items() if r["method"] == "cft")
    selected = read_json(RunPaths.of(cft_run).selection)["best"]["path"]
    paths = {_config(sweep / n).model.path for n in results}
    assert selected in paths  # the CFT row is table2's selected weights, not a new training
    for res in results.values():
        assert {"gpqa", "mmlu_pro"} <= set(res["accuracy"])
    assert "48.1" in report(sweep)  # the paper's Qwen2.5-Math-7B-CFT average


def test_table4_simplerl_columns_average_five_benchmarks_without_gsm8k(world, table2):
    sweep = table(world, "table4")
    (res,) = jobs(sweep).values()
    assert sorted(res["accuracy"]) == sorted(["math-500", "minerva_math", "olympiadbench", "aime24", "amc23"])
    text = report(sweep)
    header = text.splitlines()[0]
    assert "50.9" in text and "GSM8K" not in header and "MATH-500" in header  # SimpleRL's columns
    ours = [line for line in text.splitlines() if "| ours |" in line]
    assert len(ours) == 1 and "cft-table2" in ours[0]  # table2's CFT model, said so, not "base" alone


@pytest.mark.parametrize("experiment, swept, reused", [
    ("table5", ["dataset=metamath", "method=sft,cft"], ["sft", "cft"]),
    ("table6", ["dataset.noisy_generator=tiny", "dataset.noisy_generator_backend=transformers",
                "dataset.noisy_max_new_tokens=16"], ["base", "cft"]),
    ("table7", [], ["sft-verified", "cft"]),
])
def test_ablation_tables_run_their_own_cells_and_reuse_table2s(world, table2, experiment, swept, reused):
    extra = []
    if experiment == "table5":  # MetaMathQA's layout (query/response) as a local file
        rows = world["data"].parent / "metamath.jsonl"
        rows.write_text("".join(json.dumps({"query": f"What is {i}+{i}?", "response": f"{i}+{i}={2 * i}. "
                                            f"The answer is: {2 * i}", "type": "GSM_Rephrased"}) + "\n"
                                for i in range(16)))
        extra = [f"dataset.path={rows}"]
    sweep = table(world, experiment, *swept, *extra, api=True)
    assert jobs(sweep)
    text = report(sweep)
    # The reused cells are rows of this table, and say where they come from.
    reused_rows = [line for line in text.splitlines() if "ours (from table2)" in line]
    assert sorted(m for m in reused if any(f"| {m} |" in line for line in reused_rows)) == sorted(reused)


def test_table9_acemath_mixed_two_stage_and_alone(world, table2):
    from test_cft_variants import write_parquet

    rows = [{"messages": [{"role": "user", "content": f"What is ${i}+{i}$?"}],
             "answer": f"We add: ${i}+{i}={2 * i}$. The answer is $\\boxed{{{2 * i}}}$."} for i in range(32)]
    ace = write_parquet(world["data"].parent / "math_sft.parquet", rows)
    proc = cli("+experiment=table9-acemath-data", *SHRINK, f"dataset.path={ace}",
               env=cli_env(world["outputs"], world["cache"]))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    table(world, "table9", "+experiment/table9=two-stage,acemath-sft", f"dataset.path={ace}")
    sweep = table(world, "table9", "+experiment/table9=mix")
    results = jobs(sweep)
    assert sorted(r["method"] for r in results.values()) == ["cft+acemath-mix", "cft-then-acemath-sft", "sft"]
    two_stage = next(sweep / n for n, r in results.items() if r["method"] == "cft-then-acemath-sft")
    cft_run = next(table2 / n for n, r in jobs(table2).items() if r["method"] == "cft")
    assert _config(two_stage).model.path == read_json(RunPaths.of(cft_run).selection)["best"]["path"]
    assert "54.8" in report(sweep)  # the paper's mix average


def test_table10_cft_short(world, table2):
    sweep = table(world, "table10")
    assert [r["method"] for r in jobs(sweep).values()] == ["cft-short"]
    assert "55.2" in report(sweep)


def test_table11_self_critique_on_table2s_model(world, table2):
    sweep = table(world, "table11", "eval.temperature=0.1", "eval.self_critique_rounds=2")
    results = jobs(sweep)
    assert len(results) == 2
    protocols = {}
    for name in results:
        evald = read_json(RunPaths.of(sweep / name).eval_results)
        protocols[evald["protocol"]["name"]] = evald["benchmarks"]["math"]
    assert sorted(protocols) == ["self-critique", "zero-shot"]
    rounds = protocols["self-critique"]["self_critique"]  # every attempt answered, then critiqued
    assert rounds["mean_attempts"] <= 2 and "accuracy_before" in rounds and "accuracy_after" in rounds
    assert "77.9" in report(sweep)  # the paper's two-stage self-critique MATH at T=0.1


def test_v2_table4_32b_rows_with_gpqa(world, table2):
    sweep = table(world, "v2-table4", bind_user_benchmarks(["gpqa", "theoremqa", "amc23"], world["files"]))
    results = jobs(sweep)
    assert sorted(r["method"] for r in results.values()) == ["base", "cft"]
    assert all(sorted(r["accuracy"]) == ["amc23", "gpqa", "theoremqa"] for r in results.values())
    assert "52.5" in report(sweep)


def test_v2_figure2_training_dynamics_every_snapshot(world, table2):
    sweep = table(world, "v2-figure2", "method.snapshot_steps=1", "eval.dynamics=[math,minerva_math]")
    results = jobs(sweep)
    assert sorted(r["method"] for r in results.values()) == ["cft", "sft-verified"]
    for name in results:
        dynamics = read_json(RunPaths.of(sweep / name).eval_dir / "dynamics.json")
        assert len(dynamics["steps"]) == 2, dynamics  # one entry per snapshot: steps 1 and 2
    assert (sweep / "report" / "training_dynamics.png").exists()
