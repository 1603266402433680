"""The study as one table: per curve (variant + differing pruning settings, as in the figures) and density, the
test accuracy at the early-stop iteration (mean ± std over seeds), the early-stop iteration, and the compute spent
from the run's start to the end of that round (epochs and wall time).

Compute is what the run itself trained: an IMP round r costs r + 1 rounds of training, a continuous-pruning round
r costs r + 1 epochs. A control that trains a saved ticket only counts its own training, not the IMP that found
the mask.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from statistics import mean, pstdev

from lth_wandb.report.data import Study, rounds_by_density

_NEAR = 0.15  # relative: a round this close to a requested density stands for it


@dataclass(frozen=True)
class DensityRow:
    """One curve at one density, over the runs (seeds) that reached it."""

    series: str
    density: float
    runs: int
    test_acc: list[float]
    early_stop_iteration: list[int]
    epochs: list[float]
    seconds: list[float]


def density_rows(study: Study, at: list[float] | None = None) -> list[DensityRow]:
    """Every curve's rounds grouped by density (seeds share densities under the same pruning settings).

    Args:
        at: only these densities (fractions, e.g. ``[1.0, 0.211, 0.07]``): for each, the curve's round whose density
            is nearest, if within 15%. None keeps every density.
    """
    rows = []
    for label, runs in study.series().items():
        groups = rounds_by_density(runs)  # by percent
        chosen = list(groups)
        if at is not None:
            targets = [t * 100 for t in at]
            nearest = [min(chosen, key=lambda d, t=t: abs(d - t), default=None) for t in targets]
            near = {d for d, t in zip(nearest, targets, strict=True) if d is not None and abs(d - t) <= _NEAR * t}
            chosen = sorted(near, reverse=True)
        for percent in chosen:
            pairs = groups[percent]
            stops = [r.early_stop_iteration for _, r in pairs]
            rows.append(
                DensityRow(
                    series=label,
                    density=mean(r.density for _, r in pairs),
                    runs=len(pairs),
                    test_acc=[r.test_acc for _, r in pairs if r.test_acc is not None],
                    early_stop_iteration=[s for s in stops if s is not None],
                    epochs=[e for run, r in pairs if (e := run.epochs_at(r)) is not None],
                    seconds=[r.seconds for _, r in pairs if r.seconds is not None],
                )
            )
    return rows


HEAD = ["curve", "weights left", "runs", "test acc (mean ± std)", "early-stop iteration", "epochs trained", "wall time"]


def cells(row: DensityRow) -> list[str]:
    """The row's values as text, in :data:`HEAD`'s order."""
    acc = f"{mean(row.test_acc):.2%} ± {pstdev(row.test_acc):.2%}" if row.test_acc else "n/a"
    stop = f"{mean(row.early_stop_iteration):,.0f}" if row.early_stop_iteration else "n/a"
    epochs = f"{mean(row.epochs):.0f}" if row.epochs else "n/a"
    wall = f"{mean(row.seconds) / 60:.1f} min" if row.seconds else "n/a"
    return [row.series, f"{row.density:.1%}", str(row.runs), acc, stop, epochs, wall]


def markdown_table(rows: list[DensityRow]) -> str:
    """The rows as a GitHub-flavoured markdown table."""
    return markdown(HEAD, [cells(row) for row in rows])


def markdown(head: Sequence[str], rows: Iterable[Sequence[str]], text_columns: int = 1, title: str = "") -> str:
    """A GitHub-flavoured markdown table of cell texts, under a bold ``title`` line if given: the first
    ``text_columns`` columns left-aligned, the numbers after them right-aligned. Every report table is one."""
    lines = [f"**{title}**", ""] if title else []
    lines += ["| " + " | ".join(head) + " |", "|---" * text_columns + "|---:" * (len(head) - text_columns) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
