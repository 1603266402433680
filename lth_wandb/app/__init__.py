"""lth-train, the Hydra app: the typed config, building the run, resuming it, and the console display.

The only package that imports Hydra and OmegaConf.
"""
