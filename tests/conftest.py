"""Shared test fixtures: a small LightningModule and data that train in well under a second."""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile

import pytest
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
# W&B stages artifact copies, caches and settings under ~/.local/share, ~/.cache and ~/.config: the suite (and
# every lth-train it starts, which inherits this environment) uses a folder of its own, removed at the end.
_WANDB_HOME = tempfile.mkdtemp(prefix="lth-wandb-tests-")
atexit.register(shutil.rmtree, _WANDB_HOME, ignore_errors=True)
for _var, _sub in (("WANDB_DATA_DIR", "data"), ("WANDB_CACHE_DIR", "cache"), ("WANDB_CONFIG_DIR", "config"),
                   ("WANDB_ARTIFACT_DIR", "artifacts")):  # fmt: skip
    os.environ.setdefault(_var, os.path.join(_WANDB_HOME, _sub))
torch.set_num_threads(1)


class TinyNet(pl.LightningModule):
    """MLP 20-32-16-3 with a configurable optimizer; logs val/loss and val/acc."""

    def __init__(self, optimizer: str = "adam", lr: float = 1e-2, weight_decay: float = 0.0, scheduler: bool = False):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 3))
        self.optimizer, self.lr, self.weight_decay, self.scheduler = optimizer, lr, weight_decay, scheduler

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.log("val/loss", nn.functional.cross_entropy(logits, y))
        self.log("val/acc", (logits.argmax(1) == y).float().mean())

    def configure_optimizers(self):
        if self.optimizer == "adam":
            opt = torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        else:
            opt = torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9, weight_decay=self.weight_decay)
        if not self.scheduler:
            return opt
        return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)}


def loaders(n: int = 256, batch_size: int = 32, seed: int = 0):
    """Deterministic train/val loaders (no shuffling, so runs are exactly repeatable)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 20, generator=g)
    y = (x[:, :3] + 0.3 * torch.randn(n, 3, generator=g)).argmax(1)
    data = TensorDataset(x, y)
    return DataLoader(data, batch_size=batch_size), DataLoader(data, batch_size=128)


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for a child process that runs W&B offline on its own.

    An in-process wandb.init (tests of tracking.py) leaves WANDB_SERVICE set, and a child inheriting it would
    hand its run to this process's W&B service instead of writing its own run files.
    """
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    return {**env, "WANDB_MODE": "offline", "WANDB_SILENT": "true", **extra}


# A tiny lth-train budget: one epoch per round, no progress bar. Callers add pruning.rounds etc.
TINY = ("pruning.epochs_per_round=1", "trainer.enable_progress_bar=false")


def lth_train(cwd, *args: str, tiny=TINY) -> subprocess.CompletedProcess:
    """Run ``python -m lth_wandb.train`` as a user would, offline, in ``cwd``; ``args`` after the ``tiny`` budget.

    Hydra's flags (``-m``...) go first; of two overrides of one key, the later one wins.
    """
    flags = [a for a in args if a.startswith("-")]
    overrides = [a for a in args if not a.startswith("-")]
    return subprocess.run(
        [sys.executable, "-m", "lth_wandb.train", *flags, *tiny, *overrides],
        cwd=cwd,
        env=subprocess_env(),
        capture_output=True,
        text=True,
    )


def trainer(callbacks, **kwargs) -> pl.Trainer:
    defaults = dict(
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        devices=1,
    )
    return pl.Trainer(callbacks=callbacks, **{**defaults, **kwargs})


@pytest.fixture
def data():
    return loaders()


# -- a real one-node SLURM cluster (tests/slurm_cluster.py), for the cluster tests ---------------------------


@pytest.fixture(scope="session")
def slurm():
    """The one-node SLURM cluster, started once for the session and stopped at its end; the tests skip, saying
    why, where it cannot start (no root, SLURM not installed). CI installs SLURM, so there they run."""
    from slurm_cluster import SlurmCluster, why_not_here

    reason = why_not_here()
    if reason:
        pytest.skip(f"no SLURM cluster here: {reason}")
    with SlurmCluster() as cluster:
        yield cluster


@pytest.fixture
def cluster(slurm):
    """The cluster, with no job of this test left queued or running afterwards."""
    yield slurm
    for job in slurm.jobs():
        slurm.run("scancel", job, check=False)
    slurm.wait_for(lambda: not slurm.jobs(), 60, "the test's jobs to end")


# -- the local W&B-compatible server (tests/wandb_server), for the `online` tests -----------------------------


@pytest.fixture(scope="session")
def _wandb_server(tmp_path_factory):
    from wandb_server import WandbServer

    with WandbServer(log=tmp_path_factory.mktemp("wandb-server") / "requests.jsonl") as server:
        yield server


@pytest.fixture
def wandb_server(_wandb_server, monkeypatch, tmp_path):
    """The local W&B-compatible server, with this process's environment pointing the real SDK at it (so
    ``wandb.Api()`` reads from it) and an empty artifact cache. The test fails if anything was asked that the
    server does not know; every request is in ``server.log``."""
    server = _wandb_server
    with all_known(server):
        for key, value in online_env(server, tmp_path).items():
            monkeypatch.setenv(key, value)
        monkeypatch.delenv("WANDB_SERVICE", raising=False)
        yield server


@contextlib.contextmanager
def all_known(server):
    """Fail if, inside the block, anything was asked that the test server does not know."""
    seen = len(server.unknown)
    yield
    unknown = sorted(set(server.unknown[seen:]))
    assert not unknown, f"the test server was asked for what it does not know: {unknown} (requests: {server.log})"


def online_env(server, tmp_path, **extra: str) -> dict[str, str]:
    """A child process's environment for W&B online against ``server``, with its own empty caches under
    ``tmp_path``; the venv's bin first on PATH, as ``wandb agent`` runs ``python``."""
    caches = {name: str(tmp_path / "wandb-home" / name) for name in ("cache", "data", "config", "artifacts")}
    env = {
        **server.env(),
        "WANDB_CACHE_DIR": caches["cache"],
        "WANDB_DATA_DIR": caches["data"],
        "WANDB_CONFIG_DIR": caches["config"],
        "WANDB_ARTIFACT_DIR": caches["artifacts"],
        "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]),
    }
    return subprocess_env(**{**env, **extra})


def lth_train_main(monkeypatch, cwd, *args: str, expect_exit: bool = True):
    """Run lth-train's console entry point in this process, in ``cwd``; its exit code when ``expect_exit``."""
    from hydra.core.global_hydra import GlobalHydra

    from lth_wandb.app import train

    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", ["lth-train", *args])
    GlobalHydra.instance().clear()
    if not expect_exit:
        return train.main()
    with pytest.raises(SystemExit) as exit_info:
        train.main()
    return exit_info.value.code
