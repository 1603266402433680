"""Early-bird tickets in the report (docs/research.md): per curve, how long round 0 trained before its
mask settled, and the epochs that saved against a full round (``pruning.epochs_per_round``).

Read from what each run recorded: ``early_bird/epoch`` in its summary when the rule held (round 0 then ended after
that many epochs), else round 0 ran its full length; ``early_bird/max_distance``, the last window distance checked
against ``pruning.early_bird_threshold``, says how far it was from holding. Runs whose round 0 has not finished
say nothing yet and are left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import mean, pstdev
from typing import Any

from lth_wandb.report.data import RunRounds, Study
from lth_wandb.report.table import markdown

EPOCH = "early_bird/epoch"
MAX_DISTANCE = "early_bird/max_distance"
TITLE = "Early-bird tickets"


@dataclass(frozen=True)
class EarlyBirdRow:
    """One curve's early-bird runs whose round 0 finished.

    Attributes:
        found: runs where the rule held (``early_bird/epoch`` logged).
        epochs: round 0's length in epochs, per run.
        epochs_per_round: the runs' ``pruning.epochs_per_round`` (the largest, should they differ).
        max_distance: the last window distance each run checked, where logged.
        threshold: the runs' ``pruning.early_bird_threshold`` (the largest, should they differ).
    """

    series: str
    found: int
    epochs: list[int]
    epochs_per_round: int
    max_distance: list[float]
    threshold: float | None


def uses_early_bird(run: RunRounds) -> bool:
    return run.get("pruning.early_bird") is True or EPOCH in run.summary


def round0_epochs(run: RunRounds) -> int | None:
    """Round 0's length in epochs: the early bird's epoch, or the full round; None while round 0 is unfinished."""
    fired = run.summary.get(EPOCH)
    if isinstance(fired, int | float) and not isinstance(fired, bool):
        return int(fired)
    full = run.get("pruning.epochs_per_round")
    return full if run.round(0) is not None and isinstance(full, int) else None


def early_bird_rows(study: Study) -> list[EarlyBirdRow]:
    """One row per curve (:meth:`Study.series`) with early-bird runs whose round 0 finished; ``[]`` when none."""
    rows = []
    for label, runs in study.series().items():
        done = [(run, epochs) for run in runs if uses_early_bird(run) and (epochs := round0_epochs(run)) is not None]
        full = [run.get("pruning.epochs_per_round") for run, _ in done]
        if not done or not all(isinstance(f, int) for f in full):
            continue
        thresholds = [t for run, _ in done if isinstance(t := run.get("pruning.early_bird_threshold"), float | int)]
        rows.append(
            EarlyBirdRow(
                series=label,
                found=sum(EPOCH in run.summary for run, _ in done),
                epochs=[epochs for _, epochs in done],
                epochs_per_round=max(full),
                max_distance=[float(d) for run, _ in done if isinstance(d := run.summary.get(MAX_DISTANCE), float)],
                threshold=max(thresholds, default=None),
            )
        )
    return rows


HEAD = ["curve", "runs", "early bird found", "round 0 epochs (mean ± std)", "epochs per round", "epochs saved",
        "last window distance (threshold)"]  # fmt: skip


def cells(row: EarlyBirdRow) -> list[str]:
    """The row's values as text, in :data:`HEAD`'s order."""
    runs = len(row.epochs)
    saved = row.epochs_per_round - mean(row.epochs)
    distance = f"{mean(row.max_distance):.3f}" if row.max_distance else "n/a"
    if row.threshold is not None:
        distance += f" ({row.threshold:g})"
    return [
        row.series,
        str(runs),
        f"{row.found}/{runs}",
        f"{mean(row.epochs):.1f} ± {pstdev(row.epochs):.1f}",
        str(row.epochs_per_round),
        f"{saved:.1f} ({saved / row.epochs_per_round:.0%})",
        distance,
    ]


DESCRIPTION = (
    "Round 0 ends once the mask round 1 would get stops changing (every distance in the window below the threshold);"
    " the later rounds train the full epochs per round, so round 0's saving is the run's."
)


def markdown_table(rows: list[EarlyBirdRow]) -> str:
    """The rows as a GitHub-flavoured markdown table, under a bold title line."""
    return markdown(HEAD, [cells(row) for row in rows], title=TITLE)


def wandb_blocks(runset: Any, study: Study | None) -> list:
    """The W&B Report's section: the window distances per epoch of round 0, and the table. Empty when no run used
    early birds, or without run data (``study`` None)."""
    rows = early_bird_rows(study) if study is not None else []
    if not rows:
        return []
    import wandb_workspaces.reports.v2 as wr

    distances = wr.LinePlot(
        title="Early-bird mask distance per epoch of round 0",
        x="epoch",
        y=["early_bird/distance", MAX_DISTANCE],
        title_y="share of mask entries that differ",
        layout=wr.Layout(x=0, y=0, w=12, h=7),
    )
    return [
        wr.H1(TITLE),
        wr.PanelGrid(runsets=[runset], panels=[distances]),
        wr.P(DESCRIPTION),
        wr.MarkdownBlock(text=markdown_table(rows)),
    ]
