"""The layers of `orchestrator/` (see each package's docstring): each imports only the
layers below it. Read from the source with `ast`, so a new import the wrong way fails here."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "orchestrator"
ALLOWED = {
    "core": {"core"},
    "adapters": {"core", "adapters"},
    "engine": {"core", "adapters", "engine", "ui"},
    "commands": {"core", "adapters", "engine", "ui", "commands"},
    "ui": set(),
}
# Imports still running the wrong way, to be moved (empty when the layers are clean).
KNOWN: set[tuple[str, str]] = set()


def _ours(tree: ast.Module) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            if node.module == "orchestrator":
                found.update(f"orchestrator.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m.startswith("orchestrator.")}


def _layer(module: str) -> str:
    return module.split(".")[1]


def _modules() -> list[Path]:
    return sorted(p for p in ROOT.rglob("*.py") if p.parent != ROOT or p.stem == "ui")


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_run_down_the_layers(path: Path) -> None:
    layer = path.stem if path.parent == ROOT else path.relative_to(ROOT).parts[0]
    wrong = {
        m
        for m in _ours(ast.parse(path.read_text()))
        if _layer(m) not in ALLOWED[layer] and (str(path.relative_to(ROOT)), m) not in KNOWN
    }
    assert not wrong, f"{path.relative_to(ROOT)} ({layer}) imports {sorted(wrong)}"


def test_every_module_sits_in_a_layer() -> None:
    flat = {p.stem for p in ROOT.glob("*.py")}
    assert flat == {"__init__", "__main__", "cli", "ui"}
