"""The DeepSpeed JSON, generated from the composed config (conf/deepspeed/*.yaml + model + method).

Batch sizes, accumulation, clipping and precision come from the same values the Trainer gets,
so they can never disagree (HF's DeepSpeed integration would also refuse a mismatch). No
"auto" values: the file in the run dir is exactly what ran. The optimizer and LR schedule stay
the Trainer's (torch AdamW + cosine), which ZeRO-2/3 wrap, except with optimizer offload, which
needs DeepSpeed's CPU Adam (declared here with the same hyper-parameters).
"""
from __future__ import annotations


def ds_config(cfg, world_size: int, gpu: bool) -> dict | None:
    """DeepSpeed config dict for cfg (None when deepspeed.stage == 0)."""
    ds, m = cfg.deepspeed, cfg.method
    if int(ds.stage) == 0:
        return None
    from cft.validation import grad_accum_steps

    micro = int(cfg.model.per_device_batch_size)
    accum = grad_accum_steps(cfg, world_size)  # raises, naming the keys, if it does not divide
    bf16 = bool(m.bf16) and gpu
    zero: dict = {
        "stage": int(ds.stage),
        "overlap_comm": bool(ds.overlap_comm),
        "contiguous_gradients": bool(ds.contiguous_gradients),
        "reduce_bucket_size": int(ds.reduce_bucket_size),
    }
    if int(ds.stage) == 2:
        zero["allgather_bucket_size"] = int(ds.allgather_bucket_size)
    if ds.offload_optimizer != "none":
        zero["offload_optimizer"] = {"device": ds.offload_optimizer, "pin_memory": gpu}
    if int(ds.stage) == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = bool(ds.stage3_gather_16bit_weights_on_model_save)
        if ds.offload_param != "none":
            zero["offload_param"] = {"device": ds.offload_param, "pin_memory": gpu}
    out = {
        "train_micro_batch_size_per_gpu": micro,
        "gradient_accumulation_steps": accum,
        "train_batch_size": int(m.global_batch_size),
        "gradient_clipping": float(m.max_grad_norm),
        "bf16": {"enabled": bf16},
        "fp16": {"enabled": False},
        "zero_optimization": zero,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if ds.offload_optimizer != "none":
        out["optimizer"] = {"type": "AdamW", "params": {
            "lr": float(m.lr), "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": float(m.weight_decay)}}
    return out
