"""The critique stage with a real HTTP teacher (OpenAI protocol on localhost) and offline teachers."""
from __future__ import annotations

import json
from collections import Counter

import pytest

from batch_server import BatchServerProcess
from cft.critique.api import TeacherError
from cft.critique.stage import run as critique
from cft.data.stage import run as data
from cft.io import read_json, read_jsonl
from cft.paths import RunPaths
from cft.pipeline import run
from helpers import assert_no_secret, cli, cli_env, run_paths
from openai_server import ServerProcess
from test_data import WEBINSTRUCT_ROWS

FAKE_KEY = "sk-test-FAKEKEY0123456789abcdefghijklmnop"


def test_openai_teacher_stage_parses_verdicts_rejects_and_resumes(tmp_path, cache_dir):
    with ServerProcess(rate_429=0.1, rate_500=0.1, rate_length=0.1, rate_no_verdict=0.1,
                       retry_after_s=0.01, api_key=FAKE_KEY) as server:
        args = ["teacher=openai", f"teacher.base_url={server.base_url}", "teacher.model=critic-1",
                "teacher.max_attempts=10", "teacher.backoff_base_s=0.01", "teacher.backoff_max_s=0.05",
                "teacher.price_prompt_per_mtok=2.5", "teacher.price_completion_per_mtok=10",
                "dataset.limit=60", "stages=[data,critique]", "run_name=api"]
        env = cli_env(tmp_path, cache_dir, OPENAI_API_KEY=FAKE_KEY)
        out = cli(*args, outputs=tmp_path, cache=cache_dir, env=env, check=True)
        calls_after_first = server.stats()
        paths = run_paths(tmp_path, "api")
        summary = read_json(paths.critique_summary)
        assert summary["n_kept"] + summary["n_rejected"] == 60
        reasons = summary["reject_reasons"]
        assert reasons.get("finish_reason=length", 0) > 0 and reasons.get("no verdict line", 0) > 0
        assert all(k["teacher_verdict"] in ("right", "wrong") for k in read_jsonl(paths.critiques))
        assert summary["ledger"]["prompt_tokens"] == calls_after_first["prompt_tokens"]
        assert summary["ledger"]["cost_usd"] > 0
        assert summary["agreement_with_reference_check"] is not None

        # A changed-config rerun of the critique stage makes no call for completed items.
        again = cli(*args, "teacher.drop_disagreements=true", outputs=tmp_path, cache=cache_dir,
                    env=env, check=True)
        assert "stage critique: config changed since last run, re-running" in again.stdout
        assert server.stats()["calls"] == calls_after_first["calls"]
        assert all(k["agrees_with_reference"] is not False for k in read_jsonl(paths.critiques))

    assert_no_secret(paths.root, FAKE_KEY)
    assert FAKE_KEY not in out.stdout + out.stderr + again.stdout + again.stderr


def test_sft_teacher_gets_teacher_solutions(compose):
    cfg = compose(["method=sft-teacher", "dataset.limit=20", "stages=[data,critique]"])
    run(cfg)
    rows = read_jsonl(RunPaths.of(cfg.run_dir).critiques)
    assert len(rows) == 20 and all("\\boxed{" in r["teacher_solution"] for r in rows)


def test_missing_key_names_the_variable(compose, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    cfg = compose(["teacher=openai", "teacher.base_url=http://127.0.0.1:9/v1", "teacher.model=m",
                   "dataset.limit=4", "stages=[data,critique]"])
    with pytest.raises(TeacherError, match="OPENAI_API_KEY"):
        run(cfg)


def test_cft_sft_mixes_sft_pairs_at_the_ratio(compose):
    cfg = compose(["method=cft-sft", "method.sft_ratio=0.25", "stages=[data,critique,train]", "method.max_steps=1",
                   "dataset.limit=64"])
    run(cfg)
    paths = RunPaths.of(cfg.run_dir)
    examples = read_jsonl(paths.train_examples)
    critiques = read_jsonl(paths.critiques)
    records = {r["id"]: r for r in read_jsonl(paths.records)}
    sft = [e for e in examples if e["id"].startswith("sft:")]
    assert len(examples) - len(sft) == len(critiques)
    assert len(sft) == round(len(critiques) * 0.25 / 0.75)
    assert len({e["id"] for e in sft}) == len(sft)
    for e in sft:  # question -> the dataset's own response, no critique
        rec = records[e["id"][len("sft:"):]]
        assert (e["prompt"], e["target"]) == (rec["question"], rec["noisy_response"])
    assert read_json(paths.stage_done("train"))["summary"]["n_sft_mixed"] == len(sft)


def test_sft_verified_on_webinstruct_keeps_what_the_shipped_critique_judged_right(compose, tmp_path):
    """WebInstruct-CFT has no reference answer: the paper's SFT-verified keeps the responses its
    GPT-4o critiques judged correct (the main table's sft-verified cells train on these)."""
    rows = tmp_path / "wi.jsonl"
    rows.write_text("".join(json.dumps(r) + "\n" for r in WEBINSTRUCT_ROWS))
    cfg = compose(["dataset=webinstruct-cft-50k", f"dataset.path={rows}", "method=sft-verified",
                   "stages=[data,train]", "method.max_steps=1"])
    run(cfg)
    examples = read_jsonl(RunPaths.of(cfg.run_dir).train_examples)
    assert [(e["prompt"], e["target"]) for e in examples] == [("Solve x+1=3.", "x=2.")]


# --- the Batch API and many teachers --------------------------------------------------------

def test_batch_mode_submits_exits_and_the_same_command_collects(tmp_path, cache_dir):
    """teacher.batch_wait_s=0 submits and stops; a re-run polls the recorded batches (submitting
    nothing again) and one that waits collects them: the sync path's parsing and rejects, and
    a ledger at half the synchronous price that matches the server's token count."""
    with BatchServerProcess(rate_length=0.1, rate_no_verdict=0.1, rate_item_error=0.1,
                            api_key=FAKE_KEY) as server:
        args = ["teacher=openai", "teacher.mode=batch", f"teacher.base_url={server.base_url}",
                "teacher.model=critic-1", "teacher.batch_max_requests=25", "teacher.batch_wait_s=0",
                "teacher.batch_poll_s=0.01", "teacher.backoff_base_s=0.01", "teacher.max_attempts=5",
                "teacher.price_prompt_per_mtok=2.5", "teacher.price_completion_per_mtok=10",
                "dataset.limit=60", "stages=[data,critique]", "run_name=batch"]
        env = cli_env(tmp_path, cache_dir, OPENAI_API_KEY=FAKE_KEY)
        kw = {"outputs": tmp_path, "cache": cache_dir, "env": env}
        runs = [cli(*args, **kw)]  # submits, polls once, stops
        assert runs[0].returncode != 0 and "Run the same command again" in runs[0].stderr
        submitted = server.stats()["submissions"]
        runs.append(cli(*args, **kw))  # polls the same batches again
        assert server.stats()["submissions"] == submitted
        runs.append(cli(*args, "teacher.batch_wait_s=60", **kw, check=True))  # waits
        final = server.stats()

    paths = run_paths(tmp_path, "batch")
    summary = read_json(paths.critique_summary)
    assert summary["n_kept"] + summary["n_rejected"] == 60
    assert summary["reject_reasons"].get("finish_reason=length", 0) > 0
    assert summary["teacher_stats"]["mode"] == "batch" and summary["teacher_stats"]["pending_batches"] == 0
    assert len(final["batches"]) >= 3 and all(v == 1 for v in final["successes"].values())
    assert summary["ledger"]["prompt_tokens"] == final["prompt_tokens"]
    assert summary["ledger"]["completion_tokens"] == final["completion_tokens"]
    cost = summary["cost_usd"]
    assert cost["paid"] > 0 and cost["at_sync_price"] == pytest.approx(2 * cost["paid"], abs=1e-5)
    assert cost["saved"] == pytest.approx(cost["paid"], abs=1e-5)
    assert_no_secret(paths.root, FAKE_KEY)
    assert all(FAKE_KEY not in r.stdout + r.stderr for r in runs)


def test_many_teachers_one_critique_per_response_and_teacher_with_agreement(compose, monkeypatch):
    """A reference teacher, a Batch API teacher and a synchronous API teacher in one run."""
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

    cache = read_jsonl(paths.critique_cache)
    assert len(cache) == len({c["key"] for c in cache}) == 60
    assert Counter(c["meta"]["teacher"] for c in cache) == {"ref": 20, "critic-batch": 20, "critic-sync": 20}
    summary = read_json(paths.critique_summary)
    assert summary["teachers"] == ["ref", "critic-batch", "critic-sync"]
    kept, rejects = read_jsonl(paths.critiques), read_jsonl(paths.rejects)
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
    assert_no_secret(paths.root, FAKE_KEY)


@pytest.mark.parametrize("filters", [["teacher.require_verdict=true", "teacher.drop_disagreements=true"],
                                     ["teacher.keep=verdict_matches_reference"]])
def test_released_critiques_stream_to_the_files_the_in_memory_path_writes(compose, tmp_path, monkeypatch, filters):
    """teacher=released streams records.jsonl to critiques.jsonl and rejects.jsonl (#24 item 4);
    its files and summary are byte for byte those of the in-memory path that list-wide filters
    (balance_verdicts, max_critiques) still take: agreement, rejects, per-row filters, unicode."""
    import cft.critique.stage as stage

    rows = []
    for i in range(60):
        right = i % 3 != 0
        verdict = ["", "\nConclusion: right [END]", "\nConclusion: wrong [END]"][i % 4 % 3]
        rows.append({"question": f"What is {i}+1? ({'é中' if i % 5 == 0 else ''})", "answer": str(i + 1),
                     "response": f"So $\\boxed{{{i + 1 if right else i}}}$.",
                     "critique": f"Checked step {i} 🤔.{verdict}"})
    path = tmp_path / "mine.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    cfg = compose(["dataset=jsonl", f"dataset.path={path}", "dataset.limit=null", "teacher=released", *filters])
    paths = RunPaths.of(cfg.run_dir)
    data(cfg, paths)

    def outputs() -> list[bytes]:
        return [p.read_bytes() for p in (paths.critiques, paths.rejects, paths.critique_summary)]

    streamed = critique(cfg, paths), outputs()
    monkeypatch.setattr(stage, "holds_all_rows", lambda teacher_cfg: True)
    assert (critique(cfg, paths), outputs()) == streamed
    summary = read_json(paths.critique_summary)
    assert summary["n_agreement_checked"] > 0 and summary["n_kept"] > 0 and sum(summary["n_filtered"].values()) > 0
