"""Do different runs find the same ticket? The overlap of their masks at equal density, across seeds, criteria,
rewind points and methods (IMP vs pruning after every epoch), as a table and a heatmap.

A run's masks are the tickets lth-train saved in its output folder (``tickets/round-<r>/ticket``, found through
``run.json``: :attr:`RunRounds.output_dir`). At each density level every run contributes the round nearest to it
(within 15%, as ``--at`` picks rounds for the results table), and every pair of those masks is compared with
:mod:`lth_wandb.analysis.overlap`: IoU of the kept positions, churn, and the chance IoU of two independent random
masks of the same densities (the baseline: an IoU near it means the masks share no more than chance).

The dense round is left out: every dense mask is all ones, so their IoU is 1 by construction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from statistics import mean, pstdev

import numpy as np
import torch
from matplotlib.figure import Figure

from lth_wandb.analysis import overlap
from lth_wandb.pruning.ticket import Ticket
from lth_wandb.report.data import Round, RunRounds, Study
from lth_wandb.report.table import markdown

TOLERANCE = 0.15  # relative: a round this close to a density level stands for it (as the results table's --at)
DENSE = 0.9999  # rounds at least this dense are the dense network: all-ones masks, IoU 1 by construction
_MAX_PANELS = 4
_MAX_ANNOTATED = 12  # heatmaps of more runs than this drop the numbers in the cells


@dataclass(frozen=True, eq=False)
class Member:
    """One run's ticket at one density level."""

    run: RunRounds
    series: str  # the curve it belongs to (:meth:`Study.series`)
    round: Round
    masks: dict[str, torch.Tensor] = field(repr=False)

    @property
    def label(self) -> str:
        seed = f", seed {self.run.seed}" if self.run.seed is not None else ""
        return f"{self.series}{seed} [{self.run.label}]"


@dataclass
class Level:
    """The tickets of every run near one density, and their pairwise IoU and churn (``n x n``, NaN where the runs
    prune different tensors)."""

    density: float
    members: list[Member]
    iou: torch.Tensor
    churn: torch.Tensor


@dataclass
class StudyOverlap:
    """The overlap analysis of a study: density levels with two or more tickets, and the runs left out and why."""

    levels: list[Level]
    missing: list[tuple[str, str]]


@dataclass(frozen=True)
class PairRow:
    """Two curves (or one curve's seeds, when ``a == b``) at one density level: every pair of their tickets."""

    a: str
    b: str
    densities: list[float]
    iou: list[float]
    churn: list[float]
    chance: list[float]


def study_overlap(study: Study, at: list[float] | None = None, tolerance: float = TOLERANCE) -> StudyOverlap:
    """Load the runs' tickets and compare them at equal density.

    Args:
        study: the runs; only those whose output folder (:attr:`RunRounds.output_dir`) holds tickets take part.
        at: density levels (fractions), as ``--at`` gives them; None: every density some run reached, grouped
            within ``tolerance``. Levels with fewer than two tickets are dropped.
        tolerance: relative distance within which a round stands for a level.
    """
    series_of = {id(run): label for label, runs in study.series().items() for run in runs}
    usable, missing = [], []
    for run in study.runs:
        folder = Path(run.output_dir) / "tickets" if run.output_dir else None
        if folder is None or not folder.is_dir():
            why = "no output folder found (run.json)" if folder is None else f"no tickets in {folder}"
            missing.append((run.label, why))
        else:
            usable.append(run)
    levels, loaded = [], {}
    targets = [t for t in at if t < DENSE] if at is not None else _levels(usable, tolerance)
    seen: set[tuple[tuple[str, int], ...]] = set()
    for target in targets:
        members = []
        for run in usable:
            near = _nearest(run, target, tolerance)
            key = (id(run), near.round) if near is not None else None
            if key is not None and key not in loaded:
                loaded[key] = _masks(run, near, missing)
            if near is not None and loaded[key] is not None:
                members.append(Member(run, series_of.get(id(run), run.variant), near, loaded[key]))
        which = tuple((m.run.run_id, m.round.round) for m in members)
        if len(members) >= 2 and which not in seen:
            seen.add(which)
            masks = [m.masks for m in members]
            levels.append(Level(target, members, overlap.overlap_matrix(masks), overlap.overlap_matrix(masks, "churn")))
    return StudyOverlap(levels, missing)


def pair_rows(result: StudyOverlap, order: list[str] | None = None) -> list[PairRow]:
    """Per level, every pair of tickets grouped by the two curves they belong to (each pair once)."""
    rows = []
    for level in result.levels:
        names = order or list(dict.fromkeys(m.series for m in level.members))
        rank = {name: i for i, name in enumerate(names)}
        groups: dict[tuple[str, str], PairRow] = {}
        for i, first in enumerate(level.members):
            for j in range(i + 1, len(level.members)):
                second = level.members[j]
                value = float(level.iou[i, j])
                if math.isnan(value):
                    continue  # different networks
                a, b = sorted((first.series, second.series), key=lambda s: rank.get(s, len(rank)))
                row = groups.setdefault((a, b), PairRow(a, b, [], [], [], []))
                row.densities.extend((first.round.density, second.round.density))
                row.iou.append(value)
                row.churn.append(float(level.churn[i, j]))
                row.chance.append(overlap.chance_iou(first.round.density, second.round.density))
        rows += sorted(groups.values(), key=lambda r: (rank.get(r.a, len(rank)), rank.get(r.b, len(rank))))
    return rows


HEAD = ["tickets", "vs", "weights left", "pairs", "mask IoU (mean ± std)", "chance IoU", "churn"]


def cells(row: PairRow) -> list[str]:
    """The row's values as text, in :data:`HEAD`'s order; the same curve twice compares its seeds."""
    left = _span(row.densities)
    vs = "(its other seeds)" if row.a == row.b else row.b
    iou = f"{mean(row.iou):.3f} ± {pstdev(row.iou):.3f}"
    return [row.a, vs, left, str(len(row.iou)), iou, f"{mean(row.chance):.3f}", f"{mean(row.churn):.3f}"]


def markdown_table(rows: list[PairRow]) -> str:
    """The rows as a GitHub-flavoured markdown table."""
    return markdown(HEAD, [cells(row) for row in rows], text_columns=2)


def overlap_figure(result: StudyOverlap) -> Figure:
    """Heatmaps of the pairwise mask IoU, one panel per density level (at most 4, spread over the levels). Each
    panel's image carries ``gid="overlap:<level index>"``; rows and columns are the level's members in order."""
    chosen = _spread(len(result.levels), _MAX_PANELS)
    size = max((len(result.levels[i].members) for i in chosen), default=1)
    side = 2.4 + 0.35 * size
    fig = Figure(figsize=(side * max(1, len(chosen)) + 4.5, side + 0.8), layout="constrained")
    axes = fig.subplots(1, max(1, len(chosen)), squeeze=False).ravel()
    image = None
    for ax, index in zip(axes, chosen, strict=False):
        level = result.levels[index]
        values = level.iou.numpy()
        image = ax.imshow(values, vmin=0.0, vmax=1.0, cmap="viridis", gid=f"overlap:{index}")
        n = len(level.members)
        ax.set_xticks(range(n), [str(k + 1) for k in range(n)], fontsize="x-small")
        if ax is axes[0]:
            ax.set_yticks(range(n), [f"{k + 1}: {m.label}" for k, m in enumerate(level.members)], fontsize="x-small")
        else:
            ax.set_yticks(range(n), [str(k + 1) for k in range(n)], fontsize="x-small")
        ax.set_title(f"{_span([m.round.density for m in level.members])} of weights left", fontsize="small")
        if n <= _MAX_ANNOTATED:
            for (i, j), v in np.ndenumerate(values):
                if not math.isnan(v):
                    ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6, color="white" if v < 0.6 else "k")
    if image is None:
        axes[0].text(0.5, 0.5, "fewer than two tickets at any density", ha="center", va="center")
        axes[0].set_axis_off()
    else:
        fig.colorbar(image, ax=list(axes), shrink=0.8, label="mask IoU")
    fig.suptitle("Mask overlap at equal density (IoU of kept weights)", fontsize="medium")
    return fig


def _span(densities: list[float]) -> str:
    """``"21.0%"``, or ``"20.5–21.3%"`` when the densities differ."""
    low, high = f"{min(densities):.1%}", f"{max(densities):.1%}"
    return low if low == high else f"{low[:-1]}–{high}"


def _levels(runs: list[RunRounds], tolerance: float) -> list[float]:
    """Density levels: every round's density below dense, sparsest last; one within ``tolerance`` of the level
    before joins it."""
    levels: list[float] = []
    for d in sorted({r.density for run in runs for r in run.rounds if r.density < DENSE}, reverse=True):
        if not levels or levels[-1] - d > tolerance * levels[-1]:
            levels.append(d)
    return levels


def _nearest(run: RunRounds, target: float, tolerance: float) -> Round | None:
    near = min(run.rounds, key=lambda r: abs(r.density - target), default=None)
    return near if near is not None and abs(near.density - target) <= tolerance * target else None


def _masks(run: RunRounds, r: Round, missing: list[tuple[str, str]]) -> dict[str, torch.Tensor] | None:
    folder = Path(run.output_dir) / "tickets" / f"round-{r.round}" / "ticket"
    try:
        return Ticket.load(folder).masks
    except (FileNotFoundError, ValueError) as error:
        missing.append((run.label, f"round {r.round}: {str(error).splitlines()[0][:200]}"))
        return None


def _spread(n: int, most: int) -> list[int]:
    """Up to ``most`` indices out of ``n``, evenly spread, first and last included."""
    if n <= most:
        return list(range(n))
    return sorted({round(i * (n - 1) / (most - 1)) for i in range(most)})
