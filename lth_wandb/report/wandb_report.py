"""The W&B Report, built with ``wandb_workspaces.reports.v2``: the study's story as live panels.

Blocks: a generated summary paragraph; panel grids filtered to the runs of one group or sweep (accuracy and
early-stop step vs density, grouped by pruning control; training curves and first-layer masks; each round's mask
against the previous round's; parallel coordinates and parameter importance for sweeps; the runs table); the
overlap of the runs' tickets at equal density, as a markdown table, when their output folders are at hand; the
instability analysis and early-bird tickets (a panel and a table each) when the runs recorded them; links to the
``winning`` ticket artifacts.

Building needs no server when ``entity`` is given. :func:`report_spec` gives the JSON ``save()`` would send;
:func:`publish` sends it (that needs a server and credentials).
"""

from __future__ import annotations

import copy
import json
import os
from typing import Any

import wandb
import wandb_workspaces.reports.v2 as wr
from wandb_workspaces import expr

from lth_wandb.report import early_bird, instability
from lth_wandb.report import overlap as mask_overlap
from lth_wandb.report.data import TICKET_TYPE, VARIANT_LABELS, Study
from lth_wandb.report.summary import best_ticket, summary_text

DEFAULT_METRIC = "ticket/winning_density"  # what the sweeps optimise (minimise): the sparsest winning ticket
# Swept knobs shown in parallel coordinates when the caller names none.
PARAMETERS = (
    "pruning.prune_rate",
    "pruning.rewind",
    "pruning.criterion",
    "pruning.scope",
    "optimizer.lr",
    "optimizer.weight_decay",
    "seed",
)
RUN_COLUMNS = (
    "run:state",
    "config:pruning.value.control",
    "config:seed.value",
    "summary:ticket/winning_round",
    "summary:ticket/winning_density",
    "summary:ticket/winning_test_acc",
    "summary:ticket/dense_test_acc",
)
_MAX_TITLE = 128  # wandb_workspaces rejects longer titles


def build_report(
    entity: str,
    project: str,
    *,
    group: str | None = None,
    sweep: str | None = None,
    title: str | None = None,
    study: Study | None = None,
    metric: str = DEFAULT_METRIC,
    parameters: tuple[str, ...] | list[str] = PARAMETERS,
) -> wr.Report:
    """The report for the runs of ``entity/project``, one ``group`` or one ``sweep`` (or all runs).

    Args:
        entity: W&B user or team that owns the project (required: without it the SDK asks the server).
        project: W&B project of the runs; the report is saved there too.
        group: only the runs of this W&B group (e.g. a Hydra multirun's ``multirun-...``).
        sweep: only the runs of this sweep id. Adds parallel coordinates and parameter importance.
        title: report title, at most 128 characters.
        study: the runs, for the summary paragraph and the ticket links; None writes a placeholder paragraph.
        metric: summary metric for parameter importance and the last parallel-coordinates axis.
        parameters: config keys (dotted) for the parallel-coordinates axes.
    """
    _check(entity, project, group, sweep, title)
    title = title or f"Lottery tickets: {group or sweep or project}"

    def runset() -> wr.Runset:  # one per grid: each panel grid owns its run set
        return _runset(entity, project, group, sweep)

    blocks: list[Any] = [
        wr.P(summary_text(study) if study is not None else _placeholder(group, sweep)),
        wr.H1("Accuracy and early stopping vs weights remaining"),
        wr.P(
            "One point per pruning round; runs are grouped by pruning control and the IMP run whose masks a "
            "control trains (pruning.masks_from; empty for variants that prune their own weights), mean ± std over "
            "the runs of a group. The x axis is the fraction of weights remaining, log-scaled as in Frankle & "
            "Carbin (2019)."
        ),
        wr.PanelGrid(runsets=[runset()], panels=_density_panels()),
        wr.H1("Training curves"),
        wr.PanelGrid(runsets=[runset()], panels=_curve_panels()),
        *_overlap_blocks(runset(), study),
        *instability.wandb_blocks(runset(), study),  # each only when some run recorded it
        *early_bird.wandb_blocks(runset(), study),
    ]
    if sweep:
        blocks += [wr.H1("Sweep"), wr.PanelGrid(runsets=[runset()], panels=_sweep_panels(metric, parameters))]
    blocks += [wr.H1("Runs"), wr.PanelGrid(runsets=[runset()], panels=_runs_panels())]
    blocks += _ticket_blocks(entity, project, study)
    description = f"{len(study.runs)} run{'' if len(study.runs) == 1 else 's'}, " if study is not None else ""
    description += f"{'group ' + group if group else 'sweep ' + sweep if sweep else 'all runs'} of {entity}/{project}"
    return wr.Report(entity=entity, project=project, title=title, description=description, blocks=blocks)


def run_filters(group: str | None = None, sweep: str | None = None) -> list:
    """The run-set filter that selects the runs of ``group`` or ``sweep`` (none: every run of the project)."""
    if group:
        return [expr.Metric("Group") == group]
    if sweep:
        return [expr.Metric("Sweep") == sweep]
    return []


def ticket_url(entity: str, project: str, name: str, alias: str = "winning") -> str:
    """The W&B page of an artifact version, on the host the SDK is configured for."""
    return f"{app_url()}/{entity}/{project}/artifacts/{TICKET_TYPE}/{name}/{alias}"


def app_url() -> str:
    base = os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai"
    to_app = getattr(wandb.util, "api_to_app_url", None) or wandb.util.app_url  # older SDKs have only app_url
    return os.environ.get("WANDB_APP_URL", "").rstrip("/") or to_app(base)


def report_spec(report: wr.Report) -> dict[str, Any]:
    """The report as the JSON ``save()`` would send, built without a server.

    A run set naming a project makes the SDK ask the server for the project's internal id, so the spec is
    built from a copy whose run sets name none, then each run set gets ``entity/project`` back (the id is
    filled in by the server on save).
    """
    offline = copy.deepcopy(report)
    for block in offline.blocks:
        for runset in getattr(block, "runsets", None) or []:
            runset.entity, runset.project = "", ""
    spec = json.loads(offline._to_model().model_dump_json(by_alias=True, exclude_none=True))
    for block in spec["spec"]["blocks"]:
        for runset in block.get("metadata", {}).get("runSets", []):
            runset["project"] = {"entityName": report.entity, "name": report.project}
    return spec


def describe(report: wr.Report) -> str:
    """What the report holds, in a few lines for the terminal."""
    lines = [f"W&B Report {report.title!r} in {report.entity}/{report.project}", f"  {report.description}"]
    for block in report.blocks:
        kind = type(block).__name__
        if isinstance(block, wr.PanelGrid):
            filters = block.runsets[0].filters or "all runs"
            titles = ", ".join(_panel_title(p) for p in block.panels) or "runs table"
            lines.append(f"  - panel grid [{filters}]: {titles}")
        elif isinstance(block, (wr.H1, wr.H2)):
            lines.append(f"  {block.text}")
        elif isinstance(block, wr.UnorderedList):
            lines += [f"  - {''.join(_plain(part) for part in item)}" for item in block.items]
        elif isinstance(block, wr.WeaveBlockArtifact):
            lines.append(f"  - artifact panel: {block.artifact} ({block.tab})")
        elif isinstance(block, wr.MarkdownBlock):
            lines.append(f"  markdown: {block.text.splitlines()[0][:300]} ({len(block.text.splitlines()) - 2} rows)")
        elif isinstance(block, wr.P):
            lines.append(f"  {kind}: {_plain(block.text)[:300]}")
    return "\n".join(lines)


def publish(report: wr.Report) -> str:
    """Save the report to the W&B server (needs credentials) and return its URL."""
    report.save()
    return report.url


def _check(entity, project, group, sweep, title) -> None:
    for name, value in (("entity", entity), ("project", project)):
        if not isinstance(value, str) or not value.strip():
            raise ValueError(
                f"{name}={value!r} must be a non-empty string. Hint: --entity is your W&B user or team, --project "
                "the project the runs were logged to (lth-train's wandb.project, default lth-wandb)."
            )
    if group and sweep:
        raise ValueError(
            f"group={group!r} and sweep={sweep!r}: give one or neither. Hint: a sweep's runs share its id."
        )
    if title is not None and not 0 < len(title) <= _MAX_TITLE:
        raise ValueError(f"title has {len(title)} characters; W&B allows 1 to {_MAX_TITLE}. Hint: shorten --title.")


def _runset(entity: str, project: str, group: str | None, sweep: str | None) -> wr.Runset:
    name = f"group {group}" if group else f"sweep {sweep}" if sweep else "all runs"
    return wr.Runset(
        entity=entity,
        project=project,
        name=name,
        filters=run_filters(group, sweep),
        # Tickets and their controls as separate curves, seeds averaged. A sweep's runs stay apart: each is a
        # point of the parallel-coordinates plot.
        # masks_from tells the paper's controls (IMP's masks) from the variants that prune their own weights.
        groupby=[] if sweep else ["config.pruning.control", "config.pruning.masks_from"],
        order=[wr.OrderBy("CreatedTimestamp", ascending=True)],
        pinned_columns=["run:displayName"],
        visible_columns=list(RUN_COLUMNS),
    )


def _vs_density(title: str, y: str, ylabel: str, x: int, h: int = 8) -> wr.LinePlot:
    """``y`` against the fraction of weights left (log scale), mean ± std over a group's runs."""
    return wr.LinePlot(
        title=title,
        x="round/density",
        y=[y],
        log_x=True,
        title_x="fraction of weights remaining",
        title_y=ylabel,
        groupby_aggfunc="mean",
        groupby_rangefunc="stddev",
        layout=wr.Layout(x=x, y=0, w=12, h=h),
    )


def _density_panels() -> list:
    return [
        _vs_density("Test accuracy vs weights remaining", "round/test_acc", "test accuracy at early stop", 0),
        _vs_density(
            "Early-stop iteration vs weights remaining", "round/early_stop_iteration", "early-stop iteration", 12
        ),
    ]


def _curve_panels() -> list:
    def curve(title: str, ys: list[str], x: int, y: int) -> wr.LinePlot:
        return wr.LinePlot(title=title, x="trainer/global_step", y=ys, layout=wr.Layout(x=x, y=y, w=12, h=7))

    return [
        curve("Validation loss (rounds follow each other)", ["val/loss"], 0, 0),
        curve("Validation and test accuracy", ["val/acc", "test/acc"], 12, 0),
        curve("Training loss", ["train/loss"], 0, 7),
        wr.MediaBrowser(
            title="First-layer mask per round",
            media_keys=["round/mask_first_layer"],
            layout=wr.Layout(x=12, y=7, w=12, h=7),
        ),
    ]


def _overlap_blocks(runset: wr.Runset, study: Study | None) -> list:
    """Each round's mask against the previous round's (logged by every run), then the tickets of different runs
    at equal density (computed here from the runs' output folders, so only with local runs)."""
    blocks: list[Any] = [
        wr.H1("Mask overlap"),
        wr.P(
            "Each round's mask against the previous round's: IoU of the kept weights (for IMP, whose masks nest, "
            "the density ratio) and churn, the fraction of the sparser mask's weights the other prunes (0 when the "
            "masks nest; high when each round picks its mask afresh)."
        ),
        wr.PanelGrid(
            runsets=[runset],
            panels=[
                _vs_density("Mask IoU with the previous round", "round/mask_iou_prev", "IoU", 0, h=7),
                _vs_density("Mask churn since the previous round", "round/mask_churn", "churn", 12, h=7),
            ],
        ),
    ]
    rows = mask_overlap.pair_rows(mask_overlap.study_overlap(study), list(study.series())) if study else []
    if rows:
        blocks += [
            wr.H2("Tickets of different runs at equal density"),
            wr.MarkdownBlock(text=mask_overlap.markdown_table(rows)),
        ]
    return blocks


def _sweep_panels(metric: str, parameters) -> list:
    columns = [wr.ParallelCoordinatesPlotColumn(metric=wr.Config(p)) for p in parameters]
    columns.append(wr.ParallelCoordinatesPlotColumn(metric=wr.SummaryMetric(metric)))
    return [
        wr.ParallelCoordinatesPlot(
            title=f"Sweep parameters vs {metric}", columns=columns, layout=wr.Layout(x=0, y=0, w=24, h=8)
        ),
        wr.ParameterImportancePlot(with_respect_to=metric, layout=wr.Layout(x=0, y=8, w=24, h=8)),
    ]


def _runs_panels() -> list:
    return [
        wr.BarPlot(
            title="Winning density per run", metrics=["ticket/winning_density"], layout=wr.Layout(x=0, y=0, w=12, h=7)
        ),
        wr.BarPlot(
            title="Winning vs dense test accuracy",
            metrics=["ticket/winning_test_acc", "ticket/dense_test_acc"],
            layout=wr.Layout(x=12, y=0, w=12, h=7),
        ),
    ]


def _ticket_blocks(entity: str, project: str, study: Study | None) -> list:
    blocks: list[Any] = [wr.H1("Winning tickets")]
    # A control's or a dense "winning" version is no ticket (the alias stays on round 0 until a pruned round matches).
    runs = [r for r in (study.runs if study else []) if r.ticket is not None and r.winning_ticket_round is not None]
    if not runs:
        blocks.append(
            wr.P(
                f"Each run logs its tickets as {TICKET_TYPE} artifacts named ticket-<run id>; the "
                "sparsest round as good as the dense network carries the alias 'winning'."
            )
        )
        return blocks
    items = []
    for run in runs:
        ticket, win = run.ticket, run.round(run.winning_ticket_round)
        what = f" — run {run.label} ({VARIANT_LABELS.get(run.variant, run.variant)}, seed {run.seed})"
        if win is not None:
            acc = f", test acc {win.test_acc:.1%}" if win.test_acc is not None else ""
            what += f": {win.density:.1%} of weights{acc}"
        items.append([wr.Link(ticket.path(entity, project), url=ticket_url(entity, project, ticket.name)), what])
    best = best_ticket(study)
    ref = (best.run.ticket if best and best.run.ticket else runs[0].ticket).path(entity, project)
    blocks += [
        wr.UnorderedList(items=items),
        wr.P(
            [
                "Retrain a ticket, or run its random-reinit control: ",
                wr.InlineCode(f"lth-train ticket={ref} pruning.control=reinit"),
            ]
        ),
    ]
    if best is not None and best.run.ticket is not None:
        blocks.append(
            wr.WeaveBlockArtifact(entity=entity, project=project, artifact=best.run.ticket.name, tab="metadata")
        )
    return blocks


def _placeholder(group: str | None, sweep: str | None) -> str:
    which = f"group {group}" if group else f"sweep {sweep}" if sweep else "this project"
    return (
        f"Lottery-ticket runs of {which}. (Built without run data: pass --runs <dir> or publish with --save "
        "to open with the best ticket's density and accuracy.)"
    )


def _panel_title(panel: Any) -> str:
    return getattr(panel, "title", None) or f"{type(panel).__name__}({getattr(panel, 'with_respect_to', '')})"


def _plain(text: Any) -> str:
    if isinstance(text, str):
        return text
    if isinstance(text, list):
        return "".join(_plain(part) for part in text)
    return getattr(text, "text", "") + (f" <{text.url}>" if isinstance(text, wr.Link) else "")
