"""Model + tokenizer loading: one loaded tokenizer is used everywhere in a run.

(transformers 5 reloads a qwen2 tokenizer directory as Qwen2Tokenizer and swaps its
pre-tokenizer, so ids can differ from the tokenizer that was trained; we therefore always load
tokenizers with PreTrainedTokenizerFast from the model directory's tokenizer.json when it
has one and the model is our own tiny build.)
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
          "float16": "float16", "fp16": "float16"}


def flash_attn_usable() -> bool:
    """Whether flash-attn's varlen kernel loads here. Importing the function loads the compiled
    extension (flash_attn_2_cuda): a wheel built for another torch or CUDA imports as a package
    (find_spec finds it) and then fails with an undefined symbol at the first forward, after the
    data and critique stages were paid for (issue #20 S5). Any failure means "not usable"."""
    try:
        from flash_attn import flash_attn_varlen_func  # noqa: F401
    except Exception as e:  # ImportError, OSError (undefined symbol), RuntimeError (no CUDA)
        if importlib.util.find_spec("flash_attn") is not None:
            print(f"[cft] flash-attn is installed but does not load ({type(e).__name__}: {e}); using "
                  f"PyTorch attention instead", flush=True)
        return False
    return True


def attn_implementation(requested: str, training: bool = False, cuda: bool | None = None,
                        flash: bool | None = None) -> str:
    """`auto` -> flash_attention_2 where flash-attn loads on a GPU; on a GPU without it,
    flex_attention for training (a block-sparse mask, so `model.packing=auto` still packs) and
    sdpa for generation; sdpa on CPU (flex has no CPU backward)."""
    if requested != "auto":
        return requested
    if cuda is None:
        import torch

        cuda = torch.cuda.is_available()
    if not cuda:
        return "sdpa"
    if flash if flash is not None else flash_attn_usable():
        return "flash_attention_2"
    return "flex_attention" if training else "sdpa"


def model_source(model_cfg, cache: str) -> str:
    """Where the base weights live: the HF id / local path, or the cached tiny build."""
    if model_cfg.init == "random":
        from omegaconf import OmegaConf

        from cft.tiny import build_tiny

        arch = OmegaConf.to_container(model_cfg.arch) if OmegaConf.is_config(model_cfg.arch) else dict(model_cfg.arch)
        return str(build_tiny(arch, cache))
    return model_cfg.path


def load_tokenizer(source: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    tok_file = Path(source) / "tokenizer.json"
    cfg_file = Path(source) / "tokenizer_config.json"
    if tok_file.exists() and cfg_file.exists() and '"PreTrainedTokenizerFast"' in cfg_file.read_text():
        tokenizer = PreTrainedTokenizerFast.from_pretrained(source)
    else:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def torch_dtype(model_cfg):
    """model.dtype as a torch dtype (float16 becomes float32 without CUDA: CPU fp16 is unusable)."""
    import torch

    dtype = DTYPES.get(model_cfg.dtype)
    if dtype is None:
        raise ValueError(f"model.dtype={model_cfg.dtype!r}; known: {sorted(DTYPES)}")
    if not torch.cuda.is_available() and dtype == "float16":
        dtype = "float32"
    return getattr(torch, dtype)


def load_model(source: str, model_cfg, fp32_master: bool = False, training: bool = False):
    """The model in model.dtype, or in float32 when `fp32_master`: training without DeepSpeed has
    no fp32 master copy, and bf16 weights cannot take lr-5e-6 updates (most round to zero), so
    the weights stay fp32 and the Trainer's bf16 autocast does the mixed precision."""
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(
        source, dtype=torch.float32 if fp32_master else torch_dtype(model_cfg),
        attn_implementation=attn_implementation(model_cfg.attn_implementation, training),
        trust_remote_code=model_cfg.trust_remote_code, use_safetensors=uses_safetensors(model_cfg),
    )


def uses_safetensors(model_cfg) -> bool:
    """model.weights: safetensors by default; "bin" for a model that ships only pytorch_model*.bin
    (transformers then loads them with torch.load(weights_only=True): tensors, no code)."""
    weights = getattr(model_cfg, "weights", "safetensors")
    if weights not in ("safetensors", "bin"):
        raise ValueError(f"model.weights={weights!r}; known: safetensors, bin")
    return weights == "safetensors"
