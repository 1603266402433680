"""Rounds still learning when they end: a round whose best monitored value came at its last validation has no
early-stop point of its own, and its early-stop iteration is the round's length. When that holds for most rounds,
the early-stop figure (flat at the round's length) says nothing about how fast tickets learn, and the report says so.
"""

from __future__ import annotations

from dataclasses import dataclass

from lth_wandb.report.data import Round, RunRounds, Study

MOST = 0.5  # the note appears when at least this fraction of the rounds ended on their best validation


@dataclass(frozen=True)
class Undertrained:
    """How many rounds ended on their best validation (``at_end``) out of those with an early-stop point."""

    at_end: int
    rounds: int

    @property
    def most(self) -> bool:
        return self.rounds > 0 and self.at_end >= MOST * self.rounds


def count(study: Study) -> Undertrained:
    """Count the rounds of every run whose early-stop step is their last validation step."""
    at_end = rounds = 0
    for run in study.runs:
        for r in run.rounds:
            if r.early_stop_step is None:
                continue
            rounds += 1
            at_end += r.early_stop_step >= last_validation(run, r)
    return Undertrained(at_end, rounds)


def last_validation(run: RunRounds, r: Round) -> int:
    """The step of the round's last validation point; its end step when the run logged no curve there."""
    start = r.start_step if r.start_step is not None else -1
    steps = [step for step, _ in run.curve if start < step <= (r.end_step if r.end_step is not None else step)]
    return max(steps) if steps else (r.end_step if r.end_step is not None else r.early_stop_step)


def note(found: Undertrained, monitor: str = "val/loss") -> str | None:
    """One sentence for the report, or None when most rounds found their best before their end."""
    if not found.most:
        return None
    which = "every round" if found.at_end == found.rounds else f"{found.at_end} of {found.rounds} rounds"
    return (
        f"The best {monitor} of {which} came at the round's last validation: the runs are undertrained, so the "
        "early-stop iteration is the round's length, not when the network stopped improving. Hint: more "
        "pruning.epochs_per_round (the paper trains well past the best validation loss)."
    )
