"""Checks across config keys, run once before any stage: a value that composed (Hydra checked
its type) but makes no sense with the others, or an input file that is not there, fails here
with a message naming the key, in seconds rather than after hours of training."""
from __future__ import annotations

from omegaconf import DictConfig, ListConfig, OmegaConf

from cft.config import STAGES

TARGETS = ("critique", "response", "teacher_solution", "none")  # none: method=base, no training
KEEPS = ("all", "verified")


class ConfigError(ValueError):
    """A config value that composed but makes no sense; the message names the key."""


def _choice(cfg: DictConfig, key: str, allowed) -> None:
    value = OmegaConf.select(cfg, key)
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is not one of {list(allowed)}")


def _local_path(value) -> bool:
    """A path the user means as a file on this machine (not a hub id such as `Qwen/Qwen2.5-7B`)."""
    return isinstance(value, str) and value.startswith(("/", "./", "../", "~"))


def check_known_keys(node, where: str = "") -> None:
    """Every key of a section with a dataclass schema is one of its fields. Hydra refuses an unknown
    key at composition, but its `+key=value` form (which its own error message suggests) adds one
    anyway, and nothing reads it: `+method.learning_rate=1e-5` would be recorded and ignored."""
    import dataclasses

    if isinstance(node, ListConfig):
        if node._is_none():  # an Optional[list] left null (report.columns)
            return
        for i, item in enumerate(node):
            check_known_keys(item, f"{where}[{i}]")
        return
    if not isinstance(node, DictConfig):
        return
    schema = OmegaConf.get_type(node)
    if dataclasses.is_dataclass(schema):
        fields = [f.name for f in dataclasses.fields(schema)]
        for key in node:
            if key not in fields:
                section = f"section {where}" if where else "the config"
                raise ConfigError(f"{where + '.' if where else ''}{key} is not a key of {section} "
                                  f"({schema.__name__}: `+` cannot add one); its keys are: "
                                  f"{', '.join(fields)}")
    for key, child in node.items_ex(resolve=False):
        check_known_keys(child, f"{where}.{key}" if where else str(key))


# Sizes and rates that must be > 0: 0 or less would train nothing without a word (method.lr=0),
# divide by zero (a batch size) or generate nothing.
POSITIVE = ("method.lr", "method.global_batch_size", "method.cutoff_len", "model.per_device_batch_size",
            "eval.batch_size", "eval.max_new_tokens")


def check_positive(cfg: DictConfig) -> None:
    """Every POSITIVE key > 0, and a run that evaluates names a benchmark, naming the key."""
    for key in POSITIVE:
        value = OmegaConf.select(cfg, key)
        if not value > 0:
            raise ConfigError(f"{key}={value} must be > 0")
    if "eval" in cfg.stages and not cfg.eval.benchmarks:
        raise ConfigError("eval.benchmarks is empty: name at least one benchmark (e.g. "
                          "eval.benchmarks=[math-500]), or leave eval out of stages")


def check_inputs(cfg: DictConfig) -> None:
    """Every input file the selected stages will read exists, checked before the first stage so
    a typo or a missing file fails in seconds, naming its key, not after hours of training."""
    from pathlib import Path

    from cft.benchmarks import get_benchmark
    from cft.io import DataError
    from cft.templates import EVAL_TEMPLATES, TRAIN_TEMPLATES

    stages = set(cfg.stages)
    benchmark_keys = [("eval.benchmarks", list(cfg.eval.benchmarks), True),
                      ("eval.select_benchmark", [cfg.eval.select_benchmark], cfg.eval.select_checkpoint),
                      ("eval.dynamics", list(cfg.eval.get("dynamics") or []), True)]
    checked: set = set()  # a user's file named twice (eval.benchmarks and eval.dynamics) is read once
    for key, names, read in benchmark_keys:
        for name in names:
            try:
                bench = get_benchmark(name)
            except KeyError as e:  # a typo fails here, not after training
                raise ConfigError(str(e.args[0]).replace("eval.benchmarks", key, 1)) from None
            if not read or "eval" not in stages:
                continue
            source = bench.path(cfg.paths.benchmarks)
            if bench.file is None and not bench.choice and not source.is_file():
                raise ConfigError(f"{key}: benchmark {bench.name!r} has no test set at {source} (paths.benchmarks="
                                  f"{cfg.paths.benchmarks!r}; unset $CFT_BENCHMARKS for the shipped sets)")
            if (bench.file is not None or bench.choice) and source not in checked:
                checked.add(source)
                try:  # a user's own file, in its official format, every row, before any work (linear in its size)
                    bench.load(cfg.paths.benchmarks)
                except DataError as e:
                    raise ConfigError(f"{key}: {e}") from None
    if "eval" in stages and cfg.model.eval_template not in EVAL_TEMPLATES:
        raise ConfigError(f"model.eval_template={cfg.model.eval_template!r} is unknown; "
                          f"known: {sorted(EVAL_TEMPLATES)}")
    if "eval" in stages:
        from cft.templates import PROTOCOLS, eval_protocol

        _choice(cfg, "eval.protocol", PROTOCOLS)
        try:  # few-shot-cot: enough demonstrations for every benchmark it will prompt
            eval_protocol(cfg.eval, cfg.model).check(
                [get_benchmark(n).name for _, names, read in benchmark_keys if read for n in names])
        except ValueError as e:
            raise ConfigError(str(e)) from None
    if stages & {"train", "eval"} and cfg.model.train_template not in TRAIN_TEMPLATES:
        raise ConfigError(f"model.train_template={cfg.model.train_template!r} is unknown; "
                          f"known: {sorted(TRAIN_TEMPLATES)}")
    if "data" in stages and OmegaConf.is_missing(cfg.dataset, "path"):
        raise ConfigError(f"dataset.path is required for dataset={cfg.dataset.name} (set dataset.path=...)")
    if "data" in stages and cfg.dataset.get("path") and not Path(cfg.dataset.path).expanduser().exists():
        raise ConfigError(f"dataset.path={cfg.dataset.path!r}: file not found")
    if stages & {"train", "eval", "data"} and cfg.model.init == "pretrained" and _local_path(cfg.model.path) \
            and not Path(cfg.model.path).expanduser().exists():
        raise ConfigError(f"model.path={cfg.model.path!r}: no such local model directory")


def _validate_noisy_generators(cfg: DictConfig) -> None:
    """dataset.noisy_generator / noisy_generators: one form at a time, distinct names, known
    templates and backends, sampling that can give n different responses, and "tiny" only for a
    run whose own model is built from its config."""
    from cft.config import noisy_generators
    from cft.templates import EVAL_TEMPLATES

    ds = cfg.dataset
    if ds.noisy_generator and ds.noisy_generators:
        raise ConfigError(f"dataset.noisy_generator={ds.noisy_generator!r} and dataset.noisy_generators are "
                          "both set: use one (the list form for several generators)")
    gens = noisy_generators(ds)
    if ds.loader == "problems" and not gens:
        raise ConfigError(f"dataset={ds.name} (loader=problems) ships problems without responses: "
                          "set dataset.noisy_generators (or dataset.noisy_generator) to generate them")
    names = [g["name"] for g in gens]
    if len(set(names)) != len(names):
        raise ConfigError(f"dataset.noisy_generators: names must be distinct, got {names}")
    for i, g in enumerate(gens):
        key = f"dataset.noisy_generators[{i}] ({g['name']})" if ds.noisy_generators else "dataset.noisy_generator"
        if g["path"] == "tiny" and cfg.model.init != "random":
            raise ConfigError(f"{key}: tiny generates with the run's own model built from its config, but "
                              f"model={cfg.model.name} is pretrained (model.init={cfg.model.init}): use "
                              f"model=tiny, or name the generator (a HF id or local path)")
        if g["template"] not in EVAL_TEMPLATES:
            raise ConfigError(f"{key}: template={g['template']!r} is unknown; known: {sorted(EVAL_TEMPLATES)}")
        if g["backend"] not in ("transformers", "vllm"):
            raise ConfigError(f"{key}: backend={g['backend']!r}; known: transformers, vllm")
        if g["n"] < 1 or g["max_new_tokens"] < 1:
            raise ConfigError(f"{key}: n={g['n']} and max_new_tokens={g['max_new_tokens']} must be >= 1")
        if g["n"] > 1 and g["temperature"] == 0:
            raise ConfigError(f"{key}: n={g['n']} greedy samples (temperature 0) would all be the same; "
                              "set a temperature > 0")


def _validate_snapshots(cfg: DictConfig) -> None:
    """method.snapshot_steps is a whole number of steps or a share of the run; eval.dynamics
    scores snapshots, so a run that trains for it writes them."""
    value = cfg.method.get("snapshot_steps")
    if value is not None and (value < 0 or (value >= 1 and value != int(value))):
        raise ConfigError(f"method.snapshot_steps={value}: a whole number of steps (>= 1), a share of the "
                          "run's steps (< 1), or null/0 (off)")
    if cfg.eval.get("dynamics") and "train" in cfg.stages and not value:
        raise ConfigError(f"eval.dynamics={list(cfg.eval.dynamics)} evaluates the weights-only snapshots, and "
                          "method.snapshot_steps is off: set it (the paper's figure: every 10 steps)")


def _validate_teachers(cfg: DictConfig) -> None:
    """teacher.mode and teacher.models. mode=batch is ignored by the reference backend, the
    offline stand-in for any teacher (so `teacher=reference` runs a batch recipe on CPU)."""
    _choice(cfg, "teacher.mode", ("sync", "batch"))
    if cfg.teacher.mode == "batch" and cfg.teacher.backend in ("vllm", "released"):
        raise ConfigError(f"teacher.mode=batch needs the Batch API of an OpenAI-compatible "
                          f"endpoint; teacher.backend={cfg.teacher.backend!r} has none")
    if cfg.teacher.models and cfg.teacher.backend == "released":
        raise ConfigError("teacher.models lists teachers that write critiques; teacher=released "
                          "only replays the dataset's own")
    names = [m.name for m in cfg.teacher.models]
    if len(set(names)) != len(names):
        raise ConfigError(f"teacher.models: teacher names must be distinct, got {names}")
    for i, m in enumerate(cfg.teacher.models):
        backend = m.backend or cfg.teacher.backend
        if backend not in ("reference", "openai", "vllm"):
            raise ConfigError(f"teacher.models[{i}].backend={backend!r} is not one of "
                              f"['reference', 'openai', 'vllm']")
        if (m.mode or cfg.teacher.mode) == "batch" and backend == "vllm":
            raise ConfigError(f"teacher.models[{i}] ({m.name}): mode=batch needs backend=openai")
    _choice(cfg, "teacher.keep", ("all", "verdict_matches_reference"))
    if cfg.teacher.max_critiques is not None and cfg.teacher.max_critiques < 1:
        raise ConfigError(f"teacher.max_critiques={cfg.teacher.max_critiques} must be >= 1 (null: no cap)")
    for key in ("batch_max_requests", "batch_max_bytes"):
        if cfg.teacher[key] < 1:
            raise ConfigError(f"teacher.{key}={cfg.teacher[key]} must be >= 1")


def _validate_peft(cfg: DictConfig) -> None:
    """peft.*: LoRA's numbers, and the DeepSpeed stages an adapter run supports: ZeRO-3 would
    partition the frozen base that the final merge needs whole; QLoRA's 4-bit weights train
    without DeepSpeed (bitsandbytes' NF4 tensors are not ZeRO-partitioned here)."""
    p = cfg.get("peft")
    if p is None:
        return
    _choice(cfg, "peft.name", ("none", "lora", "qlora"))
    if p.name == "none":
        return
    if p.r < 1 or p.alpha <= 0 or not 0 <= p.dropout < 1:
        raise ConfigError(f"peft.r={p.r}, peft.alpha={p.alpha}, peft.dropout={p.dropout}: need r >= 1, "
                          f"alpha > 0 and 0 <= dropout < 1")
    if not p.target_modules:
        raise ConfigError("peft.target_modules is empty: [all-linear] (every linear layer) or module names")
    if int(cfg.deepspeed.stage) == 3:
        raise ConfigError(f"peft={p.name} with deepspeed=zero3 is not supported (the final merge needs the "
                          f"frozen base whole): use deepspeed=zero2 or deepspeed=none")
    if p.name == "qlora" and int(cfg.deepspeed.stage) > 0:
        raise ConfigError(f"peft=qlora trains without DeepSpeed (its 4-bit base weights are not "
                          f"ZeRO-partitioned), but deepspeed={cfg.deepspeed.name}: add deepspeed=none")


def _validate_variants(cfg: DictConfig) -> None:
    """CFT-Short (method.max_target_ratio) and CFT mixed with another SFT set (method.sft_records)."""
    from pathlib import Path

    m = cfg.method
    if m.max_target_ratio is not None and (m.target != "critique" or not m.max_target_ratio > 0):
        raise ConfigError(f"method.max_target_ratio={m.max_target_ratio} keeps critiques by their length: "
                          f"it needs a value > 0 and method.target=critique (not {m.target!r})")
    if m.sft_records and not m.sft_ratio:
        raise ConfigError(f"method.sft_records={m.sft_records!r} is read only for method.sft_ratio > 0 "
                          f"(the share of SFT pairs in the mix)")
    if m.sft_records and "train" in cfg.stages and not Path(m.sft_records).is_file():
        raise ConfigError(f"method.sft_records={m.sft_records!r}: file not found (a data stage's "
                          f"data/records.jsonl: run that data stage first)")


def validate(cfg: DictConfig, world_size: int = 1) -> DictConfig:
    """Check cross-field constraints and compute derived values, once, in place (method=base:
    the stages it does not run, cft.config.base_model_only)."""
    from cft.config import base_model_only

    check_known_keys(cfg)
    check_positive(cfg)
    base_model_only(cfg)
    for stage in cfg.stages:
        if stage not in STAGES:
            raise ConfigError(f"stages: unknown stage {stage!r}; known: {list(STAGES)}")
    _choice(cfg, "method.target", TARGETS)
    _choice(cfg, "method.keep", KEEPS)
    if not 0.0 <= cfg.method.sft_ratio < 1.0:
        raise ConfigError(f"method.sft_ratio={cfg.method.sft_ratio} must be in [0, 1)")
    if cfg.method.sft_ratio and cfg.method.target != "critique":
        raise ConfigError(f"method.sft_ratio mixes SFT pairs into critique training; "
                          f"method.target={cfg.method.target!r} is not 'critique'")
    _validate_variants(cfg)
    if cfg.method.wrong_fraction is not None:
        if not 0.0 <= cfg.method.wrong_fraction <= 1.0:
            raise ConfigError(f"method.wrong_fraction={cfg.method.wrong_fraction} must be in [0, 1] (null: off)")
        if cfg.method.target != "critique":
            raise ConfigError(f"method.wrong_fraction chooses critiques by the correctness of the response "
                              f"they critique; method.target={cfg.method.target!r} is not 'critique'")
    if cfg.method.polarity_size is not None and cfg.method.polarity_size < 1:
        raise ConfigError(f"method.polarity_size={cfg.method.polarity_size} must be >= 1 (null: the most the data allow)")
    _validate_snapshots(cfg)
    _choice(cfg, "model.init", ("pretrained", "random"))
    if "data" in cfg.stages:
        _validate_noisy_generators(cfg)
    _choice(cfg, "teacher.backend", ("reference", "openai", "vllm", "released"))
    _choice(cfg, "eval.backend", ("transformers", "vllm"))
    if "eval" in cfg.stages and cfg.eval.n > 1 and cfg.eval.temperature == 0:  # before the run, not at eval
        raise ConfigError(f"eval.n={cfg.eval.n} with eval.temperature=0: greedy samples are all the same; "
                          "set eval.temperature (e.g. 0.6, eval=sampled)")
    _choice(cfg, "eval.checker", ("cft", "math-verify"))
    _choice(cfg, "tracking.mode", ("disabled", "offline", "online"))
    _choice(cfg, "model.packing", ("auto", "packed", "padded"))
    check_inputs(cfg)
    _choice(cfg, "deepspeed.stage", (0, 2, 3))
    _choice(cfg, "deepspeed.offload_optimizer", ("none", "cpu"))
    _choice(cfg, "deepspeed.offload_param", ("none", "cpu"))
    if cfg.deepspeed.offload_param != "none" and cfg.deepspeed.stage != 3:
        raise ConfigError("deepspeed.offload_param needs deepspeed.stage=3 (ZeRO-3 partitions parameters)")
    _validate_peft(cfg)
    if "critique" in cfg.stages and cfg.teacher.backend == "released" and cfg.method.target == "teacher_solution":
        raise ConfigError(f"method={cfg.method.name} trains on teacher-written solutions, but teacher=released "
                          "only ships critiques: use a teacher that writes them (teacher=gpt-4o for the "
                          "paper's SFT-GPT4o)")
    if "critique" in cfg.stages and cfg.teacher.backend in ("openai", "vllm"):
        for key in ("model", "base_url"):  # `???` in the YAML: fails here, naming the key
            if OmegaConf.is_missing(cfg.teacher, key):
                raise ConfigError(f"teacher.{key} is required for teacher={cfg.teacher.name} (set teacher.{key}=...)")
    _validate_teachers(cfg)
    if cfg.model.init == "pretrained" and not cfg.model.path:
        raise ConfigError("model.path is empty: set a HF id or a local checkpoint directory")
    grad_accum_steps(cfg, world_size)  # the global batch must split over this world size
    return cfg


def grad_accum_steps(cfg: DictConfig, world_size: int) -> int:
    """Gradient-accumulation steps that make `method.global_batch_size` on `world_size` processes:
    derived where the Trainer and DeepSpeed are configured, never stored in the config (so the
    config, and a run's fingerprint, do not depend on how many GPUs ran it)."""
    per_step = world_size * cfg.model.per_device_batch_size
    if cfg.method.global_batch_size % per_step:
        raise ConfigError(
            f"method.global_batch_size={cfg.method.global_batch_size} is not divisible by "
            f"world_size ({world_size}) x model.per_device_batch_size "
            f"({cfg.model.per_device_batch_size})"
        )
    return cfg.method.global_batch_size // per_step
