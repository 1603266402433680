"""``lth-train``: the Hydra app. Compose the config, build data, model and LotteryTicket, fit, report.

    lth-train                                     # the demo: digits, offline W&B
    lth-train experiment=lenet_fashion_mnist seed=1
    lth-train pruning=continuous pruning.criterion=movement -m seed=0,1,2

User mistakes (a misspelt key, a bad value, missing data) end with one line on stderr and exit code 2; set
``LTH_DEBUG=1`` for the traceback. A crash during training marks the W&B run failed and exits 1.
"""

from __future__ import annotations

import math
import os
import re
import signal
import sys
import warnings
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

import lth_wandb
from lth_wandb import atomic
from lth_wandb.app import checkpoints, controls, instability, refused, resume, targets
from lth_wandb.app.build import (
    build_datamodule,
    build_logger,
    build_lottery,
    build_model,
    build_trainer,
    check_monitor,
    check_schedule,
    check_trainer,
    in_section,
    keep_hparams_out_of_run_config,
    load_cfg_ticket,
    process_count,
    record_inputs,
    steps_per_epoch_of,
    wandb_callbacks,
)
from lth_wandb.app.config import OBJECTIVES, check_known_keys, closest_key
from lth_wandb.app.quiet import quiet_noise, quiet_srun_hint
from lth_wandb.app.signals import PREEMPTED, SignalRecorder
from lth_wandb.app.sweep_values import escape_sweep_values
from lth_wandb.lottery.arguments import check_target_density, rounds_for
from lth_wandb.processes import die_with_parent, global_rank, launched_by_lightning
from lth_wandb.pruning.prune import check_rate

MAX_SEED = 2**32 - 1  # numpy's seed range, which seed_everything shares
# Errors that mean "the command or config is wrong", reported in one line rather than a traceback.
USER_ERRORS = (ValueError, TypeError, FileNotFoundError, HydraException, OmegaConfBaseException)


def run(cfg: DictConfig) -> dict[str, Any]:
    """Train one configuration; returns the run's ticket summary.

    Everything a user can get wrong (config, data, model, ticket, resume) is checked before W&B starts, so a
    mistake leaves no W&B run behind.
    """
    import pytorch_lightning as pl

    from lth_wandb.app.progress import print_rounds

    output_dir = Path(HydraConfig.get().runtime.output_dir) if HydraConfig.initialized() else Path.cwd()
    signals = SignalRecorder().install()  # before Lightning, which runs it as the handler it found
    check_known_keys(_plain(cfg))
    check_seed(cfg.seed)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    cfg = in_section("pruning", _with_resolved_rounds, _with_ticket_defaults(cfg))
    with warnings.catch_warnings():  # its notes come once, from the callback built below
        warnings.simplefilter("ignore")
        in_section("pruning", build_lottery, cfg)  # settings fail here, before data or W&B start
    dm = in_section("data", build_datamodule, cfg)
    model = build_model(cfg, dm)
    keep_hparams_out_of_run_config(model, dm)
    ticket = in_section("ticket", load_cfg_ticket, cfg, model)
    lottery = build_lottery(cfg, ticket, spill_dir=output_dir / "rounds")
    in_section("pruning", lottery.check_model, model)
    in_section("pruning", check_monitor, cfg, model)
    in_section("pruning", check_schedule, cfg, model)
    check_trainer(cfg)
    steps_per_epoch = in_section("trainer", steps_per_epoch_of, cfg, dm)
    steps_round0 = lottery.steps_per_round or steps_per_epoch * lottery.epochs_per_round
    in_section("pruning", lottery.check_rewind_step, steps_round0)
    capture = in_section("instability", instability.capture_for, cfg, lottery, steps_round0)
    checkpoint = checkpoints.ckpt_path(cfg.resume)
    if checkpoint is not None and resume.RunRecord.read(output_dir) is None:  # from elsewhere: no saved config
        checkpoints.check_fits(checkpoint, model, lottery.settings.as_dict())
    if checkpoint is not None:
        checkpoints.check_rounds(checkpoint, output_dir / "rounds")
    overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    record = in_section("resume", resume.open_record, output_dir, _plain(cfg), cfg.resume is not None, overrides)
    # W&B starts at the logger's first use (record_inputs): the callbacks and the Trainer, which check their own
    # settings (retention, precision, strategy, devices...), are built before it.
    logger = in_section("wandb", build_logger, cfg, record.wandb_run_id)
    captures = [capture] if capture is not None else []  # after the lottery: round 0 as it trains
    callbacks = [lottery, *captures, *in_section("wandb", wandb_callbacks, cfg, lottery, dm, logger, output_dir)]
    trainer = in_section("trainer", build_trainer, cfg, steps_per_epoch, callbacks, logger, output_dir)
    finish, preempting = (lambda exit_code: None), (lambda certain: None)  # noqa: E731
    if logger is not None:
        from lth_wandb.tracking import run as tracking

        finish, preempting = tracking.finish_run, tracking.mark_preempting_if_requeued
    try:
        if logger is not None and global_rank() == 0:  # other ranks' logger.experiment is a placeholder
            record_inputs(cfg, logger.experiment, output_dir)
        trainer.fit(model, datamodule=dm, ckpt_path=checkpoint)
        if trainer.interrupted:  # Ctrl+C on Lightning versions that return instead of raising
            raise KeyboardInterrupt
        if trainer.is_global_zero:
            print_rounds(lottery)
            if capture is not None:  # 2 trainings per (round, k), after the rounds (lth_wandb/app/instability.py)
                instability.after_fit(cfg, lottery, capture, dm, steps_round0, output_dir, logger)
    except BaseException as error:
        if signals.received in (signal.SIGTERM, PREEMPTED):
            # Under a W&B sweep: the server requeues a preempted run for an agent to resume.
            preempting(certain=signals.received == PREEMPTED)
        finish(exit_code=signals.exit_code or 1)  # the W&B run is marked failed; the error goes on to main()
        why = f"{signal.Signals(signals.received).name}; " if signals.received else ""
        if getattr(error, "resumable", True):  # a NaN loss says itself that a resume would reach it again
            again = f"continue this run with: lth-train {resume.shell_override(output_dir)}"
            print(f"lth-train: {why}{again}", file=sys.stderr)
        elif global_rank() == 0:
            record.fail(one_line(error))
        if signals.received:  # Lightning ends a SIGTERM-stopped fit with exit code 0 (or 1 for Ctrl+C)
            raise SystemExit(signals.exit_code) from None
        raise
    finish(exit_code=0)  # one W&B run per job, also under -m
    if trainer.is_global_zero:
        # Only once W&B holds the run's last rows: a run killed before this resumes (and logs nothing twice), where
        # one marked finished earlier would refuse to, its last round row lost.
        record.finish()
    return lottery.summary()


def check_seed(seed: Any) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed={seed!r} must be a whole number in [0, {MAX_SEED}]. Hint: seed=0")


def _plain(cfg: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True)


def _with_resolved_rounds(cfg: DictConfig) -> DictConfig:
    """``pruning.rounds`` as it will run (from ``pruning.target_density`` when given), so everything downstream (the
    schedule's length, the run config in W&B, resuming) sees the rounds that will run."""
    p = cfg.pruning
    target = check_target_density(p.target_density)
    # A target replaces the preset's rounds rather than disagreeing with them.
    rounds = rounds_for(None if target is not None else p.rounds, target, check_rate(p.prune_rate))
    if rounds == p.rounds:
        return cfg
    cfg = cfg.copy()
    cfg.pruning.rounds = rounds
    return cfg


def _with_ticket_defaults(cfg: DictConfig) -> DictConfig:
    """Training a given ticket defaults to ``pruning.rounds=0`` (evaluate it) unless rounds were set explicitly."""
    if cfg.ticket is None or not HydraConfig.initialized():
        return cfg
    explicit = any(o.lstrip("+~").split("=")[0] == "pruning.rounds" for o in HydraConfig.get().overrides.task)
    if explicit:
        return cfg
    cfg = cfg.copy()
    cfg.pruning.rounds = 0
    return cfg


def check_objective(cfg: DictConfig) -> None:
    """Fail before training on an unknown ``objective``, or on none under a sweeper that needs a number."""
    if cfg.objective is None:
        sweeper = str(HydraConfig.get().sweeper.get("_target_", "")) if HydraConfig.initialized() else ""
        if "optuna" in sweeper.lower():
            raise ValueError(
                f"objective is not set, but the Optuna sweeper optimises a number; one of {list(OBJECTIVES)}. "
                "Hint: objective=ticket/winning_density"
            )
        return
    if cfg.objective not in OBJECTIVES:
        test = "test" in cfg.objective
        why = "test accuracy is for reporting: tuning on it selects on the test set. " if test else ""
        raise ValueError(
            f"objective={cfg.objective!r} is not one of {list(OBJECTIVES)}. Hint: {why}ticket/winning_density is "
            "the density of the sparsest round that still matches the dense network (picked on validation)"
        )


def objective_value(summary: dict[str, Any], objective: str | None) -> Any:
    """What the job returns to Hydra: the ticket ``summary``, or its ``objective`` as a float (NaN when the run
    has no value, which Optuna records as a failed trial)."""
    if objective is None:
        return summary
    value = summary.get(objective.removeprefix("ticket/"))
    return math.nan if value is None else float(value)


@hydra.main(version_base="1.3", config_path="pkg://lth_wandb.conf", config_name="config")
def _app(cfg: DictConfig) -> Any:
    try:
        check_objective(cfg)
        quiet_srun_hint(_processes(cfg))
        return objective_value(run(cfg), cfg.objective)
    except USER_ERRORS as error:
        # Reported here, inside the job: past this point Hydra would add its own multi-line log.
        refused.clean_up(Path(HydraConfig.get().runtime.output_dir))
        _exit_with(error)
    except OSError as error:
        if error.errno not in atomic.DISK_FULL:
            raise
        _exit_with(error, code=1, what="disk full")
    except FloatingPointError as error:  # NonFiniteLoss, named by its base: importing it would bring Lightning
        if getattr(error, "resumable", True):
            raise
        _exit_with(error, code=1, what="stopped")  # the run's own numbers went wrong, not the command: in one line


def _processes(cfg: DictConfig) -> int | None:
    """How many processes the Trainer starts; None when the settings are not plain numbers (checked later)."""
    try:
        count = process_count(cfg.trainer)
    except (TypeError, ValueError, OmegaConfBaseException):
        return None
    return count if isinstance(count, int) else None


# Hydra cannot write `*` in a dict key on the command line, and merges a dict given there into the preset's.
LAYER_RATES_HINT = (
    "Hint: a pruning.layer_rates key without * matches a tensor name's end, and +pruning.layer_rates="
    "{fc1.weight:0.1} adds one; a preset's glob keys (such as '*out.weight') cannot be written on the command line: "
    "to change or remove them, write layer_rates in a pruning YAML of your own (--config-dir)"
)


def one_line(error: BaseException) -> str:
    """The error and its cause, joined on one line (Hydra's and OmegaConf's messages span several)."""
    parts = [str(error)]
    if error.__cause__ is not None and str(error.__cause__) not in parts[0]:
        parts.append(str(error.__cause__))
    if isinstance(error, (HydraException, OmegaConfBaseException)):
        parts.extend(_override_hints(parts[0]))
        # Hydra's advice to append the key with + is wrong here: lth-train refuses keys its schema lacks.
        parts[0] = re.sub(r"To append to your config use \S+\s*", "", parts[0])
    return " ".join(" ".join(line.strip() for line in part.splitlines() if line.strip()) for part in parts)


def _override_hints(message: str) -> list[str]:
    """Hints for Hydra's override errors: the setting a typo meant, and how to write ``layer_rates``."""
    if "layer_rates" in message:
        return [LAYER_RATES_HINT]
    if "not in 'DataConfig'" in message:
        return ["Hint: your own DataModule's arguments go in as +data.<arg>=<value> on the command line, or under "
                "options: in a data YAML (data.options)"]  # fmt: skip
    typo = re.search(r"Could not override '([\w.]+)'", message)
    close = closest_key(typo.group(1)) if typo else None
    return [f"Hint: did you mean {close}?"] if close else []


def main() -> None:
    """Console entry point: runs the Hydra app and turns user mistakes into one line and exit code 2."""
    # Hydra would print its own multi-line report and exit; let errors reach us instead.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    if "--version" in sys.argv[1:]:  # Hydra's own flag would print Hydra's version
        print(lth_wandb.version_text("lth-train"))
        return
    quiet_noise()
    if launched_by_lightning():  # a DDP rank that Lightning started must not outlive rank 0 (killed, say)
        die_with_parent(os.getppid())
    targets.add_working_directory()  # your own _target_ classes import from here, as under python -m
    try:
        argv = escape_sweep_values(sys.argv[1:])  # before anything reads them: sweep values are data
        sys.argv = [sys.argv[0], *resume.expand_argv(controls.expand_argv(argv))]
        refused.remember(sys.argv[1:])
        _app()
    except USER_ERRORS as error:  # composition errors: bad overrides, unknown options, wrong types
        _exit_with(error)


def _exit_with(error: BaseException, code: int = 2, what: str = "error") -> None:
    if os.environ.get("LTH_DEBUG"):
        raise error
    print(f"lth-train: {what}: {one_line(error)} (LTH_DEBUG=1 shows the traceback)", file=sys.stderr)
    sys.exit(code)


if __name__ == "__main__":
    main()
