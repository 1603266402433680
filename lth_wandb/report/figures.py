"""The paper's figures, drawn with matplotlib from a :class:`~lth_wandb.report.data.Study`.

- test accuracy vs percent of weights remaining: tickets vs the random-reinit and random-pruning controls;
- early-stop iteration vs percent of weights remaining;
- compute: training epochs spent to reach each percent of weights remaining;
- validation loss during training, one curve per round.

The density axis is logarithmic and runs from dense (left) to sparse (right), as in Frankle & Carbin (2019).
With several runs per curve (seeds), each run's points are drawn faintly and the curve is their mean ± std.
Every plotted run carries ``gid="run:<run id>"`` so tests (and users) can read the data back from the figure.
Figures are built on ``matplotlib.figure.Figure`` (no pyplot), so nothing global changes and no display is needed.
"""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Callable
from os import PathLike
from pathlib import Path
from statistics import mean, pstdev

from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from lth_wandb import atomic
from lth_wandb.report import undertrained
from lth_wandb.report.data import Round, RunRounds, Study, rounds_by_density
from lth_wandb.report.summary import best_ticket

CAPTIONS = {
    "accuracy": "Test accuracy at the early-stop iteration vs percent of weights remaining (log scale).",
    "early_stop": "Early-stop iteration (step of minimum validation loss, counted from the round's start) vs "
    "percent of weights remaining.",
    "compute": "Training epochs from the run's start to the end of the round that reached each percent of weights "
    "remaining (log scale; epochs too when they span a factor of 10): the cost of getting there.",
    "val_curves": "Validation loss during each round; the dot marks the early-stop point, dashed lines a round "
    "that did not finish.",
    "instability": "Instability: test error along the straight line between two copies trained from the same start "
    "(round r's mask on the dense network after k steps), one line per weights left and k, mean over seeds.",
    "overlap": "Mask overlap at equal density: IoU of the kept weights between every pair of runs' tickets (1 = the "
    "same mask), one panel per density; rows are numbered as the columns.",
}
FORMATS = ("png", "svg")
_MAX_TICKS = 8
_MAX_PANELS = 6
# Each curve its own marker and line style, so curves that lie on top of each other still show (and print in grey).
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LINES = ("-", "--", ":", "-.")
_LOG_RANGE = 10  # a value axis is logarithmic only when its values span this factor or more


def make_figures(study: Study) -> dict[str, Figure]:
    """All figures of the report, keyed as in :data:`CAPTIONS`."""
    best = best_ticket(study)
    star = None
    if best is not None and best.round.test_acc is not None:
        star = (best.round.density * 100, best.round.test_acc * 100)
    monitor = study.runs[0].monitor if study.runs else "val/loss"
    early_stop = density_figure(study, lambda _, r: r.early_stop_iteration, "Early-stop iteration", "Early stopping")
    _note(early_stop, undertrained.note(undertrained.count(study), monitor), "undertrained")
    return {
        "accuracy": density_figure(
            study, lambda _, r: _scaled(r.test_acc, 100), "Test accuracy (%)", "Test accuracy", highlight=star
        ),
        "early_stop": early_stop,
        "compute": density_figure(study, RunRounds.epochs_at, "Epochs trained", "Compute to reach it", log_y=True),
        "val_curves": val_curves_figure(study),
    }


def density_figure(
    study: Study,
    value: Callable[[RunRounds, Round], float | None],
    ylabel: str,
    title: str,
    highlight: tuple[float, float] | None = None,
    log_y: bool = False,
) -> Figure:
    """``value(run, round)`` against percent of weights remaining, one colour, marker and line style per series of
    :meth:`Study.series`; each run a ``Line2D`` with ``gid="run:<id>"`` and one point per round.
    ``highlight`` (x, y) gets a star: the best winning ticket. ``log_y`` makes the value axis logarithmic when the
    values span a factor of 10 or more. Curves with the same points are named in a note (``gid="coincide"``)."""
    series = study.series()
    # The legend goes below the axes, so the figure grows with it instead of squeezing the plot.
    fig = Figure(figsize=(7.2, 4.0 + 0.2 * (len(series) + (highlight is not None))), layout="constrained")
    ax = fig.add_subplot()
    densities: set[float] = set()
    curves: dict[str, dict[float, float]] = {}  # label -> percent -> mean value: to find curves that coincide
    for i, (label, runs) in enumerate(series.items()):
        color, several = f"C{i % 10}", len(runs) > 1
        marker, line = MARKERS[i % len(MARKERS)], LINES[i % len(LINES)]
        for run in runs:
            points = [(r.density * 100, y) for r in run.rounds if (y := value(run, r)) is not None]
            xs, ys = [p[0] for p in points], [p[1] for p in points]
            style = dict(ls="none", alpha=0.35, ms=4) if several else dict(ls=line, label=label)
            ax.plot(xs, ys, marker=marker, color=color, gid=f"run:{run.run_id}", **style)
        by_density: dict[float, list[float]] = {}  # percent -> the runs' values there
        for x, pairs in rounds_by_density(runs).items():
            ys = [y for run, r in pairs if (y := value(run, r)) is not None]
            if ys:
                by_density[x] = ys
        densities.update(by_density)
        curves[label] = {x: mean(ys) for x, ys in by_density.items()}
        if several and by_density:
            xs = sorted(by_density, reverse=True)
            bars = ax.errorbar(
                xs,
                [mean(by_density[x]) for x in xs],
                yerr=[pstdev(by_density[x]) for x in xs],
                color=color,
                marker=marker,
                ls=line,
                capsize=3,
                label=f"{label}: mean ± std of {max(map(len, by_density.values()))} runs",
            )
            bars.lines[0].set_gid(f"mean:{label}")  # the means; a gid passed to errorbar would also tag the caps
    if highlight is not None:
        ax.plot(
            *highlight,
            marker="*",
            ms=15,
            color="gold",
            mec="black",
            ls="none",
            label="best winning ticket",
            gid="best",
            zorder=5,
        )
    ax.set(xlabel="Percent of weights remaining", ylabel=ylabel, title=title)
    values = [v for points in curves.values() for v in points.values() if v > 0]
    if log_y and values and max(values) >= _LOG_RANGE * min(values):
        _log_value_axis(ax)
    ax.grid(True, which="major", alpha=0.3)
    if densities:
        _density_axis(ax, densities)
        fig.legend(loc="outside lower center", fontsize="x-small", frameon=False)
    else:
        ax.text(0.5, 0.5, "no finished rounds yet", ha="center", va="center", transform=ax.transAxes)
    same = coinciding(curves)
    if same:
        _note(fig, "On top of each other (the same values): " + "; ".join(" = ".join(g) for g in same), "coincide")
    return fig


def coinciding(curves: dict[str, dict[float, float]]) -> list[list[str]]:
    """Groups of two or more curves with the same points (within 1e-9 relative), which draw as one."""
    groups: list[list[str]] = []
    for label, points in curves.items():
        if not points:
            continue
        for group in groups:
            other = curves[group[0]]
            if other.keys() == points.keys() and all(math.isclose(other[x], points[x], rel_tol=1e-9) for x in points):
                group.append(label)
                break
        else:
            groups.append([label])
    return [group for group in groups if len(group) > 1]


def val_curves_figure(study: Study, metric: str = "val/loss") -> Figure:
    """``metric`` against iterations within the round: one panel per series (at most 6), one line per run and
    round (``gid="curve:<run id>:<round>"``), coloured by round."""
    series = list(study.series().items())[:_MAX_PANELS] or [("no runs", [])]
    cols = min(3, len(series))
    rows = math.ceil(len(series) / cols)
    fig = Figure(figsize=(4.2 * cols + 0.6, 3.4 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False, sharey=True).ravel()
    last_round = max((r.round for run in study.runs for r in run.rounds), default=0) + 1
    cmap = colormaps["viridis"]
    for ax, (label, runs) in zip(axes, series, strict=False):
        labelled: set[int] = set()
        for run in runs:
            _plot_run_curves(ax, run, metric, cmap, last_round, labelled)
        ax.set(title=label, xlabel="Iteration within round")
        ax.grid(True, alpha=0.3)
        if labelled:
            ax.legend(fontsize="x-small", title="round (weights left)", title_fontsize="x-small")
        else:
            ax.text(0.5, 0.5, "no validation points", ha="center", va="center", transform=ax.transAxes)
    for ax in axes[len(series) :]:
        ax.set_visible(False)
    axes[0].set_ylabel(metric)
    return fig


def figure_bytes(fig: Figure, fmt: str) -> bytes:
    """The figure encoded as ``fmt`` (``"png"`` or ``"svg"``)."""
    if fmt not in FORMATS:
        raise ValueError(f"fmt={fmt!r} is not one of {list(FORMATS)}. Hint: PNG for pages, SVG for papers.")
    buffer = io.BytesIO()
    fig.savefig(buffer, format=fmt, dpi=110, metadata={"Software": None} if fmt == "png" else {"Date": None})
    return buffer.getvalue()


def save_figures(figures: dict[str, Figure], folder: str | PathLike) -> dict[str, dict[str, Path]]:
    """Write each figure as PNG and SVG into ``folder``, replacing the folder as a whole: a kill or a full disk
    leaves the previous set, never a mix of old and new figures. Returns ``{name: {"png": path, "svg": path}}``."""
    out = Path(folder)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic.atomic_folder(out) as staging:
        written = write_figures(figures, staging)
    return {name: {fmt: out / path.name for fmt, path in paths.items()} for name, paths in written.items()}


def write_figures(figures: dict[str, Figure], folder: Path) -> dict[str, dict[str, Path]]:
    """Write each figure as PNG and SVG into the existing ``folder`` (see :func:`save_figures`)."""
    written: dict[str, dict[str, Path]] = {}
    for name, fig in figures.items():
        for fmt in FORMATS:
            path = folder / f"{name}.{fmt}"
            atomic.write_bytes(path, figure_bytes(fig, fmt))
            written.setdefault(name, {})[fmt] = path
    return written


def _plot_run_curves(ax, run: RunRounds, metric: str, cmap, last_round: int, labelled: set[int]) -> None:
    finished = {r.round: r for r in run.rounds}
    for number, points in sorted(run.round_curves().items()):
        values = [(x, v[metric]) for x, v in points if metric in v]
        if not values:
            continue
        xs, ys = zip(*values, strict=True)
        done = finished.get(number)
        label = None
        if number not in labelled:
            labelled.add(number)
            label = f"{number} ({done.density:.1%})" if done else f"{number} (unfinished)"
        color = cmap(number / max(1, last_round))
        ax.plot(xs, ys, color=color, lw=1.2, ls="-" if done else "--", label=label, gid=f"curve:{run.run_id}:{number}")
        best = min(range(len(ys)), key=ys.__getitem__)
        ax.plot([xs[best]], [ys[best]], "o", color=color, ms=4)


def _note(fig: Figure, text: str | None, name: str) -> None:
    """Small print above the plot: the figure's suptitle (``gid="note"``), which the layout makes room for. Notes
    add up; ``fig.notes`` maps each one's ``name`` to its text."""
    if not text:
        return
    fig.notes = {**getattr(fig, "notes", {}), name: text}
    wrapped = "\n".join("\n".join(textwrap.wrap(note, 125)) for note in fig.notes.values())
    fig.suptitle(wrapped, fontsize="x-small", color="#8a4b00", gid="note")


def _log_value_axis(ax) -> None:
    """A logarithmic value axis labelled in plain numbers (3, 10, 30), not powers of ten (3×10⁰)."""
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def _density_axis(ax, densities: set[float]) -> None:
    ax.set_xscale("log")
    ticks = sorted(densities, reverse=True)
    if len(ticks) > _MAX_TICKS:
        step = math.ceil(len(ticks) / _MAX_TICKS)
        ticks = ticks[::step]
    ax.set_xticks(ticks)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    low, high = min(densities), max(densities)
    ax.set_xlim(high * 1.15, low / 1.15)  # dense on the left, as in the paper


def _scaled(value: float | None, factor: float) -> float | None:
    return None if value is None else value * factor
