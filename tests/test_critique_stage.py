"""The critique stage with a real HTTP teacher (OpenAI protocol on localhost) and offline teachers."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

import pytest

from conftest import BENCHMARKS, ROOT
from openai_server import ServerProcess

FAKE_KEY = "sk-test-FAKEKEY0123456789abcdefghijklmnop"


def cli(args, tmp_path, cache_dir, env=None):
    env = {**os.environ, "CFT_OUTPUTS": str(tmp_path), "CFT_CACHE": str(cache_dir),
           "CFT_BENCHMARKS": str(BENCHMARKS), **(env or {})}
    return subprocess.run([sys.executable, "-m", "cft.main", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_openai_teacher_stage_parses_verdicts_rejects_and_resumes(tmp_path, cache_dir):
    with ServerProcess(rate_429=0.1, rate_500=0.1, rate_length=0.1, rate_no_verdict=0.1,
                       retry_after_s=0.01, api_key=FAKE_KEY) as server:
        args = ["teacher=openai", f"teacher.base_url={server.base_url}", "teacher.model=critic-1",
                "teacher.max_attempts=10", "teacher.backoff_base_s=0.01", "teacher.backoff_max_s=0.05",
                "teacher.price_prompt_per_mtok=2.5", "teacher.price_completion_per_mtok=10",
                "dataset.limit=60", "stages=[data,critique]", "run_name=api"]
        out = cli(args, tmp_path, cache_dir, {"OPENAI_API_KEY": FAKE_KEY})
        assert out.returncode == 0, out.stderr[-3000:]
        calls_after_first = server.stats()
        run_dir = tmp_path / "runs" / "api"
        summary = json.loads((run_dir / "critique/summary.json").read_text())
        assert summary["n_kept"] + summary["n_rejected"] == 60
        reasons = summary["reject_reasons"]
        assert reasons.get("finish_reason=length", 0) > 0 and reasons.get("no verdict line", 0) > 0
        kept = [json.loads(l) for l in (run_dir / "critique/critiques.jsonl").open()]
        assert all(k["teacher_verdict"] in ("right", "wrong") for k in kept)
        assert summary["ledger"]["prompt_tokens"] == calls_after_first["prompt_tokens"]
        assert summary["ledger"]["cost_usd"] > 0
        assert summary["agreement_with_reference_check"] is not None

        # A changed-config rerun of the critique stage makes no call for completed items.
        again = cli(args + ["teacher.drop_disagreements=true"], tmp_path, cache_dir,
                    {"OPENAI_API_KEY": FAKE_KEY})
        assert again.returncode == 0, again.stderr[-3000:]
        assert "stage critique: config changed since last run, re-running" in again.stdout
        assert server.stats()["calls"] == calls_after_first["calls"]
        kept = [json.loads(l) for l in (run_dir / "critique/critiques.jsonl").open()]
        assert all(k["agrees_with_reference"] is not False for k in kept)

    for path in run_dir.rglob("*"):
        if path.is_file():
            assert FAKE_KEY not in path.read_text(errors="ignore"), path
    assert FAKE_KEY not in out.stdout + out.stderr


def test_released_teacher_uses_shipped_critiques(tmp_path, cache_dir):
    from test_data import WEBINSTRUCT_ROWS

    data = tmp_path / "wi.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in WEBINSTRUCT_ROWS))
    out = cli(["dataset=webinstruct-cft-4k", f"dataset.path={data}", "teacher=released",
               "stages=[data,critique]", "run_name=rel"], tmp_path, cache_dir)
    assert out.returncode == 0, out.stderr[-2000:]
    kept = [json.loads(l) for l in (tmp_path / "runs/rel/critique/critiques.jsonl").open()]
    assert [k["critique"] for k in kept] == [r["output"] for r in WEBINSTRUCT_ROWS]
    assert [k["teacher_verdict"] for k in kept] == ["wrong", "right"]


def test_sft_teacher_gets_teacher_solutions(compose, tmp_path):
    from cft.critique.stage import run as critique
    from cft.data.stage import run as data
    from cft.paths import RunPaths

    cfg = compose(["method=sft-teacher", "dataset.limit=20"])
    paths = RunPaths.of(cfg.run_dir)
    data(cfg, paths)
    critique(cfg, paths)
    rows = [json.loads(l) for l in paths.critiques.open()]
    assert len(rows) == 20 and all("\\boxed{" in r["teacher_solution"] for r in rows)


def test_missing_key_names_the_variable(tmp_path, cache_dir):
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    out = subprocess.run(
        [sys.executable, "-m", "cft.main", "teacher=openai", "teacher.base_url=http://127.0.0.1:9/v1",
         "teacher.model=m", "dataset.limit=4", "stages=[data,critique]"],
        cwd=ROOT, env={**env, "CFT_OUTPUTS": str(tmp_path), "CFT_CACHE": str(cache_dir),
                       "CFT_BENCHMARKS": str(BENCHMARKS)},
        capture_output=True, text=True, timeout=300)
    assert out.returncode != 0 and "OPENAI_API_KEY" in out.stderr


def test_cft_sft_mixes_sft_pairs_at_the_ratio(tmp_path, cache_dir):
    out = cli(["method=cft-sft", "method.sft_ratio=0.25", "stages=[data,critique,train]",
               "method.max_steps=1", "run_name=mix"], tmp_path, cache_dir)
    assert out.returncode == 0, out.stderr[-2000:]
    run = tmp_path / "runs/mix"
    examples = [json.loads(l) for l in (run / "train/examples.jsonl").open()]
    critiques = [json.loads(l) for l in (run / "critique/critiques.jsonl").open()]
    records = {r["id"]: r for r in map(json.loads, (run / "data/records.jsonl").open())}
    sft = [e for e in examples if e["id"].startswith("sft:")]
    assert len(examples) - len(sft) == len(critiques)
    assert len(sft) == round(len(critiques) * 0.25 / 0.75)
    assert len({e["id"] for e in sft}) == len(sft)
    for e in sft:  # question -> the dataset's own response, no critique
        rec = records[e["id"][len("sft:"):]]
        assert (e["prompt"], e["target"]) == (rec["question"], rec["noisy_response"])
    summary = json.loads((run / "stages/train.done.json").read_text())["summary"]
    assert summary["n_sft_mixed"] == len(sft)


@pytest.mark.parametrize("overrides,message", [
    (["method=cft-sft", "method.sft_ratio=1.0"], "method.sft_ratio=1.0 must be in [0, 1)"),
    (["method=sft", "method.sft_ratio=0.3"], "method.target='response' is not 'critique'"),
])
def test_bad_sft_ratio_fails_naming_the_key(tmp_path, cache_dir, overrides, message):
    out = cli([*overrides, "stages=[]"], tmp_path, cache_dir)
    assert out.returncode != 0 and message in out.stderr


def test_sft_verified_on_webinstruct_keeps_what_the_shipped_critique_judged_right(tmp_path, cache_dir):
    """WebInstruct-CFT has no reference answer: the paper's SFT-verified keeps the responses its
    GPT-4o critiques judged correct (the main table's sft-verified cells train on these)."""
    from test_data import WEBINSTRUCT_ROWS

    data = tmp_path / "wi.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in WEBINSTRUCT_ROWS))
    out = cli(["dataset=webinstruct-cft-50k", f"dataset.path={data}", "method=sft-verified",
               "stages=[data,train]", "method.max_steps=1", "run_name=ver"], tmp_path, cache_dir)
    assert out.returncode == 0, out.stderr[-2000:]
    examples = [json.loads(l) for l in (tmp_path / "runs/ver/train/examples.jsonl").open()]
    assert [(e["prompt"], e["target"]) for e in examples] == [("Solve x+1=3.", "x=2.")]


# --- the Batch API and many teachers --------------------------------------------------------

def test_batch_mode_submits_exits_and_the_same_command_collects(tmp_path, cache_dir):
    """teacher.batch_wait_s=0 submits and stops; a re-run polls the recorded batches (submitting
    nothing again) and one that waits collects them: the sync path's parsing and rejects, and
    a ledger at half the synchronous price that matches the server's token count."""
    from batch_server import BatchServerProcess

    with BatchServerProcess(rate_length=0.1, rate_no_verdict=0.1, rate_item_error=0.1,
                            api_key=FAKE_KEY) as server:
        args = ["teacher=openai", "teacher.mode=batch", f"teacher.base_url={server.base_url}",
                "teacher.model=critic-1", "teacher.batch_max_requests=25", "teacher.batch_wait_s=0",
                "teacher.batch_poll_s=0.01", "teacher.backoff_base_s=0.01", "teacher.max_attempts=5",
                "teacher.price_prompt_per_mtok=2.5", "teacher.price_completion_per_mtok=10",
                "dataset.limit=60", "stages=[data,critique]", "run_name=batch"]
        env = {"OPENAI_API_KEY": FAKE_KEY}
        runs = [cli(args, tmp_path, cache_dir, env)]  # submits, polls once, stops
        assert runs[0].returncode != 0 and "Run the same command again" in runs[0].stderr
        submitted = server.stats()["submissions"]
        runs.append(cli(args, tmp_path, cache_dir, env))  # polls the same batches again
        assert server.stats()["submissions"] == submitted
        runs.append(cli(args + ["teacher.batch_wait_s=60"], tmp_path, cache_dir, env))  # waits
        assert runs[-1].returncode == 0, runs[-1].stderr[-3000:]
        final = server.stats()

    run_dir = tmp_path / "runs" / "batch"
    summary = json.loads((run_dir / "critique/summary.json").read_text())
    assert summary["n_kept"] + summary["n_rejected"] == 60
    assert summary["reject_reasons"].get("finish_reason=length", 0) > 0
    assert summary["teacher_stats"]["mode"] == "batch" and summary["teacher_stats"]["pending_batches"] == 0
    assert len(final["batches"]) >= 3 and all(v == 1 for v in final["successes"].values())
    assert summary["ledger"]["prompt_tokens"] == final["prompt_tokens"]
    assert summary["ledger"]["completion_tokens"] == final["completion_tokens"]
    cost = summary["cost_usd"]
    assert cost["paid"] > 0 and cost["at_sync_price"] == pytest.approx(2 * cost["paid"], abs=1e-5)
    assert cost["saved"] == pytest.approx(cost["paid"], abs=1e-5)
    for path in run_dir.rglob("*"):
        if path.is_file():
            assert FAKE_KEY not in path.read_text(errors="ignore"), path
    assert all(FAKE_KEY not in r.stdout + r.stderr for r in runs)


def test_many_teachers_one_critique_per_response_and_teacher_with_agreement(compose, monkeypatch):
    """A reference teacher, a Batch API teacher and a synchronous API teacher in one run."""
    from batch_server import BatchServerProcess
    from cft.critique.stage import run as critique
    from cft.data.stage import run as data
    from cft.paths import RunPaths

    monkeypatch.setenv("CFT_TEST_KEY", FAKE_KEY)
    with BatchServerProcess(api_key=FAKE_KEY) as batch, ServerProcess(api_key=FAKE_KEY) as sync:
        models = (f"[{{name: ref}}, {{name: critic-batch, backend: openai, mode: batch, model: b, "
                  f"base_url: '{batch.base_url}', api_key_env: CFT_TEST_KEY, price_prompt_per_mtok: 2.5}}, "
                  f"{{name: critic-sync, backend: openai, model: s, base_url: '{sync.base_url}', "
                  f"api_key_env: CFT_TEST_KEY, price_prompt_per_mtok: 2.5}}]")
        cfg = compose(["teacher=reference", f"teacher.models={models}", "teacher.batch_poll_s=0.01",
                       "teacher.backoff_base_s=0.01", "dataset.limit=20"])
        paths = RunPaths.of(cfg.run_dir)
        data(cfg, paths)
        out = critique(cfg, paths)

    cache = [json.loads(l) for l in paths.critique_cache.open()]
    assert len(cache) == len({c["key"] for c in cache}) == 60
    assert Counter(c["meta"]["teacher"] for c in cache) == {"ref": 20, "critic-batch": 20, "critic-sync": 20}
    summary = json.loads(paths.critique_summary.read_text())
    assert summary["teachers"] == ["ref", "critic-batch", "critic-sync"]
    kept = [json.loads(l) for l in paths.critiques.open()]
    rejects = [json.loads(l) for l in paths.rejects.open()]
    for name in summary["teachers"]:
        assert sum(r["teacher"] == name for r in kept + rejects) == 20
    # The agreement table is what the critiques say.
    verdicts = {n: {r["id"]: r["teacher_verdict"] for r in kept if r["teacher"] == n} for n in summary["teachers"]}
    pairs = {(p["a"], p["b"]): p for p in summary["teacher_agreement"]["pairs"]}
    assert set(pairs) == {("ref", "critic-batch"), ("ref", "critic-sync"), ("critic-batch", "critic-sync")}
    for (a, b), p in pairs.items():
        common = verdicts[a].keys() & verdicts[b].keys()
        assert p["n"] == len(common) > 0
        assert p["agree"] == round(sum(verdicts[a][k] == verdicts[b][k] for k in common) / len(common), 4)
    assert out["teacher_agreement"] == summary["teacher_agreement"]["pairs"]
    per = summary["ledger"]["per_teacher"]
    assert per["critic-batch"]["sync_cost_usd"] == pytest.approx(2 * per["critic-batch"]["cost_usd"])
    assert per["critic-sync"]["sync_cost_usd"] == per["critic-sync"]["cost_usd"] > 0
    for path in paths.root.rglob("*"):
        if path.is_file():
            assert FAKE_KEY not in path.read_text(errors="ignore"), path


@pytest.mark.slow
def test_one_shot_cft_tiny_runs_end_to_end(compose):
    """The One-Shot CFT recipe on CPU: one CHAMP problem, its 72 responses from four generator
    models, each critiqued by the recipe's four teachers (reference fallbacks), then train,
    eval and report."""
    from cft.pipeline import run

    cfg = compose(["+experiment=one-shot-cft", "model=tiny", "teacher=reference",
                   "eval.backend=transformers", "eval.select_checkpoint=false", "eval.limit=1",
                   "eval.critic=false", "eval.max_new_tokens=32", "method.global_batch_size=16",
                   "method.max_steps=1", "method.cutoff_len=256"])
    out = run(cfg)
    records = [json.loads(l) for l in open(f"{cfg.run_dir}/data/records.jsonl")]
    assert len(records) == 72 and {r["id"].split("|")[0] for r in records} == {"P_Combinatorics_2"}
    assert len({r["id"].split("|")[1] for r in records}) == 4  # four generator models
    summary = json.loads(open(f"{cfg.run_dir}/critique/summary.json").read())
    assert summary["teachers"] == ["gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini"]
    assert summary["n_kept"] == 72 * 4 and summary["teacher_agreement"]["n_all"] == 72
    assert out["train"]["n_examples"] == 72 * 4 and "math-500" in out["eval"]
