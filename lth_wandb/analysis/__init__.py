"""Measurements on networks and masks beyond pruning itself. Pure PyTorch: no Lightning, no W&B, no Hydra."""
