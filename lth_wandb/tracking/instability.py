"""Instability analysis in W&B: ``round/instability`` on the round axis (one row per round and step k), the test
error along each path as a table and one line chart per round, and the earliest stable step in the summary."""

from __future__ import annotations

from typing import Any

import wandb

from lth_wandb.tracking import ROUND

INSTABILITY = "round/instability"  # the error barrier, a fraction (0.02 = the paper's 2 percentage points)
STEP_K = "round/instability_step"  # the step k the two copies branched from
STABLE = "round/instability_stable"
PATH_TABLE = "instability/paths"
PATH_CHART = "instability/path/round-{round}"
_ROW_KEYS = (INSTABILITY, STEP_K, STABLE)
# What lth_wandb.tracking.run.sent_before asks the server for: the rows, and the row holding the charts.
ROW_KEYS = ([ROUND, INSTABILITY, STEP_K], [PATH_TABLE])
CHARTS_SENT = "instability/charts"


def sent_in(rows: list[dict[str, Any]]) -> set[str]:
    """What of an instability report earlier processes of a run logged, in ``sent_before``'s terms:
    ``instability/round-<r>/k-<k>`` per row, and ``instability/charts`` once the table and charts are in."""
    sent = {f"instability/round-{row[ROUND]}/k-{row[STEP_K]}" for row in rows if INSTABILITY in row and STEP_K in row}
    return sent | ({CHARTS_SENT} if any(PATH_TABLE in row for row in rows) else set())


def log_instability(run: Any, report: dict[str, Any], sent: set[str] = frozenset()) -> None:
    """Log an instability report (``lth_wandb.app.instability.analyse``'s) to the active W&B ``run``, less what an
    earlier process of the run already logged (``sent``, from ``sent_before``): a run killed while it logged the
    report logs each row, table and chart once.

    ``report["results"]`` holds one entry per (round, k) with ``round``, ``step``, ``alphas``, ``errors``,
    ``instability`` and ``stable``; ``report["earliest_stable_step"]`` maps each round to its k (or None).
    """
    run.define_metric(ROUND)
    # Exact names: wandb-core tries globs in random order, and "round/*" competes with the logger's "*".
    for key in _ROW_KEYS:
        run.define_metric(key, step_metric=ROUND)
    results = report["results"]
    for r in results:
        if f"instability/round-{r['round']}/k-{r['step']}" in sent:
            continue
        run.log({ROUND: r["round"], INSTABILITY: r["instability"], STEP_K: r["step"], STABLE: int(r["stable"])})
    if CHARTS_SENT not in sent:
        _log_charts(run, results)
    for number, step in report["earliest_stable_step"].items():
        run.summary[f"instability/round-{number}/earliest_stable_step"] = step


def _log_charts(run: Any, results: list[dict[str, Any]]) -> None:
    rows = [[r["round"], r["step"], a, e] for r in results for a, e in zip(r["alphas"], r["errors"], strict=True)]
    charts: dict[str, Any] = {PATH_TABLE: wandb.Table(columns=["round", "step", "alpha", "test_error"], data=rows)}
    for number in sorted({r["round"] for r in results}):
        mine = [r for r in results if r["round"] == number]
        charts[PATH_CHART.format(round=number)] = wandb.plot.line_series(
            xs=mine[0]["alphas"],
            ys=[r["errors"] for r in mine],
            keys=[f"k={r['step']}" for r in mine],
            title=f"Test error between two copies trained from step k, round {number}",
            xname="alpha",
        )
    run.log(charts)
