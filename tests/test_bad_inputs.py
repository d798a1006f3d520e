"""Bad inputs, one row each: what a user gets wrong, and the message that names it.

Every row failed on the main branch before its fix (accepted silently, crashed late, or crashed
with an error naming no key, file or line). A row is where the input goes and what is in it:
- "config": overrides; `validate` (run before any stage) raises ConfigError naming the key.
- "data": the bytes of a user JSONL file (dataset=jsonl); loading it raises DataError naming
  file and line.
- "report": a file of one run in a sweep replaced by these bytes; `python -m cft.report` still
  writes the table, with that run as a failed row naming the file and what is wrong with it.
"""
from __future__ import annotations

import json
import re

import pytest
import yaml

from cft.datasets import load_records
from cft.io import DataError
from cft.report.__main__ import main as report_main
from cft.validation import ConfigError, validate

ROW = json.dumps({"question": "1+1?", "response": "2"})

BAD_INPUTS = [
    # `+` adds a key Hydra refuses without it; nothing reads it.
    ("config", ["+method.learning_rate=-7"], "method.learning_rate is not a key of section method"),
    ("config", ["+model.dtpye=float32"], "its keys are: name, path, from_run, from_run_id, release, init"),
    ("config", ["++method.learning_rate=1e-5"], "method.learning_rate is not a key of section method"),
    ("config", ["+lr=1e-5"], "lr is not a key of the config"),
    # Sizes and rates: a late crash, a ZeroDivisionError, or silently nothing.
    ("config", ["method.lr=-1e-5"], "method.lr=-1e-05 must be > 0"),
    ("config", ["method.lr=0"], "method.lr=0.0 must be > 0"),
    ("config", ["model.per_device_batch_size=0"], "model.per_device_batch_size=0 must be > 0"),
    ("config", ["method.global_batch_size=0"], "method.global_batch_size=0 must be > 0"),
    ("config", ["method.cutoff_len=0"], "method.cutoff_len=0 must be > 0"),
    ("config", ["eval.batch_size=0"], "eval.batch_size=0 must be > 0"),
    ("config", ["eval.max_new_tokens=0"], "eval.max_new_tokens=0 must be > 0"),
    ("config", ["eval.benchmarks=[]"], "eval.benchmarks is empty"),
    ("config", ["eval.n=4"], "eval.n=4 with eval.temperature=0: greedy samples are all the same"),
    # A user's data file.
    ("data", (ROW + "\n" + '{"question": "caf\xe9?", "response": "r"}\n').encode("latin-1"),
     "x.jsonl:2: not valid UTF-8 (byte 0xe9 is byte 18 of the line)"),
    ("data", (json.dumps({"id": "a", "question": "1+1?", "response": "2"}) + "\n\n"
              + json.dumps({"id": "a", "question": "1+1?", "response": "3"}) + "\n").encode(),
     "x.jsonl:3: id 'a' is already the id of line 1"),
    ("data", (ROW + "\n" + json.dumps({"id": "x-1", "question": "2+2?", "response": "4"}) + "\n").encode(),
     "x.jsonl:2: id 'x-1' is already the id of line 1"),  # an explicit id equal to a derived one
    # One damaged run in a sweep.
    ("report", ("results.json", b'{"accuracy": {"math-500": 12.5, "gsm'),
     "1_method=cft/results.json: not valid JSON (Unterminated string"),
    ("report", ("results.json", b'{"average": 3.0}'), "1_method=cft/results.json: no `accuracy` table"),
    ("report", ("config.yaml", b"model: {name: tiny\nmethod: [cft\n"), "1_method=cft/config.yaml: unreadable"),
    ("report", ("config.yaml", b"\xff\xfe\x00"), "1_method=cft/config.yaml: unreadable"),
]


def _check_config(compose, tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate(compose(overrides))


def _check_data(compose, tmp_path, content, message):
    path = tmp_path / "x.jsonl"
    path.write_bytes(content)
    with pytest.raises(DataError, match=re.escape(f"{path.parent}/{message}")):
        list(load_records(compose(["dataset=jsonl", f"dataset.path={path}"]).dataset))


def _run(sweep, num: int, method: str, accuracy: dict) -> None:
    run_dir = sweep / f"{num}_method={method}"
    run_dir.mkdir(parents=True)
    config = {"model": {"name": "tiny"}, "method": {"name": method}, "run_dir": str(run_dir)}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    (run_dir / "run_info.json").write_text("{}")
    (run_dir / "results.json").write_text(json.dumps({"accuracy": accuracy, "n": {b: 8 for b in accuracy}}))


def _check_report(compose, tmp_path, damage, message, capsys):
    sweep = tmp_path / "sweep"
    _run(sweep, 0, "sft", {"math-500": 10.0, "gsm8k": 20.0})
    _run(sweep, 1, "cft", {"math-500": 12.5, "gsm8k": 25.0})
    name, content = damage
    (sweep / "1_method=cft" / name).write_bytes(content)
    assert report_main([str(sweep), "--out", str(tmp_path / "report")]) == 0
    table = capsys.readouterr().out
    failed = next(line for line in table.splitlines() if "1_method=cft/" in line)
    assert "| failed | failed | failed |" in failed and message in failed
    assert "| tiny | sft | **10.0** | **20.0** | **15.0** |" in table  # the healthy run, best of its block
    assert message in (tmp_path / "report" / "report.md").read_text()


@pytest.mark.parametrize("where, given, message", BAD_INPUTS,
                         ids=[f"{w}-{i}" for i, (w, _, _) in enumerate(BAD_INPUTS)])
def test_bad_input_is_refused_naming_where(where, given, message, compose, tmp_path, capsys):
    if where == "report":
        _check_report(compose, tmp_path, given, message, capsys)
    else:
        {"config": _check_config, "data": _check_data}[where](compose, tmp_path, given, message)


def test_plus_still_adds_keys_where_the_schema_is_open(compose):
    """model.arch is a free mapping (the tiny model's HF config): `+` may add to it."""
    assert validate(compose(["+model.arch.rope_theta=10000.0"])).model.arch.rope_theta == 10000.0
