"""lth-train's instability analysis (config section ``instability``; docs/research.md).

During the main fit, :class:`~lth_wandb.lottery.instability.StepCapture` remembers round 0's dense network after
each requested step k. After the fit, for every requested round r and step k, the start point is round r's mask on
that state (round 0's mask keeps everything). Two copies train from it to the end of a round (T − k optimizer
steps, T being round 0's length), the way the pruning rounds train: same optimizer and LR-scheduler state at k,
the mask enforced after every step. They differ only in their random seed, so in data order (and dropout, if
any): the paper's SGD noise. The test error is then measured at ``points`` evenly spaced points of the line
between them. Cost: two trainings of T − k steps and ``points`` test-set evaluations per (round, k).

Which masks (``instability.protocol``): ``run`` (the default) puts round r's mask, found by this run's IMP rewinding
to its own rewind point (θ0 for ``pruning.rewind=init``), on the network at every requested k. The paper finds the
masks it analyses at k with IMP rewinding to k; ``paper`` does that: the run analyses its own rewind step only
(``pruning.rewind=k``), so the paper's curve over k is one run per k (sweep ``pruning.rewind``).

Differences from the paper's code (open_lth), on purpose: the copies start from the optimizer's state at k, as
our rounds do when they rewind, where open_lth starts a fresh optimizer with the schedule advanced to k. At k = 0
the two are the same. An epoch-interval LR schedule steps at the copies' own epoch ends (k need not be a multiple
of the epoch).

Lightning and W&B are imported inside the functions: ``lth-train --cfg job`` must not wait for them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, ListConfig

from lth_wandb import atomic
from lth_wandb.analysis import instability as lmc
from lth_wandb.pruning.masks import density

if TYPE_CHECKING:
    import pytorch_lightning as pl

    from lth_wandb.lottery.callback import LotteryTicket
    from lth_wandb.lottery.instability import StepCapture

REPORT_FILE = "instability.json"
_SEED_SALT = sum(map(ord, "instability"))
# run: every k with this run's masks; paper: k = the run's rewind step, with the masks IMP found rewinding there.
PROTOCOLS = ("run", "paper")


def capture_for(cfg: DictConfig, lottery: LotteryTicket, steps_round0: int) -> StepCapture | None:
    """The callback that captures round 0 at the requested steps, or None when the analysis is off. Checks the
    section first, so a bad value fails before W&B starts.

    Raises:
        ValueError: a step outside [0, ``steps_round0``), a round the run does not have, too few points, a
            threshold outside (0, 1), or the reinit control (its rounds do not start from the step-k weights).
    """
    from lth_wandb.lottery.instability import StepCapture

    section = cfg.instability
    if not section.enabled:
        return None
    steps = steps_for(section, lottery)
    late = [k for k in steps if k >= steps_round0]
    if late:
        raise ValueError(
            f"steps={late} are not before the end of round 0 ({steps_round0} optimizer steps): the two copies train "
            f"from step k to the end of the round. Hint: steps in [0, {steps_round0 - 1}]"
        )
    rounds_to_analyse(section.rounds, lottery.rounds)
    lmc.alphas(section.points)
    if not 0 < section.threshold < 1:
        raise ValueError(f"threshold={section.threshold!r} must be an error fraction in (0, 1). Hint: 0.02 (2 points)")
    if lottery.control == "reinit":
        raise ValueError(
            "pruning.control=reinit draws fresh values for every round, but the analysis starts from the step-k "
            "weights, so it would not measure the control. Hint: instability.enabled=false for this run"
        )
    return StepCapture(steps, lottery)


def steps_for(section: DictConfig, lottery: LotteryTicket) -> list[int]:
    """The steps k to analyse: ``section.steps`` ([0] when unset) under the ``run`` protocol; under ``paper`` the
    run's rewind step, whose masks IMP found rewinding there (``init`` is k = 0)."""
    from lth_wandb.lottery.instability import check_steps

    protocol, given = section.get("protocol", "run"), section.steps
    if protocol not in PROTOCOLS:
        raise ValueError(
            f"protocol={protocol!r} is not one of {list(PROTOCOLS)}. Hint: 'run' measures every k with this run's "
            "masks; 'paper' measures k = pruning.rewind with the masks IMP found rewinding to k (Frankle et al. 2020)"
        )
    # One step, as a sweep sets it: whatever it is (0.5, a word), check_steps names it as a bad step.
    one = not isinstance(given, (ListConfig, list, tuple))
    steps = None if given is None else check_steps([given] if one else list(given))
    if protocol == "run":
        return steps or [0]
    if lottery.rewind in ("lr", "none"):
        raise ValueError(
            f"protocol='paper' analyses the masks IMP finds rewinding to step k, but pruning.rewind={lottery.rewind!r} "
            "does not rewind to a step. Hint: pruning.rewind=<k> (init is k = 0), one run per k"
        )
    k = 0 if lottery.rewind == "init" else int(lottery.rewind)
    if steps is not None and steps != [k]:
        raise ValueError(
            f"steps={steps} with protocol='paper': a run measures only its own rewind step k={k}, the one its IMP "
            "rewound to. Hint: leave instability.steps unset, and sweep pruning.rewind for more k (one run per k)"
        )
    return [k]


def rounds_to_analyse(rounds: list[int] | None, total: int) -> list[int]:
    """``rounds`` checked against the run's rounds 0..``total``; None means all of them."""
    if rounds is None:
        return list(range(total + 1))
    rounds = list(rounds)
    bad = [r for r in rounds if isinstance(r, bool) or not isinstance(r, int) or not 0 <= r <= total]
    if bad or not rounds:
        raise ValueError(
            f"rounds={rounds!r}: this run has rounds 0..{total} (0 is the dense network). Hint: null for all of them"
        )
    return sorted(set(rounds))


def copy_seeds(seed: int) -> tuple[int, int]:
    """The two copies' seeds, derived from the run's ``seed``: the same run gives the same copies, and every
    (round, k) uses the same pair, so differences across k are not differences in the noise drawn."""
    return tuple((seed * 1_000_003 + 7919 * (copy + 1) + _SEED_SALT) % (2**32 - 1) for copy in (0, 1))


def analyse(
    cfg: DictConfig,
    lottery: LotteryTicket,
    capture: StepCapture,
    dm: pl.LightningDataModule,
    steps_round0: int,
    run_dir: Path,
) -> dict[str, Any]:
    """Run the analysis for every requested (round, k), after the main fit, and write ``instability.json`` in
    ``run_dir``; ``steps_round0`` is round 0's length T in optimizer steps."""
    from lth_wandb.lottery.instability import error_on

    section = cfg.instability
    # Round 0 can end before a requested step when an early bird ends it: those steps have nothing to branch from.
    steps = [k for k in capture.steps if k in capture.states]
    evaluate_model = _build_model(cfg, dm)
    if cfg.trainer.accelerator in ("gpu", "cuda"):
        evaluate_model.to("cuda")
    evaluate = error_on(evaluate_model, dm.test_dataloader())
    results = []
    for number in rounds_to_analyse(section.rounds, lottery.rounds):
        masks = lottery.masks_of(number)
        for k in steps:
            started = time.monotonic()
            point = capture.states[k]
            ends = [_train_copy(cfg, dm, point, masks, steps_round0 - k, seed) for seed in copy_seeds(cfg.seed)]
            path = lmc.error_path(ends[0], ends[1], evaluate, section.points)
            results.append({
                "round": number,
                "density": density(masks),
                "step": k,
                "steps_trained": steps_round0 - k,
                "seeds": list(copy_seeds(cfg.seed)),
                "alphas": path.alphas,
                "errors": path.errors,
                "instability": path.instability,
                "stable": lmc.is_stable(path.instability, section.threshold),
                "seconds": round(time.monotonic() - started, 3),
            })  # fmt: skip
    report = {
        "paper": "Frankle, Dziugaite, Roy & Carbin 2020, arXiv 1912.05671",
        # Where the masks at k came from: this run's IMP (run) or IMP rewinding to k (paper).
        "protocol": section.get("protocol", "run"),
        "points": section.points,
        "threshold": section.threshold,
        "round_steps": steps_round0,
        "results": results,
        "missing_steps": capture.missing(),
        "earliest_stable_step": _earliest(results, section.threshold),
    }
    atomic.write_text(Path(run_dir) / REPORT_FILE, json.dumps(report, indent=2) + "\n")
    return report


def after_fit(
    cfg: DictConfig,
    lottery: LotteryTicket,
    capture: StepCapture,
    dm: pl.LightningDataModule,
    steps_round0: int,
    run_dir: Path,
    logger=None,
) -> dict[str, Any]:
    """lth-train's step after the main fit (rank 0): :func:`analyse`, log the report to the run's W&B ``logger``
    (when there is one), print it."""
    report = saved_report(run_dir)
    if report is None:
        report = analyse(cfg, lottery, capture, dm, steps_round0, run_dir)
    else:  # a resumed run whose analysis had finished: its results stand (the same seeds give the same ones)
        print(f"instability: the results in {Path(run_dir) / REPORT_FILE}, computed before the run was cut off")
    if logger is not None:
        from lth_wandb.tracking.instability import log_instability
        from lth_wandb.tracking.run import sent_before

        log_instability(logger.experiment, report, sent_before(logger.experiment))
    print_report(report)
    return report


def saved_report(run_dir: Path) -> dict[str, Any] | None:
    """The run's ``instability.json``, when an earlier attempt wrote it whole (it is written atomically)."""
    try:
        report = json.loads((Path(run_dir) / REPORT_FILE).read_text())
    except (OSError, ValueError):
        return None
    return report if isinstance(report, dict) and isinstance(report.get("results"), list) else None


def print_report(report: dict[str, Any]) -> None:
    """One line per (round, k) in the terminal."""
    for r in report["results"]:
        verdict = "stable" if r["stable"] else "unstable"
        print(
            f"instability: round {r['round']} (density {r['density']:.3f}), k={r['step']}: "
            f"{100 * r['instability']:.2f} points ({verdict}; ends {100 * r['errors'][0]:.2f}% and "
            f"{100 * r['errors'][-1]:.2f}% test error, {r['seconds']:.1f} s)"
        )
    if report["missing_steps"]:
        print(f"instability: round 0 ended before steps {report['missing_steps']}: not measured")
    for number, step in report["earliest_stable_step"].items():
        print(f"instability: round {number} is stable from k={step}" if step is not None else
              f"instability: round {number} is not stable at any measured k")  # fmt: skip


def _train_copy(cfg: DictConfig, dm, point: dict[str, Any], masks, steps: int, seed: int) -> dict:
    """One copy: the model built as the run built it, started from ``point`` under ``masks``, trained ``steps``
    optimizer steps with ``seed`` deciding the data order. Returns its final state dict (CPU copies)."""
    import pytorch_lightning as pl

    from lth_wandb.lottery.instability import StartFrom
    from lth_wandb.lottery.rewind import clone_state

    pl.seed_everything(seed, workers=True, verbose=False)
    generator = getattr(dm, "shuffle_generator", None)  # the built-in data's shuffle draws from its own generator
    if generator is not None:
        generator.manual_seed(seed)
    model = _build_model(cfg, dm)
    t = cfg.trainer
    with _quiet_lightning():
        trainer = pl.Trainer(
            accelerator=t.accelerator,
            devices=1,  # on rank 0 only, after the main fit
            precision=t.precision,
            deterministic=t.deterministic,
            limit_train_batches=t.limit_train_batches,
            max_steps=steps,
            max_epochs=-1,
            limit_val_batches=0,  # only the path's ends matter, measured on the test set afterwards
            num_sanity_val_steps=0,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[StartFrom(point["weights"], masks, point["optimizers"], point["schedulers"])],
        )
        trainer.fit(model, datamodule=dm)
    return clone_state(model.state_dict())


@contextlib.contextmanager
def _quiet_lightning():
    """Lightning's notes on every Trainer (devices available, why the fit stopped) would bury the report."""
    loggers = [logging.getLogger(n) for n in ("pytorch_lightning", "lightning_fabric", "lightning.pytorch")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _build_model(cfg: DictConfig, dm):
    from lth_wandb.app.build import build_model, keep_hparams_out_of_run_config

    model = build_model(cfg, dm)
    keep_hparams_out_of_run_config(model, dm)
    return model


def _earliest(results: list[dict[str, Any]], threshold: float) -> dict[str, int | None]:
    by_round: dict[int, dict[int, float]] = {}
    for r in results:
        by_round.setdefault(r["round"], {})[r["step"]] = r["instability"]
    return {str(n): lmc.earliest_stable_step(values, threshold) for n, values in sorted(by_round.items())}
