"""Entrypoint: `python -m cft.main [overrides]` (Hydra). All logic lives in `cft.pipeline.run`."""
from __future__ import annotations

import hydra
from omegaconf import DictConfig

from cft.config import CONF_DIR, register_configs

register_configs()


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> None:
    from cft.pipeline import run

    run(cfg)


if __name__ == "__main__":
    main()
