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


def run_weights(spec: str, output_root: str | None = None) -> tuple[Path, str]:
    """(the weights a finished run reports, an id of them) for `model.from_run`: its
    eval/selection.json's best when the run selected a checkpoint, else train/final.

    `spec` is a run directory, or `SWEEP key=value ...`: the one run under
    `output_root/multirun/SWEEP` whose config has those values, matched as the report matches
    runs (cft.config.matches: `model`, `method`, ... name the group's choice, numbers compare by
    value), e.g. "table2 model=qwen2.5-math-7b method=cft seed=42". No match, several, or a run
    without final weights is a ConfigError naming the key and what was found, raised before this
    run does any work (cft.pipeline.run). The id is a hash of the stage marker that vouches for
    the weights (eval's for a selected checkpoint, train's for train/final): it changes whenever
    that run retrains or reselects, even when the path stays the same."""
    from omegaconf import OmegaConf

    from cft.config import flatten, matches
    from cft.paths import RunPaths
    from cft.validation import ConfigError

    words = spec.split()
    if len(words) == 1 and "=" not in words[0]:
        found = [Path(words[0]).expanduser()] if Path(words[0]).expanduser().is_dir() else []
    else:
        if not words or "=" in words[0] or not all("=" in w for w in words[1:]):
            raise ConfigError(f"model.from_run={spec!r}: give a run directory or 'SWEEP key=value ...'")
        sweep = Path(output_root or ".") / "multirun" / words[0]
        wanted = dict(w.split("=", 1) for w in words[1:])
        runs = sorted(c.parent for c in sweep.glob("**/config.yaml") if (c.parent / "run_info.json").exists())
        found = [r for r in runs
                 if matches(flatten(OmegaConf.to_container(OmegaConf.load(r / "config.yaml"))), wanted)]
    if len(found) != 1:
        what = "no run" if not found else f"{len(found)} runs: {', '.join(map(str, found[:4]))}"
        raise ConfigError(f"model.from_run={spec!r} must name exactly one finished run; found {what} "
                          f"(run that table's command first)")
    return reported_weights(RunPaths.of(found[0]), spec)


def reported_weights(paths, spec: str) -> tuple[Path, str]:
    """(the weights a run reports, the hash of the marker that vouches for them), only once they
    are final: its selected checkpoint when the run selects one (its eval stage finished after its
    last training, so selection.json is about the weights that training wrote), else train/final
    once its train stage finished. Never a fallback from one to the other: a run still scoring its
    snapshots, or retrained since, is a ConfigError that says so."""
    import hashlib

    from omegaconf import OmegaConf

    from cft.io import read_json
    from cft.validation import ConfigError

    key = f"model.from_run={spec!r}"
    train_done = paths.stage_done("train")
    if not train_done.exists() or not (paths.final_model / "config.json").exists():
        raise ConfigError(f"{key}: {paths.root} has no trained weights yet (its train stage has not finished)")
    if not OmegaConf.select(OmegaConf.load(paths.resolved_config), "eval.select_checkpoint", default=False):
        weights, marker = paths.final_model, train_done
    else:
        marker = paths.stage_done("eval")
        if not marker.exists() or marker.stat().st_mtime < train_done.stat().st_mtime or not paths.selection.exists():
            raise ConfigError(f"{key}: {paths.root} selects a checkpoint, and its eval stage has not finished "
                              f"since its last training: wait for it (its reported weights are not known yet)")
        weights = Path(read_json(paths.selection)["best"]["path"])
        if not (weights / "config.json").exists():
            raise ConfigError(f"{key}: {paths.root}'s selected weights {weights} are missing")
    return weights, hashlib.sha256(marker.read_bytes()).hexdigest()[:16]


def model_source(model_cfg, cache: str) -> str:
    """Where the base weights live: the HF id / local path (another run's weights when
    model.from_run named them: cft.pipeline.run resolves it into model.path), or the cached tiny
    build."""
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


def load_model(source: str, model_cfg, fp32_master: bool = False, training: bool = False, quantization=None):
    """The model in model.dtype, or in float32 when `fp32_master`: training without DeepSpeed has
    no fp32 master copy, and bf16 weights cannot take lr-5e-6 updates (most round to zero), so
    the weights stay fp32 and the Trainer's bf16 autocast does the mixed precision.
    `quantization` (nf4_config): linear weights in 4-bit NF4, on this process's GPU when it has one."""
    import torch
    from transformers import AutoModelForCausalLM

    device_map = None
    if quantization is not None and torch.cuda.is_available():
        device_map = {"": torch.cuda.current_device()}  # bitsandbytes quantizes as the weights reach the GPU
    return AutoModelForCausalLM.from_pretrained(
        source, dtype=torch.float32 if fp32_master else torch_dtype(model_cfg),
        attn_implementation=attn_implementation(model_cfg.attn_implementation, training),
        trust_remote_code=model_cfg.trust_remote_code, use_safetensors=uses_safetensors(model_cfg),
        quantization_config=quantization, device_map=device_map,
    )


def nf4_config(model_cfg):
    """QLoRA's base-weight format (Dettmers et al. 2023): 4-bit NormalFloat with double
    quantization (about 4.13 bits per weight), computing in model.dtype."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch_dtype(model_cfg))


# --- adapters (peft=lora | qlora): what generation loads ---------------------------------------
ADAPTER_CONFIG = "adapter_config.json"  # peft's name for it (peft.utils.CONFIG_NAME)
MERGED = "merged"  # checkpoint-N/merged/: the adapter of checkpoint-N merged into the base


def is_adapter(path) -> bool:
    """A directory holding a PEFT adapter and no model of its own: checkpoint-N/ of a LoRA or
    QLoRA run, model/adapter/."""
    return (Path(path) / ADAPTER_CONFIG).is_file() and not (Path(path) / "config.json").is_file()


def merge_adapter(adapter_dir, base_source: str, model_cfg, out, quantization=None) -> Path:
    """The base model with the adapter at `adapter_dir` merged into its weights (W + B A alpha/r),
    saved into `out` as a plain HF model in model.dtype: what from_pretrained and vLLM load,
    without peft, at the base model's speed.

    With `quantization` (a QLoRA run) the adapter learned to correct the 4-bit NF4 weights, so it
    is merged into those weights dequantized to model.dtype, the weights training computed with;
    merging into the original bf16 weights would score another model (off by the quantization
    error), and merging into the 4-bit weights would round the update away. The NF4 base is
    quantized where training quantized it (this process's GPU). A LoRA base merges on the CPU, so
    no GPU memory is taken from the engines that generate next."""
    from peft import PeftModel

    base = load_model(base_source, model_cfg, quantization=quantization)
    if quantization is not None:
        base = base.dequantize()
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    merged.save_pretrained(str(out))
    if quantization is not None:  # the GPU copy goes before any engine claims the memory
        del base, merged
        _free_gpu_memory()
    return Path(out)


def generation_weights(path, cfg) -> str:
    """The directory generation loads for `path`: `path` itself when it holds a model; for an
    adapter checkpoint (checkpoint-N/ of a peft run), its adapter merged into the run's base
    model, written once to checkpoint-N/merged/ (with the checkpoint's tokenizer) and reused
    after, so a re-run finds the same files and the eval stage's stored generations."""
    import os
    import shutil

    path = Path(path)
    if not is_adapter(path):
        return str(path)
    merged = path / MERGED
    if not (merged / "config.json").is_file():
        tmp = path / (MERGED + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        peft = cfg.get("peft")
        merge_adapter(path, model_source(cfg.model, cfg.paths.cache), cfg.model, tmp,
                      nf4_config(cfg.model) if peft is not None and peft.name == "qlora" else None)
        load_tokenizer(str(path), cfg.model.trust_remote_code).save_pretrained(str(tmp))
        shutil.rmtree(merged, ignore_errors=True)  # a copy killed before its config.json
        os.replace(tmp, merged)
    return str(merged)


def _free_gpu_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def uses_safetensors(model_cfg) -> bool:
    """model.weights: safetensors by default; "bin" for a model that ships only pytorch_model*.bin
    (transformers then loads them with torch.load(weights_only=True): tensors, no code)."""
    weights = getattr(model_cfg, "weights", "safetensors")
    if weights not in ("safetensors", "bin"):
        raise ValueError(f"model.weights={weights!r}; known: safetensors, bin")
    return weights == "safetensors"
