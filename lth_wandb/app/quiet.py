"""Keep lth-train's terminal for what a researcher needs. Kept apart from the progress display, which imports
PyTorch Lightning: lth-train calls this before it knows whether it will train at all (``--cfg job``, ``--help``)."""

from __future__ import annotations

import logging
import os
import warnings

# Lightning's hint, wherever SLURM is installed, to start the job with srun (printed twice per run).
SRUN_HINT = r"The `srun` command is available on your system but is not used"


def quiet_noise() -> None:
    """Drop other tools' adverts and notes about their internals."""
    logging.getLogger("alembic").setLevel(logging.WARNING)  # Optuna's storage lists every plugin it sets up
    for name in ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero"):
        logging.getLogger(name).addFilter(lambda record: not str(record.msg).startswith("💡 Tip"))
    # Lightning 2.6 calling a torch API that torch 2.13 deprecated: nothing a user can act on.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")


def quiet_srun_hint(processes: int | None) -> None:
    """Drop Lightning's srun hint for a run of one process that SLURM did not start (no SLURM_NTASKS: Lightning's own
    test): nothing to launch there. Kept for several processes, which on a cluster srun must start."""
    if processes == 1 and "SLURM_NTASKS" not in os.environ:
        warnings.filterwarnings("ignore", message=SRUN_HINT)
