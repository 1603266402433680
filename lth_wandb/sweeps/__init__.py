"""Sweeps: the W&B sweep engine's step, the offline lth-sweep runner, its leaderboard and launchers."""
