"""Your own classes by ``_target_`` (``model._target_=mypkg.nets.MyNet``): the working directory is importable, as
under ``python -m``, and a name that does not import is one line saying what could not be imported and what to do.

Hydra-free and Lightning-free, so the console entry point can set the path before anything else is imported.
"""

from __future__ import annotations

import difflib
import importlib
import os
import pkgutil
import sys
from types import ModuleType
from typing import Any

IMPORT_HINT = (
    "Hint: run lth-train from the folder that holds the package, install it (pip install -e .), or add its folder "
    "to PYTHONPATH"
)


def add_working_directory() -> None:
    """Put the working directory first on the import path, as ``python -m`` does, for this process and (through
    ``PYTHONPATH``) for the processes it starts: DDP ranks, multirun jobs of a launcher plugin."""
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if cwd not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([cwd, *paths])


def locate(path: Any) -> Any:
    """The object a dotted ``path`` names (``mypkg.signals.Signals``), imported from the longest module prefix.

    Raises:
        ValueError: naming ``path``, the part that could not be imported or found, and a hint.
    """
    if not isinstance(path, str) or "." not in path.strip(".") or " " in path:
        raise ValueError(
            f"_target_={path!r} is not a dotted import path. Hint: module.Class, e.g. mypkg.nets.MyNet "
            "or torch.nn.Linear"
        )
    parts = path.split(".")
    module, found = _longest_module(path, parts)
    obj: Any = module
    for i in range(found, len(parts)):
        if hasattr(obj, parts[i]):
            obj = getattr(obj, parts[i])
            continue
        where = ".".join(parts[:i])
        close = difflib.get_close_matches(parts[i], _names(obj), n=1)
        hint = f"Hint: did you mean {where}.{close[0]}?" if close else "Hint: check the spelling"
        raise ValueError(f"cannot import _target_={path!r}: {where} has no {parts[i]!r}. {hint}")
    return obj


def _longest_module(path: str, parts: list[str]) -> tuple[ModuleType, int]:
    """The deepest module of ``path`` that imports, and how many parts of ``path`` it covers."""
    for end in range(len(parts) - 1, 0, -1):
        name = ".".join(parts[:end])
        try:
            return importlib.import_module(name), end
        except ModuleNotFoundError as error:
            if error.name is not None and (name == error.name or name.startswith(error.name + ".")):
                if end == 1:  # not even the top-level package
                    raise ValueError(
                        f"cannot import _target_={path!r}: no module named {parts[0]!r} in the working directory "
                        f"({os.getcwd()}) or the installed packages. {IMPORT_HINT}"
                    ) from None
                continue  # this module is missing; its package may still be there
            raise ValueError(
                f"cannot import _target_={path!r}: importing {name} failed: {error}. Hint: install what it imports"
            ) from None
        except Exception as error:  # the user's module raised while being imported
            raise ValueError(
                f"cannot import _target_={path!r}: importing {name} failed: {type(error).__name__}: {error}. "
                f"Hint: run python -c 'import {name}' to see the traceback"
            ) from None
    raise AssertionError("unreachable: a dotted path has a top-level module")


def _names(obj: Any) -> list[str]:
    """What ``obj`` offers under a dotted path: its attributes and, for a package, its submodules."""
    names = [n for n in dir(obj) if not n.startswith("_")]
    if hasattr(obj, "__path__"):
        names += [m.name for m in pkgutil.iter_modules(obj.__path__)]
    return names
