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
from lth_wandb.report.data import DENSE, Round, RunRounds, Study
from lth_wandb.report.table import markdown

TOLERANCE = 0.15  # relative: a round this close to a density level stands for it (as the results table's --at)
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
    """Two curves (or one curve's seeds, when ``a == b``) at one density level: every pair of their tickets whose
    runs share a seed (``same_seed``), or every pair whose runs do not. Kept apart: same-seed pairs start from the
    same θ0, and the paper's reinit control trains IMP's own masks, so their IoU is 1 by construction."""

    a: str
    b: str
    same_seed: bool
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
    """Per level, every pair of tickets grouped by the two curves they belong to and whether their runs share a
    seed (each pair once)."""
    rows = []
    for level in result.levels:
        names = order or list(dict.fromkeys(m.series for m in level.members))
        rank = {name: i for i, name in enumerate(names)}
        groups: dict[tuple[str, str, bool], PairRow] = {}
        for i, first in enumerate(level.members):
            for j in range(i + 1, len(level.members)):
                second = level.members[j]
                value = float(level.iou[i, j])
                if math.isnan(value):
                    continue  # different networks
                a, b = sorted((first.series, second.series), key=lambda s: rank.get(s, len(rank)))
                same = first.run.seed is not None and first.run.seed == second.run.seed
                row = groups.setdefault((a, b, same), PairRow(a, b, same, [], [], [], []))
                row.densities.extend((first.round.density, second.round.density))
                row.iou.append(value)
                row.churn.append(float(level.churn[i, j]))
                row.chance.append(overlap.chance_iou(first.round.density, second.round.density))
        rows += sorted(
            groups.values(), key=lambda r: (rank.get(r.a, len(rank)), rank.get(r.b, len(rank)), not r.same_seed)
        )
    return rows


HEAD = ["tickets", "vs", "seeds", "weights left", "pairs", "mask IoU (mean ± std)", "chance IoU", "churn"]


def cells(row: PairRow) -> list[str]:
    """The row's values as text, in :data:`HEAD`'s order; the same curve twice compares its seeds."""
    left = _span(row.densities)
    vs = ("(its other seeds)" if not row.same_seed else "(its repeats)") if row.a == row.b else row.b
    iou = f"{mean(row.iou):.3f} ± {pstdev(row.iou):.3f}"
    seeds = "same" if row.same_seed else "different"
    return [row.a, vs, seeds, left, str(len(row.iou)), iou, f"{mean(row.chance):.3f}", f"{mean(row.churn):.3f}"]


def markdown_table(rows: list[PairRow]) -> str:
    """The rows as a GitHub-flavoured markdown table."""
    return markdown(HEAD, [cells(row) for row in rows], text_columns=3)


def heatmap_values(level: Level) -> np.ndarray:
    """The level's IoU matrix as drawn: the diagonal (a mask against itself) and identical masks of two runs (the
    paper's reinit control trains IMP's own masks) left blank, NaN, so the colours show how the others differ."""
    values = level.iou.numpy().astype(float).copy()
    values[np.isclose(values, 1.0)] = np.nan  # the diagonal included
    return values


def overlap_figure(result: StudyOverlap) -> Figure:
    """Heatmaps of the pairwise mask IoU, one panel per density level (at most 4, spread over the levels). Each
    panel's image carries ``gid="overlap:<level index>"``; rows and columns are the level's members in order. Cells
    of identical masks (the diagonal, a control on IMP's own masks) are blank and marked "="; the colour scale runs
    from 0 to the largest other IoU."""
    chosen = _spread(len(result.levels), _MAX_PANELS)
    size = max((len(result.levels[i].members) for i in chosen), default=1)
    side = 2.4 + 0.35 * size
    fig = Figure(figsize=(side * max(1, len(chosen)) + 4.5, side + 0.8), layout="constrained")
    axes = fig.subplots(1, max(1, len(chosen)), squeeze=False).ravel()
    image = None
    drawn = {index: heatmap_values(result.levels[index]) for index in chosen}
    finite = [v for values in drawn.values() for v in values[np.isfinite(values)]]
    top = max(0.1, math.ceil(max(finite, default=1.0) * 10) / 10)  # 0 to the largest IoU that is not 1
    for ax, index in zip(axes, chosen, strict=False):
        level = result.levels[index]
        values = drawn[index]
        image = ax.imshow(values, vmin=0.0, vmax=top, cmap="viridis", gid=f"overlap:{index}")
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
                    dark = v < 0.6 * top
                    ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6, color="white" if dark else "k")
                elif i != j and not math.isnan(float(level.iou[i, j])):
                    ax.text(j, i, "=", ha="center", va="center", fontsize=7, color="#59636e")
    if image is None:
        axes[0].text(0.5, 0.5, "fewer than two tickets at any density", ha="center", va="center")
        axes[0].set_axis_off()
    else:
        fig.colorbar(image, ax=list(axes), shrink=0.8, label="mask IoU (blank: the same mask; =: identical masks)")
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
