"""``python -m lth_wandb.train``: what ``wandb agent`` runs (sweeps/*.yaml). lth-train lives in lth_wandb.app.train."""

from lth_wandb.app.train import main

if __name__ == "__main__":
    main()
