"""Names a package exports but imports only when first used (PEP 562): the public API without its import cost.

Importing any lth_wandb module runs the package's ``__init__``; the callback brings PyTorch Lightning and tracking
brings W&B (seconds each), which ``lth-train --cfg job``, ``--help`` and a misspelt override never need.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package`` that import ``exports`` (name -> module) on first use."""
    namespace = importlib.import_module(package).__dict__

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(exports[name]), name)
        namespace[name] = value  # later lookups find it without calling back here
        return value

    def __dir__() -> list[str]:
        return sorted([*namespace, *exports])

    return __getattr__, __dir__
