"""Parameter-efficient fine-tuning (`peft=lora | qlora`) through the `peft` library.

LoRA (Hu et al. 2021) freezes the base model and trains low-rank adapters beside its linear
layers; QLoRA (Dettmers et al. 2023) holds the frozen base in 4-bit NF4 (bitsandbytes) under
the same adapters. What this module adds to the train stage: the LoraConfig from `cfg.peft`,
wrapping the loaded model, and the run's final model/: the adapter merged into the base
(cft.models.merge_adapter), a plain HF model, with the adapter itself kept in model/adapter/.

Precision: the frozen base stays in model.dtype (its weights never update, so they need no
fp32 master copy), the adapters are fp32 (peft's autocast_adapter_dtype) and the Trainer's bf16
autocast does the mixed precision. A checkpoint holds the adapter, optimizer, scheduler, RNG and
data position (the Trainer's own PEFT support), so a killed run resumes exactly, as a full one.
"""
from __future__ import annotations

from pathlib import Path

METHODS = ("none", "lora", "qlora")
ADAPTER_DIR = "adapter"  # model/adapter/: the trained adapter, beside the merged weights


def enabled(cfg) -> bool:
    return cfg.get("peft") is not None and cfg.peft.name != "none"


def quantization(cfg):
    """The base weights' 4-bit format for peft=qlora, else None."""
    from cft.models import nf4_config

    return nf4_config(cfg.model) if enabled(cfg) and cfg.peft.name == "qlora" else None


def check_runs_here(cfg) -> None:
    """Before any work (cft.pipeline.check_packages): peft=lora needs peft; peft=qlora also needs
    bitsandbytes and a CUDA GPU. Counted through NVML (cft.resources.detect_gpus), so no CUDA
    context is created before vLLM may start in this process."""
    import importlib.util

    from cft.validation import ConfigError

    if not enabled(cfg) or "train" not in cfg.stages:
        return
    if importlib.util.find_spec("peft") is None:
        raise ConfigError(f'peft={cfg.peft.name} needs the peft library, which is not installed: '
                          f'pip install "cft[peft]"')
    if cfg.peft.name != "qlora":
        return
    from cft.resources import detect_gpus

    if not detect_gpus()[0]:
        raise ConfigError("peft=qlora needs a CUDA GPU and none is visible: its 4-bit NF4 base weights "
                          "(bitsandbytes) exist to fit a 7B model into one GPU's memory. Without a GPU "
                          "use peft=lora (the same adapters over full-precision weights)")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError('peft=qlora needs bitsandbytes for its 4-bit base weights: pip install "cft[gpu]"')


def lora_config(peft_cfg):
    from peft import LoraConfig

    targets = list(peft_cfg.target_modules)
    return LoraConfig(r=int(peft_cfg.r), lora_alpha=int(peft_cfg.alpha), lora_dropout=float(peft_cfg.dropout),
                      # peft takes its all-linear shorthand as a string only
                      target_modules="all-linear" if targets == ["all-linear"] else targets,
                      modules_to_save=list(peft_cfg.modules_to_save) or None, bias="none",
                      task_type="CAUSAL_LM")


def wrap(model, cfg):
    """The loaded base model with trainable adapters, every base weight frozen. Gradient
    checkpointing over a frozen embedding needs inputs that require grad, or the recomputed
    blocks would get no gradient (`enable_input_require_grads`); for QLoRA peft's
    prepare_model_for_kbit_training does that and keeps norms and embeddings in fp32."""
    from peft import get_peft_model, prepare_model_for_kbit_training

    if cfg.peft.name == "qlora":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=bool(cfg.model.gradient_checkpointing),
                                                gradient_checkpointing_kwargs={"use_reentrant": False})
    elif cfg.model.gradient_checkpointing:
        model.enable_input_require_grads()
    from transformers import set_seed

    set_seed(cfg.seed)  # A's random init: the same command gives the same adapters (B starts at 0)
    return get_peft_model(model, lora_config(cfg.peft))


def parameter_counts(model) -> dict:
    """Trainable and total parameters (4-bit weights counted as parameters, not bytes)."""
    trainable, total = model.get_nb_trainable_parameters()
    return {"trainable_params": int(trainable), "total_params": int(total)}


def release(trainer) -> None:
    """Drop the Trainer's model and optimizer before the final merge loads the base again (on a
    24 GB GPU the QLoRA merge needs the memory training held)."""
    from cft.models import _free_gpu_memory

    trainer.accelerator.free_memory()
    trainer.model = trainer.model_wrapped = trainer.optimizer = trainer.lr_scheduler = None
    _free_gpu_memory()


def save_merged(adapter_dir: Path, out: Path, source: str, cfg) -> None:
    """model/: the adapter saved at `adapter_dir` (out/adapter) merged into the base at `source`."""
    from cft.models import merge_adapter

    merge_adapter(adapter_dir, source, cfg.model, out, quantization(cfg))
