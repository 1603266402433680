"""The study in a paragraph: the best ticket (density, test accuracy, vs dense) and the controls beside it.

Both reports open with this text, so the W&B Report and the offline HTML tell the same story.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import mean

from lth_wandb.report.data import CONTROLS, VARIANT_LABELS, Round, RunRounds, Study

_SAME_DENSITY = 0.02  # relative: control rounds this close to the ticket's density are compared with it


@dataclass(frozen=True)
class BestTicket:
    """The sparsest winning ticket of the study, with its run's dense round for comparison."""

    run: RunRounds
    round: Round
    dense: Round


def best_ticket(study: Study) -> BestTicket | None:
    """Among IMP runs (not controls), the winning round with the fewest weights; ties go to higher test
    accuracy. None when no IMP run finished its dense round."""
    candidates = []
    for run in study.runs:
        winner, dense = run.round(run.winning_round), run.round(0)
        if run.variant == "ticket" and winner is not None and dense is not None:
            candidates.append(BestTicket(run, winner, dense))
    if not candidates:
        return None
    return min(candidates, key=lambda b: (b.round.density, -(b.round.test_acc or 0.0)))


def control_accuracy(study: Study, variant: str, density: float) -> tuple[float, int] | None:
    """Mean test accuracy of ``variant`` runs at ``density`` (within 2%), and how many runs that is."""
    accs = [
        r.test_acc
        for run in study.runs
        if run.variant == variant
        for r in run.rounds
        if r.test_acc is not None and abs(r.density - density) <= _SAME_DENSITY * density
    ]
    return (mean(accs), len(accs)) if accs else None


def status_counts(study: Study) -> str:
    """E.g. ``"3 runs: 2 finished, 1 failed"``."""
    counts: dict[str, int] = {}
    for run in study.runs:
        counts[run.status] = counts.get(run.status, 0) + 1
    parts = ", ".join(f"{n} {status}" for status, n in counts.items())
    noun = "run" if len(study.runs) == 1 else "runs"
    return f"{len(study.runs)} {noun}" + (f": {parts}" if parts else "")


def summary_text(study: Study) -> str:
    """One paragraph: which runs, the best ticket against its dense network, the controls at its density."""
    scope = f" in group {study.group}" if study.group else f" in sweep {study.sweep}" if study.sweep else ""
    lines = [f"{status_counts(study)}{scope}."]
    if study.skipped:
        lines.append(f"{len(study.skipped)} run directories could not be read.")
    best = best_ticket(study)
    if best is None and not any(run.rounds for run in study.runs):
        lines.append(
            "None of these runs logged a pruning round (no round/* rows), so there is no ticket to report. Hint: "
            "with your own Trainer, put RoundLogger(lottery) after LotteryTicket in its callbacks."
        )
        return " ".join(lines)
    if best is None:
        if any(run.variant == "ticket" for run in study.runs):
            lines.append("No IMP run has finished its dense round yet, so there is no ticket to report.")
        else:
            lines.append(
                f"None of these runs is IMP with rewinding ({kinds(study)}), so there is no winning ticket to compare "
                "them with; the tables below give each run's rounds."
            )
        return " ".join(lines)
    run, win, dense = best.run, best.round, best.dense
    seed = f", seed {run.seed}" if run.seed is not None else ""
    if win.round == 0:
        lines.append(
            f"No pruned round of run {run.label}{seed} matched its dense network on {run.monitor} yet; the dense "
            f"network reaches {_result(dense, run.monitor)}."
        )
        return " ".join(lines)
    gain = (win.test_acc - dense.test_acc) * 100 if win.test_acc is not None and dense.test_acc is not None else None
    versus = f" ({gain:+.1f} points)" if gain is not None else ""
    lines.append(
        f"Best winning ticket: run {run.label}{seed} keeps {win.density:.1%} of the weights (round {win.round}) "
        f"and reaches {_result(win, run.monitor)} at its early-stop iteration, vs {_result(dense, run.monitor)} "
        f"for the dense network{versus}."
    )
    if win.test_acc is None:
        lines.append("No test accuracy was logged (test/acc): give the DataModule a test_dataloader() to have one.")
    for variant in (*CONTROLS, *(f"{c}_variant" for c in CONTROLS)):
        found = control_accuracy(study, variant, win.density)
        if found is not None:
            acc, n = found
            what = f"paper's {VARIANT_LABELS[variant]} control" if variant in CONTROLS else VARIANT_LABELS[variant]
            lines.append(f"The {what} at that density: {_pct(acc)} (mean of {n}).")
    if run.ticket is not None:
        lines.append(f"The ticket is the artifact {run.ticket.ref}.")
    return " ".join(lines)


def study_subject(study: Study) -> str:
    """What the runs are, on which model and data: ``"IMP and the paper's controls, LeNet300100 on digits"``."""
    variants = {run.variant for run in study.runs}
    if "ticket" in variants and variants & set(CONTROLS):
        what = "IMP and the paper's controls"
    elif len(variants) <= 3:
        ordered = [v for v in VARIANT_LABELS if v in variants] + sorted(variants - set(VARIANT_LABELS))
        what = ", ".join(VARIANT_LABELS.get(v, v) for v in ordered)
    else:
        what = f"{len(variants)} methods"
    models = {str(run.get("model._target_") or "").rsplit(".", 1)[-1] for run in study.runs} - {""}
    data = {str(run.get("data._target_") or run.get("data.name") or "").rsplit(".", 1)[-1] for run in study.runs}
    data -= {""}
    if len(models) == 1 and len(data) == 1:
        what += f", {models.pop()} on {data.pop()}"
    return what or "no runs"


def kinds(study: Study) -> str:
    """What the runs are, e.g. ``"2 reinit variant (own masks)"``."""
    counts: dict[str, int] = {}
    for run in study.runs:
        label = VARIANT_LABELS.get(run.variant, run.variant)
        counts[label] = counts.get(label, 0) + 1
    return ", ".join(f"{n} {label}" for label, n in counts.items())


def _result(round: Round, monitor: str) -> str:
    """The round's test accuracy, or, when the run logged none, its best monitored value."""
    if round.test_acc is not None:
        return f"{round.test_acc:.1%} test accuracy"
    return f"best {monitor} {round.best_value:.4g}" if round.best_value is not None else "no recorded value"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"
