"""What a run is made of, built from lth-train's config: data, model, LotteryTicket, Trainer, and the W&B logger
with its callbacks. Each builder checks its own section first, so a bad value fails before training starts.

PyTorch Lightning and everything built on it are imported inside the builders: importing them takes seconds,
which ``lth-train --cfg job``, ``--help`` and a misspelt override should not wait for.
"""

from __future__ import annotations

import inspect
import math
import os
import shutil
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from lth_wandb.app import resume, targets
from lth_wandb.app.config import DEFAULT_PROJECT, WANDB_MODES, DataConfig

if TYPE_CHECKING:
    import pytorch_lightning as pl

    from lth_wandb.lottery.callback import LotteryTicket
    from lth_wandb.models import Classifier


class ConfigError(ValueError):
    """A user mistake found while building the run, prefixed with the config section it came from."""


def in_section(section: str, build, *args):
    """Run one build step; a bad value's error says which part of the config it came from."""
    try:
        return build(*args)
    except (ValueError, TypeError, FileNotFoundError) as error:
        # A new error rather than type(error)(...): not every error type takes a single message (JSONDecodeError).
        raise ConfigError(f"{section}: {error}") from error


def _multirun_group() -> str | None:
    """Jobs of one `-m` sweep share a W&B group named after the sweep directory."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    return "multirun-" + "-".join(Path(HydraConfig.get().sweep.dir).parts[-2:])


def build_datamodule(cfg: DictConfig) -> pl.LightningDataModule:
    """A built-in dataset by ``data.name``, or your own LightningDataModule by ``data._target_``; set up now, so
    missing data fails before W&B starts rather than minutes in."""
    from lth_wandb.data import ClassificationDataModule, YourData

    if cfg.data.get("_target_"):
        dm = YourData(build_your_datamodule(cfg))
        dm.setup("fit")
        # A first batch of each loader is cheap; an empty or failing one would fail mid-run (or after all of it).
        dm.check_loaders(test_needed_by="instability.enabled" if cfg.instability.enabled else None)
        return dm
    data = cfg.data
    val_size = data.val_size
    if val_size is not None and val_size >= 1:
        if val_size != int(val_size):
            raise ValueError(f"data.val_size={val_size} must be a whole count when >= 1, or a fraction < 1")
        val_size = int(val_size)
    dm = ClassificationDataModule(
        data.name,
        root=data.root,
        batch_size=data.batch_size,
        val_size=val_size,
        num_workers=data.num_workers,
        seed=cfg.seed,
        download=data.download,
        normalize=data.normalize,
        eval_batch_size=data.eval_batch_size,
        augment=data.augment,
        **OmegaConf.to_container(data.options, resolve=True),
    )
    dm.setup("fit")
    return dm


def build_your_datamodule(cfg: DictConfig) -> pl.LightningDataModule:
    """``data._target_`` with its own arguments: ``+data.<arg>=<value>`` on the command line, or ``data.options``
    (a YAML under ``--config-dir`` cannot add keys to the ``data`` schema). lth-train's own data settings go to its
    constructor when it takes them (``batch_size``, ``num_workers`` and ``seed`` always, the others when set); one
    that was set but that it does not take is refused rather than silently ignored."""
    data = OmegaConf.to_container(cfg.data, resolve=True)
    target = data.pop("_target_")
    builtin = {f.name: f.default for f in fields(DataConfig) if f.name not in ("_target_", "options")}
    kwargs = {k: v for k, v in data.items() if k not in builtin and k != "options"}
    for key, value in data["options"].items():
        if key in kwargs:
            raise ValueError(f"data.{key} and data.options.{key} both set an argument of {target}; keep one")
        kwargs[key] = value
    signature = inspect.signature(targets.locate(target)).parameters
    shared = {key: data[key] for key, default in builtin.items() if data[key] != default and key != "name"}
    shared.update({"batch_size": data["batch_size"], "num_workers": data["num_workers"], "seed": cfg.seed})
    for key, value in shared.items():
        if key in kwargs:
            continue
        if key in signature:
            kwargs[key] = value
        elif key not in ("batch_size", "num_workers", "seed"):
            raise ValueError(
                f"data.{key}={value!r} is a setting of lth-train's built-in datasets, and {target} takes no "
                f"{key!r} (it takes {[p for p in signature if p != 'self']}). Hint: leave data.{key} out, or give "
                f"your DataModule a {key} argument"
            )
    return hydra.utils.instantiate({"_target_": target, **kwargs})


def build_model(cfg: DictConfig, dm: pl.LightningDataModule) -> pl.LightningModule:
    """The network of ``cfg.model`` as a LightningModule: a plain ``nn.Module`` is wrapped in ``Classifier``."""
    import pytorch_lightning as pl

    net = in_section("model", build_net, cfg, dm)
    if isinstance(net, pl.LightningModule):
        return net  # a user's own module brings its own optimizer, loss and labels
    model = in_section("optimizer", build_classifier, cfg, net)
    if hasattr(dm, "check_labels"):  # your DataModule (YourData): the classifier's classes must hold its labels
        in_section("data", dm.check_labels, model)
    return model


def build_net(cfg: DictConfig, dm: pl.LightningDataModule):
    """Instantiate ``cfg.model``; sizes the dataset decides are filled in when the constructor takes them."""
    if "_target_" not in cfg.model:
        raise ValueError("model has no _target_; pick a preset (model=lenet_300_100) or give model._target_")
    cls = targets.locate(cfg.model._target_)
    known = {
        "in_features": lambda: dm.in_features,
        "in_channels": lambda: dm.input_shape[0],
        "image_size": lambda: dm.input_shape[1] if len(dm.input_shape) > 1 else None,
        "num_classes": lambda: dm.num_classes,
    }
    accepted = inspect.signature(cls).parameters
    # Asked only for what the constructor takes: your DataModule need not know sizes your model does not use.
    extra = {k: size() for k, size in known.items() if k in accepted and k not in cfg.model}
    net = hydra.utils.instantiate(cfg.model, **{k: v for k, v in extra.items() if v is not None})
    if isinstance(net, torch.nn.Module) and next(net.parameters(), None) is None:
        raise ValueError(
            f"_target_={cfg.model._target_!r} has no parameters: nothing to train or prune. Hint: a network with "
            "Linear or Conv layers, e.g. model=lenet_300_100"
        )
    return net


def build_classifier(cfg: DictConfig, net) -> Classifier:
    from lth_wandb.models import Classifier

    p, opt, sched = cfg.pruning, cfg.optimizer, cfg.scheduler
    # With rewinding, the schedule replays every round, so a cosine spans one round.
    rounds_in_schedule = 1 if str(p.rewind) != "none" else p.rounds + 1
    return Classifier(
        net,
        lr=opt.lr,
        optimizer=opt.name,
        momentum=opt.momentum,
        nesterov=opt.nesterov,
        weight_decay=opt.weight_decay,
        fused=opt.fused,
        scheduler=sched.name,
        step_size=sched.step_size,
        gamma=sched.gamma,
        cosine_epochs=p.epochs_per_round * rounds_in_schedule,
        milestones=list(sched.milestones),
        warmup_epochs=sched.warmup_epochs,
    )


def build_lottery(cfg: DictConfig, ticket=None, spill_dir: Path | None = None) -> LotteryTicket:
    """The callback of ``cfg.pruning``, which holds its settings field for field; the run's ``seed`` seeds it
    unless ``pruning.seed`` is set. Finished rounds' trained weights go to ``spill_dir``."""
    from lth_wandb.lottery.callback import LotteryTicket

    settings = OmegaConf.to_container(cfg.pruning, resolve=True)
    settings["seed"] = cfg.seed if settings["seed"] is None else settings["seed"]
    return LotteryTicket(**settings, ticket=ticket, spill_dir=spill_dir)


def steps_per_epoch_of(cfg: DictConfig, dm: pl.LightningDataModule) -> int:
    """Optimizer steps per epoch: the training loader's batches on each process (DDP's sampler gives each rank
    1/world of the samples), less ``trainer.limit_train_batches``."""
    t = cfg.trainer
    loader = dm.train_dataloader()
    batches = len(loader)
    world = process_count(t) or 1
    if world > 1 and loader.batch_size:
        per_rank = math.ceil(len(loader.dataset) / world)  # DistributedSampler pads to equal shares
        batches = per_rank // loader.batch_size if loader.drop_last else math.ceil(per_rank / loader.batch_size)
    limit = t.limit_train_batches
    if limit is None:
        return batches
    if limit <= 0 or (limit > 1 and limit != int(limit)):
        raise ValueError(
            f"limit_train_batches={limit} must be a fraction in (0, 1] or a whole number of batches >= 1. "
            "Hint: null trains on every batch"
        )
    return min(batches, int(limit) if limit > 1 else max(1, int(batches * limit)))


def check_trainer(cfg: DictConfig) -> None:
    t = cfg.trainer
    if t.accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ValueError(
            f"trainer.accelerator={t.accelerator!r} but no GPU is visible (torch.cuda.is_available() is False). "
            "Hint: trainer=cpu, or install a CUDA build of torch"
        )
    if t.val_every_n_steps is not None and t.val_every_n_steps < 1:
        raise ValueError(
            f"trainer.val_every_n_steps={t.val_every_n_steps} must be >= 1 (validate every N optimizer steps), or "
            "null to validate once per epoch"
        )
    if t.checkpoint_every_n_steps is not None and t.checkpoint_every_n_steps < 1:
        raise ValueError(
            f"trainer.checkpoint_every_n_steps={t.checkpoint_every_n_steps} must be >= 1 (also save last.ckpt every "
            "N optimizer steps, for long epochs), or null to save at epoch ends only"
        )
    if t.log_every_n_steps < 1:
        raise ValueError(f"trainer.log_every_n_steps={t.log_every_n_steps} must be >= 1. Hint: the default is 10")
    if isinstance(t.num_nodes, bool) or not isinstance(t.num_nodes, int) or t.num_nodes < 1:
        raise ValueError(f"trainer.num_nodes={t.num_nodes!r} must be a whole number >= 1 (machines of a DDP run)")
    if str(t.strategy).startswith("ddp") and process_count(t) == 1:
        raise ValueError(
            f"trainer.strategy={t.strategy} with trainer.accelerator={t.accelerator} trainer.devices={t.devices} "
            "starts one process here, so nothing trains in parallel. Hint: trainer.accelerator=cpu "
            "trainer.devices=2 for 2 CPU processes (gloo), trainer=gpu for one GPU, or a machine with several GPUs"
        )


def process_count(t: DictConfig) -> int | None:
    """How many processes the Trainer will start for ``trainer`` (None where Lightning decides from a device
    string it alone parses)."""
    gpu = t.accelerator in ("gpu", "cuda") or (t.accelerator == "auto" and torch.cuda.is_available())
    devices = t.devices
    if devices in ("auto", -1, "-1"):
        per_node = torch.cuda.device_count() if gpu else 1
    elif isinstance(devices, int) and not isinstance(devices, bool):
        per_node = devices
    elif isinstance(devices, (list, tuple)) or OmegaConf.is_list(devices):
        per_node = len(devices)
    else:
        return None
    return per_node * t.num_nodes


def build_trainer(cfg: DictConfig, steps_per_epoch: int, callbacks: list, logger, output_dir: Path) -> pl.Trainer:
    import pytorch_lightning as pl
    from pytorch_lightning.utilities.exceptions import MisconfigurationException

    from lth_wandb.app.progress import RoundProgressBar
    from lth_wandb.lottery.checkpoint import AtomicCheckpointIO, LastCheckpoint

    t = cfg.trainer
    # Every epoch end (and every N steps when asked), atomically: a kill or a full disk never costs a run.
    checkpoint = LastCheckpoint(output_dir / "checkpoints", every_n_steps=t.checkpoint_every_n_steps)
    try:
        return pl.Trainer(
            accelerator=t.accelerator,
            devices=t.devices,
            num_nodes=t.num_nodes,
            strategy=t.strategy,
            precision=t.precision,
            # Lightning refuses an interval longer than the epoch; clamp so small datasets still validate.
            val_check_interval=min(t.val_every_n_steps, steps_per_epoch) if t.val_every_n_steps else None,
            limit_train_batches=t.limit_train_batches,
            log_every_n_steps=t.log_every_n_steps,
            deterministic=t.deterministic,
            enable_progress_bar=t.enable_progress_bar,
            callbacks=[*callbacks, checkpoint, *([RoundProgressBar()] if t.enable_progress_bar else [])],
            plugins=[AtomicCheckpointIO()],
            logger=logger if logger is not None else False,
            default_root_dir=output_dir,
        )
    except MisconfigurationException as error:  # Lightning's word for a bad setting (devices=0, ...)
        raise ValueError(str(error)) from error


def build_logger(cfg: DictConfig, run_id: str | None = None):
    if cfg.wandb.mode is not None and cfg.wandb.mode not in WANDB_MODES:  # checked even when not logging
        raise ValueError(
            f"mode={cfg.wandb.mode!r} is not one of {list(WANDB_MODES)}; leave it null to decide "
            "from WANDB_MODE and your W&B credentials"
        )
    if cfg.logger.name == "none":
        return None
    if cfg.logger.name != "wandb":
        raise ValueError(f"logger={cfg.logger.name!r} is not one of ['wandb', 'none']")
    from lth_wandb.tracking import run as tracking  # W&B is imported only when it is used

    w = cfg.wandb
    # A setting left null leaves W&B's own resolution (its WANDB_* variables) alone; lth-train's defaults come last.
    return tracking.make_logger(
        project=w.project or (None if os.environ.get("WANDB_PROJECT") else DEFAULT_PROJECT),
        entity=w.entity,
        group=w.group or (None if os.environ.get("WANDB_RUN_GROUP") else _multirun_group()),
        mode=w.mode,
        name=w.name,
        tags=list(w.tags or ()),
        save_dir=w.dir,
        config=OmegaConf.to_container(cfg, resolve=True),
        job_type=w.job_type,
        run_id=run_id,
    )


def wandb_callbacks(cfg: DictConfig, lottery: LotteryTicket, dm, logger, output_dir: Path) -> list[pl.Callback]:
    """The round dashboard and, unless switched off, the per-round ticket artifacts."""
    if logger is None:
        return []
    from lth_wandb.tracking.artifacts import TicketArtifacts
    from lth_wandb.tracking.rounds import RoundLogger

    callbacks: list[pl.Callback] = [RoundLogger(lottery, input_shape=dm.input_shape)]
    w = cfg.wandb
    if w.log_artifacts:
        callbacks.append(
            TicketArtifacts(
                lottery,
                directory=output_dir / "tickets",
                config=OmegaConf.to_container(cfg, resolve=True),
                retention=w.retention,
                ttl_days=w.artifact_ttl_days,
                registry=w.registry,
                log_checkpoint=w.log_resume_checkpoint,
            )
        )
    return callbacks


def load_cfg_ticket(cfg: DictConfig, model: pl.LightningModule):
    """The ticket ``cfg.ticket`` names (a local directory or a W&B artifact reference), checked against the model."""
    if cfg.ticket is None:
        return None
    from lth_wandb.pruning.ticket import check_compatible
    from lth_wandb.tracking.tickets import load_ticket

    # The ticket's mask shapes are checked against the model before any of its tensors is read.
    ticket = load_ticket(cfg.ticket, model)
    check_compatible(ticket, model)
    return ticket


def record_inputs(cfg: DictConfig, run, output_dir: Path) -> None:
    """Lineage: the ticket artifact this run trains, or, for controls, the source run's ticket of every round. And
    the run's own overrides as a run file, so its controls can be run from W&B (``controls=entity/project/id``)."""
    from lth_wandb.tracking.tickets import OVERRIDES_FILE, record_ticket_use

    if run.disabled:  # wandb.mode=disabled: a stand-in run with no folder and nothing to record into
        return
    overrides = output_dir / ".hydra" / OVERRIDES_FILE
    if overrides.is_file():  # copied in first: run.save of a file elsewhere symlinks it, with a warning
        saved = shutil.copyfile(overrides, Path(run.dir) / OVERRIDES_FILE)
        run.save(str(saved), base_path=run.dir, policy="now")
    if cfg.ticket is not None:
        record_ticket_use(run, cfg.ticket)
    source = resume.RunRecord.read(cfg.pruning.masks_from) if cfg.pruning.masks_from else None
    if source is not None and run.settings.mode == "online":
        for number in range(1, cfg.pruning.rounds + 1):
            record_ticket_use(run, f"ticket-{source.wandb_run_id}:round-{number}")


def check_schedule(cfg: DictConfig, model: pl.LightningModule) -> None:
    """The Classifier's LR schedules count epochs; rounds counted in steps would cut them at arbitrary points."""
    from lth_wandb.models import Classifier

    if isinstance(model, Classifier) and cfg.pruning.steps_per_round is not None and cfg.scheduler.name != "none":
        raise ValueError(
            f"scheduler={cfg.scheduler.name!r} steps once per epoch, but pruning.steps_per_round counts rounds in "
            "steps, so a rewound schedule would restart mid-epoch. Hint: scheduler=none, or your own LightningModule "
            "with a step-interval schedule"
        )


def check_monitor(cfg: DictConfig, model: pl.LightningModule) -> None:
    """The built-in Classifier logs a known set of metrics: a monitor outside it would fail minutes in."""
    from lth_wandb.models import Classifier

    if isinstance(model, Classifier) and cfg.pruning.monitor not in Classifier.METRICS:
        raise ValueError(
            f"monitor={cfg.pruning.monitor!r} is not logged by the Classifier; it logs {list(Classifier.METRICS)}. "
            "Hint: pruning.monitor=val/loss (with pruning.mode=min) or val/acc (with pruning.mode=max)"
        )


def keep_hparams_out_of_run_config(model: pl.LightningModule, dm: pl.LightningDataModule) -> None:
    """The W&B run config is the whole Hydra config. Lightning would add the model's and data's hyper-parameters
    on top, flat: ``optimizer="adam"`` replaces the ``optimizer`` section, and ``seed`` collides with the key a
    sweep locks ("Config item 'seed' was locked by 'sweep'")."""
    model._log_hyperparams = False
    dm._log_hyperparams = False
