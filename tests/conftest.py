"""Shared fixtures: Hydra compose, the benchmarks root, a per-session cache for the tiny model."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
from cft.benchmarks import SHIPPED as BENCHMARKS  # noqa: E402  the test sets that ship with the package

# Never talk to W&B or a hub from tests.
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def _environment_is_restored():
    """What a test's in-process libraries write into os.environ (vLLM's CPU platform sets
    LOCAL_WORLD_SIZE, DeepSpeed's group of one sets RANK...) never reaches the next test or the
    processes it starts: a later multi-task srun refused to start on a stale LOCAL_WORLD_SIZE."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """The tiny model is built once per test session (or reused from $CFT_CACHE)."""
    return Path(os.environ.get("CFT_CACHE") or tmp_path_factory.mktemp("cache"))


def make_compose(cache_dir: Path, run_dir: Path, outputs: Path):
    """compose(["model=tiny", ...], run_dir=...) -> a resolved DictConfig that writes to run_dir
    (this one unless given) and `outputs`, and reads the tiny-model cache and the shipped
    benchmarks."""
    from omegaconf import OmegaConf, open_dict

    from cft.config import compose_config

    def _compose(overrides=(), run_dir: Path = run_dir):
        cfg = compose_config(overrides)
        with open_dict(cfg):
            cfg.run_dir = str(run_dir)
            cfg.paths.cache, cfg.paths.output_root = str(cache_dir), str(outputs)
            cfg.paths.benchmarks = str(BENCHMARKS)
        OmegaConf.resolve(cfg)
        return cfg

    return _compose


@pytest.fixture
def compose(cache_dir, tmp_path):
    """compose(["model=tiny", ...]) -> a resolved DictConfig with run_dir in tmp_path (a module-scoped
    fixture calls make_compose with its own directories)."""
    return make_compose(cache_dir, tmp_path / "run", tmp_path / "outputs")


@pytest.fixture(scope="session")
def tiny_source(cache_dir) -> Path:
    """Directory of the cached tiny model (random Qwen2 + locally trained tokenizer)."""
    from omegaconf import OmegaConf

    from cft.tiny import build_tiny

    cfg = make_compose(cache_dir, cache_dir / "run", cache_dir / "outputs")(["model=tiny"])
    return build_tiny(OmegaConf.to_container(cfg.model.arch), cache_dir)


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_source):
    from cft.models import load_tokenizer

    return load_tokenizer(str(tiny_source))
