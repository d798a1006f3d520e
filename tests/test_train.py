"""The train stage: packed == padded training, the DeepSpeed JSON, config knobs.

Helpers here (`cft_rows`, `train_cfg`, `train`, `losses`) are shared by test_packing,
test_resume and test_distributed: tiny model, fp32, CPU, CFT-formatted CHAMP examples.
"""
from __future__ import annotations

import functools
import itertools
import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from cft.critique.teachers import ReferenceTeacher
from cft.datasets import load_records
from cft.io import read_jsonl, write_jsonl
from cft.paths import RunPaths
from cft.train.deepspeed import ds_config
from cft.train.stage import run as run_train
from cft.validation import ConfigError, validate
from helpers import ROOT


@functools.lru_cache(maxsize=None)
def _champ_cft_rows() -> tuple:
    """CFT rows (question, noisy response, reference-teacher critique) from real CHAMP records."""
    dataset = OmegaConf.load(ROOT / "conf" / "dataset" / "champ.yaml")
    teacher = ReferenceTeacher(None, {})
    rows = []
    for rec in itertools.islice(load_records(dataset), 200):
        rec = rec.to_dict() if hasattr(rec, "to_dict") else vars(rec)
        critique, finish = teacher._critique(rec)
        if finish == "stop":
            rows.append({"id": rec["id"], "question": rec["question"],
                         "noisy_response": rec["noisy_response"], "critique": critique})
    return tuple(rows)


def cft_rows(n: int, short: bool = True) -> list[dict]:
    """n CFT rows; `short` clips the texts (keeping their varied lengths, ~60-300 tiny-tokenizer
    tokens) so CPU tests stay fast."""
    rows = [dict(r) for r in _champ_cft_rows()[:n]]
    if short:
        for i, r in enumerate(rows):
            k = 80 + (i * 37) % 260
            r.update(question=r["question"][:k], noisy_response=r["noisy_response"][:k],
                     critique=r["critique"][: k // 2] + "\nConclusion: wrong [END]")
    return rows


TRAIN_OVERRIDES = ["model=tiny", "method=cft", "method.cutoff_len=512", "method.global_batch_size=8",
                   "model.per_device_batch_size=4", "method.max_steps=6", "method.save_steps=2",
                   "method.warmup_ratio=0.2", "model.packing=packed"]


def train_cfg(compose, run_dir: Path, *overrides, world_size: int = 1):
    return validate(compose([*TRAIN_OVERRIDES, *overrides], run_dir=run_dir), world_size=world_size)


def write_rows(run_dir: Path, n: int = 48) -> None:
    write_jsonl(RunPaths.of(run_dir).critiques, cft_rows(n))


def train(cfg) -> dict:
    paths = RunPaths.of(cfg.run_dir)
    if not paths.critiques.exists():
        write_rows(paths.root)
    return run_train(cfg, paths)


def losses(run_dir: Path) -> dict[int, dict]:
    """step -> the training log row (loss, learning_rate, grad_norm) of metrics.jsonl; a later
    row wins."""
    return {row["step"]: row for row in read_jsonl(RunPaths.of(run_dir).metrics) if "loss" in row}


# --- packed vs padded through the Trainer -------------------------------------------------------
def test_packed_and_padded_training_give_the_same_losses(compose, tmp_path):
    """A user switching model.packing sees the same loss curve (fp32, CPU): <= 1e-5 abs."""
    packed = train(train_cfg(compose, tmp_path / "packed", "method.max_steps=3"))
    padded = train(train_cfg(compose, tmp_path / "padded", "method.max_steps=3", "model.packing=padded"))
    assert packed["packing"] is True and padded["packing"] is False
    a, b = losses(tmp_path / "packed"), losses(tmp_path / "padded")
    assert sorted(a) == sorted(b) == [1, 2, 3]
    for step in a:
        assert abs(a[step]["loss"] - b[step]["loss"]) <= 1e-5, (step, a[step], b[step])
        assert abs(a[step]["grad_norm"] - b[step]["grad_norm"]) <= 1e-4
    assert (RunPaths.of(tmp_path / "packed").final_model / "model.safetensors").exists()


@pytest.mark.parametrize("select,kept", [(False, [8, 10]), (True, [2, 4, 6, 8, 10])])
def test_default_saves_five_checkpoints_and_selection_keeps_them_all(compose, tmp_path, select, kept):
    """save_steps=0.2 (the default) is a share of the run, so a 10-step run saves every 2 steps;
    rotation keeps save_total_limit=2 of them unless eval.select_checkpoint must pick among all."""
    train(train_cfg(compose, tmp_path / "r", "method.max_steps=10", "method.save_steps=0.2",
                    f"eval.select_checkpoint={str(select).lower()}"))
    saved = sorted(int(p.name.split("-")[1]) for p in RunPaths.of(tmp_path / "r").checkpoints.glob("checkpoint-*"))
    assert saved == kept


@pytest.mark.parametrize("model,zero", [("qwen2.5-math-7b", "zero2"), ("qwen2.5-7b", "zero2"),
                                        ("deepseek-math", "zero2"), ("qwen2.5-32b-instruct", "zero3"),
                                        ("tiny", "none")])
def test_bf16_models_train_under_zero_by_default(compose, model, zero):
    """ZeRO keeps fp32 master weights; the command line still wins (deepspeed=none)."""
    assert compose([f"model={model}"]).deepspeed.name == zero
    assert compose([f"model={model}", "deepspeed=none"]).deepspeed.name == "none"


def test_without_deepspeed_bf16_weights_train_in_fp32_and_save_in_bf16(compose, tmp_path):
    """No DeepSpeed = no fp32 master copy: bf16 weights would drop most lr-5e-6 updates, so the
    Trainer gets fp32 weights (checkpoints hold them, for an exact resume) and the final model is
    saved in model.dtype, the dtype every checkpoint's config.json declares (issue #20 item 5)."""
    import torch
    from safetensors.torch import load_file

    train(train_cfg(compose, tmp_path / "r", "model.dtype=bfloat16", "method.max_steps=1"))
    paths = RunPaths.of(tmp_path / "r")

    def dtypes(path):
        return {t.dtype for t in load_file(str(path)).values()}

    assert dtypes(paths.checkpoints / "checkpoint-1" / "model.safetensors") == {torch.float32}
    # ... but it declares bf16, so checkpoint selection on vLLM (dtype=auto follows config.json)
    # scores the bf16 model that the final weights are, not an fp16 cast of fp32 weights.
    assert json.loads((paths.checkpoints / "checkpoint-1" / "config.json").read_text())["dtype"] == "bfloat16"
    assert dtypes(paths.final_model / "model.safetensors") == {torch.bfloat16}
    config = json.loads((paths.final_model / "config.json").read_text())
    # Training switches the KV cache off (packing needs it); the saved model must not keep that.
    assert config["dtype"] == "bfloat16" and config["use_cache"] is True


# --- the DeepSpeed JSON ---------------------------------------------------------------------------
@pytest.mark.parametrize("option,stage", [("zero2", 2), ("zero3", 3)])
def test_deepspeed_json_agrees_with_the_trainer(compose, option, stage):
    cfg = validate(compose(["model=qwen2.5-7b", f"deepspeed={option}"]), world_size=8)
    ds = ds_config(cfg, world_size=8, gpu=True)
    assert ds["zero_optimization"]["stage"] == stage
    assert ds["train_micro_batch_size_per_gpu"] == cfg.model.per_device_batch_size == 8
    assert ds["gradient_accumulation_steps"] == 512 // (8 * 8)
    assert ds["train_batch_size"] == 512
    assert ds["bf16"]["enabled"] is True and ds["fp16"]["enabled"] is False
    assert ds["gradient_clipping"] == cfg.method.max_grad_norm
    assert "auto" not in json.dumps(ds)
    # bf16 is off where there is no GPU, whatever the recipe says.
    assert ds_config(cfg, world_size=8, gpu=False)["bf16"]["enabled"] is False


def test_deepspeed_none_is_off_and_offload_reaches_the_json(compose):
    cfg = validate(compose(["model=qwen2.5-7b", "deepspeed=none"]))
    assert cfg.deepspeed.name == "none" and ds_config(cfg, 1, gpu=True) is None
    off = validate(compose(["model=qwen2.5-7b", "deepspeed=zero3", "deepspeed.offload_optimizer=cpu",
                            "deepspeed.offload_param=cpu"]), world_size=8)
    ds = ds_config(off, 8, gpu=True)
    assert ds["zero_optimization"]["offload_param"]["device"] == "cpu"
    assert ds["optimizer"]["params"]["lr"] == off.method.lr  # offload needs DeepSpeed's CPU Adam


def test_deepspeed_json_follows_the_world_size_it_runs_on(compose):
    """Accumulation is derived for the world size at hand (a requeue on 4 GPUs keeps the global
    batch of 512); one the global batch cannot split over fails naming the keys."""
    cfg = validate(compose(["model=qwen2.5-7b", "deepspeed=zero2"]), world_size=8)
    ds = ds_config(cfg, world_size=4, gpu=True)
    assert (ds["gradient_accumulation_steps"], ds["train_batch_size"]) == (16, 512)
    with pytest.raises(ConfigError, match="global_batch_size=512 is not divisible by world_size \\(3\\)"):
        ds_config(cfg, world_size=3, gpu=True)


# --- launch environment ---------------------------------------------------------------------------
def test_rank_and_world_size_agree_under_every_launcher():
    """torchrun's variables win; a multi-task srun gives rank AND world size from SLURM (rank 3 of
    8, never "not rank 0" with a world of 1); a one-task SLURM job or none is rank 0 of 1."""
    from cft.distributed import is_main, rank, world_size

    srun = {"SLURM_PROCID": "3", "SLURM_NTASKS": "8", "SLURM_LOCALID": "3", "SLURM_JOB_ID": "1234"}
    assert (rank(srun), world_size(srun), is_main(srun)) == (3, 8, False)
    torchrun = {"RANK": "1", "WORLD_SIZE": "2", "SLURM_PROCID": "0", "SLURM_NTASKS": "1"}
    assert (rank(torchrun), world_size(torchrun)) == (1, 2)
    assert (rank({"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}), world_size({})) == (0, 1)
