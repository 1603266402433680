"""Reports: the offline HTML page from real runs (checked in a real browser) and the W&B Report spec.

Runs are real: a tiny ``lth-train`` in a subprocess, and small offline W&B runs written in-process with the SDK
(failed, stopped and control runs, a ticket artifact), all read back with the SDK's own reader.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import wandb
from conftest import lth_train
from PIL import Image

from lth_wandb.report import cli
from lth_wandb.report.data import Round, RunRounds, Study
from lth_wandb.report.figures import figure_bytes
from lth_wandb.report.html import write_html_report
from lth_wandb.report.sources import collect_offline, one_per_run_id
from lth_wandb.report.summary import best_ticket, summary_text
from lth_wandb.report.table import density_rows
from lth_wandb.report.wandb_report import app_url, build_report, describe, report_spec
from lth_wandb.tracking.runfiles import find_runs, read_run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


# ------------------------------------------------------------------------------------------------------------
# Runs


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A folder where a tiny lth-train ran (3 rounds: 100%, ~50%, ~25% of the weights), offline."""
    cwd = tmp_path_factory.mktemp("trained")
    done = lth_train(cwd, "pruning.rounds=2")
    assert done.returncode == 0, done.stderr[-3000:]
    return cwd


@pytest.fixture(scope="module")
def html_report(trained):
    return write_html_report(collect_offline(trained / "wandb"), trained / "report" / "report.html")


def log_run(
    folder: Path,
    *,
    seed: int,
    control=None,
    rounds=(),
    planned=2,
    exit_code=0,
    group="g",
    ticket_round=None,
    run_id=None,
    masks_from=None,
    extra=None,
):
    """An offline W&B run with the rows RoundLogger writes: ``rounds`` is ``[(density, test_acc, best_val_loss)]``,
    each round 10 steps long with its early stop at step 7 of the round and two validation points. ``masks_from``
    makes a control the paper's (IMP's masks); ``extra`` adds config sections."""
    pruning = {"control": control, "rounds": planned, "monitor": "val/loss", "epochs_per_round": 2}
    config = {"seed": seed, "pruning": {**pruning, "masks_from": masks_from}, **(extra or {})}
    run = wandb.init(project="lth", group=group, config=config, dir=str(folder), mode="offline", id=run_id)
    try:
        for r, (density, acc, loss) in enumerate(rounds):
            start = 10 * r
            run.log({"trainer/global_step": start + 3, "val/loss": loss + 0.5, "val/acc": acc - 0.1})
            run.log({"trainer/global_step": start + 7, "val/loss": loss, "val/acc": acc})
            row = {
                "round": r,
                "trainer/global_step": start + 10,
                "round/density": density,
                "round/test_acc": acc,
                "round/val_acc": acc,
                "round/best_val_loss": loss,
                "round/early_stop_step": start + 7,
                "round/density/fc.weight": density,
            }
            run.log(row)
            if ticket_round is not None and r <= ticket_round + 1:
                aliases = [f"round-{r}", "latest"] + (["winning"] if r == ticket_round else [])
                artifact = wandb.Artifact(
                    f"ticket-{run.id}", type="lottery-ticket", metadata={"round": r, "density": density}
                )
                artifact.add_file(_file(folder, f"mask-{run.id}-{r}.txt", f"round {r}"))
                run.log_artifact(artifact, aliases=aliases)
        return run.id
    finally:
        run.finish(exit_code=exit_code)


def _file(folder: Path, name: str, text: str) -> str:
    path = folder / name
    path.write_text(text)
    return str(path)


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A sweep-like tree: two IMP seeds (one with a winning ticket artifact), a reinit control, a run that failed
    in round 1, one that stopped cleanly after 2 of 3 rounds, and a run directory without a run file."""
    root = tmp_path_factory.mktemp("study")
    (root / "a").mkdir()
    (root / "b" / "nested").mkdir(parents=True)
    imp = [(1.0, 0.90, 0.40), (0.5, 0.92, 0.35), (0.25, 0.88, 0.45)]
    ids = {
        "imp0": log_run(root / "a", seed=0, rounds=imp),
        "imp1": log_run(root / "a", seed=1, rounds=[(d, a + 0.02, v) for d, a, v in imp], ticket_round=1),
        "reinit": log_run(
            root / "b" / "nested",
            seed=0,
            control="reinit",
            masks_from="outputs/imp",  # the paper's control: IMP's masks
            rounds=[(1.0, 0.90, 0.40), (0.5, 0.80, 0.50), (0.25, 0.70, 0.60)],
        ),
        "failed": log_run(root / "b", seed=2, rounds=[(1.0, 0.85, 0.50), (0.5, 0.86, 0.45)], exit_code=1),
        "stopped": log_run(root / "b", seed=3, rounds=[(1.0, 0.85, 0.5), (0.5, 0.84, 0.6)], planned=2),
    }
    (root / "b" / "wandb" / "offline-run-20200101_000000-broken1" / "files").mkdir(parents=True)
    return root, ids


@pytest.fixture(scope="module")
def study(study_dir):
    return collect_offline(study_dir[0])


# ------------------------------------------------------------------------------------------------------------
# The offline HTML report from a real lth-train run


def test_html_report_embeds_every_figure_with_the_runs_data(trained, html_report):
    (run_dir,) = find_runs(trained / "wandb")
    run = read_run(run_dir)
    rows = [r for r in run.history if "round/density" in r]
    assert [r["round"] for r in rows] == [0, 1, 2]

    page = html_report.path.read_text()
    assert set(html_report.figures) == {"accuracy", "early_stop", "compute", "val_curves"}
    embedded = re.findall(r'<img src="data:image/png;base64,([^"]+)"', page)
    assert len(embedded) == len(html_report.figures)
    for data in embedded:
        assert Image.open(io.BytesIO(base64.b64decode(data))).size[0] > 300  # a real PNG of a plot
    assert page.count('href="data:image/svg+xml;base64,') == len(html_report.figures)
    for files in html_report.files.values():
        assert files["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and b"<svg" in files["svg"].read_bytes()[:500]

    # The figures plot what the run file holds: one point per round of this run.
    (acc,) = [line for line in html_report.figures["accuracy"].axes[0].lines if line.get_gid() == f"run:{run.run_id}"]
    assert list(acc.get_xdata()) == pytest.approx([r["round/density"] * 100 for r in rows])
    assert list(acc.get_ydata()) == pytest.approx([r["round/test_acc"] * 100 for r in rows])
    (stop,) = [
        line for line in html_report.figures["early_stop"].axes[0].lines if line.get_gid() == f"run:{run.run_id}"
    ]
    ends = [0] + [r["trainer/global_step"] for r in rows[:-1]]
    assert list(stop.get_ydata()) == [r["round/early_stop_step"] - end for r, end in zip(rows, ends, strict=True)]
    (compute,) = [
        line for line in html_report.figures["compute"].axes[0].lines if line.get_gid() == f"run:{run.run_id}"
    ]
    assert list(compute.get_ydata()) == [1.0, 2.0, 3.0]  # epochs from the start, one per round here
    curves = {line.get_gid() for ax in html_report.figures["val_curves"].axes for line in ax.lines}
    assert {f"curve:{run.run_id}:{r}" for r in range(3)} <= curves

    # Summary, the rounds table (winning round marked) and the config are on the page.
    winner = run.summary["ticket/winning_round"]
    assert f"keeps {rows[winner]['round/density']:.1%} of the weights" in page or winner == 0
    rounds_table = page.split(f'id="rounds-{run.run_id}"')[1].split("</table>")[0]
    assert rounds_table.count("<tr") == 1 + 3 and rounds_table.count("★ winning") == (winner > 0)  # dense: no ticket
    assert "pruning.prune_rate" in page and "<script" not in page


def test_cli_writes_the_offline_report(trained, tmp_path, capsys):
    out = tmp_path / "out" / "report.html"
    assert cli.main(["--offline", str(trained), "--html", str(out), "--title", "Tiny <demo>"]) == 0
    printed = capsys.readouterr().out
    assert f"Report: {out}" in printed and "1 run: 1 finished" in printed
    page = out.read_text()
    assert "<title>Tiny &lt;demo&gt;</title>" in page
    assert sorted(p.name for p in (tmp_path / "out" / "report-figures").iterdir()) == [
        "accuracy.png",
        "accuracy.svg",
        "compute.png",
        "compute.svg",
        "early_stop.png",
        "early_stop.svg",
        "val_curves.png",
        "val_curves.svg",
    ]


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get install chromium)")
def test_report_renders_in_headless_chromium(html_report, tmp_path):
    """Chromium loads the page from disk: a non-blank screenshot, every image decoded (PNGs and the SVG
    downloads), and not one console message (the page has no scripts, so any message is a failure)."""
    shot = tmp_path / "shot.png"
    run = _chromium(tmp_path / "profile1", "--window-size=1200,1800", f"--screenshot={shot}", html_report.path.as_uri())
    assert shot.exists(), run.stderr[-2000:]
    pixels = Image.open(shot).convert("RGB")
    gray = pixels.convert("L")
    assert pixels.size == (1200, 1800)
    assert len(set(pixels.getdata())) > 50  # text, lines, colours: not a blank or single-colour page
    assert sum(1 for v in gray.getdata() if v < 200) > 0.01 * gray.width * gray.height

    # A harness page frames the report (unmodified) and writes what the browser decoded into its own DOM.
    harness = html_report.path.parent / "harness.html"
    harness.write_text(HARNESS.replace("REPORT", html_report.path.name))
    run = _chromium(
        tmp_path / "profile2",
        "--allow-file-access-from-files",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=10000",
        "--dump-dom",
        harness.as_uri(),
    )
    found = re.search(r'<pre id="out">(.*?)</pre>', run.stdout, re.S)
    assert found, run.stdout[-2000:] + run.stderr[-2000:]
    result = json.loads(found.group(1).replace("&quot;", '"'))
    assert result.get("error") is None, result
    assert len(result["images"]) == len(html_report.figures) and all(
        done and width > 300 for done, width in result["images"]
    )
    assert len(result["svgs"]) == len(html_report.figures) and all(width > 300 for width in result["svgs"])
    console = [line for line in run.stderr.splitlines() if ":CONSOLE" in line]
    assert console == []


HARNESS = """<!DOCTYPE html><html><body><pre id="out">pending</pre><iframe id="f" src="REPORT" width="1200"
height="900"></iframe><script>
const out = document.getElementById("out");
document.getElementById("f").addEventListener("load", async () => {
  try {
    const doc = document.getElementById("f").contentDocument;
    const images = Array.from(doc.images).map((i) => [i.complete, i.naturalWidth]);
    const svgs = await Promise.all(Array.from(doc.querySelectorAll('a[href^="data:image/svg"]')).map(
      (a) => new Promise((done) => { const i = new Image(); i.onload = () => done(i.naturalWidth);
                                     i.onerror = () => done(0); i.src = a.href; })));
    out.textContent = JSON.stringify({images, svgs});
  } catch (e) { out.textContent = JSON.stringify({error: String(e)}); }
});
</script></body></html>"""


def _chromium(profile: Path, *args: str) -> subprocess.CompletedProcess:
    command = [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


# ------------------------------------------------------------------------------------------------------------
# Collecting runs: sweeps trees, failed and stopped runs, controls, tickets


def test_collect_reads_a_tree_of_runs_with_failed_stopped_and_broken_ones(study_dir, study):
    root, ids = study_dir
    runs = {run.run_id: run for run in study.runs}
    assert set(runs) == set(ids.values())
    assert [Path(path).name for path, _ in study.skipped] == ["offline-run-20200101_000000-broken1"]
    status = {name: runs[run_id].status for name, run_id in ids.items()}
    assert status == {
        "imp0": "finished",
        "imp1": "finished",
        "reinit": "finished",
        "failed": "failed",
        "stopped": "stopped early",
    }
    assert [r.round for r in runs[ids["failed"]].rounds] == [0, 1]
    # No ticket/* summary was logged: the winning round is recomputed (sparsest round with val loss <= round 0's).
    assert runs[ids["imp0"]].winning_round == 1 and runs[ids["failed"]].winning_round == 1
    assert runs[ids["stopped"]].winning_round == 0
    assert runs[ids["imp0"]].rounds[2].early_stop_iteration == 7
    # The alias moved on: the version logged with "winning" is round 1's, not the later "latest".
    ticket = runs[ids["imp1"]].ticket
    assert ticket.ref == f"ticket-{ids['imp1']}:winning" and ticket.metadata == {"round": 1, "density": 0.5}
    assert runs[ids["imp0"]].ticket is None  # a run without artifacts (wandb.log_artifacts=false, older runs)


def test_summary_and_figures_compare_tickets_with_controls(study_dir, study):
    root, ids = study_dir
    best = best_ticket(study)
    assert best.run.run_id == ids["imp1"] and best.round.round == 1  # same density; seed 1 has higher accuracy
    text = summary_text(study)
    assert text.startswith("5 runs: 3 finished, 1 failed, 1 stopped early.")
    assert "keeps 50.0% of the weights (round 1)" in text and "+2.0 points" in text
    assert f"The ticket is the artifact ticket-{ids['imp1']}:winning." in text
    assert "random reinit control at that density: 80.0% (mean of 1)" in text
    assert "1 run directories could not be read" in text

    report = write_html_report(study, root / "out" / "report.html")
    ax = report.figures["accuracy"].axes[0]
    means = {line.get_gid(): line for line in ax.lines if (line.get_gid() or "").startswith("mean:")}
    # Four IMP runs (two seeds, the failed and the stopped run) average into one curve with error bars.
    (imp,) = [line for gid, line in means.items() if "winning ticket" in gid]
    assert list(imp.get_xdata()) == [100.0, 50.0, 25.0]
    assert imp.get_ydata()[2] == pytest.approx((88 + 90) / 2)
    per_run = {line.get_gid(): len(line.get_xdata()) for line in ax.lines if (line.get_gid() or "").startswith("run:")}
    assert per_run == {
        f"run:{ids[k]}": n for k, n in [("imp0", 3), ("imp1", 3), ("reinit", 3), ("failed", 2), ("stopped", 2)]
    }
    assert ax.get_xscale() == "log" and ax.get_xlim()[0] > ax.get_xlim()[1]  # dense on the left, as in the paper
    page = report.path.read_text()
    assert f"ticket-{ids['imp1']}:winning ★ best" in page and "round=1, density=0.5" in page
    assert "offline-run-20200101_000000-broken1" in page


def test_variant_names_the_method_from_the_config():
    def variant(**config):
        return RunRounds("r", config=config).variant

    assert variant() == "ticket" and variant(pruning={"rewind": "init", "control": None}) == "ticket"
    assert variant(pruning={"rewind": "none"}) == "no_rewind" and variant(**{"pruning.rewind": "lr"}) == "lr_rewind"
    assert variant(pruning={"control": "reinit"}, ticket="t") == "reinit"  # a control of a saved ticket
    assert variant(pruning={"control": "random_mask", "masks_from": "outputs/imp"}) == "random_mask"  # of IMP's masks
    assert variant(pruning={"control": "reinit"}) == "reinit_variant"  # its own masks: not the paper's control
    assert variant(pruning={"control": None}, ticket="tickets/round-3/ticket") == "saved_ticket"
    assert variant(pruning={"rounds": 0}) == "dense" and variant(pruning={"rounds": 0}, ticket="t") == "saved_ticket"


def test_series_are_labelled_by_the_settings_that_differ_and_average_the_seeds():
    def run(seed, **pruning):
        return RunRounds(f"r{seed}", config={"seed": seed, "pruning": {"rewind": "init", **pruning}})

    same = Study(runs=[run(0), run(1)])
    assert {k: [r.run_id for r in v] for k, v in same.series().items()} == {"winning ticket (IMP)": ["r0", "r1"]}
    birds = Study(runs=[run(s, early_bird=True, early_bird_threshold=t) for s in (0, 1) for t in (0.1, 0.2)])
    labels = {k: sorted(r.run_id for r in v) for k, v in birds.series().items()}
    assert labels == {
        "winning ticket (IMP) (early_bird_threshold=0.1)": ["r0", "r1"],
        "winning ticket (IMP) (early_bird_threshold=0.2)": ["r0", "r1"],
    }


def test_density_table_averages_seeds_and_counts_compute(study_dir, study, tmp_path, capsys):
    root, _ = study_dir
    rows = {(row.series, row.density): row for row in density_rows(study)}
    assert list(rows) == [
        ("winning ticket (IMP)", 1.0),
        ("winning ticket (IMP)", 0.5),
        ("winning ticket (IMP)", 0.25),
        ("random reinit", 1.0),
        ("random reinit", 0.5),
        ("random reinit", 0.25),
    ]
    sparse = rows[("winning ticket (IMP)", 0.25)]  # the two seeds that got there (failed/stopped runs did not)
    assert sparse.test_acc == [0.88, 0.90] and sparse.early_stop_iteration == [7, 7]
    assert sparse.epochs == [6.0, 6.0]  # 30 steps; round 0's 10 steps were 2 epochs
    assert len(sparse.seconds) == 2 and all(s >= 0 for s in sparse.seconds)
    assert rows[("winning ticket (IMP)", 1.0)].runs == 4

    md = tmp_path / "results.md"
    argv = ["--offline", str(root), "--html", str(tmp_path / "r.html"), "--markdown", str(md), "--at", "100,26"]
    assert cli.main(argv) == 0
    lines = md.read_text().splitlines()
    assert lines[0].startswith("| curve | weights left | runs | test acc (mean ± std) | early-stop iteration |")
    assert [line.split(" | ")[:6] for line in lines[2:]] == [
        ["| winning ticket (IMP)", "100.0%", "4", "88.00% ± 3.08%", "7", "2"],
        ["| winning ticket (IMP)", "25.0%", "2", "89.00% ± 1.00%", "7", "6"],
        ["| random reinit", "100.0%", "1", "90.00% ± 0.00%", "7", "2"],
        ["| random reinit", "25.0%", "1", "70.00% ± 0.00%", "7", "6"],
    ]
    assert f"Table: {md}" in capsys.readouterr().out
    assert 'id="density"' in (tmp_path / "r.html").read_text()  # the same table, in the page

    argv = ["--offline", str(root), "--html", str(tmp_path / "z.html"), "--markdown", str(md), "--min-density", "30"]
    assert cli.main(argv) == 0
    assert [line.split(" | ")[1] for line in md.read_text().splitlines()[2:]] == ["100.0%", "50.0%"] * 2


# ------------------------------------------------------------------------------------------------------------
# The W&B Report (built offline; publishing needs a server)


def _panels(spec):
    grids = [b for b in spec["spec"]["blocks"] if b["type"] == "panel-grid"]
    return grids, [p for g in grids for p in g["metadata"]["panelBankSectionConfig"]["panels"]]


def test_wandb_report_for_a_group(study_dir, study, monkeypatch):
    monkeypatch.setenv("WANDB_APP_URL", "https://wandb.example.com/")  # a self-hosted server
    _, ids = study_dir
    report = build_report("team", "lth", group="g", study=dataclasses.replace(study, group="g"))
    spec = report_spec(report)
    assert spec["displayName"] == "Lottery tickets: g" and spec["project"] == {"name": "lth", "entityName": "team"}
    grids, panels = _panels(spec)
    for grid in grids:
        (runset,) = grid["metadata"]["runSets"]
        assert runset["filters"]["filters"] == [
            {"key": {"section": "run", "name": "group"}, "op": "=", "value": "g", "disabled": False}
        ]
        # Controls of IMP's masks apart from the variants that prune their own weights (masks_from empty).
        assert runset["grouping"] == [
            {"section": "config", "name": "pruning.value.control"},
            {"section": "config", "name": "pruning.value.masks_from"},
        ]
        assert runset["project"] == {"entityName": "team", "name": "lth"}
        assert "summary:ticket/winning_density" in runset["runFeed"]["columnOrder"]
    by_title = {p["config"].get("chartTitle"): p for p in panels}
    acc = by_title["Test accuracy vs weights remaining"]["config"]
    assert acc["xAxis"] == "round/density" and acc["metrics"] == ["round/test_acc"] and acc["xLogScale"]
    assert acc["groupAgg"] == "mean" and acc["groupArea"] == "stddev"
    assert by_title["Early-stop iteration vs weights remaining"]["config"]["metrics"] == ["round/early_stop_iteration"]
    assert by_title["Validation loss (rounds follow each other)"]["config"]["metrics"] == ["val/loss"]
    assert by_title["Mask IoU with the previous round"]["config"]["metrics"] == ["round/mask_iou_prev"]
    assert by_title["Mask churn since the previous round"]["config"]["xAxis"] == "round/density"
    assert not [b for b in spec["spec"]["blocks"] if b["type"] == "markdown-block"]  # no tickets on disk to compare
    assert {p["viewType"] for p in panels} >= {"Run History Line Plot", "Media Browser", "Bar Chart"}
    assert not {"Parallel Coordinates Plot", "Parameter Importance"} & {p["viewType"] for p in panels}

    text = json.dumps(spec)
    assert "Best winning ticket: run" in text  # the generated summary paragraph
    assert app_url() == "https://wandb.example.com"
    url = f"https://wandb.example.com/team/lth/artifacts/lottery-ticket/ticket-{ids['imp1']}/winning"
    assert f'"url": "{url}"' in text and f"lth-train ticket=team/lth/ticket-{ids['imp1']}:winning" in text
    (artifact,) = [b for b in spec["spec"]["blocks"] if b["type"] == "weave-panel"]  # the best ticket's panel
    assert f'"artifactName": {{"nodeType": "const", "type": "string", "val": "ticket-{ids["imp1"]}"}}' in json.dumps(
        artifact
    )
    assert f"ticket-{ids['imp1']}:winning" in describe(report)


def test_wandb_report_for_a_sweep_adds_parameter_panels(study_dir):
    report = build_report("team", "lth", sweep="abc123", metric="ticket/winning_test_acc")
    grids, panels = _panels(report_spec(report))
    for grid in grids:
        (runset,) = grid["metadata"]["runSets"]
        assert runset["filters"]["filters"][0]["key"] == {"section": "run", "name": "sweep"}
        assert runset["filters"]["filters"][0]["value"] == "abc123" and runset["grouping"] == []
    (parallel,) = [p for p in panels if p["viewType"] == "Parallel Coordinates Plot"]
    columns = [c["accessor"] for c in parallel["config"]["columns"]]
    assert "config:pruning.value.prune_rate" in columns and columns[-1] == "summary:ticket/winning_test_acc"
    (importance,) = [p for p in panels if p["viewType"] == "Parameter Importance"]
    assert importance["config"]["targetKey"] == "ticket/winning_test_acc"
    assert "Built without run data" in json.dumps(report_spec(report))  # no runs given: a placeholder summary


def test_cli_writes_the_spec_without_publishing(study_dir, tmp_path, capsys):
    root, _ = study_dir
    out = tmp_path / "spec.json"
    argv = ["--entity", "team", "--project", "lth", "--group", "g", "--runs", str(root / "a"), "--out", str(out)]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "not published" in printed and "Test accuracy vs weights remaining" in printed
    assert "2 runs: 2 finished in group g." in printed  # the two runs under a/, read from their files
    assert json.loads(out.read_text())["spec"]["blocks"]


# ------------------------------------------------------------------------------------------------------------
# Mistakes


def test_bad_arguments_fail_with_a_hint(tmp_path, capsys):
    with pytest.raises(ValueError, match=r"entity='' must be a non-empty string.*--entity is your W&B user or team"):
        build_report("", "lth")
    with pytest.raises(ValueError, match=r"group='g' and sweep='s': give one or neither"):
        build_report("team", "lth", group="g", sweep="s")
    with pytest.raises(ValueError, match=r"title has 129 characters; W&B allows 1 to 128"):
        build_report("team", "lth", title="x" * 129)
    with pytest.raises(FileNotFoundError, match=r"no W&B run directories .* under .*Hint: lth-train writes them"):
        collect_offline(tmp_path)
    with pytest.raises(ValueError, match=r"fmt='jpg' is not one of \['png', 'svg'\]"):
        figure_bytes(None, "jpg")
    with pytest.raises(ValueError, match=r"must end in .html"):
        write_html_report(None, tmp_path / "report.txt")

    assert cli.main(["--offline", str(tmp_path), "--html", str(tmp_path / "r.html")]) == 2
    assert "lth-report: error: no W&B run directories" in capsys.readouterr().err
    for argv, message in [
        (["--project", "lth"], "--entity required for a W&B Report, or --offline DIR"),
        (["--offline", "wandb", "--save"], "--save cannot be used with --offline"),
        (["--entity", "e", "--project", "p", "--html", "x.html"], "--html needs --offline DIR"),
        (["--entity", "e", "--project", "p", "--markdown", "r.md"], "--markdown needs --offline DIR"),
        (["--offline", "wandb", "--at", "100,0"], "'100,0' is not a list of percentages in (0, 100]"),
        (["--offline", "wandb", "--min-density", "0"], "--min-density 0.0 is not a percentage in (0, 100]"),
        (["--entity", "e", "--project", "p", "--group", "g", "--sweep", "s"], "not allowed with argument"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            cli.main(argv)
        assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_markdown_under_a_file_is_refused_before_reading_runs(study_dir, tmp_path, capsys):
    root, _ = study_dir
    (tmp_path / "notes.txt").write_text("mine")
    md, html = tmp_path / "notes.txt" / "x.md", tmp_path / "r.html"
    assert cli.main(["--offline", str(root), "--html", str(html), "--markdown", str(md)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()  # one line, no traceback
    assert line == (
        f"lth-report: error: --markdown {md}: {tmp_path / 'notes.txt'} is a file, not a folder. "
        f"Hint: choose another folder, or move {tmp_path / 'notes.txt'}"
    )
    assert not html.exists()  # refused before anything was read or written
    assert cli.main(["--offline", str(root), "--html", str(tmp_path)]) == 2
    assert "is a folder, not a file" in capsys.readouterr().err


def test_an_empty_run_file_is_named_and_not_counted(tmp_path, capsys):
    empty = tmp_path / "only" / "wandb" / "offline-run-20200101_000000-empty01"
    empty.mkdir(parents=True)
    (empty / "run-empty01.wandb").write_bytes(b"")
    with pytest.raises(ValueError, match=r"run file .*run-empty01.wandb is empty \(0 bytes\)\. It is not a run"):
        read_run(empty)
    assert cli.main(["--offline", str(tmp_path / "only"), "--html", str(tmp_path / "r.html")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("lth-report: error: none of the 1 run directories could be read, e.g. ")
    assert "run-empty01.wandb is empty (0 bytes)" in line
    # Beside a real run, it is listed as skipped and not counted.
    real = log_run(tmp_path / "real", seed=0, rounds=[(1.0, 0.9, 0.4)])
    study = collect_offline(tmp_path)
    assert [r.run_id for r in study.runs] == [real]
    ((where, why),) = study.skipped
    assert where == str(empty) and "is empty (0 bytes)" in why


def test_two_files_of_one_run_id_make_one_row(tmp_path):
    imp = [(1.0, 0.90, 0.40), (0.5, 0.92, 0.35), (0.25, 0.88, 0.45)]
    log_run(tmp_path / "first", seed=0, rounds=imp[:2], run_id="same0001")
    log_run(tmp_path / "again", seed=0, rounds=imp, run_id="same0001")  # the run done again, from the start
    for folders in ([tmp_path], [tmp_path / "again", tmp_path / "first"]):  # one tree; folders out of time order
        (run,) = collect_offline(folders).runs
        assert run.run_id == "same0001" and "again" in run.source and len(run.rounds) == 3
        assert [step for step, _ in run.curve] == [3, 7, 13, 17, 23, 27]  # the first file's points are not added


def rounds_run(run_id, numbers, exit_code=0, source=""):
    rounds = [Round(n, 0.5**n, 10 * n, 10 * n + 10, 10 * n + 7, 0.4, 0.9, 0.9) for n in numbers]
    curve = [(10 * n + 7, {"val/loss": 0.4}) for n in numbers]
    return RunRounds(run_id, exit_code=exit_code, rounds=rounds, curve=curve, source=source)


def test_one_per_run_id_picks_the_newest_complete_file_and_keeps_runs_without_id_apart():
    unnamed = one_per_run_id([rounds_run("", [0]), rounds_run("", [0, 1])])
    assert [len(r.rounds) for r in unnamed] == [1, 2]  # two runs, whatever their files share
    (chosen,) = one_per_run_id([rounds_run("a", [0, 1], source="old"), rounds_run("a", [0], None, source="cut")])
    assert chosen.source == "old"  # a complete file beats a newer one cut off
    (resumed,) = one_per_run_id([rounds_run("a", [0, 1], None, source="1"), rounds_run("a", [1, 2], source="2")])
    assert resumed.source == "2" and [r.round for r in resumed.rounds] == [0, 1, 2]  # continues the first file
    assert [step for step, _ in resumed.curve] == [7, 17, 27] and resumed.rounds[1].end_step == 20


def test_summary_says_what_is_missing_rather_than_n_a():
    no_rows = Study(runs=[RunRounds("x", exit_code=0)])  # e.g. a Trainer without RoundLogger
    assert "None of these runs logged a pruning round" in summary_text(no_rows)
    assert "RoundLogger(lottery)" in summary_text(no_rows)
    run = rounds_run("a", [0, 1])
    run.rounds = [dataclasses.replace(r, test_acc=None) for r in run.rounds]  # no test_dataloader()
    text = summary_text(Study(runs=[run]))
    assert "n/a" not in text and "best val/loss 0.4" in text and "give the DataModule a test_dataloader()" in text
