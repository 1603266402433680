"""``lth-report``: the study as a W&B Report, or as one offline HTML page.

    lth-report --offline wandb --html report/report.html          # local run files -> HTML + PNG/SVG figures
    lth-report --offline runs --markdown results.md --at 100,21,7 # + the table by density, as markdown
    lth-report --entity E --project P --group G [--runs wandb]    # W&B Report spec as JSON (no server needed)
    lth-report --entity E --project P --sweep S --save            # publish it (needs a server and credentials)

Mistakes in the command end with one line on stderr and exit code 2, as in lth-train.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import lth_wandb
from lth_wandb import atomic

DEFAULT_HTML = "report/report.html"
DEFAULT_SPEC = "report-spec.json"
OVERLAP_TITLE = "**Mask overlap at equal density** (IoU of the kept weights; chance: two independent random masks)"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lth-report",
        description="Build the lottery-ticket report of a run, a group or a sweep: a W&B Report "
        "(--entity/--project) or a self-contained HTML page from local run files (--offline).",
    )
    p.add_argument("--version", action="store_true", help="print the versions of lth-report and its libraries")
    p.add_argument(
        "--offline",
        metavar="DIR",
        nargs="+",
        help="local run files: a wandb/ folder, a run, or a sweep/multirun dir; several are compared in one report",
    )
    p.add_argument("--html", metavar="FILE", help=f"offline: the page to write (default {DEFAULT_HTML})")
    p.add_argument("--markdown", metavar="FILE", help="offline: also write the results by density as a markdown table")
    p.add_argument(
        "--at",
        metavar="PERCENTS",
        type=percents,
        help="offline: only these densities in the tables, e.g. 100,21.1,7 (each curve's nearest round, within 15%%)",
    )
    p.add_argument(
        "--min-density",
        metavar="PERCENT",
        type=float,
        help="offline: leave out rounds sparser than this, in figures and tables (e.g. 3 to zoom in on 100-3%%)",
    )
    p.add_argument("--entity", help="W&B user or team owning the project (required for a W&B Report)")
    p.add_argument("--project", help="W&B project of the runs (lth-train's wandb.project, default lth-wandb)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--group", help="only the runs of this W&B group (e.g. a multirun's multirun-...)")
    which.add_argument("--sweep", help="only the runs of this sweep id (adds parallel coordinates, importance)")
    p.add_argument("--title", help="report title (default: the group or sweep, else what the runs are)")
    p.add_argument(
        "--runs",
        metavar="DIR",
        help="W&B Report: read the runs for the summary and ticket links from "
        "local run files (e.g. the ones you `wandb sync`); with --save they default to the W&B API",
    )
    p.add_argument(
        "--metric",
        default=None,
        help="sweeps: summary metric for parameter importance (default ticket/winning_density)",
    )
    p.add_argument("--save", action="store_true", help="publish the W&B Report (needs a server and credentials)")
    p.add_argument("--out", metavar="FILE", help=f"without --save: where the report spec goes (default {DEFAULT_SPEC})")
    return p


def percents(text: str) -> list[float]:
    """``"100,21.1,7"`` -> ``[1.0, 0.211, 0.07]``."""
    try:
        values = [float(part) / 100 for part in text.split(",")]
    except ValueError:
        values = []
    if not values or not all(0 < v <= 1 for v in values):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a list of percentages in (0, 100]. Hint: --at 100,51.3,21.1,7,3.6"
        )
    return values


def main(argv: list[str] | None = None) -> int:
    """Console entry point."""
    p = parser()
    args = p.parse_args(argv)
    if args.version:  # printed whole: argparse's own version action wraps it at the terminal's width
        print(lth_wandb.version_text("lth-report"))
        return 0
    _validate(p, args)
    try:
        return offline_report(args) if args.offline else wandb_report(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"lth-report: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        if error.errno not in atomic.DISK_FULL:
            raise
        print(
            f"lth-report: disk full: {error}. Nothing was replaced: the previous report and figures are as they were. "
            "Hint: free some space (or raise the quota) and run lth-report again",
            file=sys.stderr,
        )
        return 1


def offline_report(args: argparse.Namespace) -> int:
    from lth_wandb.report import early_bird, instability, overlap
    from lth_wandb.report.html import write_html_report
    from lth_wandb.report.sources import collect_offline
    from lth_wandb.report.summary import summary_text
    from lth_wandb.report.table import density_rows, markdown_table

    for flag, value in (("--html", args.html or DEFAULT_HTML), ("--markdown", args.markdown)):
        check_output(flag, value)  # before the runs are read: that takes a while
    study = collect_offline(args.offline, group=args.group)
    if args.min_density is not None:
        study.drop_sparser_than(args.min_density / 100)
    report = write_html_report(study, args.html or DEFAULT_HTML, title=args.title, at=args.at)
    print(summary_text(study))
    if args.markdown:
        table = markdown_table(density_rows(study, at=args.at))
        pairs = overlap.pair_rows(report.overlap, list(study.series())) if report.overlap else []
        if pairs:  # tickets of two or more runs at one density
            table += f"\n{OVERLAP_TITLE}\n\n{overlap.markdown_table(pairs)}"
        if rows := instability.instability_rows(study):
            table += f"\n{instability.markdown_table(rows)}"
        if birds := early_bird.early_bird_rows(study):
            table += f"\n{early_bird.markdown_table(birds)}"
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        atomic.write_text(args.markdown, table)
        print(f"Table: {args.markdown}")
    if study.skipped:
        print(
            f"Skipped {len(study.skipped)} run directories (listed in the report), e.g. {study.skipped[0][0]}: "
            f"{study.skipped[0][1]}"
        )
    print(f"Figures: {report.path.parent / (report.path.stem + '-figures')} (PNG and SVG)")
    print(f"Report: {report.path}")
    return 0


def wandb_report(args: argparse.Namespace) -> int:
    from lth_wandb.report import wandb_report as wb
    from lth_wandb.report.sources import collect_api, collect_offline

    if not args.save:
        check_output("--out", args.out or DEFAULT_SPEC)
    if args.runs:
        study = collect_offline(args.runs, group=args.group)
        study.sweep = args.sweep
    elif args.save:
        study = collect_api(args.entity, args.project, group=args.group, sweep=args.sweep)
    else:
        study = None
    report = wb.build_report(
        args.entity,
        args.project,
        group=args.group,
        sweep=args.sweep,
        title=args.title,
        study=study,
        metric=args.metric or wb.DEFAULT_METRIC,
    )
    if args.save:
        print(f"Published: {wb.publish(report)}")
        return 0
    out = Path(args.out or DEFAULT_SPEC)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(out, json.dumps(wb.report_spec(report), indent=1))
    print(wb.describe(report))
    print(f"Spec: {out} (not published; add --save to publish it)")
    return 0


def check_output(flag: str, path: str | None) -> None:
    """Refuse an output path that cannot be written because a file stands where a folder must be.

    Raises:
        ValueError: ``path`` is a folder, or one of its parent folders is a file.
    """
    if path is None:
        return
    target = Path(path)
    if target.is_dir():
        raise ValueError(f"{flag} {path} is a folder, not a file. Hint: name a file inside it")
    for parent in target.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(
                    f"{flag} {path}: {parent} is a file, not a folder. Hint: choose another folder, or move {parent}"
                )
            return


def _validate(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.min_density is not None and not 0 < args.min_density <= 100:
        p.error(f"--min-density {args.min_density} is not a percentage in (0, 100]. Hint: --min-density 3")
    if args.offline:
        extra = [
            flag
            for flag, value in (
                ("--save", args.save),
                ("--out", args.out),
                ("--sweep", args.sweep),
                ("--runs", args.runs),
                ("--metric", args.metric),
            )
            if value
        ]
        if extra:
            p.error(
                f"{', '.join(extra)} cannot be used with --offline (it writes HTML from local files). Hint: point "
                "--offline at the sweep directory, or drop --offline and give --entity and --project."
            )
        return
    offline_only = [
        flag
        for flag, value in (("--markdown", args.markdown), ("--at", args.at), ("--min-density", args.min_density))
        if value is not None
    ]
    if offline_only:
        p.error(f"{', '.join(offline_only)} needs --offline DIR. Hint: lth-report --offline runs --markdown results.md")
    if args.html:
        p.error("--html needs --offline DIR. Hint: lth-report --offline wandb --html report/report.html")
    missing = [flag for flag, value in (("--entity", args.entity), ("--project", args.project)) if not value]
    if missing:
        p.error(
            f"{' and '.join(missing)} required for a W&B Report, or --offline DIR for an HTML report. "
            "Hint: lth-report --entity my-team --project lth-wandb --group G"
        )


if __name__ == "__main__":
    sys.exit(main())
