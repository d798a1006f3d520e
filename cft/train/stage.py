"""The `train` stage: format -> tokenize (prompt-masked) -> HF Trainer -> HF-format weights.

We use transformers' Trainer (optimizer, cosine schedule, gradient accumulation, checkpoint
state incl. RNG and data position, DeepSpeed/torchrun integration) rather than a hand loop.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from cft.io import read_jsonl, write_jsonl
from cft.paths import RunPaths
from cft.tracking import log_metrics
from cft.train.format import IGNORE_INDEX, example, tokenize


def training_rows(cfg, paths: RunPaths) -> list[dict]:
    """The rows a method trains on: critiques for cft / sft-teacher, records otherwise."""
    if cfg.method.target in ("critique", "teacher_solution"):
        rows = read_jsonl(paths.critiques)
    else:
        rows = read_jsonl(paths.records)
        rows = [r for r in rows if r.get("noisy_response")]
        if cfg.method.keep == "verified":
            rows = [r for r in rows if r["response_correct"] == "right"]
    if not rows:
        raise ValueError(f"method {cfg.method.name}: no training rows (see {paths.root}/data, "
                         f"{paths.critique_dir}); e.g. no verified responses or all critiques rejected")
    return [example(r, cfg.method.target) for r in rows]


class PadCollator:
    """Right-pads a batch; pad labels are IGNORE_INDEX so they carry no loss."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, features: list[dict]) -> dict:
        import torch

        n = max(len(f["input_ids"]) for f in features)
        ids = torch.full((len(features), n), self.pad_id, dtype=torch.long)
        labels = torch.full((len(features), n), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(features), n), dtype=torch.long)
        for i, f in enumerate(features):
            k = len(f["input_ids"])
            ids[i, :k] = torch.tensor(f["input_ids"])
            labels[i, :k] = torch.tensor(f["labels"])
            mask[i, :k] = 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def _metrics_callback(metrics_path: Path):
    from transformers import TrainerCallback

    class MetricsJsonl(TrainerCallback):
        """Always-on local log (metrics.jsonl); W&B is optional on top of it."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero and logs:
                log_metrics(metrics_path, {"stage": "train", **logs}, step=state.global_step)

    return MetricsJsonl()


def run(cfg, paths: RunPaths) -> dict:
    import torch
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments
    from transformers.trainer_utils import get_last_checkpoint

    from cft.train.model import load_model, load_tokenizer, model_source

    source = model_source(cfg.model, cfg.paths.cache)
    tokenizer = load_tokenizer(source, cfg.model.trust_remote_code)
    examples = training_rows(cfg, paths)
    write_jsonl(paths.train_examples, examples)
    features = [tokenize(ex, tokenizer, cfg.model.train_template, cfg.method.cutoff_len)
                for ex in examples]
    n_truncated = sum(f.pop("truncated") for f in features)
    dataset = Dataset.from_list(features)

    model = load_model(source, cfg.model)
    use_cpu = not torch.cuda.is_available()
    args = TrainingArguments(
        output_dir=str(paths.checkpoints),
        per_device_train_batch_size=cfg.model.per_device_batch_size,
        gradient_accumulation_steps=cfg.method.grad_accum_steps,
        learning_rate=cfg.method.lr,
        lr_scheduler_type=cfg.method.scheduler,
        warmup_steps=cfg.method.warmup_ratio,  # a float in [0, 1) is a ratio of total steps
        weight_decay=cfg.method.weight_decay,
        num_train_epochs=cfg.method.epochs,
        max_steps=cfg.method.max_steps,
        bf16=cfg.method.bf16 and not use_cpu,
        gradient_checkpointing=cfg.model.gradient_checkpointing,
        logging_steps=1,
        save_strategy="steps",
        save_steps=max(1, cfg.method.max_steps // 2) if cfg.method.max_steps > 0 else 500,
        save_total_limit=2,
        report_to="none",
        seed=cfg.seed,
        data_seed=cfg.seed,
        use_cpu=use_cpu,
        remove_unused_columns=False,
        disable_tqdm=False,
    )
    trainer = Trainer(model=model, args=args, train_dataset=dataset,
                      data_collator=PadCollator(tokenizer.pad_token_id),
                      callbacks=[_metrics_callback(paths.metrics)])
    last = get_last_checkpoint(str(paths.checkpoints)) if paths.checkpoints.exists() else None
    result = trainer.train(resume_from_checkpoint=last)

    if trainer.is_world_process_zero():
        tmp = paths.final_model.with_name(paths.final_model.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        trainer.save_model(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        shutil.rmtree(paths.final_model, ignore_errors=True)
        os.replace(tmp, paths.final_model)
    return {"n_examples": len(examples), "n_truncated": n_truncated,
            "train_loss": result.training_loss, "global_step": result.global_step,
            "resumed_from": last}
