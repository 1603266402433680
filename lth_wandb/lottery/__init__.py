"""The LotteryTicket callback and what it keeps between rounds: settings, rewind states, RNG, checkpoints.

PyTorch Lightning, no W&B, no Hydra. The maths it schedules lives in lth_wandb.pruning.
"""
