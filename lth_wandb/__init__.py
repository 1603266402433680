"""lth-wandb: find lottery tickets with iterative magnitude pruning in PyTorch Lightning."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lth_wandb.lazy import lazy_exports

if TYPE_CHECKING:
    from lth_wandb.lottery.callback import LotteryTicket
    from lth_wandb.pruning.ticket import Ticket

__all__ = ["LotteryTicket", "Ticket", "__version__"]


def _installed_version() -> str:
    """The version pyproject.toml gives (its one home), as the installed distribution records it."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lth-wandb")
    except PackageNotFoundError:  # a source tree on sys.path that was never installed
        return "0+unknown"


__version__ = _installed_version()


def version_text(program: str) -> str:
    """What ``<program> --version`` prints: this version and those of the libraries a bug report needs."""
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for name in ("torch", "pytorch-lightning", "hydra-core", "wandb"):
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            continue
    return f"{program} {__version__} ({', '.join(found)})"


# Imported on first use: the callback brings PyTorch Lightning (seconds), which `lth-train --cfg job` never needs.
__getattr__, __dir__ = lazy_exports(
    __name__, {"LotteryTicket": "lth_wandb.lottery.callback", "Ticket": "lth_wandb.pruning.ticket"}
)
