"""The package's folders are its layers (docs/development.md, the layout): this test keeps them so.

Every import in lth_wandb/, also those inside functions, is read from the source (nothing is imported), and two
rules are checked: a package imports only the lth_wandb packages below it, and W&B, Hydra and Lightning stay in
the packages that are about them.
"""

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lth_wandb"

# What each part of lth_wandb may import from lth_wandb, besides itself. Imports only go down this list.
MAY_IMPORT = {
    "atomic": set(),
    "lazy": set(),
    "processes": set(),
    "pruning": {"atomic"},
    "analysis": {"atomic", "pruning"},
    "models": set(),
    "data": set(),
    "lottery": {"atomic", "pruning", "analysis"},
    "tracking": {"atomic", "lazy", "processes", "pruning", "analysis", "lottery"},
    "sweeps": {"atomic", "processes", "tracking"},
    "report": {"atomic", "pruning", "analysis", "tracking"},
    "app": {"atomic", "processes", "pruning", "analysis", "models", "data", "lottery", "tracking"},
    "train": {"app"},  # python -m lth_wandb.train, as wandb agent runs it
    "__init__": {"lazy", "lottery", "pruning"},  # the lazy public API
}

# Third-party packages that define a layer: only these parts of lth_wandb may import them.
ONLY_IN = {
    "wandb": {"tracking", "sweeps", "report"},
    "wandb_workspaces": {"report"},
    "sweeps": {"sweeps"},  # W&B's sweep engine
    "hydra": {"app"},
    "omegaconf": {"app"},
    "pytorch_lightning": {"lottery", "tracking", "app", "models", "data"},
    "lightning": set(),  # we use the pytorch_lightning name only: mixing the two breaks isinstance checks
}


def part_of(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the file; relative imports are resolved."""
    module = ["lth_wandb", *path.relative_to(PACKAGE).with_suffix("").parts]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*module[: len(module) - node.level], *([base] if base else [])])
            if base == "lth_wandb":  # `from lth_wandb import atomic`: the names are the modules
                found += [(node.lineno, f"lth_wandb.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, base))
    return found


def violations() -> list[str]:
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        part = part_of(path)
        where = path.relative_to(PACKAGE.parent)
        for line, name in imports_of(path):
            top, *rest = name.split(".")
            if top == "lth_wandb" and rest:
                target = rest[0]
                if target != part and target not in MAY_IMPORT[part]:
                    problems.append(f"{where}:{line}: {part} imports lth_wandb.{target}, which is not below it")
            elif top in ONLY_IN and part not in ONLY_IN[top]:
                problems.append(f"{where}:{line}: {part} imports {top}; only {sorted(ONLY_IN[top])} may")
    return problems


def test_every_module_belongs_to_a_known_part():
    parts = {part_of(p) for p in PACKAGE.rglob("*.py")}
    assert parts <= set(MAY_IMPORT), f"add {sorted(parts - set(MAY_IMPORT))} to MAY_IMPORT (and docs/development.md)"


def test_imports_follow_the_layers():
    assert violations() == []


def test_the_checker_sees_a_violation(tmp_path, monkeypatch):
    """A pruning module that imports W&B and the callback is reported twice: the rules are live."""
    fake = tmp_path / "lth_wandb"
    (fake / "pruning").mkdir(parents=True)
    (fake / "pruning" / "bad.py").write_text("import wandb\n\ndef f():\n    from ..lottery import callback\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    assert violations() == [
        "lth_wandb/pruning/bad.py:1: pruning imports wandb; only ['report', 'sweeps', 'tracking'] may",
        "lth_wandb/pruning/bad.py:4: pruning imports lth_wandb.lottery, which is not below it",
    ]


def test_modules_stay_small():
    """One idea per module: past 400 lines, a module is doing two things (split it, or move prose to docs/)."""
    lines = {str(p.relative_to(PACKAGE)): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    assert {name: n for name, n in lines.items() if n > 400} == {}
