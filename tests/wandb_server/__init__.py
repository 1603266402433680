"""A W&B-compatible server for the test suite: in-process, loopback only, state in memory.

    with WandbServer() as server:
        os.environ.update(server.env())   # the real SDK now talks to it
        ...
        assert not server.unknown         # nothing asked that the server does not know

Run it by hand to look at what a command sends (python -m tests.wandb_server --help).
"""

from .http import WandbServer

__all__ = ["WandbServer"]
