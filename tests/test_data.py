"""Record normalization: CHAMP, hub schemas from local files, user JSONL; decontamination."""
from __future__ import annotations

import json
from collections import Counter

import pytest

from cft.benchmarks import SHIPPED as BENCHMARKS
from cft.data.decontam import decontamination_report
from cft.data.generated import generate_noisy_responses
from cft.datasets import load_records
from cft.io import DataError, read_json, read_jsonl
from cft.records import RIGHT, UNKNOWN, WRONG
from cft.templates import cft_fields


def test_champ_records_are_real_noisy_responses_of_known_origin(compose):
    cfg = compose(["dataset=champ", "dataset.noisy_models=[GPT-4,GPT-3.5]"])
    records = list(load_records(cfg.dataset))
    # 270 problems x 2 models x 1 prompt (0-Shot), minus truncated conversations.
    assert 500 <= len(records) <= 540
    assert {r.noisy_source for r in records} == {"champ:GPT-4|0-Shot", "champ:GPT-3.5|0-Shot"}
    first = next(r for r in records if r.id == "P_Combinatorics_1|GPT-3.5|0-Shot")
    assert first.reference_answer == "239"
    assert first.question.startswith("Let a string consist of digit 1, 2, 3.")
    assert "29" in first.extra["summary"] and first.response_correct == WRONG
    verdicts = Counter(r.response_correct for r in records)
    assert verdicts[RIGHT] > 0 and verdicts[WRONG] > 0 and verdicts[UNKNOWN] > 0


def test_champ_unknown_model_names_the_key(compose):
    cfg = compose(["dataset.noisy_models=[GPT-5]"])
    with pytest.raises(DataError, match="dataset.noisy_models"):
        list(load_records(cfg.dataset))


# The released rows' layout: instruction ends "\n\n", input ends "\n" (kept verbatim).
WEBINSTRUCT_ROWS = [
    {"instruction": "Please critique whether the following solution to the question is correct.\n\n",
     "input": "Question:\nWhat is 2+2?\n\nSolution:\n2+2=5.\n",
     "output": "The addition is wrong; 2+2=4.\nConclusion: wrong [END]"},
    {"instruction": "Please critique whether the following solution to the question is correct.\n\n",
     "input": "Question:\nSolve x+1=3.\n\nSolution:\nx=2.\n",
     "output": "Correct.\nConclusion: right [END]"},
]


def test_webinstruct_cft_schema_from_local_parquet(compose, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "train.parquet"
    pq.write_table(pa.Table.from_pylist(WEBINSTRUCT_ROWS), path)
    cfg = compose(["dataset=webinstruct-cft-50k", f"dataset.path={path}"])
    assert cfg.dataset.hf_path == "TIGER-Lab/WebInstruct-CFT" and cfg.dataset.hf_config == "WebInstruct-CFT-50K"
    records = list(load_records(cfg.dataset))
    assert [r.question for r in records] == ["What is 2+2?", "Solve x+1=3."]
    assert [r.noisy_response for r in records] == ["2+2=5.", "x=2."]
    released = [(row["instruction"], row["input"]) for row in WEBINSTRUCT_ROWS]
    assert [(r.extra["instruction"], r.extra["input"]) for r in records] == released
    # our own CFT rows from these records would be laid out exactly as the released ones
    assert [cft_fields(r.question, r.noisy_response) for r in records] == released
    assert records[0].released_critique.endswith("Conclusion: wrong [END]")
    assert [r.extra["released_verdict"] for r in records] == ["wrong", "right"]


def test_user_jsonl_checks_responses_against_answers(compose, tmp_path):
    path = tmp_path / "mine.jsonl"
    rows = [{"question": "1+1?", "response": "So $\\boxed{2}$.", "answer": "2"},
            {"question": "1+2?", "response": "So $\\boxed{4}$.", "answer": "3"},
            {"question": "?", "response": "no idea"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    records = list(load_records(compose(["dataset=jsonl", f"dataset.path={path}"]).dataset))
    assert [r.response_correct for r in records] == [RIGHT, WRONG, UNKNOWN]


def test_data_stage_drops_repeated_rows_and_counts_them(compose, tmp_path):
    """A repeated row (same question, response, critique, source) is one record; the same
    question with another response is not a duplicate. Ids stay unique."""
    from cft.data.stage import run as data_stage
    from cft.paths import RunPaths

    path = tmp_path / "x.jsonl"
    rows = [{"question": "1+1?", "response": "2"}, {"question": "1+1?", "response": "2"},
            {"question": "1+1?", "response": "3"}, {"id": "k", "question": "2+2?", "response": "4"},
            {"id": "k", "question": "2+2?", "response": "4"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = compose(["dataset=jsonl", f"dataset.path={path}"])
    paths = RunPaths.of(cfg.run_dir)
    summary = data_stage(cfg, paths)
    assert (summary["n_records"], summary["n_duplicates_dropped"]) == (3, 2)
    assert [r["id"] for r in read_jsonl(paths.records)] == ["x-1", "x-3", "k"]


def test_decontamination_catches_planted_benchmark_questions():
    math500 = read_jsonl(BENCHMARKS / "math-500" / "test.jsonl")
    gsm8k = read_jsonl(BENCHMARKS / "gsm8k" / "test.jsonl")
    clean = [{"id": f"clean-{i}", "question": q} for i, q in enumerate([
        "Let a string consist of digit 1, 2, 3. How many such strings of length 6 have adjacent "
        "digit differing by less than or equal to 1?",
        "Find all primes p such that p^2 + 2 is also prime, and prove there are no others.",
    ])]
    planted = [{"id": "planted-math", "question": "Solve this: " + math500[17]["problem"]},
               {"id": "planted-gsm8k", "question": gsm8k[3]["question"].upper()}]
    report = decontamination_report(clean + planted, BENCHMARKS, n=8)
    assert {f["id"] for f in report["flagged"]} == {"planted-math", "planted-gsm8k"}
    hit = next(f for f in report["flagged"] if f["id"] == "planted-gsm8k")
    assert ["gsm8k", 3] in hit["matches"]
    assert report["benchmarks_scanned"]["math-500"] == 500


def test_generated_noisy_responses_record_their_generator(compose):
    cfg = compose(["dataset.noisy_generator=tiny", "dataset.noisy_max_new_tokens=8"])
    records = list(load_records(cfg.dataset))[:12]
    out = generate_noisy_responses(records, cfg.dataset, cfg.model, cfg.paths.cache)
    assert len(out) == len({r.question for r in records})  # one response per distinct question
    assert all(r.noisy_source == "generated:tiny" and r.extra["generator"] == "tiny" for r in out)
    assert all(isinstance(r.noisy_response, str) for r in out)
    assert all(r.response_correct in (RIGHT, WRONG, UNKNOWN) for r in out)


def _wide_rows(n: int, seed: int = 0) -> list[dict]:
    """n WebInstruct-CFT rows of ~3 KB whose words are in no benchmark (none is flagged), 1 in 10
    repeated verbatim right after (duplicates), 1 in 7 with a critique that has no verdict."""
    import random

    rng = random.Random(seed)
    vocab = [f"w{k}q" for k in range(300)]
    rows = []
    for i in range(n):
        text = lambda k: " ".join(rng.choice(vocab) for _ in range(k))  # noqa: E731
        critique = text(200) + ("" if i % 7 == 0 else f"\nConclusion: {rng.choice(['right', 'wrong'])} [END]")
        rows.append({"instruction": "Please critique whether the following solution to the question is correct.\n\n",
                     "input": f"Question:\nitem {i} {text(100)}\n\nSolution:\n{text(150)}\n", "output": critique})
        if i % 10 == 0:
            rows.append(dict(rows[-1]))
    return rows


def test_data_stage_subsample_is_the_seeded_shuffle_of_the_deduplicated_records(compose, tmp_path):
    """dataset.limit keeps the records random.Random(dataset.seed).shuffle put first among the
    de-duplicated ones (the stage shuffles positions and reads the data twice, holding only
    those it keeps)."""
    import random

    from cft.data.stage import run as data_stage
    from cft.paths import RunPaths
    from cft.records import drop_duplicates

    path = tmp_path / "wi.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _wide_rows(400)))
    cfg = compose(["dataset=webinstruct-cft-50k", f"dataset.path={path}", "dataset.limit=150", "dataset.seed=3"])
    summary = data_stage(cfg, RunPaths.of(cfg.run_dir))
    loaded, n_dup = drop_duplicates(list(load_records(cfg.dataset)))
    random.Random(3).shuffle(loaded)
    assert read_jsonl(RunPaths.of(cfg.run_dir).records) == [r.to_dict() for r in loaded[:150]]
    assert (summary["n_records"], summary["n_duplicates_dropped"]) == (150, n_dup) and n_dup == 40


def test_data_and_critique_stages_do_not_hold_the_rows(compose, tmp_path, monkeypatch):
    """teacher=released at paper scale (#24 item 4): the data and critique stages stream, so four
    times the rows adds a small fraction of the rows' bytes to their peak Python memory (holding
    them as records, dicts and rows cost several times their bytes)."""
    import tracemalloc

    from cft.critique.stage import run as critique_stage
    from cft.data import decontam
    from cft.data.stage import run as data_stage
    from cft.paths import RunPaths

    def peaks(n: int) -> tuple[int, int, int]:
        path = tmp_path / f"wi-{n}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in _wide_rows(n, seed=n)))
        cfg = compose(["dataset=webinstruct-cft-50k", f"dataset.path={path}", "dataset.limit=null",
                       "teacher=released", "teacher.require_verdict=true"], run_dir=tmp_path / f"run-{n}")
        paths = RunPaths.of(cfg.run_dir)
        out = []
        for stage in (data_stage, critique_stage):
            tracemalloc.start()
            stage(cfg, paths)
            out.append(tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()
        assert read_json(paths.data_summary)["n_records"] == n
        assert read_json(paths.critique_summary)["reject_reasons"] == {"no verdict line": (n + 6) // 7}
        return (*out, path.stat().st_size)

    # The benchmarks' n-gram index is the same at any size: built once, untraced (traced, it is slow).
    index = decontam.BenchmarkNgrams(compose().paths.benchmarks)
    monkeypatch.setattr(decontam, "BenchmarkNgrams", lambda root, n: index)
    peaks(20)  # imports (the loaders, the answer checker) happen here, not in the measured runs
    small, large = peaks(300), peaks(1200)
    added_bytes = large[2] - small[2]  # ~3 MB of rows
    assert added_bytes > 2.5e6
    for stage, a, b in (("data", small[0], large[0]), ("critique", small[1], large[1])):
        assert b - a < 0.3 * added_bytes, f"the {stage} stage's peak grew by {(b - a) / 1e6:.1f} MB"


def test_two_records_under_one_id_stop_the_data_stage_naming_both(compose, tmp_path, monkeypatch):
    """The data stage holds ids, not records: a second record under a seen id is an error that
    still quotes both questions (the other one read anew from the loader), and no records.jsonl."""
    import re

    import cft.data.stage as stage
    from cft.paths import RunPaths
    from cft.records import Record

    def records(cfg):
        for i, q in enumerate(["first question", "unrelated", "second question"]):
            yield Record(id="dup" if i != 1 else "other", question=q, reference_answer=None,
                         reference_solution=None, noisy_response="r", noisy_source="s")

    monkeypatch.setattr(stage, "load_records", records)
    cfg = compose(["dataset.limit=null"])
    with pytest.raises(ValueError, match=re.escape("'dup' (questions 'first question' and 'second question')")):
        stage.run(cfg, RunPaths.of(cfg.run_dir))
    assert not RunPaths.of(cfg.run_dir).records.exists()


def test_the_spooled_decontamination_report_is_the_json_write_json_writes(tmp_path):
    """The data stage spools flagged records to disk and writes the report item by item: the
    same bytes as json-dumping the whole report (flagged or not, non-ASCII ids)."""
    from cft.data.decontam import BenchmarkNgrams, FlaggedSpool
    from cft.io import write_json

    ngrams = BenchmarkNgrams(BENCHMARKS, 8)
    math500 = read_jsonl(BENCHMARKS / "math-500" / "test.jsonl")
    questions = {"é-1": math500[3]["problem"], "clean": "nothing to see", "中-2": math500[4]["problem"] + " " +
                 math500[9]["problem"]}
    for flagged_ids in (list(questions), ["clean"]):
        spool = FlaggedSpool(tmp_path / "spooled.json")
        flagged = []
        for rid in flagged_ids:
            if hits := ngrams.matches(questions[rid]):
                spool.add(rid, hits)
                flagged.append({"id": rid, "matches": hits})
        spool.write_report(ngrams, 3)
        spool.close()
        write_json(tmp_path / "whole.json", ngrams.report(3, flagged))
        assert (tmp_path / "spooled.json").read_bytes() == (tmp_path / "whole.json").read_bytes()
        assert len(flagged) == (2 if len(flagged_ids) == 3 else 0)
