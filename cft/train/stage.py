"""The `train` stage: format -> tokenize (prompt-masked) -> HF Trainer -> HF-format weights.

We use transformers' Trainer (optimizer, cosine schedule, gradient accumulation, checkpoint
state incl. RNG and data position, DeepSpeed/torchrun integration) rather than a hand loop.
Around it: padding-free packing (packing.py), the DeepSpeed JSON generated from the config
(deepspeed.py), crash-safe checkpoints that resume only a matching config (cft/checkpoints.py), and
one code path for 1 process / torchrun / srun (distributed.py).
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Iterator

from cft.records import is_verified, response_polarity
from cft.io import iter_jsonl, write_json
from cft.paths import RunPaths
from cft.tracking import RUN_ID_FILE, log_metrics
from cft import checkpoints as ckpt
from cft.train import adapters
from cft.train import dataset as tokenized
from cft.train.format import example, prepare_tokenizer
from cft.train.packing import attn_of, make_collator, packing_enabled, prepare_model


def training_inputs(cfg, paths: RunPaths) -> list[Path]:
    """The files training_rows reads: their content is part of the tokenized data's key."""
    critiques = cfg.method.target in ("critique", "teacher_solution")
    return [paths.critiques] * critiques + [sft_pairs_file(cfg, paths)] * (not critiques or cfg.method.sft_ratio > 0)


def sft_pairs_file(cfg, paths: RunPaths) -> Path:
    """The records the SFT pairs come from: the run's own, or for a mix with another SFT set
    (method.sft_records, e.g. an AceMath run's data/records.jsonl) that file."""
    if cfg.method.target in ("critique", "teacher_solution") and cfg.method.get("sft_records"):
        return Path(cfg.method.sft_records)
    return paths.records


def training_rows(cfg, paths: RunPaths, tokenizer=None) -> Iterator[dict]:
    """The examples a method trains on, streamed row by row (cft/train/dataset.py tokenizes them
    as they come; only the polarity draw holds the critiques in memory): critiques for cft /
    sft-teacher, records otherwise, and for `method.sft_ratio > 0` critiques plus that share of
    SFT pairs (see mix_sft); with `method.wrong_fraction` the critiques are a fixed-size mix by
    polarity (polarity_sample)."""
    if cfg.method.target in ("critique", "teacher_solution"):
        rows = iter_jsonl(paths.critiques)
    else:
        rows = _sft_records(cfg, paths)
    if cfg.method.wrong_fraction is not None:
        rows = list(rows)
        if rows:
            rows = polarity_sample(rows, cfg.method.wrong_fraction, cfg.method.polarity_size, cfg.seed)
    if cfg.method.get("max_target_ratio") is not None:  # CFT-Short
        rows = length_matched(rows, cfg.method.max_target_ratio, tokenizer)
    n = 0
    for row in rows:
        ex = example(row, cfg.method.target)
        if "polarity" in row:  # the polarity ablation's draw, for the train summary
            ex["polarity"] = row["polarity"]
        yield ex
        n += 1
    if not n:
        raise ValueError(f"method {cfg.method.name}: no training rows (see {paths.root}/data, "
                         f"{paths.critique_dir}); e.g. no verified responses or all critiques rejected")
    if cfg.method.sft_ratio > 0:
        yield from mix_sft(n, sft_pairs_file(cfg, paths), cfg.method.keep == "verified", cfg.method.sft_ratio,
                           cfg.seed)


def length_matched(rows, ratio: float, tokenizer) -> Iterator[dict]:
    """CFT-Short (the paper's Table 10: "we select WebInstruct data with token lengths similar
    to standard SFT training data"): the critique rows whose critique has at most `ratio` times
    the tokens of the response it critiques, i.e. of that record's SFT target; the paper gives
    neither its length criterion nor its size, this rule is ours. Tokens are the run's own."""
    if tokenizer is None:
        raise ValueError("method.max_target_ratio counts tokens: training_rows needs the run's tokenizer")
    seen = kept = 0
    for row in rows:
        seen += 1
        critique, response = (tokenizer(row[k], add_special_tokens=False)["input_ids"]
                              for k in ("critique", "noisy_response"))
        if len(critique) <= ratio * len(response):
            kept += 1
            yield row
    print(f"[cft] train: method.max_target_ratio={ratio:g} kept {kept} of {seen} critiques (at most "
          f"{ratio:g}x the tokens of the response they critique)", flush=True)


def _sft_records(cfg, paths: RunPaths) -> Iterator[dict]:
    return (r for _, r in _sft_lines(paths.records, cfg.method.keep == "verified"))


def _sft_lines(records: Path, verified: bool) -> Iterator[tuple[int, dict]]:
    """(byte offset, record) of each record with a response (judged correct, for `verified`)."""
    offset = 0
    with open(records, "rb") as f:
        for raw in f:
            if raw.strip():
                r = json.loads(raw)
                if r.get("noisy_response") and (not verified or is_verified(r)):
                    yield offset, r
            offset += len(raw)


def mix_sft(n_critiques: int, records: Path, verified: bool, ratio: float, seed: int) -> Iterator[dict]:
    """SFT examples (question -> response) to add so they make up `ratio` of the mixed set: a
    seeded draw of the records with a response, read back by byte offset (random.sample over
    their positions picks what it picked over the records themselves, which are not in memory).

    Each record gives at most one example, so a ratio the records cannot fill raises rather
    than silently training on a different mix.
    """
    import random

    n = round(n_critiques * ratio / (1.0 - ratio))
    offsets = [offset for offset, _ in _sft_lines(records, verified)]
    if n > len(offsets):
        most = len(offsets) / (len(offsets) + n_critiques)
        raise ValueError(f"method.sft_ratio={ratio}: needs {n} SFT pairs but only {len(offsets)} "
                         f"records have a response; the most these data allow is {most:.3f}")
    with open(records, "rb") as f:
        for i in random.Random(seed).sample(range(len(offsets)), n):
            f.seek(offsets[i])
            r = json.loads(f.readline())
            yield dict(example(r, "response"), id=f"sft:{r['id']}")


def polarity_sample(rows: list[dict], wrong_fraction: float, size: int | None, seed: int) -> list[dict]:
    """`size` critique rows of which round(wrong_fraction * size) critique wrong responses and the
    rest right ones (cft.records.response_polarity; rows of unknown polarity are never drawn).
    size None: the smaller of the two counts, so every fraction of a sweep trains on as many.

    Each polarity is drawn from its own seeded shuffle, so at one seed a larger fraction keeps
    the wrong-response critiques of a smaller one. Data that cannot fill the mix raise.
    """
    import random

    by = {v: [r for r in rows if response_polarity(r) == v] for v in ("right", "wrong")}
    size = min(len(by["right"]), len(by["wrong"])) if size is None else size
    want = {"wrong": round(wrong_fraction * size)}
    want["right"] = size - want["wrong"]
    short = [v for v in by if want[v] > len(by[v])]
    if short or size < 1:
        raise ValueError(f"method.wrong_fraction={wrong_fraction} with method.polarity_size={size}: needs "
                         f"{want['wrong']} critiques of wrong and {want['right']} of right responses, the data have "
                         f"{len(by['wrong'])} and {len(by['right'])} ({len(rows) - len(by['wrong']) - len(by['right'])} "
                         f"of unknown polarity); lower method.polarity_size (null: the most every fraction allows)")
    picked = [dict(r, polarity=v) for v in ("wrong", "right")
              for r in random.Random(f"{seed}:{v}").sample(by[v], len(by[v]))[: want[v]]]
    random.Random(seed).shuffle(picked)
    return picked


def _metrics_callback(metrics_path: Path):
    from transformers import TrainerCallback

    class MetricsJsonl(TrainerCallback):
        """Always-on local log (metrics.jsonl); W&B is optional on top of it."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero and logs:
                log_metrics(metrics_path, {"stage": "train", **logs}, step=state.global_step)

    return MetricsJsonl()


def _declare_dtype_callback(dtype: str):
    """Without DeepSpeed the Trainer holds (and checkpoint-N/ stores) fp32 master weights, and
    save_pretrained writes `"dtype": "float32"` into its config.json. Loaders that follow the
    config then score another model than the one trained: vLLM's dtype=auto turns an fp32
    config into its platform's first half type (fp16 before vLLM 0.10; vllm/config/model.py
    `_resolve_auto_dtype`), and Qwen2 can overflow in fp16. The weights stay fp32 (an exact
    resume needs them); the config declares model.dtype, the dtype the final model is saved in,
    before the COMPLETE marker is written (so this callback must come before that one)."""
    from transformers import TrainerCallback

    class DeclareDtype(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            config = Path(args.output_dir) / f"checkpoint-{state.global_step}" / "config.json"
            if state.is_world_process_zero and config.is_file():
                import json

                values = json.loads(config.read_text())
                values["dtype"] = dtype
                write_json(config, values)
            return control

    return DeclareDtype()


def _keep(cfg) -> int:
    """How many complete checkpoints rotation keeps; 0 = all when checkpoint selection picks
    among them, save_total_limit when weights-only snapshots are what it picks among."""
    selects_checkpoints = cfg.eval.select_checkpoint and not cfg.method.get("snapshot_steps")
    return 0 if selects_checkpoints else int(cfg.method.save_total_limit)


def _snapshot_writer(trainer, tokenizer, dtype, use_cache: bool, fp32_master: bool):
    """write(folder): the weights generation loads, as the final save writes them (below), and
    nothing else: the model in model.dtype (with fp32 master weights, a copy cast on the host,
    the training weights untouched), under DeepSpeed the 16-bit weights its save_model gathers
    (ZeRO-3 included), with peft the adapter; config and tokenizer beside them."""
    def write(folder: Path) -> None:
        if fp32_master:
            if trainer.is_world_process_zero():
                state = {k: v.detach().to("cpu", dtype) for k, v in trainer.model.state_dict().items()}
                trainer.model.save_pretrained(str(folder), state_dict=state)
                tokenizer.save_pretrained(str(folder))
        else:  # every rank: ZeRO-3 gathers; the main process writes
            trainer.save_model(str(folder))
        if trainer.is_world_process_zero():
            (folder / "training_args.bin").unlink(missing_ok=True)  # not weights; unpickled by nothing
            config = folder / "config.json"
            if config.is_file():  # no config.json beside an adapter
                values = json.loads(config.read_text())
                values.update(dtype=str(dtype).removeprefix("torch."), use_cache=use_cache)
                write_json(config, values)
    return write


def announce_snapshots(cfg, paths: RunPaths, source: str, max_steps: int) -> None:
    """Say what the snapshots will cost on disk, with the plan's arithmetic (cft.resources)."""
    from cft.resources import arch_of, describe_snapshots, snapshot_plan

    s = snapshot_plan(cfg, arch_of(source, cfg.model), max_steps)
    if s:
        print(f"[cft] train: {describe_snapshots(s)}; into {paths.snapshots}", flush=True)


def _tracker_run_id(paths: RunPaths) -> str | None:
    """This job's W&B run id (cft.tracking keeps it in the run dir), stored in each checkpoint's
    COMPLETE marker so a checkpoint copied elsewhere still names the run it belongs to."""
    id_file = paths.root / RUN_ID_FILE
    return id_file.read_text().strip() if id_file.exists() else None


def training_args(cfg, paths: RunPaths, world_size: int, use_cpu: bool):
    """TrainingArguments from the composed config (+ the generated DeepSpeed config, if any)."""
    from transformers import TrainingArguments

    from cft.validation import grad_accum_steps
    from cft.train.deepspeed import ds_config

    ds = ds_config(cfg, world_size, gpu=not use_cpu)
    return TrainingArguments(
        output_dir=str(paths.checkpoints),
        per_device_train_batch_size=cfg.model.per_device_batch_size,
        gradient_accumulation_steps=grad_accum_steps(cfg, world_size),
        learning_rate=cfg.method.lr,
        lr_scheduler_type=cfg.method.scheduler,
        warmup_steps=cfg.method.warmup_ratio,  # a float in [0, 1) is a ratio of total steps
        weight_decay=cfg.method.weight_decay,
        max_grad_norm=cfg.method.max_grad_norm,
        num_train_epochs=cfg.method.epochs,
        max_steps=cfg.method.max_steps,
        bf16=cfg.method.bf16 and not use_cpu,
        gradient_checkpointing=cfg.model.gradient_checkpointing,
        logging_steps=1,
        save_strategy="steps",
        save_steps=cfg.method.save_steps,
        save_total_limit=None,  # rotation happens after the COMPLETE marker (cft/checkpoints.py)
        report_to="none",
        seed=cfg.seed,
        data_seed=cfg.seed,
        use_cpu=use_cpu,
        deepspeed=ds,
        remove_unused_columns=False,
        disable_tqdm=False,
    )


def run(cfg, paths: RunPaths) -> dict:
    import torch
    from transformers import Trainer

    from cft import distributed
    from cft.models import load_model, load_tokenizer, model_source, torch_dtype

    distributed.export_slurm_env()  # a multi-task srun without the pipeline in front of it
    rank, world_size = distributed.rank(), distributed.world_size()
    source = model_source(cfg.model, cfg.paths.cache)
    tokenizer = load_tokenizer(source, cfg.model.trust_remote_code)
    prepare_tokenizer(tokenizer, cfg.model.train_template)  # as LLaMA-Factory fixes it (stop words, pad)
    # Tokenized once per run by the main process; every rank reads it memory-mapped.
    dataset, data = tokenized.prepare(cfg, paths, tokenizer, lambda: training_rows(cfg, paths, tokenizer),
                                      training_inputs(cfg, paths))

    use_cpu = not torch.cuda.is_available()
    if int(cfg.deepspeed.stage) > 0:  # DeepSpeed needs a process group, even a group of one
        distributed.export_group_of_one()
    # Before the model: with ZeRO-3, TrainingArguments(deepspeed=...) makes from_pretrained
    # partition weights as they load instead of materialising the full model on every rank.
    args = training_args(cfg, paths, world_size, use_cpu)
    _ = args.device  # sets up torch.distributed now: ZeRO-3's zero.Init reads the world size
    if args.deepspeed:
        import deepspeed

        if torch.distributed.is_initialized():  # deepspeed.comm wraps the existing group
            deepspeed.init_distributed(dist_backend=torch.distributed.get_backend())
        ckpt.safe_deepspeed_load()
        if rank == 0:
            write_json(paths.deepspeed_json, args.hf_deepspeed_config.config)
    peft = adapters.enabled(cfg)  # a frozen base needs no fp32 master copy: it stays in model.dtype
    model = load_model(source, cfg.model, fp32_master=int(cfg.deepspeed.stage) == 0 and not peft, training=True,
                       quantization=adapters.quantization(cfg))
    if model.get_input_embeddings().num_embeddings < len(tokenizer):
        raise ValueError(f"model.train_template={cfg.model.train_template!r} adds special tokens "
                         f"{sorted(tokenizer.added_tokens_encoder)} to a tokenizer of {len(tokenizer)} "
                         f"tokens, more than the model's {model.get_input_embeddings().num_embeddings} embeddings")
    use_cache = prepare_model(model)
    attn = attn_of(model)
    packing = packing_enabled(cfg.model.packing, attn)
    if peft:  # checkpoint-N/ then holds the adapter, not the model
        model = adapters.wrap(model, cfg)

    # every rank computes the same key; the examples (not in memory) by their digest
    key = ckpt.resume_key(cfg, [{"examples_sha256": data["examples_sha256"]}])
    if rank == 0:
        for moved in ckpt.clean(paths.checkpoints, key):
            print(f"[cft] train: not resuming {moved}")
    last = ckpt.last_complete(paths.checkpoints, key)
    if rank == 0:
        for gone in ckpt.clean_snapshots(paths.snapshots, key):
            print(f"[cft] train: snapshot {gone} not kept", flush=True)
    # processing_class: every checkpoint-N/ holds the tokenizer, so vLLM (and anyone) can load a
    # checkpoint as it is (checkpoint selection on vLLM failed without it: issue #13).
    trainer = Trainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                      data_collator=make_collator(packing, tokenizer.pad_token_id, attn_of(model)),
                      callbacks=[_metrics_callback(paths.metrics),
                                 *([_declare_dtype_callback(str(torch_dtype(cfg.model)).removeprefix("torch."))]
                                   if int(cfg.deepspeed.stage) == 0 else []),
                                 ckpt.completion_callback(key, _keep(cfg), _tracker_run_id(paths))])
    if cfg.method.get("snapshot_steps"):
        write = _snapshot_writer(trainer, tokenizer, torch_dtype(cfg.model), use_cache,
                                 fp32_master=int(cfg.deepspeed.stage) == 0 and not peft)
        trainer.add_callback(ckpt.snapshot_callback(
            paths.snapshots, cfg.method.snapshot_steps, key, write, trainer.is_world_process_zero(),
            announce=lambda max_steps: announce_snapshots(cfg, paths, source, max_steps)))
    result = trainer.train(resume_from_checkpoint=str(last) if last else None)

    # Every rank calls save_model (ZeRO-3 gathers shards); only the main process writes.
    model.config.use_cache = use_cache
    if int(cfg.deepspeed.stage) == 0 and not peft:  # trained with fp32 master weights: save in model.dtype
        model.to(torch_dtype(cfg.model))
    tmp = paths.final_model.with_name(paths.final_model.name + ".tmp")
    if trainer.is_world_process_zero():
        shutil.rmtree(tmp, ignore_errors=True)
    # peft: model/adapter/ holds the adapter, model/ the adapter merged into the base
    trainer.save_model(str(tmp / adapters.ADAPTER_DIR if peft else tmp))
    counts = adapters.parameter_counts(model) if peft else {}
    if peft and trainer.is_world_process_zero():
        adapters.release(trainer)
        del model
        adapters.save_merged(tmp / adapters.ADAPTER_DIR, tmp, source, cfg)
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(str(tmp))
        shutil.rmtree(paths.final_model, ignore_errors=True)
        os.replace(tmp, paths.final_model)
    return {"n_examples": data["n_examples"], "n_sft_mixed": data["n_sft_mixed"],
            # method.wrong_fraction: how many critiques of wrong / right responses were drawn
            **({"n_wrong_critiques": data["polarity"].get("wrong", 0),
                "n_right_critiques": data["polarity"].get("right", 0)}
               if cfg.method.wrong_fraction is not None else {}),
            "n_truncated": data["n_truncated"],
            # over all steps, also those before a resume (result.training_loss: this process's only)
            "train_loss": ckpt.mean_logged_loss(trainer.state.log_history, default=result.training_loss),
            "global_step": result.global_step,
            "resumed_from": str(last) if last else None, "packing": packing,
            "attn_implementation": attn, "deepspeed_stage": int(cfg.deepspeed.stage),
            "world_size": world_size, "peft": cfg.peft.name, **counts}
