"""The schema of ``lth-train``'s configuration, as dataclasses.

Hydra merges every YAML under ``conf/`` into these, so a misspelt key or a value of the wrong type fails at
start-up, naming the key. Only plain dataclasses here: Hydra itself lives in ``lth_wandb.app.train``.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, Optional

from lth_wandb.lottery.settings import PruningSettings
from lth_wandb.tracking import WANDB_MODES  # noqa: F401  (lth-train checks wandb.mode against it)


@dataclass
class DataConfig:
    # Your own LightningDataModule class instead of a built-in dataset; its arguments as +data.<arg>=<value>.
    _target_: str | None = None
    name: str = "digits"
    root: str | None = None
    batch_size: int = 60
    # Held-out validation examples from the training set: a count (>= 1) or a fraction (< 1); None = the
    # dataset's usual size (5000 for MNIST-family and CIFAR-10, 10% for small sets).
    val_size: float | None = None
    eval_batch_size: int = 1000
    num_workers: int = 0
    download: bool = False
    normalize: bool = False
    # Random crops (4-pixel padding) and left-right flips of training images: open_lth's CIFAR default.
    augment: bool = False
    # Extra arguments for the dataset loader (e.g. num_samples for `synthetic`).
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class OptimizerConfig:
    name: str = "adam"
    lr: float = 1.2e-3
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    # Adam/AdamW only: true builds the fused implementation (a quarter faster on CPU, rounds differently by ~1e-7);
    # null keeps PyTorch's default, which the docs' results (docs/results.md) were measured with.
    fused: Optional[bool] = None  # noqa: UP045 - OmegaConf reads typing.Optional


@dataclass
class SchedulerConfig:
    name: str = "none"
    step_size: int = 30
    gamma: float = 0.1
    # multistep: the epochs at which the rate is multiplied by gamma (open_lth's CIFAR schedule: [80, 120]).
    milestones: list[int] = field(default_factory=list)
    # multistep: epochs of linear warm-up from 0, per iteration (open_lth's ImageNet: 5); 0 for none.
    warmup_epochs: int = 0


# lth-train's `pruning` section is LotteryTicket's settings, field for field (and typed by them).
PruningConfig = PruningSettings


@dataclass
class TrainerConfig:
    accelerator: str = "cpu"
    devices: Any = 1
    # Machines of a multi-node DDP run; each runs trainer.devices processes, started by srun (docs/cluster.md).
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"
    # Validate every N optimizer steps within an epoch (None = once per epoch).
    val_every_n_steps: int | None = None
    limit_train_batches: float | None = None
    # last.ckpt is written at every epoch end; also every N optimizer steps for long epochs (None: epoch ends only).
    checkpoint_every_n_steps: int | None = None
    log_every_n_steps: int = 10
    enable_progress_bar: bool = True
    deterministic: bool = False


@dataclass
class LoggerConfig:
    name: str = "wandb"


# The W&B modes a user may ask for (wandb.mode); None decides from WANDB_MODE and credentials.


# lth-train's W&B project when neither wandb.project nor WANDB_PROJECT names one.
DEFAULT_PROJECT = "lth-wandb"


@dataclass
class WandbConfig:
    # A value set here wins; one left null is W&B's to decide, from WANDB_PROJECT, WANDB_ENTITY, WANDB_RUN_GROUP,
    # WANDB_MODE, WANDB_NAME, WANDB_TAGS (comma-separated), WANDB_JOB_TYPE and WANDB_DIR, as any W&B script would.
    # null and no WANDB_PROJECT: DEFAULT_PROJECT.
    project: str | None = None
    entity: str | None = None
    # null and no WANDB_RUN_GROUP: the jobs of one -m multirun share a group named after its folder.
    group: str | None = None
    mode: str | None = None
    name: str | None = None
    tags: Optional[list[str]] = None  # noqa: UP045 - OmegaConf reads typing.Optional
    job_type: str | None = None
    # The run files go to <dir>/wandb/; null: $WANDB_DIR, else the working directory.
    dir: str | None = None
    # Version every round's ticket and sparse trained weights as W&B Artifacts.
    log_artifacts: bool = True
    # "all" keeps every round's versions; "winning_latest" deletes the others when an online run ends.
    retention: str = "all"
    artifact_ttl_days: int | None = None
    # "<registry>/<collection>" to link the winning ticket into (online only).
    registry: str | None = None
    # Also version the Lightning checkpoint at each round's end, to resume from W&B.
    log_resume_checkpoint: bool = False


@dataclass
class InstabilityConfig:
    # Linear mode connectivity (Frankle et al. 2020; docs/research.md). Off by default: it costs two
    # extra trainings of T - k steps per (round, k), T being round 0's length.
    enabled: bool = False
    # The steps k of round 0 to branch from: the dense network after k optimizer steps, and each round's mask on it.
    # A list, or one step (instability.steps=20, as a sweep sets it); checked at start-up. None: [0], or under
    # protocol=paper the run's rewind step.
    steps: Any = None
    # run: every k with this run's masks (found by IMP rewinding to pruning.rewind). paper: as Frankle et al. 2020,
    # the masks at k come from IMP rewinding to k, so the run measures k = pruning.rewind only (one run per k).
    protocol: str = "run"
    # Which rounds' masks to analyse; None: every round (round 0 is the dense network).
    rounds: list[int] | None = None
    # Evenly spaced points on the line between the two copies, both ends included (the paper's 30).
    points: int = 30
    # Stable when the error barrier is below this fraction (the paper's 2 percentage points).
    threshold: float = 0.02


@dataclass
class Config:
    # The network: `_target_` names any nn.Module (wrapped in the Classifier) or LightningModule class.
    model: Any = field(default_factory=lambda: {"_target_": "lth_wandb.models.LeNet300100"})
    data: DataConfig = field(default_factory=DataConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    pruning: PruningConfig = field(default_factory=PruningConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    instability: InstabilityConfig = field(default_factory=InstabilityConfig)
    experiment: str = "custom"
    seed: int = 0
    # A ticket to train instead of the dense network: a directory written by Ticket.save.
    ticket: str | None = None
    # Continue a run: its checkpoints/last.ckpt, its output folder, or "last" (the newest run under ./outputs).
    # The run keeps its own config and W&B run id; see lth_wandb/app/resume.py.
    resume: str | None = None
    # What the run returns to a Hydra sweeper that optimises (hydra/sweeper=optuna_tpe): one of OBJECTIVES, the
    # W&B summary names. None returns the whole ticket summary, which plain -m multiruns need no more than.
    objective: str | None = None


# Objectives a Hydra sweeper may optimise. Both are picked on validation; the test accuracies in the summary are
# left out on purpose: tuning hyper-parameters on them is model selection on the test set.
OBJECTIVES = ("ticket/winning_density", "ticket/winning_round")


def closest_key(full_key: str, schema: type = Config) -> str | None:
    """The schema key closest to a misspelt dotted ``full_key`` (``pruning.prune_rat`` -> ``pruning.prune_rate``),
    or None when nothing is close."""
    prefix, node = "", schema
    for part in full_key.split("."):
        known = {f.name: f for f in fields(node)}
        if part not in known:
            close = difflib.get_close_matches(part, known, n=1)
            return f"{prefix}{close[0]}" if close else None
        default = known[part].default_factory() if callable(known[part].default_factory) else None
        if not is_dataclass(default):
            return None
        prefix, node = f"{prefix}{part}.", type(default)
    return None


def check_known_keys(config: dict[str, Any], schema: type = Config, prefix: str = "") -> None:
    """Refuse keys the schema does not have. Hydra lets ``+pruning.bogus=1`` through even on a typed config (``+``
    opens it); a misspelt setting would then be silently ignored. ``model``, ``data.options`` and a ``data`` with a
    ``_target_`` stay open: they are passed on to a user's class.

    Raises:
        ValueError: naming the unknown key and the closest known one.
    """
    known = {f.name: f for f in fields(schema)}
    if config.get("_target_"):  # a user's class takes arguments of its own
        return
    for key, value in config.items():
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"did you mean {prefix}{close[0]}?" if close else f"known keys: {sorted(known)}"
            raise ValueError(f"{prefix}{key} is not a setting of lth-train. Hint: {hint}")
        default = known[key].default_factory() if callable(known[key].default_factory) else None
        if is_dataclass(default) and isinstance(value, dict):
            check_known_keys(value, type(default), f"{prefix}{key}.")
