"""lth-report on the research features: the instability analysis (table and error-path figure) and early-bird
tickets (table), in the HTML page, the markdown output and the W&B Report spec.

Runs are real: one tiny ``lth-train`` per feature in a subprocess, offline, read back with the SDK's reader. Each
run also stands for "a report without the other feature": its report must not show the other's section.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from statistics import mean, pstdev

import pytest
from conftest import lth_train

from lth_wandb.report import cli
from lth_wandb.report.data import RunRounds, Study, from_run_record
from lth_wandb.report.early_bird import early_bird_rows
from lth_wandb.report.html import write_html_report
from lth_wandb.report.instability import instability_rows, path_figure
from lth_wandb.report.sources import collect_offline
from lth_wandb.report.wandb_report import build_report as build_wandb_report
from lth_wandb.report.wandb_report import report_spec
from lth_wandb.tracking.runfiles import OfflineRun

INSTABILITY_H2 = "<h2>Instability (linear mode connectivity)</h2>"
EARLY_BIRD_H2 = "<h2>Early-bird tickets</h2>"


@pytest.fixture(scope="module")
def unstable(tmp_path_factory) -> Path:
    """A tiny IMP run (2 rounds) with the instability analysis at k = 0 and 5; its output folder is ``run/``."""
    cwd = tmp_path_factory.mktemp("instability")
    done = lth_train(cwd, "pruning.rounds=1", "instability.enabled=true", "instability.steps=[0,5]",
                     "instability.points=7", "hydra.run.dir=run")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return cwd


@pytest.fixture(scope="module")
def birds(tmp_path_factory) -> Path:
    """A tiny early-bird run: window 3 at threshold 0.95 holds once the window is full, so round 0 ends after 3 of
    its 6 epochs."""
    cwd = tmp_path_factory.mktemp("early_bird")
    birds_settings = ("pruning.early_bird=true", "pruning.early_bird_window=3", "pruning.early_bird_threshold=0.95")
    done = lth_train(cwd, "pruning.rounds=1", "pruning.epochs_per_round=6", *birds_settings, "hydra.run.dir=run")
    assert done.returncode == 0, done.stderr[-3000:]
    return cwd


def markdown_section(text: str, title: str) -> list[list[str]]:
    """The body rows (cells) of the markdown table under the bold ``title`` line; [] when there is none."""
    match = re.search(rf"\*\*{re.escape(title)}\*\*\n\n((?:\|.*\n)+)", text)
    if match is None:
        return []
    lines = match.group(1).strip().splitlines()[2:]  # after the head and the alignment row
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]


def report(cwd: Path, out: Path, *extra: str) -> tuple[str, str]:
    """Run lth-report on ``cwd``: the markdown and the HTML page it wrote."""
    md, page = out / "results.md", out / "report.html"
    assert cli.main(["--offline", str(cwd), "--markdown", str(md), "--html", str(page), *extra]) == 0
    return md.read_text(), page.read_text()


@pytest.mark.slow
def test_instability_table_and_figure_hold_what_instability_json_holds(unstable, tmp_path, capsys):
    saved = json.loads((unstable / "run" / "instability.json").read_text())
    md, page = report(unstable, tmp_path)
    rows = markdown_section(md, "Instability (linear mode connectivity)")
    expected = [
        [
            "winning ticket (IMP)",
            f"{r['density']:.1%}",
            str(r["step"]),
            "1",
            f"{100 * r['instability']:.2f} ± 0.00",
            f"{int(r['stable'])}/1",
            str(saved["earliest_stable_step"][str(r["round"])]).replace("None", "none"),
        ]
        for r in saved["results"]
    ]
    assert rows == expected and len(rows) == 4  # rounds 0 and 1, k = 0 and 5
    assert INSTABILITY_H2 in page and 'id="instability"' in page and EARLY_BIRD_H2 not in page
    assert "Early-bird tickets" not in md
    assert (tmp_path / "report-figures" / "instability.png").stat().st_size > 1000
    assert 'id="fig-instability"' in page

    # The figure draws each (density, k)'s errors along the path, in percent.
    study = collect_offline(unstable)
    (run,) = study.runs
    assert run.output_dir == str(unstable / "run")
    assert [len(r.rounds) for r in study.runs] == [2]  # the instability rows are not rounds
    fig = path_figure(instability_rows(study))
    lines = {line.get_gid(): line for ax in fig.axes for line in ax.get_lines() if line.get_gid()}
    for r in saved["results"]:
        line = lines[f"path:winning ticket (IMP):{round(r['density'] * 100, 4):g}:{r['step']}"]
        assert list(line.get_xdata()) == pytest.approx(r["alphas"])
        assert list(line.get_ydata()) == pytest.approx([100 * e for e in r["errors"]])


@pytest.mark.slow
def test_without_the_run_folder_the_wandb_rows_give_the_same_table_and_no_figure(unstable):
    saved = json.loads((unstable / "run" / "instability.json").read_text())
    study = collect_offline(unstable / "wandb")  # run/ is not in outputs/ beside wandb/: not found
    assert study.runs[0].output_dir == ""
    rows = instability_rows(study)
    assert [(round(r.density, 6), r.step, r.instability, r.stable) for r in rows] == [
        (round(r["density"], 6), r["step"], [pytest.approx(r["instability"])], int(r["stable"]))
        for r in saved["results"]
    ]
    assert path_figure(rows) is None
    assert "instability" not in write_html_report(study, unstable / "no-paths" / "report.html").figures


@pytest.mark.slow
def test_early_bird_table_holds_round_0s_epochs_from_the_summary(birds, tmp_path):
    md, page = report(birds, tmp_path)
    (run,) = collect_offline(birds).runs
    assert run.summary["early_bird/epoch"] == 3
    (row,) = markdown_section(md, "Early-bird tickets")
    distance = run.summary["early_bird/max_distance"]
    assert row == ["winning ticket (IMP)", "1", "1/1", "3.0 ± 0.0", "6", "3.0 (50%)", f"{distance:.3f} (0.95)"]
    assert EARLY_BIRD_H2 in page and 'id="early-bird"' in page
    assert INSTABILITY_H2 not in page and "Instability" not in md
    assert not (tmp_path / "report-figures" / "instability.png").exists()


@pytest.mark.slow
def test_wandb_report_adds_the_sections_only_for_runs_that_recorded_them(unstable, birds):
    def spec_of(study):
        spec = report_spec(build_wandb_report("team", "lth", group="g", study=study))
        panels = [
            p["config"]
            for b in spec["spec"]["blocks"]
            if b["type"] == "panel-grid"
            for p in b["metadata"]["panelBankSectionConfig"]["panels"]
        ]
        headings = [b["children"][0]["text"] for b in spec["spec"]["blocks"] if b["type"] == "heading"]
        markdown = [b["content"] for b in spec["spec"]["blocks"] if b["type"] == "markdown-block"]
        return {p.get("chartTitle"): p for p in panels}, headings, markdown

    panels, headings, markdown = spec_of(collect_offline(unstable))
    lmc = panels["Instability per analysed round (one point per step k)"]
    assert lmc["xAxis"] == "round" and lmc["metrics"] == ["round/instability"]
    assert "Instability (linear mode connectivity)" in headings and "Early-bird tickets" not in headings
    assert any("| winning ticket (IMP) | 100.0% | 0 | 1 |" in text for text in markdown)

    panels, headings, markdown = spec_of(collect_offline(birds))
    assert panels["Early-bird mask distance per epoch of round 0"]["metrics"] == [
        "early_bird/distance",
        "early_bird/max_distance",
    ]
    assert "Early-bird tickets" in headings and "Instability (linear mode connectivity)" not in headings
    assert any("| winning ticket (IMP) | 1 | 1/1 | 3.0 ± 0.0 | 6 |" in text for text in markdown)

    _, headings, _ = spec_of(None)  # no run data: nothing says the runs have either
    assert not {"Instability (linear mode connectivity)", "Early-bird tickets"} & set(headings)


# -- across seeds, from run folders written here ------------------------------------------------------------------


def analysed_run(folder: Path, run_id: str, seed: int, instabilities: dict[tuple[int, int], float]) -> RunRounds:
    """A run whose output folder holds an ``instability.json`` with these ``{(round, k): instability}``."""
    folder.mkdir(parents=True)
    results = [
        {"round": r, "density": 0.8**r, "step": k, "alphas": [0.0, 0.5, 1.0], "errors": [0.1, 0.1 + v + seed, 0.1],
         "instability": v, "stable": v < 0.02}
        for (r, k), v in instabilities.items()
    ]  # fmt: skip
    (folder / "instability.json").write_text(json.dumps({"threshold": 0.02, "results": results}))
    return RunRounds(run_id, config={"seed": seed}, output_dir=str(folder))


def test_seeds_are_averaged_and_the_earliest_stable_k_follows_the_mean(tmp_path):
    runs = [
        analysed_run(tmp_path / "a", "a", 0, {(0, 0): 0.05, (0, 10): 0.01, (3, 0): 0.001, (3, 10): 0.03}),
        analysed_run(tmp_path / "b", "b", 1, {(0, 0): 0.01, (0, 10): 0.015, (3, 0): 0.003, (3, 10): 0.001}),
    ]
    rows = instability_rows(Study(runs))
    assert [(round(r.density, 4), r.step) for r in rows] == [(1.0, 0), (1.0, 10), (0.512, 0), (0.512, 10)]
    first = rows[0]
    assert first.instability == [0.05, 0.01] and first.stable == 1
    assert mean(first.instability) * 100 == pytest.approx(3.0) and pstdev(first.instability) * 100 == pytest.approx(2)
    # Dense: the mean is 3 points at k=0, 1.25 at k=10, so stable from 10. At 51%: 0.2 and 1.55 points, from 0.
    assert [r.earliest_stable_step for r in rows] == [10, 10, 0, 0]
    assert rows[0].errors == pytest.approx((0.1, 0.1 + 0.03 + 0.5, 0.1))  # the paths' mean at each alpha
    assert [r.stable for r in rows] == [1, 2, 2, 1]


def test_instability_rows_on_the_round_axis_are_not_rounds():
    """Rows logged on the round axis carry ``round`` (and may carry ``round/density``) but are not a round's row."""
    history = [
        {"round": 0, "round/density": 1.0, "round/test_acc": 0.9, "trainer/global_step": 10},
        {"round": 1, "round/density": 0.5, "round/test_acc": 0.8, "trainer/global_step": 20},
        {"round": 0, "round/density": 1.0, "round/instability": 0.03, "round/instability_step": 0,
         "round/instability_stable": 0},
        {"round": 1, "round/instability": 0.01, "round/instability_step": 0, "round/instability_stable": 1},
    ]  # fmt: skip
    run = from_run_record(OfflineRun("r1", Path("r1.wandb"), {"instability": {"threshold": 0.02}}, history, {}))
    assert [(r.round, r.test_acc) for r in run.rounds] == [(0, 0.9), (1, 0.8)]
    rows = instability_rows(Study([run]))
    assert [(r.density, r.step, r.instability, r.stable, r.earliest_stable_step) for r in rows] == [
        (1.0, 0, [0.03], 0, None),
        (0.5, 0, [0.01], 1, 0),
    ]


def test_runs_without_early_birds_or_with_round_0_unfinished_give_no_early_bird_rows():
    plain = RunRounds("p", config={"pruning": {"early_bird": False, "epochs_per_round": 6}}, summary={})
    running = RunRounds("r", config={"pruning": {"early_bird": True, "epochs_per_round": 6}}, summary={})
    assert early_bird_rows(Study([plain, running])) == []
