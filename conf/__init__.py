# Makes conf/ importable as the package `lth_wandb.conf` (see pyproject.toml), so an installed lth-train
# finds its configs with Hydra's pkg:// search path, not only from a source checkout.
