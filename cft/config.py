"""Typed config schemas (registered in Hydra's ConfigStore) and derived-value validation.

Values live in ``conf/``; these dataclasses only fix the keys and their types, so a typo'd
key or an ill-typed value (``method.lr=abc``) fails at composition with Hydra's message
naming the key, before any stage runs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf


@dataclass
class ModelConfig:
    name: str = MISSING
    # HF hub id or local directory. Empty for models built from `arch` (tiny).
    path: str = ""
    # "pretrained": load `path`; "random": build from `arch` + a locally trained tokenizer.
    init: str = "pretrained"
    arch: dict[str, Any] = field(default_factory=dict)
    # How training examples are rendered (cft/train/format.py) and how eval prompts look
    # (cft/eval/prompts.py); the paper uses qwen25-math-cot for Qwen and deepseek-math otherwise.
    train_template: str = "qwen"
    eval_template: str = "qwen25-math-cot"
    dtype: str = "bfloat16"
    # "auto": flash_attention_2 when flash-attn is importable on a GPU, else sdpa.
    attn_implementation: str = "auto"
    trust_remote_code: bool = False
    per_device_batch_size: int = 8
    gradient_checkpointing: bool = True
    # Padding-free packing: a micro-batch is one row of concatenated samples, positions restart
    # per sample so no token attends across samples (cft/train/packing.py). Falls back to padded
    # batches (with a log line) for attention kernels that cannot mask packed rows.
    packing: bool = True


@dataclass
class DatasetConfig:
    name: str = MISSING
    # champ | webinstruct | metamath | numina | jsonl (cft/data/loaders.py)
    loader: str = MISSING
    hf_path: str = ""
    hf_config: Optional[str] = None
    split: str = "train"
    # A local file (jsonl/json/parquet) of the loader's schema; overrides hf_path when set.
    path: str = ""
    # CHAMP only: which models' responses and which prompting setups are the noisy responses.
    noisy_models: list[str] = field(default_factory=list)
    noisy_prompts: list[str] = field(default_factory=list)
    limit: Optional[int] = None
    seed: int = 0
    # Drop training questions that overlap a benchmark (n-gram decontamination report).
    decontaminate: bool = False
    decontam_ngram: int = 8


@dataclass
class MethodConfig:
    name: str = MISSING
    # What the model learns to produce: critique | response | teacher_solution
    target: str = MISSING
    # Which records are kept: all | verified (response judged correct by the answer checker)
    keep: str = "all"
    # The paper's recipe (LLaMA-Factory config of the official repo).
    lr: float = 5e-6
    scheduler: str = "cosine"
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0
    global_batch_size: int = 512
    epochs: float = 1.0
    max_steps: int = -1
    cutoff_len: int = 2048
    bf16: bool = True
    max_grad_norm: float = 1.0
    # Full-state checkpoints (train/checkpoints/checkpoint-N): every save_steps optimizer steps,
    # keeping the newest save_total_limit complete ones. 0 = twice per run (max_steps / 2) or 500.
    save_steps: int = 0
    save_total_limit: int = 2
    # Derived in validate(): global_batch_size / (world_size * per_device_batch_size).
    grad_accum_steps: int = 0


@dataclass
class TeacherConfig:
    name: str = MISSING
    # reference | openai | vllm | released (cft/critique/teachers.py)
    backend: str = MISSING
    model: str = ""
    base_url: Optional[str] = None
    # Name of the environment variable holding the key; the key itself never enters a config.
    api_key_env: str = "OPENAI_API_KEY"
    prompt: str = "critique-v1"
    solution_prompt: str = "solution-v1"
    temperature: float = 0.3
    top_p: float = 0.95
    max_tokens: int = 3200
    concurrency: int = 32
    requests_per_minute: int = 5000
    tokens_per_minute: int = 2_000_000
    max_attempts: int = 6
    timeout_s: float = 120.0
    backoff_base_s: float = 1.0
    backoff_max_s: float = 60.0
    # USD per million tokens, for the cost ledger.
    price_prompt_per_mtok: float = 0.0
    price_completion_per_mtok: float = 0.0
    # Filters applied to parsed critiques (cft/critique/filters.py).
    drop_disagreements: bool = False
    balance_verdicts: bool = False


@dataclass
class DeepSpeedConfig:
    """ZeRO settings; the DeepSpeed JSON is generated from the composed config
    (cft/train/deepspeed.py) so batch sizes and precision can never disagree with the Trainer."""
    name: str = "none"
    # 0 = DeepSpeed off (plain DDP / single process); 2 or 3 = ZeRO stage.
    stage: int = 0
    # none | cpu: ZeRO-Offload of optimizer state (stage 2/3) and parameters (stage 3 only).
    offload_optimizer: str = "none"
    offload_param: str = "none"
    overlap_comm: bool = True
    contiguous_gradients: bool = True
    reduce_bucket_size: int = 500_000_000
    allgather_bucket_size: int = 500_000_000
    # ZeRO-3: gather full 16-bit weights at save so model/ holds plain HF safetensors.
    stage3_gather_16bit_weights_on_model_save: bool = True


@dataclass
class ClusterConfig:
    name: str = "local"
    # Processes per node for torch.distributed (1 = plain single process).
    gpus_per_node: int = 0
    nodes: int = 1


@dataclass
class EvalConfig:
    benchmarks: list[str] = field(default_factory=lambda: ["math-500"])
    # Questions per benchmark (null = all). The default run evaluates a small slice.
    limit: Optional[int] = None
    backend: str = "transformers"  # transformers | vllm
    max_new_tokens: int = 2048
    batch_size: int = 16
    checker: str = "cft"  # cft | math-verify
    grader_timeout_s: float = 5.0
    grader_workers: Optional[int] = None
    # Evaluate every saved checkpoint on select_benchmark and use the best for the final eval.
    select_checkpoint: bool = False
    select_benchmark: str = "math-500"
    select_limit: Optional[int] = None
    # Critic evaluation of a CFT model on held-out CHAMP (question, response) pairs.
    critic: bool = False
    critic_limit: Optional[int] = 64


@dataclass
class TrackingConfig:
    # disabled | offline | online  (W&B); metrics.jsonl is always written.
    mode: str = "disabled"
    project: str = "cft"
    entity: Optional[str] = None
    group: Optional[str] = None


@dataclass
class PathsConfig:
    benchmarks: str = MISSING
    cache: str = MISSING
    output_root: str = MISSING


@dataclass
class CFTConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    deepspeed: DeepSpeedConfig = field(default_factory=DeepSpeedConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    stages: list[str] = field(default_factory=lambda: list(STAGES))
    run_name: str = MISSING
    seed: int = 42
    # Set by the launcher: the run directory (Hydra's output dir).
    run_dir: str = MISSING


STAGES = ("data", "critique", "train", "eval", "report")
TARGETS = ("critique", "response", "teacher_solution")
KEEPS = ("all", "verified")


PROJECT_ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def register_configs() -> None:
    ConfigStore.instance().store(name="cft_schema", node=CFTConfig)
    if not OmegaConf.has_resolver("project_root"):
        OmegaConf.register_new_resolver("project_root", lambda: str(PROJECT_ROOT))


class ConfigError(ValueError):
    """A config value that composed but makes no sense; the message names the key."""


def _choice(cfg: DictConfig, key: str, allowed) -> None:
    value = OmegaConf.select(cfg, key)
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is not one of {list(allowed)}")


def validate(cfg: DictConfig, world_size: int = 1) -> DictConfig:
    """Check cross-field constraints and compute derived values, once, in place."""
    for stage in cfg.stages:
        if stage not in STAGES:
            raise ConfigError(f"stages: unknown stage {stage!r}; known: {list(STAGES)}")
    _choice(cfg, "method.target", TARGETS)
    _choice(cfg, "method.keep", KEEPS)
    _choice(cfg, "model.init", ("pretrained", "random"))
    _choice(cfg, "teacher.backend", ("reference", "openai", "vllm", "released"))
    _choice(cfg, "eval.backend", ("transformers", "vllm"))
    _choice(cfg, "eval.checker", ("cft", "math-verify"))
    _choice(cfg, "tracking.mode", ("disabled", "offline", "online"))
    _choice(cfg, "deepspeed.stage", (0, 2, 3))
    _choice(cfg, "deepspeed.offload_optimizer", ("none", "cpu"))
    _choice(cfg, "deepspeed.offload_param", ("none", "cpu"))
    if cfg.deepspeed.offload_param != "none" and cfg.deepspeed.stage != 3:
        raise ConfigError("deepspeed.offload_param needs deepspeed.stage=3 (ZeRO-3 partitions parameters)")
    if cfg.model.init == "pretrained" and not cfg.model.path:
        raise ConfigError("model.path is empty: set a HF id or a local checkpoint directory")
    per_step = world_size * cfg.model.per_device_batch_size
    if cfg.method.global_batch_size % per_step:
        raise ConfigError(
            f"method.global_batch_size={cfg.method.global_batch_size} is not divisible by "
            f"world_size ({world_size}) x model.per_device_batch_size "
            f"({cfg.model.per_device_batch_size})"
        )
    cfg.method.grad_accum_steps = cfg.method.global_batch_size // per_step
    return cfg
