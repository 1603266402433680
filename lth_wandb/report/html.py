"""The offline report: one self-contained HTML page (no scripts, no external files) with the summary, the
figures (PNG inline, SVG as a download link), the runs, their rounds, the winning tickets and the config.

Air-gapped users share this file; ``make demo`` ends by writing one.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import json
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from lth_wandb import atomic
from lth_wandb.report import early_bird, instability, undertrained
from lth_wandb.report import overlap as mask_overlap
from lth_wandb.report.data import CONTROLS, VARIANT_LABELS, RunRounds, Study
from lth_wandb.report.figures import CAPTIONS, figure_bytes, make_figures, write_figures
from lth_wandb.report.overlap import StudyOverlap
from lth_wandb.report.summary import best_ticket, study_subject, summary_text
from lth_wandb.report.table import HEAD, cells, density_rows

_CSS = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1f2328; margin: 0 auto;
       max-width: 1100px; padding: 24px; }
h1 { margin-bottom: 4px; } h2 { border-bottom: 1px solid #d0d7de; padding-bottom: 4px; margin-top: 32px; }
.note { border-left: 4px solid #d4a72c; padding: 4px 12px; }
.meta { color: #59636e; margin-top: 0; } .summary { font-size: 16px; background: #f6f8fa; padding: 12px 16px;
       border-left: 4px solid #1f77b4; }
.figures { display: grid; grid-template-columns: repeat(auto-fit, minmax(460px, 1fr)); gap: 8px 24px; }
#fig-val_curves, #fig-overlap, #fig-instability { grid-column: 1 / -1; }
figure { margin: 16px 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eaeef2; }
figcaption { color: #59636e; font-size: 14px; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 14px; }
th, td { border: 1px solid #d0d7de; padding: 3px 8px; text-align: right; } th { background: #f6f8fa; }
td.text, th.text { text-align: left; } tr.winning td { background: #fff8c5; font-weight: 600; }
code { font-size: 13px; }
"""


@dataclass
class HtmlReport:
    """What :func:`write_html_report` wrote.

    Attributes:
        path: the HTML page.
        figures: the matplotlib figures embedded in it, by name (see ``figures.CAPTIONS``).
        files: ``{name: {"png": path, "svg": path}}``, the figures also saved beside the page.
        overlap: the mask overlap between runs at equal density (its figure is ``figures["overlap"]`` when any
            density has two tickets).
    """

    path: Path
    figures: dict[str, Figure]
    files: dict[str, dict[str, Path]]
    overlap: StudyOverlap | None = None


def write_html_report(
    study: Study, path: str | PathLike, title: str | None = None, at: list[float] | None = None
) -> HtmlReport:
    """Draw the figures, save them beside the page (``<stem>-figures/``) and write the HTML page.

    Args:
        study: the runs, e.g. from :func:`lth_wandb.report.sources.collect_offline`.
        path: the HTML file to write; folders are created.
        title: page title; default names the group or the source folder.
        at: densities (fractions) the results table keeps; None keeps every density.
    """
    out = Path(path)
    if out.suffix.lower() not in (".html", ".htm"):
        raise ValueError(f"path={str(out)!r} must end in .html. Hint: --html report/report.html")
    figures = make_figures(study)
    masks = mask_overlap.study_overlap(study, at)
    if masks.levels:
        figures["overlap"] = mask_overlap.overlap_figure(masks)
    paths = instability.path_figure(instability.instability_rows(study))
    if paths is not None:
        figures["instability"] = paths
    page = build_html(study, figures, title or default_title(study), at, masks)
    folder = out.parent / f"{out.stem}-figures"
    out.parent.mkdir(parents=True, exist_ok=True)
    # One set: the figures fill a new folder, the page replaces the old one, then the folder swaps in. Every write
    # comes before the first rename, so a kill or a full disk leaves the previous page and figures.
    with atomic.atomic_folder(folder) as staging:
        written = write_figures(figures, staging)
        atomic.write_text(out, page)
    files = {name: {fmt: folder / path.name for fmt, path in paths.items()} for name, paths in written.items()}
    return HtmlReport(out, figures, files, masks)


def default_title(study: Study) -> str:
    """The group or sweep; else what the runs are, on which model and data (not a folder's name, often ``wandb``)."""
    if study.group or study.sweep:
        return f"Lottery tickets: {study.group or study.sweep}"
    return f"Lottery tickets: {study_subject(study)}"


def build_html(
    study: Study,
    figures: dict[str, Figure],
    title: str,
    at: list[float] | None = None,
    masks: StudyOverlap | None = None,
) -> str:
    """The page as a string; every figure inline, so the file stands alone."""
    when = dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    parts = [
        f"<h1>{_e(title)}</h1>",
        f'<p class="meta">Generated {_e(when)} by lth-report from <code>{_e(_source(study))}</code>.</p>',
        f'<p class="summary" id="summary">{_e(summary_text(study))}</p>',
        _undertrained(study),
        "<h2>Figures</h2>",
        '<div class="figures">',
        *(_figure(name, fig) for name, fig in figures.items()),
        "</div>",
        "<h2>Results by density</h2>",
        _density_table(study, at),
        _overlap_table(study, masks),
        _research_tables(study),
        "<h2>Runs</h2>",
        _runs_table(study),
        _tickets(study),
        "<h2>Rounds</h2>",
        *(_rounds_table(run) for run in study.runs),
        "<h2>Configuration</h2>",
        _config(study),
        _skipped(study),
    ]
    body = "\n".join(p for p in parts if p)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        # The page is an inert document; data: images only, nothing to fetch.
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; img-src data:; '
        "style-src 'unsafe-inline'\">\n"
        f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


def _undertrained(study: Study) -> str:
    monitor = study.runs[0].monitor if study.runs else "val/loss"
    text = undertrained.note(undertrained.count(study), monitor)
    return f'<p class="note" id="undertrained">{_e(text)}</p>' if text else ""


def _source(study: Study) -> str:
    paths = [Path(source) for source in study.sources]
    return ", ".join(str(p.resolve()) if p.exists() else str(p) for p in paths)


def _figure(name: str, fig: Figure) -> str:
    png = base64.b64encode(figure_bytes(fig, "png")).decode("ascii")
    svg = base64.b64encode(figure_bytes(fig, "svg")).decode("ascii")
    caption = CAPTIONS.get(name, name)
    return (
        f'<figure id="fig-{_e(name)}"><img src="data:image/png;base64,{png}" alt="{_e(caption)}">'
        f'<figcaption>{_e(caption)} <a download="{_e(name)}.svg" href="data:image/svg+xml;base64,{svg}">SVG</a>'
        "</figcaption></figure>"
    )


def _runs_table(study: Study) -> str:
    if not study.runs:
        return "<p>No runs.</p>"

    def planned(run: RunRounds) -> str:
        return f"{len(run.rounds)}/{run.planned_rounds}" if run.planned_rounds is not None else str(len(run.rounds))

    def winner(run: RunRounds, what: str) -> str:
        found = run.round(run.winning_ticket_round)
        return _pct(getattr(found, what)) if found is not None else ""

    columns = [  # (header, value, is text); text columns that are empty for every run are left out
        ("run", lambda r: r.run_id, True),
        ("name", lambda r: r.name, True),
        ("group", lambda r: r.group, True),
        ("variant", lambda r: VARIANT_LABELS.get(r.variant, r.variant), True),
        ("seed", lambda r: r.seed, False),
        ("status", lambda r: r.status, True),
        ("rounds", planned, False),
        ("winning round", winning_round, False),
        ("weights left", lambda r: winner(r, "density"), False),
        ("test acc", lambda r: winner(r, "test_acc"), False),
        ("dense test acc", lambda r: _pct(r.round(0).test_acc) if r.round(0) else "", False),
        ("ticket", lambda r: r.ticket.ref if r.ticket else "", True),
    ]
    rows = [[value(run) for _, value, _ in columns] for run in study.runs]
    keep = [i for i, (_, _, text) in enumerate(columns) if not text or any(row[i] for row in rows)]
    head = [columns[i][0] for i in keep]
    text = {n for n, i in enumerate(keep) if columns[i][2]}
    return _table(head, [[row[i] for i in keep] for row in rows], text_columns=text, table_id="runs")


def winning_round(run: RunRounds) -> str:
    """The runs table's winning round: none where no pruned round matched the dense network, and none for the
    paper's controls, which train IMP's masks to compare with its tickets."""
    if run.winning_ticket_round is not None:
        return str(run.winning_ticket_round)
    if not run.rounds:
        return ""
    return "— (control)" if run.variant in CONTROLS else "none"


def _density_table(study: Study, at: list[float] | None) -> str:
    rows = density_rows(study, at)
    if not rows:
        return "<p>No finished rounds.</p>"
    return _table(HEAD, [cells(row) for row in rows], text_columns={0}, table_id="density")


def _overlap_table(study: Study, masks: StudyOverlap | None) -> str:
    if masks is None or not (masks.levels or any(run.output_dir for run in study.runs)):
        return ""  # no run folders, so no tickets to compare: nothing to say
    parts = ["<h2>Mask overlap at equal density</h2>"]
    rows = mask_overlap.pair_rows(masks, list(study.series()))
    if rows:
        parts += [
            "<p>Each pair of runs' tickets at about the same density: IoU of the kept weights, the IoU two independent"
            " random masks of those densities would have (chance), and churn, the fraction of the sparser mask's "
            "weights the other prunes. A curve against itself compares its seeds. Pairs of runs with the same seed "
            "are kept apart from the others: they start from the same weights, and the paper's reinit control "
            "trains IMP's own masks (IoU 1).</p>",
            _table(
                mask_overlap.HEAD, [mask_overlap.cells(row) for row in rows], text_columns={0, 1, 2}, table_id="overlap"
            ),
        ]
    else:
        parts.append("<p>No density has tickets of two runs.</p>")
    if masks.missing:
        parts.append(_table(["run", "tickets not compared"], masks.missing, text_columns={0, 1}))
    return "\n".join(parts)


def _research_tables(study: Study) -> str:
    """Instability and early-bird tables, each only when some run recorded it."""
    parts = []
    rows = instability.instability_rows(study)
    if rows:
        table = _table(instability.HEAD, [instability.cells(r) for r in rows], text_columns={0}, table_id="instability")
        parts += [f"<h2>{_e(instability.TITLE)}</h2>", f"<p>{_e(instability.description(rows))}</p>", table]
    birds = early_bird.early_bird_rows(study)
    if birds:
        table = _table(early_bird.HEAD, [early_bird.cells(r) for r in birds], text_columns={0}, table_id="early-bird")
        parts += [f"<h2>{_e(early_bird.TITLE)}</h2>", f"<p>{_e(early_bird.DESCRIPTION)}</p>", table]
    return "\n".join(parts)


def _tickets(study: Study) -> str:
    # A control's or a dense "winning" version is no ticket: the alias stays on round 0 until a pruned round matches.
    runs = [run for run in study.runs if run.ticket is not None and run.winning_ticket_round is not None]
    if not runs:
        return ""
    best = best_ticket(study)
    parts = [
        "<h2>Winning tickets</h2>",
        "<p>Train one again: <code>lth-train ticket=ENTITY/PROJECT/NAME:winning"
        "</code> once synced, or its control with <code>pruning.control=reinit</code>.</p>",
    ]
    rows = []
    for run in runs:
        star = " ★ best" if best is not None and best.run is run else ""
        rows.append([run.ticket.ref + star, run.label, ", ".join(run.ticket.aliases), _metadata(run.ticket.metadata)])
    parts.append(_table(["artifact", "run", "aliases", "metadata"], rows, text_columns={0, 1, 2, 3}, raw_columns={3}))
    return "\n".join(parts)


def _metadata(metadata: dict[str, Any]) -> str:
    """A few fields in view, the rest folded (``<details>`` needs no script)."""
    if not metadata:
        return "(no metadata)"
    items = [f"{k}={_short(v, 80)}" for k, v in metadata.items()]
    shown = _e(", ".join(items[:4]))
    if len(items) <= 4:
        return shown
    return f"<details><summary>{shown}, …</summary>{'<br>'.join(_e(i) for i in items[4:])}</details>"


def _rounds_table(run: RunRounds) -> str:
    title = f"{run.label}: {VARIANT_LABELS.get(run.variant, run.variant)}, seed {run.seed}, {run.status}"
    if not run.rounds:
        return f"<h3>{_e(title)}</h3><p>No round finished.</p>"
    winner = run.winning_ticket_round
    head = [
        "round",
        "weights left",
        "early-stop iteration",
        "early-stop step",
        f"best {run.monitor}",
        "val acc",
        "test acc",
        "mask IoU vs previous",
        "mask churn",
        "",
    ]
    rows, marked = [], set()
    for r in run.rounds:
        if r.round == winner:
            marked.add(len(rows))
        rows.append(
            [
                r.round,
                _pct(r.density, 2),
                r.early_stop_iteration,
                r.early_stop_step,
                _num(r.best_value),
                _pct(r.val_acc),
                _pct(r.test_acc),
                _num(r.mask_iou_prev, 3),
                _num(r.mask_churn, 3),
                "★ winning" if r.round == winner else "",
            ]
        )
    table = _table(head, rows, text_columns={9}, winning_rows=marked, table_id=f"rounds-{run.run_id}")
    return f"<h3>{_e(title)}</h3>\n{table}"


def _config(study: Study) -> str:
    """What differs between the runs in view; the settings they share (some 70) folded away."""
    if not study.runs:
        return "<p>No runs.</p>"
    flat = [flatten(run.config) for run in study.runs]
    keys = sorted(set().union(*flat))
    shared = [k for k in keys if all(k in f and f[k] == flat[0].get(k) for f in flat)]
    varied = [k for k in keys if k not in shared]
    parts = []
    if varied:
        rows = [[run.label, *(_short(f.get(k, "")) for k in varied)] for run, f in zip(study.runs, flat, strict=True)]
        parts += ["<h3>Different between runs</h3>", _table(["run", *varied], rows, text_columns={0})]
    table = _table(["key", "value"], [[k, _short(flat[0][k])] for k in shared], text_columns={0, 1}, table_id="config")
    noun = "every run" if len(study.runs) > 1 else "the run"
    parts.append(f"<details><summary>The {len(shared)} settings of {noun}</summary>\n{table}\n</details>")
    return "\n".join(parts)


def _skipped(study: Study) -> str:
    if not study.skipped:
        return ""
    rows = [[path, reason] for path, reason in study.skipped]
    return "<h2>Run directories not read</h2>\n" + _table(["path", "why"], rows, text_columns={0, 1})


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def _table(head, rows, text_columns=frozenset(), winning_rows=frozenset(), table_id=None, raw_columns=frozenset()):
    """An HTML table; cells are escaped except in ``raw_columns`` (already HTML)."""

    def cells(values, tag):
        return "".join(
            f"<{tag}{' class=text' if i in text_columns else ''}>"
            f"{v if i in raw_columns and tag == 'td' else _e('' if v is None else v)}</{tag}>"
            for i, v in enumerate(values)
        )

    body = "\n".join(
        f"<tr{' class=winning' if i in winning_rows else ''}>{cells(row, 'td')}</tr>" for i, row in enumerate(rows)
    )
    ident = f' id="{_e(table_id)}"' if table_id else ""
    return f"<table{ident}>\n<tr>{cells(head, 'th')}</tr>\n{body}\n</table>"


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _pct(value: float | None, digits: int = 1) -> str:
    return "" if value is None else f"{value:.{digits}%}"


def _num(value: float | None, digits: int = 4) -> str:
    return "" if value is None else f"{value:.{digits}g}"


def _short(value: Any, limit: int = 200) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"
