"""Instability analysis in the report (docs/research.md): per curve, density and step k, how far the
test error rises between two copies trained from the same start, and the error along that path.

Where the numbers come from: each run's ``instability.json`` in its output folder (found through ``run.json``, as
for the tickets: :attr:`RunRounds.output_dir`), which holds everything, the errors along every path included.
Where that folder is not at hand (only the ``wandb/`` folder was copied, or runs read from the W&B API), the run's
``round/instability`` rows stand in: the table is the same (densities from the run's round rows, threshold from
its config), but the paths are not in those rows, so such runs are left out of the figure. The W&B table
``instability/paths`` holds the paths too, but is a media file that the API and the run-file reader do not return
as data, so it is not read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from statistics import mean, pstdev
from typing import Any

from matplotlib import colormaps
from matplotlib.figure import Figure

from lth_wandb.analysis.instability import STABLE_BELOW, earliest_stable_step
from lth_wandb.report.data import INSTABILITY, RunRounds, Study
from lth_wandb.report.table import markdown

REPORT_FILE = "instability.json"  # what lth-train writes in the run folder (lth_wandb/app/instability.py)
TITLE = "Instability (linear mode connectivity)"
_MAX_PANELS = 6


@dataclass(frozen=True)
class Measurement:
    """One run's analysis of one (round, k).

    Attributes:
        round, density, step: the analysed round, its fraction of weights kept, and k.
        instability: highest error on the path less the mean of its ends' (a fraction).
        stable: below the run's threshold.
        threshold: the run's ``instability.threshold``.
        alphas, errors: the test error along the path; empty when only the W&B rows were read.
    """

    round: int
    density: float
    step: int
    instability: float
    stable: bool
    threshold: float
    alphas: tuple[float, ...] = ()
    errors: tuple[float, ...] = ()


@dataclass(frozen=True)
class InstabilityRow:
    """One curve at one density and step k, over the runs (seeds) that measured it.

    Attributes:
        earliest_stable_step: the density's earliest stable k (the same for its every k), from the mean
            instability over seeds at each k by the rule of the runs (``earliest_stable_step``); None: not
            stable at the largest measured k.
    """

    series: str
    density: float
    step: int
    instability: list[float]
    stable: int
    threshold: float
    earliest_stable_step: int | None
    alphas: tuple[float, ...] = ()
    errors: tuple[float, ...] = ()  # mean over the runs whose paths were read, at each alpha


def measurements(run: RunRounds) -> list[Measurement]:
    """The run's instability analysis: from ``instability.json`` in its output folder, else from its W&B rows."""
    path = Path(run.output_dir) / REPORT_FILE if run.output_dir else None
    if path is not None and path.exists():
        try:
            return _from_report(json.loads(path.read_bytes()))
        except (OSError, ValueError, TypeError, KeyError, AttributeError, RecursionError) as error:
            why = f"missing key {error}" if isinstance(error, KeyError) else " ".join(str(error).split())[:200]
            raise ValueError(
                f"{path} is not an instability analysis as lth-train writes it ({why}). Hint: move it out of the "
                "run folder and the report shows that run's instability from its W&B rows (without the paths)"
            ) from error
    threshold = float(run.get("instability.threshold") or STABLE_BELOW)
    found = []
    for row in run.instability:
        done = run.round(row["round"])
        if done is not None and row["step"] is not None:  # the density comes from the round's own row
            found.append(
                Measurement(row["round"], done.density, row["step"], row["instability"], row["stable"], threshold)
            )
    return found


def instability_rows(study: Study) -> list[InstabilityRow]:
    """Per curve (:meth:`Study.series`), density (densest first) and k: the runs' instabilities. Every density a
    run analysed is shown (``--at`` and ``--min-density`` do not apply: the runs chose their rounds)."""
    rows = []
    for label, runs in study.series().items():
        groups: dict[float, dict[int, list[Measurement]]] = {}
        for run in runs:
            for m in measurements(run):
                groups.setdefault(round(m.density * 100, 4), {}).setdefault(m.step, []).append(m)
        for percent in sorted(groups, reverse=True):
            by_step = dict(sorted(groups[percent].items()))
            threshold = max(m.threshold for ms in by_step.values() for m in ms)
            means = {k: mean(m.instability for m in ms) for k, ms in by_step.items()}
            earliest = earliest_stable_step(means, threshold)
            for k, ms in by_step.items():
                paths = [m for m in ms if m.errors]
                same = paths and all(m.alphas == paths[0].alphas for m in paths)
                rows.append(
                    InstabilityRow(
                        series=label,
                        density=mean(m.density for m in ms),
                        step=k,
                        instability=[m.instability for m in ms],
                        stable=sum(m.stable for m in ms),
                        threshold=threshold,
                        earliest_stable_step=earliest,
                        alphas=paths[0].alphas if same else (),
                        errors=tuple(map(mean, zip(*(m.errors for m in paths), strict=True))) if same else (),
                    )
                )
    return rows


HEAD = ["curve", "weights left", "k", "runs", "instability (points, mean ± std)", "stable", "earliest stable k"]


def cells(row: InstabilityRow) -> list[str]:
    """The row's values as text, in :data:`HEAD`'s order: instability in percentage points of test error."""
    points = f"{100 * mean(row.instability):.2f} ± {100 * pstdev(row.instability):.2f}"
    earliest = "none" if row.earliest_stable_step is None else str(row.earliest_stable_step)
    runs = len(row.instability)
    return [row.series, f"{row.density:.1%}", str(row.step), str(runs), points, f"{row.stable}/{runs}", earliest]


def description(rows: list[InstabilityRow]) -> str:
    """What the table shows, naming the runs' threshold(s)."""
    limits = " or ".join(f"{100 * t:g}" for t in sorted({row.threshold for row in rows}))
    return (
        "Two copies train from round r's mask on the dense network after k steps, differing only in SGD noise; "
        "instability is the highest test error on the line between them less the mean of its ends' (percentage "
        f"points). Stable: below {limits} points. The earliest stable k is the smallest measured k from which the "
        "mean over seeds stays stable."
    )


def markdown_table(rows: list[InstabilityRow]) -> str:
    """The rows as a GitHub-flavoured markdown table, under a bold title line."""
    return markdown(HEAD, [cells(row) for row in rows], title=TITLE)


def path_figure(rows: list[InstabilityRow]) -> Figure | None:
    """Test error (%) against the interpolation weight alpha: one panel per curve (at most 6), one line per
    (density, k) with ``gid="path:<curve>:<density %>:<k>"``, colour by density, dash by k. None when no row has a
    path."""
    drawn = [row for row in rows if row.errors]
    if not drawn:
        return None
    series = list(dict.fromkeys(row.series for row in drawn))[:_MAX_PANELS]
    fig = Figure(figsize=(4.6 * len(series) + 1.0, 3.8), layout="constrained")
    axes = fig.subplots(1, len(series), squeeze=False, sharey=True).ravel()
    densities = sorted({round(row.density * 100, 4) for row in drawn}, reverse=True)
    steps = sorted({row.step for row in drawn})
    cmap, dashes = colormaps["viridis"], ["-", "--", ":", "-."]
    for ax, label in zip(axes, series, strict=True):
        for row in (r for r in drawn if r.series == label):
            percent = round(row.density * 100, 4)
            ax.plot(
                row.alphas,
                [100 * e for e in row.errors],
                color=cmap(densities.index(percent) / max(1, len(densities) - 1) * 0.9),
                ls=dashes[steps.index(row.step) % len(dashes)],
                label=f"{row.density:.1%}, k={row.step}",
                gid=f"path:{label}:{percent:g}:{row.step}",
            )
        ax.set(title=label, xlabel="interpolation alpha", xlim=(0, 1))
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="x-small", title="weights left, k", title_fontsize="x-small")
    axes[0].set_ylabel("Test error (%)")
    return fig


def wandb_blocks(runset: Any, study: Study | None) -> list:
    """The W&B Report's section: ``round/instability`` against ``round`` (its rows carry no density, and one row
    per k makes a short vertical run of points per round) and the table. Empty when no run has instability rows,
    or without run data (``study`` None): only the runs tell whether there is anything to plot."""
    rows = instability_rows(study) if study is not None else []
    if not rows:
        return []
    import wandb_workspaces.reports.v2 as wr

    instabilities = wr.LinePlot(
        title="Instability per analysed round (one point per step k)",
        x="round",
        y=[INSTABILITY],
        title_x="round (0 = dense)",
        title_y="instability (test error fraction)",
        layout=wr.Layout(x=0, y=0, w=12, h=7),
    )
    return [
        wr.H1(TITLE),
        wr.PanelGrid(runsets=[runset], panels=[instabilities]),
        wr.P(description(rows)),
        wr.MarkdownBlock(text=markdown_table(rows)),
    ]


def _from_report(report: Any) -> list[Measurement]:
    threshold = float(report.get("threshold", STABLE_BELOW))
    if not isinstance(report["results"], list):
        raise TypeError(f"'results' is a {type(report['results']).__name__}, not a list")
    return [
        Measurement(
            round=int(r["round"]),
            density=float(r["density"]),
            step=int(r["step"]),
            instability=float(r["instability"]),
            stable=bool(r["stable"]),
            threshold=threshold,
            alphas=tuple(map(float, r.get("alphas") or ())),
            errors=tuple(map(float, r.get("errors") or ())),
        )
        for r in report["results"]
    ]
