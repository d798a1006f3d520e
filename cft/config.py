"""Typed config schemas (registered in Hydra's ConfigStore) and the composed config.

Values live in ``conf/``; these dataclasses only fix the keys and their types, so a typo'd
key or an ill-typed value (``method.lr=abc``) fails at composition with Hydra's message
naming the key, before any stage runs. Checks across keys live in ``cft.validation``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf, open_dict


@dataclass
class ModelConfig:
    name: str = MISSING
    # HF hub id or local directory. Empty for models built from `arch` (tiny).
    path: str = ""
    # Another run's weights instead (cft.models.run_weights): its run directory, or "SWEEP
    # key=value ...", the one run of outputs/multirun/SWEEP with those config values, e.g.
    # "table2 model=qwen2.5-math-7b method=cft seed=42"; its selected checkpoint when it selected
    # one, else its final model. Resolved into `path` before any work. A table cell that evaluates
    # (or trains further) a model another table trained, without paying for that training again.
    from_run: str = ""
    # Set by the pipeline with from_run: a hash of the referenced run's marker for those weights.
    from_run_id: str = ""
    # Which weights of this family a `weights=` choice loaded: "" (the model group's own, or a
    # run's training), a released fine-tune (`weights=acemath-7b-instruct`), or another run's model
    # (`weights=cft-table2`). The paper's rows of table3/table4 are matched on it.
    release: str = ""
    # "pretrained": load `path`; "random": build from `arch` + a locally trained tokenizer.
    init: str = "pretrained"
    arch: dict[str, Any] = field(default_factory=dict)
    # How training examples are rendered and how eval prompts look (cft/templates.py); the paper uses qwen25-math-cot for Qwen and deepseek-math otherwise.
    train_template: str = "qwen"
    eval_template: str = "qwen25-math-cot"
    dtype: str = "bfloat16"
    # "auto": flash_attention_2 when flash-attn is importable on a GPU, else sdpa.
    attn_implementation: str = "auto"
    trust_remote_code: bool = False
    # Weights policy: "safetensors" (default: loading runs no pickle); "bin" only for a model that
    # ships nothing else (DeepSeek-Math), loaded with torch.load(weights_only=True).
    weights: str = "safetensors"
    per_device_batch_size: int = 8
    gradient_checkpointing: bool = True
    # Micro-batch layout (cft/train/packing.py). "packed": padding-free, one row of concatenated
    # samples whose positions restart per sample, so no token attends across samples.
    # "padded": right-padded rows. "auto": packed with a kernel that skips cross-sample attention
    # (flash_attention_2/3, the GPU default; flex_attention), padded otherwise (sdpa masks a
    # packed row densely: correct, but quadratic).
    packing: str = "auto"


@dataclass
class NoisyGenerator:
    """One noisy-response generator of `dataset.noisy_generators`; None = the dataset's noisy_* value."""
    # Recorded on each response (noisy_source "generated:<name>"); names must be distinct.
    name: str = MISSING
    # HF id or local path; "tiny" = the run's own model; "" = `name`.
    path: str = ""
    template: Optional[str] = None
    backend: Optional[str] = None
    n: Optional[int] = None
    temperature: Optional[float] = None
    top_p: Optional[float] = None
    max_new_tokens: Optional[int] = None


def noisy_generators(dataset) -> list[dict]:
    """The dataset's noisy-response generators as plain dicts with every field filled: the
    `noisy_generators` entries over the noisy_* defaults, or the one `noisy_generator`; [] when
    the dataset's own responses are used. Library-level so validation, the plan and the data
    stage read the same list."""
    base = {"template": dataset.noisy_generator_template, "backend": dataset.noisy_generator_backend,
            "n": dataset.noisy_n, "temperature": dataset.noisy_temperature, "top_p": dataset.noisy_top_p,
            "max_new_tokens": dataset.noisy_max_new_tokens}
    if dataset.get("noisy_generators"):
        out = []
        for entry in dataset.noisy_generators:
            entry = OmegaConf.to_container(entry, resolve=True) if OmegaConf.is_config(entry) else dict(entry)
            over = {k: v for k, v in entry.items() if v is not None}
            gen = {**base, **over}
            gen["path"] = gen.get("path") or gen["name"]
            out.append(gen)
        return out
    if dataset.noisy_generator:
        return [{**base, "name": dataset.noisy_generator, "path": dataset.noisy_generator}]
    return []


@dataclass
class DatasetConfig:
    name: str = MISSING
    # champ | webinstruct | metamath | numina | jsonl (cft/datasets)
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
    # Keep only these problems (a record id up to its first "|", e.g. CHAMP's P_Combinatorics_2):
    # One-Shot CFT's single problem. Empty = all.
    problems: list[str] = field(default_factory=list)
    # Drop training questions that overlap a benchmark (n-gram decontamination report).
    decontaminate: bool = False
    decontam_ngram: int = 8
    # Noisy responses generated by a model instead of the dataset's own: "" (off), "tiny" (the
    # run's own model built from its config, e.g. model=tiny on CPU), or a HF id / local path
    # (e.g. Qwen/Qwen2.5-Math-7B with vLLM).
    noisy_generator: str = ""
    noisy_generator_backend: str = "transformers"  # transformers | vllm
    noisy_generator_template: str = "qwen25-math-cot"
    noisy_max_new_tokens: int = 1024
    # Samples per question and generator; temperature 0 is greedy (then n must be 1).
    noisy_n: int = 1
    noisy_temperature: float = 0.0
    noisy_top_p: float = 1.0
    # Several generators (One-Shot CFT: 10 models x 10 samples): each entry's unset fields come
    # from the noisy_* fields above. Exclusive with noisy_generator (its one-model form).
    noisy_generators: list[NoisyGenerator] = field(default_factory=list)


@dataclass
class MethodConfig:
    name: str = MISSING
    # What the model learns to produce: critique | response | teacher_solution
    target: str = MISSING
    # Which records are kept: all | verified (judged correct: cft.records.is_verified)
    keep: str = "all"
    # cft only: share of the training set made of SFT pairs (question -> the dataset's response),
    # mixed in with the critiques. 0 = pure CFT; `method=cft-sft` sets 0.5.
    sft_ratio: float = 0.0
    # The polarity ablation (conf/experiment/polarity-ablation.yaml): train on polarity_size
    # critiques of which this share critique wrong responses (cft.records.response_polarity),
    # drawn with `seed`. null = off (every critique). polarity_size null = the most every share
    # can have: the smaller of the right and wrong counts.
    wrong_fraction: Optional[float] = None
    polarity_size: Optional[int] = None
    # CFT-Short (the paper's Table 10, conf/method/cft-short.yaml): train only on critiques of at
    # most max_target_ratio times the tokens of the response they critique (that record's SFT
    # target), counted with the run's tokenizer. null = every critique.
    max_target_ratio: Optional[float] = None
    # SFT pairs for method.sft_ratio from another file (a records.jsonl, e.g. the data stage's of
    # an AceMath run) instead of this run's own records: CFT mixed with another SFT set.
    sft_records: str = ""
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
    # Full-state checkpoints (train/checkpoints/checkpoint-N): every save_steps optimizer steps
    # (a value < 1 is a share of the run's total steps, as in HF TrainingArguments; the default
    # 0.2 saves 5 evenly spaced checkpoints whatever the data size), keeping the newest
    # save_total_limit complete ones (all of them when eval.select_checkpoint picks among them).
    save_steps: float = 0.2
    save_total_limit: int = 2
    # Weights-only snapshots (train/snapshots/step-N: the weights generation loads, in
    # model.dtype, or the adapter with peft; no optimizer state) every snapshot_steps optimizer
    # steps and at the last one (a value < 1 is a share of the run's steps, as save_steps).
    # null/0 = off. Checkpoint selection and eval.dynamics score them, then keep only the
    # selected one; `python -m cft.plan` shows their disk cost. conf/eval/paper.yaml sets 2, the
    # official run's save_steps.
    snapshot_steps: Optional[float] = None


@dataclass
class TeacherEntry:
    """One teacher of a multi-teacher run (`teacher.models`); None = the parent's value."""
    name: str = MISSING
    backend: Optional[str] = None
    model: Optional[str] = None
    base_url: Optional[str] = None
    api_key_env: Optional[str] = None
    mode: Optional[str] = None
    temperature: Optional[float] = None
    max_tokens: Optional[int] = None
    price_prompt_per_mtok: Optional[float] = None
    price_completion_per_mtok: Optional[float] = None
    reasoning: Optional[bool] = None


@dataclass
class TeacherConfig:
    name: str = MISSING
    # reference | openai | vllm | released (cft/critique/teachers.py)
    backend: str = MISSING
    model: str = MISSING
    # OpenAI-compatible endpoint; null = OpenAI's default. `???` in conf/teacher/openai.yaml.
    base_url: Optional[str] = MISSING
    # Name of the environment variable holding the key; the key itself never enters a config.
    api_key_env: str = "OPENAI_API_KEY"
    prompt: str = "critique-v1"
    solution_prompt: str = "solution-v1"
    temperature: float = 0.3
    top_p: float = 0.95
    # An OpenAI reasoning model (o1, o3...): requests carry only max_completion_tokens (they
    # reject temperature/top_p/max_tokens). null: by model id (cft.critique.api.is_reasoning_model).
    reasoning: Optional[bool] = None
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
    # Filters applied to parsed critiques (apply_filters in cft/critique/stage.py).
    # keep: all | verdict_matches_reference (only critiques whose verdict equals the answer
    # checker's decision on the response; undecided ones go too: One-Shot CFT's "incorrect or
    # inconsistent critiques" filter, as far as it can be checked).
    keep: str = "all"
    # Cap on the kept critiques, reached by dropping the longest and the shortest examples in
    # turn (One-Shot CFT: 600 per seed problem). null = no cap.
    max_critiques: Optional[int] = None
    drop_disagreements: bool = False
    balance_verdicts: bool = False
    # Reject critiques with no parsable `Conclusion: right/wrong`. Off for teacher=released: the
    # official run trained on every released row (those without a verdict are counted).
    require_verdict: bool = True
    # openai backend: "sync" (chat completions, one call per item) or "batch" (the Batch API:
    # JSONL files, results within 24 h, half price; cft/critique/batch.py).
    mode: str = "sync"
    # OpenAI's per-batch limits (https://platform.openai.com/docs/guides/batch).
    batch_max_requests: int = 50_000
    batch_max_bytes: int = 200_000_000
    batch_completion_window: str = "24h"
    # Poll every batch_poll_s, backing off x1.5 to batch_poll_max_s while nothing finishes.
    batch_poll_s: float = 30.0
    batch_poll_max_s: float = 600.0
    # How long the stage waits for its batches; then it stops (their ids are in
    # critique/batches.jsonl) and the same command collects them later. 0 = submit and exit.
    batch_wait_s: float = 93_600.0
    # Batch price as a share of the list (synchronous) price.
    batch_discount: float = 0.5
    # Several teachers in one run: each record gets one critique per entry. An entry names a
    # teacher and overrides fields of this one (unset fields are inherited).
    models: list[TeacherEntry] = field(default_factory=list)


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
class PeftConfig:
    """Parameter-efficient fine-tuning through the `peft` library (cft/train/adapters.py):
    conf/peft/none.yaml (full fine-tuning, the paper's), lora.yaml, qlora.yaml."""
    # none | lora | qlora (LoRA over 4-bit NF4 base weights: bitsandbytes, CUDA only)
    name: str = "none"
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    # ["all-linear"]: every linear layer of the transformer blocks (peft's shorthand; never the
    # output layer), or module names such as [q_proj, v_proj].
    target_modules: list[str] = field(default_factory=lambda: ["all-linear"])
    # Modules trained in full and saved beside the adapter (e.g. [embed_tokens, lm_head]).
    modules_to_save: list[str] = field(default_factory=list)


@dataclass
class ClusterConfig:
    name: str = "local"
    # Processes per node for torch.distributed (1 = plain single process).
    gpus_per_node: int = 0
    nodes: int = 1
    # SLURM site values, fed to hydra.launcher by conf/cluster/slurm*.yaml. Required (???) here,
    # not in the YAML: OmegaConf's merge never lets a YAML ??? replace a schema default.
    partition: Optional[str] = MISSING
    account: Optional[str] = None


@dataclass
class EvalConfig:
    # conf/eval: quick (CPU slice), full (six benchmarks), paper (+ vLLM, best checkpoint),
    # sampled (16 samples per problem at T=0.6 for AIME24/AMC23).
    name: str = MISSING
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
    # math-validation: 500 MATH train problems, disjoint from every reported test set;
    # select_benchmark=math500 is the paper's exact protocol (selected on a reported column).
    select_checkpoint: bool = False
    select_benchmark: str = "math-validation"
    select_limit: Optional[int] = None
    # Training dynamics (the paper's figure of accuracy over steps): every weights-only snapshot
    # (method.snapshot_steps) is evaluated on these benchmarks (eval.limit items each), into
    # eval/dynamics.json; the report plots training_dynamics.png. Empty = off.
    dynamics: list[str] = field(default_factory=list)
    # How questions become prompts (cft.templates.EvalProtocol): zero-shot (model.eval_template,
    # the paper's protocol for trained models) | few-shot-cot (Qwen2.5-Math's few-shot CoT
    # prompts for base models, `shots` demonstrations). results.json records which.
    protocol: str = "zero-shot"
    shots: int = 4
    # eval.protocol=self-critique (cft/eval/self_critique.py, the paper's two-stage self-critique,
    # v4 App. A.4): answer zero-shot, critique the answer in the CFT input format, answer again
    # (a fresh sample at eval.temperature) while the verdict is not "right", for at most
    # self_critique_rounds solutions (the paper: 8). Critiques get self_critique_max_new_tokens
    # (null: max_new_tokens).
    self_critique_rounds: int = 8
    self_critique_max_new_tokens: Optional[int] = None
    # Critic evaluation of a CFT model on held-out CHAMP (question, response) pairs.
    critic: bool = False
    critic_limit: Optional[int] = 64
    # Sampling (cft/eval/sampling.py): n samples per problem; temperature 0 is greedy (n=1, the
    # paper's protocol). Seeded per problem from `seed`. Scores: acc (sample 0), avg@n, and
    # pass@k / maj@k for each k in ks up to n (cft/eval/metrics.py); eval=sampled sets them.
    n: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    ks: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16, 32, 64])


@dataclass
class RecipeConfig:
    # conf/recipe: paper (the schema's method defaults) or cpu (the tiny model's overrides).
    name: str = MISSING


@dataclass
class VLLMConfig:
    """vLLM engine settings, shared by every vLLM use: eval.backend=vllm, teacher=vllm and
    dataset.noisy_generator_backend=vllm (cft/generation.py)."""
    # 0 = every visible GPU (the official evaluation shards a model over all of them).
    tensor_parallel_size: int = 0
    gpu_memory_utilization: float = 0.9
    # null = the model's own context length.
    max_model_len: Optional[int] = None
    # auto = the checkpoint's torch_dtype; float32 for exact agreement with transformers.
    dtype: str = "auto"
    seed: int = 0
    # null = eager without GPUs: on CPU, torch.compile costs minutes per engine start (measured
    # 183 s vs 71 s for the tiny model on 2 cores) and gains little; on GPUs vLLM compiles.
    enforce_eager: Optional[bool] = None


@dataclass
class TrackingConfig:
    # disabled | offline | online  (W&B); metrics.jsonl is always written.
    mode: str = "disabled"
    project: str = "cft"
    entity: Optional[str] = None
    group: Optional[str] = None


@dataclass
class ReuseConfig:
    # A sweep under outputs/multirun/ (beside this one) whose runs fill cells of this table.
    sweep: str = MISSING
    # Which of its runs: config keys as the table labels them (`method: sft`, `model` for
    # model.name; a list means any of those values).
    where: dict[str, Any] = field(default_factory=dict)


@dataclass
class ReportConfig:
    # A sweep's report (python -m cft.report DIR) shows each row's difference from its baseline
    # row: the row with these values and the same other keys, e.g. "method=sft" (the paper's SFT
    # rows; several keys space-separated). null: no baseline column.
    baseline: Optional[str] = None
    # A table of the paper (cft/report/paper/*.yaml, e.g. table2): its published numbers appear
    # below the matching rows, and its rows without a run too, in the paper's order.
    paper: Optional[str] = None
    # The table's benchmark columns and what its average is over (the SimpleRL table averages
    # five benchmarks without GSM8K). null: the paper table's columns, else every benchmark run.
    columns: Optional[list[str]] = None
    # Cells taken from another sweep's finished runs, by reference (never re-run).
    reuse: list[ReuseConfig] = field(default_factory=list)
    # A note for the rows matching a spec, e.g. {"method=sft-verified": "differs from the paper: ..."}.
    notes: dict[str, str] = field(default_factory=dict)


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
    peft: PeftConfig = field(default_factory=PeftConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    recipe: RecipeConfig = field(default_factory=RecipeConfig)
    vllm: VLLMConfig = field(default_factory=VLLMConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    stages: list[str] = field(default_factory=lambda: list(STAGES))
    run_name: str = MISSING
    sweep_name: str = MISSING
    seed: int = 42
    # Where GPUs are visible, stop before the first stage when the resource plan (python -m
    # cft.plan) says train or eval will not fit; false runs anyway (the estimate is a model).
    check_resources: bool = True
    # Set by the launcher: the run directory (Hydra's output dir).
    run_dir: str = MISSING


STAGES = ("data", "critique", "train", "eval", "report")


def _conf_dir():
    """The Hydra config: cft/conf in an installed wheel (setup.py copies it there), else the
    checkout's conf/ (an editable install, or running from the repo)."""
    from pathlib import Path

    here = Path(__file__).resolve().parent
    return here / "conf" if (here / "conf" / "config.yaml").exists() else here.parent / "conf"


CONF_DIR = _conf_dir()
# The directory that holds conf/: the checkout, or the installed cft package.
PROJECT_ROOT = CONF_DIR.parent


def register_configs() -> None:
    ConfigStore.instance().store(name="cft_schema", node=CFTConfig)
    if not OmegaConf.has_resolver("shipped_benchmarks"):
        from cft.benchmarks import SHIPPED

        OmegaConf.register_new_resolver("shipped_benchmarks", lambda: str(SHIPPED))
    if not OmegaConf.has_resolver("job_dir"):
        OmegaConf.register_new_resolver("job_dir", job_dir)
    if not OmegaConf.has_resolver("shipped_datasets"):  # small datasets shipped in cft/datasets/data
        from pathlib import Path

        OmegaConf.register_new_resolver("shipped_datasets",
                                        lambda: str(Path(__file__).resolve().parent / "datasets" / "data"))


JOB_DIR_MAX = 120  # characters of a --multirun job dir name (a file name is at most 255 bytes)


def job_dir(num, overrides: str) -> str:
    """A --multirun job's subdir: its overrides (the swept values and the command line's, less
    hydra.job.config.override_dirname.exclude_keys), so the same cell finds the same directory
    whatever else the sweep holds (the job number changes when a sweep is narrowed or widened:
    `seed=42` first and the full grid later retrained the same cell in a second directory). "/"
    (a path or an HF id in an override) is kept out so the job dir is one directory, and a name
    longer than JOB_DIR_MAX is cut and ends in a hash of the whole (a long override list
    overflowed the 255-byte file-name limit). `num` only names a job without overrides. Runs are
    found by their config.yaml (cft.report, model.from_run), never by their dir name."""
    import hashlib

    name = overrides.replace("/", "%2F") or f"job{num}"
    if len(name) <= JOB_DIR_MAX:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:10]
    return f"{name[:JOB_DIR_MAX - 11]}~{digest}"


def compose_config(overrides=(), return_hydra_config: bool = False) -> DictConfig:
    """The composed config outside a Hydra app, for tools that need a recipe's values (the GPU
    check, benchmarks), so they read the config as a run sees it, never a YAML file directly;
    `return_hydra_config` adds the `hydra` node (launcher, sweeper)."""
    from hydra import compose, initialize_config_dir

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=return_hydra_config)


TRAINING_STAGES = ("data", "critique", "train")


def base_model_only(cfg) -> None:
    """method=base (method.target none, the paper's base rows): the base model is scored as it is,
    so the stages that build training data and train are dropped from `stages`, and there is no
    checkpoint to select (eval.select_checkpoint false). Done in the config itself, before
    validation and the resource plan, so config.yaml, the fingerprints and the plan all record the
    run that happens; said on stdout, since a sweep row's stages differ from its neighbours'."""
    if cfg.method.target != "none":
        return
    dropped = [s for s in cfg.stages if s in TRAINING_STAGES]
    with open_dict(cfg):
        cfg.stages = [s for s in cfg.stages if s not in TRAINING_STAGES]
        selected = bool(cfg.eval.select_checkpoint)
        cfg.eval.select_checkpoint = False
        dynamics = bool(cfg.eval.dynamics)
        cfg.eval.dynamics = []  # no snapshots without training
    if dropped or selected or dynamics:
        print(f"[cft] method=base: the base model is evaluated as it is; not run: stages {dropped}"
              + (", checkpoint selection (eval.select_checkpoint)" if selected else "")
              + (", training dynamics (eval.dynamics)" if dynamics else ""), flush=True)


# --- matching runs by their config (the report's paper rows and reuse, model.from_run) -------
# Config groups a spec names by the group (`model: qwen2.5-math-7b` is model.name).
GROUPS = ("model", "dataset", "method", "teacher", "eval", "recipe", "deepspeed", "peft", "cluster")


def flatten(obj, prefix: str = "") -> dict:
    """A config container as dotted keys ({"dataset.noisy_models": "[GPT-4]", ...})."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    if isinstance(obj, list):
        return {prefix[:-1]: "[" + ",".join(str(v) for v in obj) + "]"}
    return {prefix[:-1]: obj}


def config_key(key: str) -> str:
    """A spec's key as the flattened config has it: `model` -> `model.name`; a top-level key that
    is no group (`seed`) is itself."""
    return f"{key}.name" if key in GROUPS else key


def spec_values(value) -> tuple[str, ...]:
    """A spec's value (one, or a list meaning any of them) as the strings `agrees` compares."""
    items = value if isinstance(value, (list, tuple)) else [value]
    return tuple("None" if v is None else str(v) for v in items)


def agrees(value, accepted: tuple[str, ...]) -> bool:
    """A config value equals one of the accepted ones, numbers by value (0 == 0.0, 5e-6 ==
    5.0e-06), and a missing or null value only an explicit null."""
    text = "None" if value is None else str(value)
    for want in accepted:
        if text == want:
            return True
        try:
            if float(text) == float(want):
                return True
        except ValueError:
            continue
    return False


def matches(flat: dict, spec: dict) -> bool:
    """Whether a flattened config has every value `spec` names ({key: value or [values]})."""
    return all(agrees(flat.get(config_key(k)), spec_values(v)) for k, v in spec.items())
