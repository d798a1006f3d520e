"""Tracking: metrics.jsonl always; W&B run per job on rank 0, resumable, with no secrets."""
from __future__ import annotations

import json
import sys

import pytest

from cft.paths import RunPaths
from cft.tracking import REDACTED, RUN_ID_FILE, job_identity, log_metrics, scrub, track
from helpers import assert_no_secret
from wandb_offline import read_run


def test_scrub_redacts_secret_names_and_env_values_but_keeps_variable_names(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secretvalue123")
    config = {"teacher": {"api_key_env": "OPENAI_API_KEY", "api_key": "sk-live-abc",
                          "max_tokens": 3200, "tokens_per_minute": 5,
                          "base_url": "https://x.example/v1?t=hf_secretvalue123"},
              "hub": {"hf_token": "abc", "password": "pw", "secret": None}, "key": "k"}
    clean = scrub(config)
    assert clean["teacher"]["api_key_env"] == "OPENAI_API_KEY"
    assert clean["teacher"]["api_key"] == REDACTED
    assert clean["teacher"]["max_tokens"] == 3200 and clean["teacher"]["tokens_per_minute"] == 5
    assert "hf_secretvalue123" not in json.dumps(clean)
    assert clean["hub"] == {"hf_token": REDACTED, "password": REDACTED, "secret": None}
    assert clean["key"] == REDACTED


@pytest.mark.parametrize("mode,rank", [("disabled", "0"), ("offline", "1")])
def test_no_wandb_run_when_disabled_or_not_rank_0(compose, monkeypatch, mode, rank):
    """Tracking off, or a rank other than 0: no W&B run and no run id, metrics.jsonl only."""
    monkeypatch.setenv("RANK", rank)
    cfg = compose([f"tracking.mode={mode}"])
    paths = RunPaths.of(cfg.run_dir)
    paths.root.mkdir(parents=True)
    with track(cfg, paths) as run:
        assert run is None
        log_metrics(paths.metrics, {"stage": "train", "loss": 1.0}, step=1)
    assert sorted(p.name for p in paths.root.iterdir()) == ["metrics.jsonl"]
    assert json.loads(paths.metrics.read_text())["loss"] == 1.0


def test_job_identity_from_sweep_layout(compose, tmp_path):
    run_dir = tmp_path / "multirun" / "my-sweep" / "method=sft,seed=1"  # cft.config.job_dir
    cfg = compose(["method=sft"], run_dir=run_dir)
    assert job_identity(cfg, run_dir) == ("my-sweep", f"{cfg.run_name}/method=sft,seed=1")
    cfg.tracking.group = "ablation-A"
    assert job_identity(cfg, run_dir)[0] == "ablation-A"


def test_offline_run_logs_metrics_results_and_resumes_same_id(compose, tmp_path, monkeypatch):
    """A W&B offline run in the run dir holds the training rows and eval results; re-running
    the job reuses the id stored in the run dir."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-FAKE-tracking-0123456789")
    cfg = compose(["tracking.mode=offline", "method=sft"])
    paths = RunPaths.of(cfg.run_dir)
    paths.root.mkdir(parents=True)
    with track(cfg, paths):
        for step, loss in [(1, 3.0), (2, 2.5)]:
            log_metrics(paths.metrics, {"stage": "train", "loss": loss, "learning_rate": 1e-3}, step=step)
        (paths.eval_dir).mkdir()
        (paths.eval_samples("math-500")).write_text(json.dumps(
            {"idx": 0, "question": "1+1?", "prediction": "2", "reference": "2", "verdict": "equal"}) + "\n")
        (paths.eval_results).write_text(json.dumps({"benchmarks": {"math-500": {"accuracy": 100.0}}}))
        paths.results.write_text(json.dumps({"accuracy": {"math-500": 100.0}, "average": 100.0,
                                             "n": {"math-500": 1}}))
    run_id = (paths.root / RUN_ID_FILE).read_text().strip()
    with track(cfg, paths):
        pass
    assert "wandb" not in sys.modules or sys.modules["wandb"].run is None
    record = read_run(paths.root)
    # Both starts use the stored id (two offline dirs, or one when both start in the same second).
    assert record["runs"] and {r["id"] for r in record["runs"]} == {run_id}
    losses = [(h["train/global_step"], h["train/loss"]) for h in record["history"] if "train/loss" in h]
    assert losses == [(1, 3.0), (2, 2.5)]
    assert any("train/samples_per_s" in h for h in record["history"])
    assert record["summary"]["eval/math-500/accuracy"] == 100.0
    assert record["summary"]["eval/math-500/predictions/nrows"] == 1
    assert record["config"]["teacher"]["api_key_env"] == "OPENAI_API_KEY"
    assert_no_secret(paths.root, "sk-test-FAKE-tracking")
