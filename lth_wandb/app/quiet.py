"""Keep lth-train's terminal for what a researcher needs. Kept apart from the progress display, which imports
PyTorch Lightning: lth-train calls this before it knows whether it will train at all (``--cfg job``, ``--help``)."""

from __future__ import annotations

import logging
import warnings


def quiet_noise() -> None:
    """Drop other tools' adverts and notes about their internals."""
    logging.getLogger("alembic").setLevel(logging.WARNING)  # Optuna's storage lists every plugin it sets up
    for name in ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero"):
        logging.getLogger(name).addFilter(lambda record: not str(record.msg).startswith("💡 Tip"))
    # Lightning 2.6 calling a torch API that torch 2.13 deprecated: nothing a user can act on.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
