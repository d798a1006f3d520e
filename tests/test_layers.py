"""The package's shape: stages import the library layer downward, never each other, and nothing
in the library imports a stage (so the import graph has no cycle between packages). Only the
entry points that drive stages (the pipeline, the GPU check and its throughput pieces) sit above
them."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "cft"
STAGES = {"data", "critique", "train", "eval", "report"}
ENTRY_POINTS = ("main.py", "pipeline.py", "gpu_check.py", "throughput.py")


def _imports(path: Path) -> set[str]:
    """Every `cft.*` module a file imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name == "cft" or name.startswith("cft.")}


def _owner(path: Path) -> str:
    """The stage a file belongs to, or "" for the library layer and the spine."""
    part = path.relative_to(PACKAGE).parts[0]
    return part if part in STAGES else ""


def test_no_stage_imports_another_and_the_library_imports_no_stage():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        owner = _owner(path)
        if path.relative_to(PACKAGE).parts[0] in ENTRY_POINTS:
            continue  # above the stages: they run them
        for module in _imports(path):
            target = module.split(".")[1] if module.count(".") else ""
            if target in STAGES and target != owner:
                wrong.append(f"{path.relative_to(PACKAGE.parent)} imports {module}")
    assert wrong == [], "\n".join(wrong)
