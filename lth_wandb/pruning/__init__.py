"""The pruning maths: masks, scoring criteria, magnitude pruning and the ticket file format.

Pure PyTorch (and safetensors for tickets): no Lightning, no W&B, no Hydra. Everything above builds on it; nothing
here knows about training loops.
"""
