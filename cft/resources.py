"""Hardware layout decisions, in one place: how many generation engines and what tensor-parallel
size, what a training step needs per GPU, and whether a run fits. The stages and
`python -m cft.plan` call the same functions, so the plan a user reads is the layout that runs.

Everything here is arithmetic on a model's architecture numbers (a known-model table, a
config.json, or `model.arch`): no torch at import, no GPU needed, so every decision is tested on
CPU. Memory is in GB = 1e9 bytes.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Sequence

from cft.validation import ConfigError, grad_accum_steps

GB = 1e9
DTYPE_BYTES = {"float32": 4, "fp32": 4, "float": 4, "bfloat16": 2, "bf16": 2, "float16": 2, "fp16": 2, "half": 2}
# vLLM memory outside weights and KV cache: CUDA context, CUDA graphs, the profile run's
# activations (vLLM logs each at start-up; the GPU check calibrates this figure).
ENGINE_OVERHEAD_GB = 2.0
# Training: CUDA context + NCCL, and a share for the caching allocator's fragmentation.
TRAIN_OVERHEAD_GB = 2.0
FRAGMENTATION = 0.05
# Benchmark prompts (MATH-500 etc. in the CoT templates) stay under this many tokens.
PROMPT_TOKENS = 1024
# QLoRA's NF4 with double quantization: 4 bits per weight + 0.127 bits of quantization constants
# (Dettmers et al. 2023, sec. 3); weights outside the blocks' linear layers stay unquantized.
NF4_BYTES = 4.127 / 8
# What `peft=lora` / `peft=qlora` compose to (conf/peft/*.yaml; tests/test_peft.py checks they
# agree), for plans that propose them: rank, dropout.
PEFT_PRESETS = {"lora": (16, 0.05), "qlora": (64, 0.1)}


@dataclass(frozen=True)
class Arch:
    """The architecture numbers the plan needs (config.json names)."""
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    intermediate_size: int
    vocab_size: int
    max_position_embeddings: int = 4096
    head_dim: int | None = None
    tie_word_embeddings: bool = False
    attention_bias: bool = False  # Qwen2: biases on q, k, v
    torch_dtype: str = "bfloat16"

    @classmethod
    def from_config(cls, config: dict) -> "Arch":
        c = dict(config)
        return cls(c["hidden_size"], c["num_hidden_layers"], c["num_attention_heads"],
                   c.get("num_key_value_heads") or c["num_attention_heads"], c["intermediate_size"],
                   c["vocab_size"], int(c.get("max_position_embeddings") or 4096), c.get("head_dim"),
                   bool(c.get("tie_word_embeddings", False)),
                   bool(c.get("attention_bias", c.get("model_type") == "qwen2")),
                   str(c.get("torch_dtype") or c.get("dtype") or "bfloat16"))

    @property
    def dim(self) -> int:
        return self.head_dim or self.hidden_size // self.num_attention_heads

    def layer_params(self) -> int:
        h, kv = self.hidden_size, self.num_key_value_heads * self.dim
        q = self.num_attention_heads * self.dim
        attn = h * q + 2 * h * kv + q * h + (q + 2 * kv if self.attention_bias else 0)
        return attn + 3 * h * self.intermediate_size + 2 * h  # gated MLP, two RMSNorms

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in, out) of each linear layer of a block, by its module name (Qwen2 / Llama)."""
        h, i = self.hidden_size, self.intermediate_size
        q, kv = self.num_attention_heads * self.dim, self.num_key_value_heads * self.dim
        return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}

    def adapted(self, targets: Sequence[str] = ("all-linear",)) -> list[tuple[int, int]]:
        """Shapes of the linear layers of one block that LoRA adapts (peft.target_modules)."""
        shapes = self.linear_shapes()
        return list(shapes.values()) if "all-linear" in targets else [shapes[t] for t in targets if t in shapes]

    def lora_params(self, rank: int, targets: Sequence[str] = ("all-linear",),
                    modules_to_save: Sequence[str] = ()) -> int:
        """Trainable parameters of LoRA: r x (in + out) per adapted layer (A is r x in, B out x r),
        plus full copies of modules_to_save (embed_tokens, lm_head)."""
        lora = self.num_hidden_layers * rank * sum(a + b for a, b in self.adapted(targets))
        saved = sum(self.vocab_size * self.hidden_size for m in modules_to_save if m in ("embed_tokens", "lm_head"))
        return lora + saved

    def n_params(self) -> int:
        embed = self.vocab_size * self.hidden_size
        return embed * (1 if self.tie_word_embeddings else 2) + self.num_hidden_layers * self.layer_params() \
            + self.hidden_size

    def largest_layer_params(self) -> int:
        return max(self.vocab_size * self.hidden_size, self.layer_params())

    def kv_bytes_per_token(self, dtype_bytes: int, tensor_parallel_size: int = 1) -> int:
        """K and V of one token on one GPU: 2 * layers * kv_heads * head_dim * bytes, the KV heads
        split over the tensor-parallel group (replicated, at least one per GPU, when fewer)."""
        kv_heads = max(1, self.num_key_value_heads // tensor_parallel_size)
        return 2 * self.num_hidden_layers * kv_heads * self.dim * dtype_bytes


def _arch(hidden, layers, heads, kv, inter, vocab, ctx, tied, bias=True):
    return Arch(hidden, layers, heads, kv, inter, vocab, ctx, None, tied, bias)


# Architectures of the models the recipes name, from their config.json on the hub, so the plan
# needs no download. max_position_embeddings is each model's own (Qwen2.5-Math and
# DeepSeek-Math: 4K).
KNOWN_ARCHS: dict[str, Arch] = {
    "Qwen/Qwen2.5-Math-7B": _arch(3584, 28, 28, 4, 18944, 152064, 4096, False),
    "Qwen/Qwen2.5-7B": _arch(3584, 28, 28, 4, 18944, 152064, 131072, False),
    "Qwen/Qwen2.5-32B-Instruct": _arch(5120, 64, 40, 8, 27648, 152064, 32768, False),
    "Qwen/Qwen2.5-Math-1.5B": _arch(1536, 28, 12, 2, 8960, 151936, 4096, True),
    "Qwen/Qwen2.5-1.5B": _arch(1536, 28, 12, 2, 8960, 151936, 131072, True),
    "deepseek-ai/deepseek-math-7b-base": _arch(4096, 30, 32, 32, 11008, 102400, 4096, False, bias=False),
}


def arch_of(source: str, model_cfg=None) -> Arch:
    """The architecture of `source`: `model.arch` for a model built from it (tiny), a local
    directory's config.json, the known-model table, or the HF cache's config.json (no network)."""
    if model_cfg is not None and model_cfg.get("init") == "random":
        from omegaconf import OmegaConf

        arch = model_cfg.arch
        return Arch.from_config(OmegaConf.to_container(arch) if OmegaConf.is_config(arch) else arch)
    local = Path(str(source)).expanduser() / "config.json"
    if local.is_file():
        return Arch.from_config(json.loads(local.read_text()))
    if source in KNOWN_ARCHS:
        return KNOWN_ARCHS[source]
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(str(source), "config.json")
        if isinstance(cached, str):
            return Arch.from_config(json.loads(Path(cached).read_text()))
    except Exception:  # a malformed id, or no huggingface_hub: fall through to the message
        pass
    raise ConfigError(f"the architecture of {source!r} is unknown to the resource plan: point "
                      f"model.path at a local directory with its config.json, download it to the HF cache, "
                      f"or add it to cft.resources.KNOWN_ARCHS (known: {sorted(KNOWN_ARCHS)})")


# ---------------------------------------------------------------------------- generation layout

@dataclass
class EngineLayout:
    """How generation uses the GPUs: `engines` data-parallel replicas, each over
    `tensor_parallel_size` GPUs (`device_groups`), with its KV-cache budget."""
    engines: int
    tensor_parallel_size: int
    gpus: int
    max_model_len: int
    fits: bool
    reason: str
    valid_sizes: tuple = ()
    weights_gb: float | None = None       # per GPU
    kv_cache_gb: float | None = None      # per GPU
    kv_cache_tokens: int | None = None    # per engine
    min_kv_tokens: int | None = None

    @property
    def idle_gpus(self) -> int:
        return max(0, self.gpus - self.engines * self.tensor_parallel_size) if self.gpus else 0

    @property
    def device_groups(self) -> list[list[int]]:
        tp = self.tensor_parallel_size
        return [list(range(e * tp, (e + 1) * tp)) for e in range(self.engines)] if self.gpus else [[]]

    def to_dict(self) -> dict:
        out = asdict(self)
        out.update(valid_sizes=list(self.valid_sizes), idle_gpus=self.idle_gpus, device_groups=self.device_groups)
        return out


def valid_tensor_parallel_sizes(num_attention_heads: int, num_key_value_heads: int, limit: int) -> list[int]:
    """Tensor-parallel sizes vLLM accepts (vllm/config/model.py, models/qwen2.py): they divide the
    attention heads, and divide the KV heads or are a multiple of them (KV heads replicated)."""
    return [tp for tp in range(1, max(1, limit) + 1) if num_attention_heads % tp == 0
            and (num_key_value_heads % tp == 0 if tp <= num_key_value_heads else tp % num_key_value_heads == 0)]


def engine_layout(num_attention_heads: int, num_key_value_heads: int, n_params: int, dtype_bytes: int,
                  gpus: int, gpu_memory_gb: float | None, gpu_memory_utilization: float = 0.9,
                  max_model_len: int = 4096, requested_tp: int = 0, *, num_layers: int, head_dim: int,
                  min_kv_tokens: int | None = None, key: str = "vllm.tensor_parallel_size",
                  tensor_parallel: bool = True) -> EngineLayout:
    """One engine per GPU (data parallel) when the weights and a KV cache for `min_kv_tokens`
    (default: one `max_model_len` sequence, what vLLM requires to start) fit one GPU; otherwise
    the smallest tensor-parallel size that fits and that vLLM accepts for these head counts,
    `gpus // tp` engines. `requested_tp` > 0 (`key`) is taken as given once it is valid.
    tensor_parallel=False: a backend that cannot split a model (transformers), tp is 1."""
    min_kv_tokens = max_model_len if min_kv_tokens is None else min_kv_tokens
    valid = valid_tensor_parallel_sizes(num_attention_heads, num_key_value_heads, max(gpus, requested_tp, 1))
    if requested_tp and requested_tp not in valid:
        ok = [tp for tp in valid if tp <= max(gpus, 1)]
        raise ConfigError(f"{key}={requested_tp} does not suit the model's {num_attention_heads} attention heads and "
                          f"{num_key_value_heads} KV heads (a size must divide the heads, and divide the KV heads or "
                          f"be a multiple of them): sizes that work on {gpus} GPU(s): {ok}; {key}=0 chooses")
    if requested_tp and gpus and requested_tp > gpus:
        raise ConfigError(f"{key}={requested_tp} needs {requested_tp} GPUs; {gpus} visible")
    if not gpus:
        return EngineLayout(1, requested_tp or 1, 0, max_model_len, True, "no GPU: one engine on the CPU",
                            tuple(valid), min_kv_tokens=min_kv_tokens)

    def kv_per_gpu_token(tp: int) -> int:  # as Arch.kv_bytes_per_token
        return 2 * num_layers * max(1, num_key_value_heads // tp) * head_dim * dtype_bytes

    if gpu_memory_gb is None:
        raise ValueError("engine_layout: gpu_memory_gb is needed when there are GPUs")

    def sized(tp: int) -> EngineLayout:
        weights = n_params * dtype_bytes / tp / GB
        kv_gb = gpu_memory_gb * gpu_memory_utilization - weights - ENGINE_OVERHEAD_GB
        tokens = max(0, int(kv_gb * GB / kv_per_gpu_token(tp)))
        fits = tokens >= min_kv_tokens
        why = (f"weights {weights:.1f} GB + KV cache for {min_kv_tokens} tokens per GPU"
               f" {'fit' if fits else 'do not fit'} in {gpu_memory_utilization:.0%} of {gpu_memory_gb:g} GB")
        return EngineLayout(gpus // tp, tp, gpus, max_model_len, fits, why, tuple(valid), round(weights, 2),
                            round(max(kv_gb, 0.0), 2), tokens, min_kv_tokens)

    if requested_tp:
        layout = sized(requested_tp)
        layout.reason = f"{key}={requested_tp} as set; " + layout.reason
        return layout
    if not tensor_parallel:
        layout = sized(1)
        layout.reason = ("one engine per GPU (data parallel; no tensor parallelism on this backend): " if layout.fits
                         else "this backend cannot split a model over GPUs (use vLLM): ") + layout.reason
        return layout
    candidates = [tp for tp in valid if tp <= gpus]
    for tp in candidates:
        layout = sized(tp)
        if layout.fits:
            layout.reason = ("one engine per GPU (data parallel): " if tp == 1 else
                             f"tensor parallel {tp}, the smallest size that fits and suits the heads: ") + layout.reason
            return layout
    layout = sized(candidates[-1])
    layout.reason = f"does not fit at any usable tensor-parallel size {candidates}: " + layout.reason
    return layout


def layout_for(arch: Arch, gpus: int, gpu_memory_gb: float | None, vllm_cfg=None, *, backend: str = "vllm",
               dtype: str | None = None, batch_size: int = 1, max_new_tokens: int | None = None) -> EngineLayout:
    """engine_layout for a model and the `vllm` config block (`vllm.max_model_len`: null = the
    model's context). backend=transformers: tensor parallelism is not available, so tp=1, and the
    KV cache must hold `batch_size` sequences of prompt + `max_new_tokens`."""
    vllm_dtype = getattr(vllm_cfg, "dtype", "auto") if vllm_cfg is not None else "auto"
    dtype = dtype if dtype and dtype != "auto" else (vllm_dtype if vllm_dtype != "auto" else arch.torch_dtype)
    common = dict(num_layers=arch.num_hidden_layers, head_dim=arch.dim)
    if backend == "transformers":
        seq = min(arch.max_position_embeddings, PROMPT_TOKENS + (max_new_tokens or arch.max_position_embeddings))
        return engine_layout(arch.num_attention_heads, arch.num_key_value_heads, arch.n_params(),
                             DTYPE_BYTES.get(dtype, 2), gpus, gpu_memory_gb, 1.0, seq,
                             min_kv_tokens=batch_size * seq, tensor_parallel=False, **common)
    max_len = int(getattr(vllm_cfg, "max_model_len", None) or arch.max_position_embeddings)
    return engine_layout(arch.num_attention_heads, arch.num_key_value_heads, arch.n_params(),
                         DTYPE_BYTES.get(dtype, 2), gpus, gpu_memory_gb,
                         float(getattr(vllm_cfg, "gpu_memory_utilization", 0.9)), max_len,
                         int(getattr(vllm_cfg, "tensor_parallel_size", 0) or 0), **common)


def generation_layout(source: str, vllm_cfg, model_cfg=None, *, backend: str = "vllm",
                      gpus: int | None = None, gpu_memory_gb: float | None = None, batch_size: int = 1,
                      max_new_tokens: int | None = None) -> EngineLayout:
    """The layout for generating with the model at `source` on the GPUs visible here (the call
    for cft/generation.py, the eval stage and the vLLM teacher server). A model whose architecture
    cannot be read offline gets `vllm.tensor_parallel_size` as set (or 1) per engine, said so."""
    if gpus is None:
        gpus, detected = detect_gpus()
        gpu_memory_gb = gpu_memory_gb or detected
    try:
        arch = arch_of(source, model_cfg)
    except ConfigError as e:
        tp = int(getattr(vllm_cfg, "tensor_parallel_size", 0) or 0) or 1
        return EngineLayout(max(1, gpus // tp), tp, gpus, int(getattr(vllm_cfg, "max_model_len", 0) or 0), True,
                            f"architecture unknown, layout not checked: {e}")
    return layout_for(arch, gpus, gpu_memory_gb, vllm_cfg, backend=backend, batch_size=batch_size,
                      max_new_tokens=max_new_tokens)


def cuda_visible_devices(group: Sequence[int], visible: str | None = None) -> str:
    """CUDA_VISIBLE_DEVICES for an engine on `group` (indices among this process's GPUs),
    translated through the parent's own CUDA_VISIBLE_DEVICES when it has one."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES") if visible is None else visible
    names = [v.strip() for v in visible.split(",") if v.strip()] if visible else None
    return ",".join(names[i] if names else str(i) for i in group)


# ------------------------------------------------------------------------- data-parallel shards

def shard_indices(n: int, engines: int, strided: bool = False) -> list[list[int]]:
    """Indices of `n` items for each engine: contiguous blocks (sizes differ by at most one), or
    strided (engine k gets k, k+engines, ...: balances items whose length grows along the list)."""
    engines = max(1, engines)
    if strided:
        return [list(range(k, n, engines)) for k in range(engines)]
    base, extra = divmod(n, engines)
    out, start = [], 0
    for k in range(engines):
        size = base + (k < extra)
        out.append(list(range(start, start + size)))
        start += size
    return out


def shard(items: Sequence[Any], engines: int, strided: bool = False) -> list[list[Any]]:
    """`items` split over `engines` (see shard_indices); merge() puts results back in order."""
    return [[items[i] for i in idx] for idx in shard_indices(len(items), engines, strided)]


def merge(results: Sequence[Sequence[Any]], n: int, strided: bool = False) -> list[Any]:
    """Per-engine results (each in its shard's order) back in input order. A shard that returned
    more or fewer results than it was given is an error, never a silent misalignment."""
    indices = shard_indices(n, len(results), strided)
    got, want = [len(r) for r in results], [len(i) for i in indices]
    if got != want:
        raise ValueError(f"merge: shards returned {got} results, expected {want} for {n} items")
    out: list[Any] = [None] * n
    for idx, res in zip(indices, results):
        for i, r in zip(idx, res):
            out[i] = r
    return out


# ------------------------------------------------------------------------------ training memory

# bytes per parameter (weights, gradients, optimizer states) and per activation element.
PRECISIONS = {
    "bf16-mixed": (2, 2, 12, 2),   # ZeRO with bf16: 16-bit weights/grads, fp32 master + Adam m, v
    "fp32-master": (4, 4, 8, 2),   # deepspeed=none here: fp32 weights under bf16 autocast, Adam m, v
    "fp32": (4, 4, 8, 4),
    "bf16": (2, 2, 4, 2),          # torch AdamW on bf16 weights (the GPU check's throughput step)
}


@dataclass
class TrainMemory:
    """Estimated peak memory per GPU of one training step (GB), by component."""
    weights: float
    gradients: float
    optimizer: float
    buffers: float
    activations: float
    logits: float
    overhead: float
    activations_with_checkpointing: float
    activations_without_checkpointing: float
    gradient_checkpointing: bool
    gpu_memory_gb: float | None = None
    cpu_memory_gb: float | None = None  # host RAM per node for offloaded states

    @property
    def model_states(self) -> float:
        return self.weights + self.gradients + self.optimizer

    def peak(self, gradient_checkpointing: bool | None = None) -> float:
        ckpt = self.gradient_checkpointing if gradient_checkpointing is None else gradient_checkpointing
        act = self.activations_with_checkpointing if ckpt else self.activations_without_checkpointing
        body = self.model_states + self.buffers + act + self.logits
        return round(body * (1 + FRAGMENTATION) + TRAIN_OVERHEAD_GB, 2)

    @property
    def fits(self) -> bool | None:
        return None if not self.gpu_memory_gb else self.peak() <= self.gpu_memory_gb

    def to_dict(self) -> dict:
        out = {k: round(v, 2) if isinstance(v, float) else v for k, v in asdict(self).items()}
        out.update(model_states=round(self.model_states, 2), peak=self.peak(), fits=self.fits,
                   peak_with_checkpointing=self.peak(True), peak_without_checkpointing=self.peak(False))
        return out


def train_memory(n_params: int, *, hidden: int, layers: int, vocab: int, seq_len: int, micro_batch: int,
                 intermediate: int | None = None, gated_mlp: bool = True, heads: int = 1,
                 world_size: int = 1, zero_stage: int = 0,
                 offload_optimizer: bool = False, offload_param: bool = False, gradient_checkpointing: bool = True,
                 precision: str = "bf16-mixed", attention: str = "flash", largest_layer_params: int | None = None,
                 reduce_bucket_size: float = 5e8, overlap_comm: bool = True, nodes: int = 1,
                 gpu_memory_gb: float | None = None, trainable_params: int | None = None,
                 frozen_bytes: float = 0.0, adapter_inputs: int = 0) -> TrainMemory:
    """Peak memory per GPU of a fine-tuning step: full, or of adapters over a frozen base (LoRA).

    Model states (ZeRO paper, Rajbhandari et al. 2020): weights, gradients and optimizer states at
    `precision`'s bytes per parameter (bf16 mixed precision with Adam: 2 + 2 + 12 = 16), split over
    the `world_size` data-parallel ranks as ZeRO partitions them: stage 1 the optimizer states,
    2 also the gradients, 3 also the weights (plus the gathered working set, DeepSpeed's
    estimate: 4 bytes x the largest layer). Offload moves optimizer states (and the gradient
    partitions they consume) or ZeRO-3 weights to host RAM; `cpu_memory_gb` is DeepSpeed's own
    estimate of it (estimate_zero2/zero3_model_states_mem_needs, 1.5x buffer factor).
    Buffers: DeepSpeed's gradient-reduction buckets (two of `reduce_bucket_size` 16-bit elements
    with overlap_comm), or DDP's bucket copy of the gradients (stage 0 on several ranks).

    Activations (Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer
    Models", eq. 2): s*b*h*(34 + 5*a*s/h) bytes per layer in 16 bits (intermediate=None). Its 34
    counts GPT's 4h GeLU MLP as 16sbh (two 4h-wide tensors); a gated MLP (SwiGLU, `intermediate`
    i) keeps four i-wide ones, so we use 18 + 8*i/h (4*i/h for an ungated one). The 5as/h
    attention-score term is absent with flash-attention / SDPA / flex (no s x s matrix is
    stored), present with eager attention. With full checkpointing only each
    layer's input stays (2*s*b*h per layer) plus one layer recomputed during backward. s*b is
    the tokens of a micro-batch, at most micro_batch x seq_len padded or packed alike.
    Adapters (peft): only `trainable_params` get gradients and optimizer states (at `precision`'s
    bytes: fp32 adapters without DeepSpeed, bf16 + fp32 master under ZeRO); the frozen base takes
    `frozen_bytes` on every rank. Activations are a full fine-tune's (each adapter's backward
    needs its layer's input), plus LoRA dropout's copy of each adapted layer's input and its
    1-byte mask: `adapter_inputs` elements per token per layer.
    Logits: bf16 logits + their fp32 upcast + the fp32 log-softmax that cross-entropy keeps
    (transformers' ForCausalLMLoss), 10 bytes per token per vocabulary entry.
    """
    w_b, g_b, o_b, a_b = PRECISIONS[precision]
    n = max(1, world_size)
    largest = largest_layer_params or vocab * hidden
    dp = zero_stage > 0
    trained = n_params if trainable_params is None else trainable_params
    weights = (trained * w_b / n if zero_stage >= 3 else trained * w_b)
    if zero_stage >= 3:
        weights = (0 if offload_param else weights) + 4 * largest
    weights += frozen_bytes
    grads = 0 if (dp and offload_optimizer) else trained * g_b / (n if zero_stage >= 2 else 1)
    optim = 0 if (dp and offload_optimizer) else trained * o_b / (n if dp else 1)
    if dp:
        buffers = (2 if overlap_comm and zero_stage < 3 else 1) * reduce_bucket_size * 2
    else:
        buffers = trained * g_b if n > 1 else 0  # DDP without gradient_as_bucket_view
    tokens = seq_len * micro_batch
    mlp = 16 if intermediate is None else (8 if gated_mlp else 4) * intermediate / hidden  # GPT's 4h: 16
    scores = 5 * heads * seq_len / hidden if attention == "eager" else 0
    layer = tokens * hidden * (18 + mlp + scores) * a_b / 2 + tokens * adapter_inputs * (a_b + 1)
    act_ckpt = layers * 2 * tokens * hidden * a_b / 2 + layer
    act_full = layers * layer
    logits = tokens * vocab * (a_b + 8)
    cpu = None
    if dp and (offload_optimizer or offload_param):
        per_node = n / max(1, nodes)
        if zero_stage >= 3:
            cpu = trained * (18 if offload_param else 16) / max(1, nodes) * 1.5
        else:
            cpu = trained * max(4 * per_node, 16) * 1.5
    return TrainMemory(weights / GB, grads / GB, optim / GB, buffers / GB,
                       (act_ckpt if gradient_checkpointing else act_full) / GB, logits / GB, TRAIN_OVERHEAD_GB,
                       act_ckpt / GB, act_full / GB, gradient_checkpointing, gpu_memory_gb,
                       None if cpu is None else cpu / GB)


@dataclass(frozen=True)
class TrainSetup:
    """The training choices of a config that decide memory (what fitting_overrides varies)."""
    zero_stage: int
    offload_optimizer: bool
    offload_param: bool
    micro_batch: int
    gradient_checkpointing: bool
    seq_len: int
    global_batch: int
    precision: str
    attention: str = "flash"
    reduce_bucket_size: float = 5e8
    overlap_comm: bool = True
    peft: str = "none"  # none | lora | qlora (conf/peft)
    lora_rank: int = 16
    lora_dropout: float = 0.05
    lora_targets: tuple = ("all-linear",)
    modules_to_save: tuple = ()

    @classmethod
    def of(cls, cfg) -> "TrainSetup":
        stage, bf16 = int(cfg.deepspeed.stage), bool(cfg.method.bf16)
        precision = ("bf16-mixed" if stage else "fp32-master") if bf16 else "fp32"
        attn = cfg.model.attn_implementation
        p = cfg.get("peft")
        adapters = {} if p is None else dict(
            peft=p.name, lora_rank=int(p.r), lora_dropout=float(p.dropout),
            lora_targets=tuple(p.target_modules), modules_to_save=tuple(p.modules_to_save))
        return cls(stage, cfg.deepspeed.offload_optimizer != "none", cfg.deepspeed.offload_param != "none",
                   int(cfg.model.per_device_batch_size), bool(cfg.model.gradient_checkpointing),
                   int(cfg.method.cutoff_len), int(cfg.method.global_batch_size), precision,
                   "eager" if attn == "eager" else "flash", float(cfg.deepspeed.reduce_bucket_size),
                   bool(cfg.deepspeed.overlap_comm), **adapters)

    def adapters(self, arch: Arch) -> dict:
        """For a peft setup: trainable parameters, bytes of the frozen base per GPU and LoRA
        dropout's saved inputs per token per layer (train_memory's keywords); {} for full
        fine-tuning. The base stays in the compute dtype (bf16; fp32 without bf16); QLoRA's
        blocks' linear weights are NF4 and the rest fp32 (peft's prepare_model_for_kbit_training)."""
        if self.peft == "none":
            return {}
        if self.peft == "qlora":
            quantized = arch.num_hidden_layers * sum(a * b for a, b in arch.linear_shapes().values())
            frozen = quantized * NF4_BYTES + (arch.n_params() - quantized) * 4
        else:
            frozen = arch.n_params() * PRECISIONS[self.precision][3]
        dropout_inputs = sum(a for a, _ in arch.adapted(self.lora_targets)) if self.lora_dropout > 0 else 0
        return {"trainable_params": arch.lora_params(self.lora_rank, self.lora_targets, self.modules_to_save),
                "frozen_bytes": frozen, "adapter_inputs": dropout_inputs}

    def grad_accum(self, world_size: int) -> int | None:
        """As cft.validation.grad_accum_steps (None where it raises), for setups without a config."""
        per_step = world_size * self.micro_batch
        return self.global_batch // per_step if self.global_batch % per_step == 0 else None


def memory_for(arch: Arch, setup: TrainSetup, world_size: int, gpu_memory_gb: float | None,
               nodes: int = 1) -> TrainMemory:
    """train_memory for a model's architecture and a config's training choices."""
    return train_memory(arch.n_params(), hidden=arch.hidden_size, layers=arch.num_hidden_layers,
                        vocab=arch.vocab_size, seq_len=setup.seq_len, micro_batch=setup.micro_batch,
                        intermediate=arch.intermediate_size, heads=arch.num_attention_heads, world_size=world_size,
                        zero_stage=setup.zero_stage, offload_optimizer=setup.offload_optimizer,
                        offload_param=setup.offload_param, gradient_checkpointing=setup.gradient_checkpointing,
                        precision=setup.precision, attention=setup.attention,
                        largest_layer_params=arch.largest_layer_params(), reduce_bucket_size=setup.reduce_bucket_size,
                        **setup.adapters(arch),
                        overlap_comm=setup.overlap_comm, nodes=nodes, gpu_memory_gb=gpu_memory_gb)


def _overrides(base: TrainSetup, s: TrainSetup) -> list[str]:
    """Hydra overrides from `base` to `s` (choosing a deepspeed group resets its offload keys)."""
    group = s.zero_stage != base.zero_stage
    out = [f"deepspeed={'none' if s.zero_stage == 0 else f'zero{s.zero_stage}'}"] if group else []
    for key in ("offload_optimizer", "offload_param"):
        now, before = getattr(s, key), False if group else getattr(base, key)
        if now != before:
            out.append(f"deepspeed.{key}={'cpu' if now else 'none'}")
    if s.micro_batch != base.micro_batch:
        out.append(f"model.per_device_batch_size={s.micro_batch}")
    if s.gradient_checkpointing != base.gradient_checkpointing:
        out.append("model.gradient_checkpointing=true")
    if s.peft != base.peft:
        out.append(f"peft={s.peft}")
    return out


def _precision(precision: str, stage: int) -> str:
    """bf16 training's precision at a ZeRO stage: DeepSpeed keeps the fp32 master copy, without it
    the weights themselves are fp32 (cft.models.load_model)."""
    if precision in ("bf16-mixed", "fp32-master"):
        return "bf16-mixed" if stage else "fp32-master"
    return precision


def _supported(setup: TrainSetup, stage: int) -> bool:
    """Adapters train without DeepSpeed or under ZeRO-2; QLoRA without DeepSpeed (cft.validation)."""
    return setup.peft == "none" or (stage == 0 if setup.peft == "qlora" else stage < 3)


def fitting_overrides(arch: Arch, setup: TrainSetup, gpus: int, gpu_memory_gb: float, nodes: int = 1) -> list[dict]:
    """Changes that would make training fit, each {"overrides", "gpus", "peak_memory_gb",
    "cpu_memory_gb"}: on these GPUs without offload (ZeRO stage, a smaller micro-batch,
    checkpointing; fewest changes, largest micro-batch), on these GPUs with CPU offload (slower,
    needs host RAM), LoRA and QLoRA adapters on these GPUs (conf/peft's rank; another model
    than a full fine-tune, so proposed beside it), the fewest GPUs per node that fit, and the
    fewest that fit with no change."""
    micros = sorted((m for m in range(1, setup.micro_batch + 1) if setup.micro_batch % m == 0), reverse=True)
    found = []
    per_node = max(gpus, 8)  # more GPUs: fill the node (8), then more nodes of as many
    layouts = [(gpus, nodes), *[(g, nodes) for g in (2, 4, 8) if g > gpus], *[(per_node, nodes * k) for k in (2, 4, 8)]]
    for g, n in dict.fromkeys(layouts):
        world = g * n
        for stage in sorted({setup.zero_stage, 2, 3} | ({0} if setup.peft != "none" else set())):
            for off_opt, off_par in ((False, False), (True, False), (True, True)):
                if (off_par and stage < 3) or (off_opt and stage == 0) or (world > gpus * nodes and off_opt) \
                        or not _supported(setup, stage):
                    continue
                for micro in micros:  # the largest micro-batch that fits at this stage and offload
                    s = replace(setup, zero_stage=stage, offload_optimizer=off_opt, offload_param=off_par,
                                micro_batch=micro, gradient_checkpointing=True,
                                precision=_precision(setup.precision, stage) if stage else setup.precision)
                    mem = memory_for(arch, s, world, gpu_memory_gb, n)
                    if s.grad_accum(world) is not None and mem.fits:
                        found.append(_fit(arch, setup, s, g, n, mem, offload=off_opt))
                        break
    adapters = []
    for name in ("lora", "qlora") if setup.peft != "qlora" else ():
        if name == setup.peft:
            continue  # a LoRA that does not fit: QLoRA might
        rank, dropout = PEFT_PRESETS[name]
        for stage in dict.fromkeys([setup.zero_stage, 0]):
            preset = replace(setup, peft=name, lora_rank=rank, lora_dropout=dropout, lora_targets=("all-linear",),
                             modules_to_save=(), zero_stage=stage, offload_optimizer=False, offload_param=False)
            if not _supported(preset, stage):
                continue
            for micro in micros:
                s = replace(preset, micro_batch=micro, gradient_checkpointing=True,
                            precision=_precision(setup.precision, stage))
                mem = memory_for(arch, s, gpus * nodes, gpu_memory_gb, nodes)
                if s.grad_accum(gpus * nodes) is not None and mem.fits:
                    adapters.append(_fit(arch, setup, s, gpus, nodes, mem))
                    break
    here = [o for o in found if o["world_size"] == gpus * nodes]
    more = [o for o in found if o["world_size"] > gpus * nodes]
    best = lambda opts, key: [min(opts, key=key)] if opts else []  # noqa: E731
    by_change = lambda o: (len(o["overrides"]), -o["micro_batch"])  # noqa: E731
    picked = (best([o for o in here if not o["offload"]], by_change)
              + best([o for o in here if o["offload"]], by_change)
              + best([o for o in adapters if o["peft"]["name"] == "lora"], by_change)
              + best([o for o in adapters if o["peft"]["name"] == "qlora"], by_change)
              + best(more, lambda o: (o["world_size"], *by_change(o)))
              + best([o for o in more if not o["overrides"]], lambda o: o["world_size"]))
    out = []
    for o in picked:
        if o not in out:
            out.append(o)
    return [{k: v for k, v in o.items() if k not in ("micro_batch", "offload")} for o in out]


def _fit(arch: Arch, base: TrainSetup, s: TrainSetup, gpus: int, nodes: int, mem: TrainMemory,
         offload: bool = False) -> dict:
    """One proposal of fitting_overrides (micro_batch and offload are for ranking only)."""
    return {"overrides": _overrides(base, s), "gpus": gpus, "nodes": nodes, "world_size": gpus * nodes,
            "peak_memory_gb": mem.peak(),
            "cpu_memory_gb": None if mem.cpu_memory_gb is None else round(mem.cpu_memory_gb, 1),
            "peft": None if s.peft == "none" else {"name": s.peft, "r": s.lora_rank,
                                                   "trainable_params": s.adapters(arch)["trainable_params"]},
            "micro_batch": s.micro_batch, "offload": offload}


# -------------------------------------------------------------------------------- the whole plan

def detect_gpus() -> tuple[int, float | None]:
    """(visible GPUs, memory of the first in GB) without creating a CUDA context where NVML can
    answer (torch.cuda.device_count and pynvml both ask NVML), so a vLLM started later in this
    process can still fork its workers."""
    try:
        import torch

        count = torch.cuda.device_count()
    except Exception:
        return 0, None
    if not count:
        return 0, None
    try:
        import pynvml

        pynvml.nvmlInit()
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0].strip()
        handle = (pynvml.nvmlDeviceGetHandleByIndex(int(visible)) if visible.isdigit()
                  else pynvml.nvmlDeviceGetHandleByUUID(visible))
        return count, pynvml.nvmlDeviceGetMemoryInfo(handle).total / GB
    except Exception:
        return count, torch.cuda.get_device_properties(0).total_memory / GB


def _generation_layouts(cfg, arch: Arch, gpus: int, gpu_memory_gb: float | None) -> dict:
    """Layouts of the other generation uses: the noisy-response generator and a vLLM teacher."""
    out: dict = {}
    stages = set(cfg.stages)
    uses = {"noisy_generator": ("data" in stages and bool(cfg.dataset.noisy_generator), cfg.dataset.noisy_generator,
                                cfg.dataset.get("noisy_generator_backend", "transformers")),
            "teacher": ("critique" in stages and cfg.teacher.backend == "vllm", cfg.teacher.get("model"), "vllm")}
    for name, (used, source, backend) in uses.items():
        if not used:
            continue
        try:
            a = arch if source == "tiny" else arch_of(source)
            layout = layout_for(a, gpus, gpu_memory_gb, cfg.vllm, backend=backend, batch_size=16,
                                max_new_tokens=cfg.dataset.get("noisy_max_new_tokens") if name != "teacher" else None)
            out[name] = {"source": source, "backend": backend, **layout.to_dict()}
        except ConfigError as e:
            out[name] = {"source": source, "backend": backend, "error": str(e)}
    return out


def _peft_summary(arch: Arch, setup: TrainSetup, cfg) -> dict | None:
    """What an adapter run trains: rank, alpha, targets, trainable parameters and their share,
    and the frozen base's format; None for full fine-tuning."""
    if setup.peft == "none":
        return None
    trainable = setup.adapters(arch)["trainable_params"]
    base = "nf4" if setup.peft == "qlora" else ("fp32" if setup.precision == "fp32" else "bf16")
    return {"name": setup.peft, "r": setup.lora_rank, "alpha": float(cfg.peft.alpha),
            "dropout": setup.lora_dropout, "target_modules": list(setup.lora_targets),
            "modules_to_save": list(setup.modules_to_save), "trainable_params": trainable,
            "trainable_share": round(trainable / arch.n_params(), 5), "base_weights": base}


# Rows of the datasets the recipes name, so the plan can count a run's optimizer steps before the
# data stage: (hf_path, hf_config) -> rows. The 50K set's 98 steps at batch 512 are the official
# run's (its 49 saves at save_steps 2). Filters (method.keep, critique filters) only lower them.
KNOWN_DATASET_ROWS = {("TIGER-Lab/WebInstruct-CFT", "WebInstruct-CFT-4K"): 4_000,
                      ("TIGER-Lab/WebInstruct-CFT", "WebInstruct-CFT-50K"): 50_000,
                      ("TIGER-Lab/WebInstruct-CFT", "WebInstruct-CFT-600K"): 600_000}


def training_steps(cfg) -> tuple[int | None, bool]:
    """(optimizer steps of the run, whether that is exact): method.max_steps when set, else about
    rows x epochs / global batch from dataset.limit or KNOWN_DATASET_ROWS; (None, False) unknown."""
    import math

    if int(cfg.method.max_steps) > 0:
        return int(cfg.method.max_steps), True
    rows = KNOWN_DATASET_ROWS.get((cfg.dataset.get("hf_path"), cfg.dataset.get("hf_config")))
    limit = cfg.dataset.get("limit")
    rows = min(rows, int(limit)) if rows and limit else (int(limit) if limit else rows)
    if not rows:
        return None, False
    return math.ceil(math.ceil(rows / int(cfg.method.global_batch_size)) * float(cfg.method.epochs)), False


def snapshot_plan(cfg, arch: Arch, total_steps: int | None = None) -> dict | None:
    """The disk cost of weights-only snapshots (method.snapshot_steps), None when off: how many,
    bytes each (parameters x bytes of model.dtype; with peft the fp32 adapter, plus one merged
    model while a snapshot is scored), the peak before selection and what stays after it.
    `total_steps`: the run's optimizer steps when known (the train stage), else training_steps."""
    import math

    from cft.checkpoints import snapshot_every, snapshot_steps

    value = cfg.method.get("snapshot_steps")
    if not value:
        return None
    exact = total_steps is not None
    if not exact:
        total_steps, exact = training_steps(cfg)
    if total_steps:
        every, count = snapshot_every(value, total_steps), len(snapshot_steps(value, total_steps))
    else:  # a share of an unknown run: about 1/share of them; a step count: unknown
        every, count = None, (math.ceil(1 / value) if value < 1 else None)
    model_bytes = arch.n_params() * DTYPE_BYTES[str(cfg.model.dtype)]
    p = cfg.get("peft")
    if p is not None and p.name != "none":
        each = arch.lora_params(int(p.r), tuple(p.target_modules), tuple(p.modules_to_save)) * 4
    else:
        each = model_bytes
    merged = model_bytes if each != model_bytes else 0  # an adapter is merged into the base to be scored
    scored = bool(cfg.eval.select_checkpoint) or bool(cfg.eval.get("dynamics"))
    peak = None if count is None else count * each + (merged if scored else 0)
    if cfg.eval.select_checkpoint:
        kept, kept_bytes = "the selected one", each + merged
    elif cfg.eval.get("dynamics"):
        kept, kept_bytes = "none: model/ is the last step", 0
    else:
        kept, kept_bytes = "all: neither eval.select_checkpoint nor eval.dynamics reads them", peak
    return {"value": value, "every": every, "total_steps": total_steps, "exact": exact, "count": count,
            "bytes_each": each, "peak_bytes": peak, "kept": kept, "kept_bytes": kept_bytes}


def describe_snapshots(s: dict) -> str:
    """snapshot_plan as `python -m cft.plan` and the train stage print it."""
    def size(b):
        return "?" if b is None else (f"{b / GB:.1f} GB" if b >= 0.1 * GB else f"{b / 1e6:.1f} MB")
    about = "" if s["exact"] else "about "
    every = f"every {s['every']} step(s)" if s["every"] else f"snapshot_steps={s['value']:g}"
    steps = f" of {about}{s['total_steps']}" if s["total_steps"] else " (run length unknown before the data stage)"
    count = "an unknown number" if s["count"] is None else f"{about}{s['count']}"
    return (f"weights-only snapshots {every}{steps}: {count} x {size(s['bytes_each'])} = {size(s['peak_bytes'])} "
            f"on disk before selection, {size(s['kept_bytes'])} after (kept: {s['kept']})")


def plan(cfg, gpus: int, gpu_memory_gb: float | None, world_size: int | None = None) -> dict:
    """Per stage, what will run where for `cfg` on `gpus` GPUs per node of `gpu_memory_gb`:
    train (world size, ZeRO, micro-batch, accumulation, memory per GPU, fits, what would fit),
    eval and the other generation uses (engines, tensor-parallel size, KV cache).
    `world_size`: the training processes (default: every GPU of `cluster.nodes` nodes)."""
    nodes = int(cfg.cluster.get("nodes") or 1)
    world = world_size or max(1, gpus * nodes)
    source = "model.arch" if cfg.model.init == "random" else cfg.model.path
    arch = arch_of(source, cfg.model)
    mem_gb = gpu_memory_gb if gpus else None
    setup = TrainSetup.of(cfg)
    memory = memory_for(arch, setup, world, mem_gb, nodes)
    try:
        accum, error = grad_accum_steps(cfg, world), None
    except ConfigError as e:
        accum, error = None, str(e)
    train = {"selected": "train" in cfg.stages, "world_size": world, "nodes": nodes,
             "deepspeed": cfg.deepspeed.name, "zero_stage": setup.zero_stage,
             "offload_optimizer": cfg.deepspeed.offload_optimizer, "offload_param": cfg.deepspeed.offload_param,
             "precision": setup.precision, "micro_batch": setup.micro_batch, "grad_accum": accum,
             "global_batch": setup.global_batch, "cutoff_len": setup.seq_len, "packing": cfg.model.packing,
             "gradient_checkpointing": setup.gradient_checkpointing,
             "peft": _peft_summary(arch, setup, cfg),
             "memory_gb": memory.to_dict(), "peak_memory_gb": memory.peak(), "fits": memory.fits,
             "fitting_overrides": [], "snapshots": snapshot_plan(cfg, arch)}
    if error:
        train["error"] = error
    if memory.fits is False:
        train["fitting_overrides"] = fitting_overrides(arch, setup, max(1, world // nodes), mem_gb, nodes)
    eval_layout = layout_for(arch, gpus, mem_gb, cfg.vllm, backend=cfg.eval.backend,
                             dtype=cfg.model.dtype, batch_size=int(cfg.eval.batch_size) * int(cfg.eval.get("n", 1)),
                             max_new_tokens=int(cfg.eval.max_new_tokens))
    return {"model": {"name": cfg.model.name, "source": source, "params_b": round(arch.n_params() / 1e9, 3),
                      "layers": arch.num_hidden_layers, "hidden": arch.hidden_size,
                      "attention_heads": arch.num_attention_heads, "kv_heads": arch.num_key_value_heads,
                      "vocab": arch.vocab_size, "context": arch.max_position_embeddings},
            "gpus": gpus, "gpu_memory_gb": mem_gb, "stages": list(cfg.stages), "train": train,
            "eval": {"selected": "eval" in cfg.stages, "backend": cfg.eval.backend, **eval_layout.to_dict()},
            "generation": _generation_layouts(cfg, arch, gpus, mem_gb)}


# ------------------------------------------------------------------- free memory before an engine

def gpu_memory_free(visible: str | None = None) -> list[tuple[str, float, float]]:
    """(device, free GB, total GB) for each GPU this process sees, from NVML (no CUDA context);
    [] where NVML is not available."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:
        return []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES") if visible is None else visible
    names = ([v.strip() for v in visible.split(",") if v.strip()] if visible is not None
             else [str(i) for i in range(pynvml.nvmlDeviceGetCount())])
    out = []
    for name in names:
        handle = (pynvml.nvmlDeviceGetHandleByIndex(int(name)) if name.isdigit()
                  else pynvml.nvmlDeviceGetHandleByUUID(name))
        info = pynvml.nvmlDeviceGetMemoryInfo(handle)
        out.append((name, info.free / GB, info.total / GB))
    return out


def wait_for_gpu_memory(utilization: float, timeout_s: float = 300.0, poll_s: float = 2.0,
                        read=gpu_memory_free, sleep=None) -> float:
    """Block until every visible GPU has `utilization` of its memory free, the share a vLLM
    engine claims at start-up; returns the seconds waited. vLLM refuses to start otherwise ("Free
    memory on device ... is less than desired GPU memory utilization", vllm/v1/worker/utils.py),
    and two things free theirs only moments before our engines start: the training ranks of the
    same job (rank 0 stays alive while its eval child runs) and the previous checkpoint's engine
    workers. A GPU still short after `timeout_s` is an error naming it and the shortfall (issue
    #20 S3). No NVML, nothing to read: returns at once."""
    import time

    sleep = sleep or time.sleep
    waited = 0.0
    while True:
        short = [(d, free, total) for d, free, total in read() if free < utilization * total]
        if not short:
            return waited
        if waited >= timeout_s:
            desc = ", ".join(f"GPU {d}: {free:.1f} of {total:.1f} GB free" for d, free, total in short)
            raise RuntimeError(f"a generation engine needs {utilization:.0%} of each GPU free "
                               f"(vllm.gpu_memory_utilization), still short after {timeout_s:.0f}s: {desc}. "
                               f"Another process holds it (nvidia-smi names it); lower "
                               f"vllm.gpu_memory_utilization or free the GPU")
        sleep(poll_s)
        waited += poll_s
