"""Versioned prompt templates stored as YAML files under conf/prompts/."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from cft.config import CONF_DIR

PROMPTS_DIR = CONF_DIR / "prompts"


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    version: int
    system: str
    user: str

    def messages(self, question: str, response: str | None = None) -> list[dict[str, str]]:
        # str.replace, not format: questions and responses are full of braces.
        user = self.user.replace("{question}", question).replace("{response}", response or "")
        # An empty system prompt sends no system turn (One-Shot CFT's prompt is one user turn).
        system = [{"role": "system", "content": self.system}] if self.system else []
        return system + [{"role": "user", "content": user}]


def load_prompt(name: str, prompts_dir: Path = PROMPTS_DIR) -> PromptTemplate:
    path = prompts_dir / f"{name}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in prompts_dir.glob("*.yaml"))
        raise FileNotFoundError(f"teacher.prompt={name!r}: {path} not found; known: {known}")
    doc = yaml.safe_load(path.read_text())
    missing = {"name", "version", "system", "user"} - set(doc)
    if missing:
        raise ValueError(f"{path}: missing keys {sorted(missing)}")
    return PromptTemplate(doc["name"], int(doc["version"]), doc["system"], doc["user"])
