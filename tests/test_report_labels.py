"""The offline report cannot mislead: the paper's controls (IMP's masks) and the variants that prune their own
weights are labelled apart; a control's dense round is not a winning ticket; the title says what the runs are; the
shared config is folded; figures say when curves coincide and when the runs are undertrained, and a compute axis
reads in plain numbers. Runs are real offline W&B runs (test_report.log_run) or built in memory."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from test_report import log_run

from lth_wandb.report.data import Round, RunRounds, Study
from lth_wandb.report.figures import figure_bytes, make_figures
from lth_wandb.report.html import default_title, write_html_report
from lth_wandb.report.sources import collect_offline
from lth_wandb.report.summary import summary_text

MODEL = {"model": {"_target_": "lth_wandb.models.LeNet300100"}, "data": {"name": "digits"}}
IMP = [(1.0, 0.90, 0.40), (0.5, 0.92, 0.35), (0.25, 0.91, 0.38)]
WORSE = [(1.0, 0.90, 0.40), (0.5, 0.80, 0.50), (0.25, 0.70, 0.60)]  # no pruned round matches the dense one


@pytest.fixture(scope="module")
def controls(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """An IMP run with its ticket artifacts, the paper's two controls of it (each with a 'winning' version at its
    dense round 0, as a run with no matching pruned round logs it), and the two variants."""
    root = tmp_path_factory.mktemp("controls")
    ids = {"imp": log_run(root / "imp", seed=0, rounds=IMP, ticket_round=2, extra=MODEL)}
    for control in ("reinit", "random_mask"):
        ids[control] = log_run(root / "controls", seed=0, rounds=WORSE, control=control, masks_from="outputs/imp",
                               ticket_round=0, extra=MODEL)  # fmt: skip
        ids[f"{control}_variant"] = log_run(root / "variants", seed=1, rounds=WORSE, control=control, extra=MODEL)
    return root, ids


def test_the_papers_controls_and_the_variants_are_labelled_apart(controls, tmp_path):
    root, ids = controls
    study = collect_offline([root / "imp", root / "controls", root / "variants"])
    assert list(study.series()) == ["winning ticket (IMP)", "random reinit", "random pruning",
                                    "reinit variant (own masks)", "random-pruning variant (own masks)"]  # fmt: skip
    text = summary_text(study)
    assert "The paper's random reinit control at that density: 70.0% (mean of 1)." in text
    assert "The paper's random pruning control at that density: 70.0% (mean of 1)." in text
    assert "The reinit variant (own masks) at that density: 70.0% (mean of 1)." in text
    page = write_html_report(study, tmp_path / "r.html").path.read_text()
    runs = page.split('id="runs"')[1].split("</table>")[0]
    assert runs.count("random reinit") == 1 and runs.count("reinit variant (own masks)") == 1


def test_a_variant_only_study_says_what_its_runs_are(controls):
    study = collect_offline(controls[0] / "variants")
    text = summary_text(study)
    assert "None of these runs is IMP with rewinding (1 reinit variant (own masks), 1 random-pruning variant (own " \
           "masks)), so there is no winning ticket to compare them with" in text  # fmt: skip
    assert "No IMP run has finished" not in text
    assert default_title(study) == (
        "Lottery tickets: reinit variant (own masks), random-pruning variant (own masks), LeNet300100 on digits"
    )


def test_a_controls_dense_round_is_not_a_winning_ticket(controls, tmp_path):
    root, ids = controls
    study = collect_offline([root / "imp", root / "controls"])
    assert default_title(study) == "Lottery tickets: IMP and the paper's controls, LeNet300100 on digits"
    page = write_html_report(study, tmp_path / "r.html").path.read_text()
    assert f"<title>{default_title(study).replace(chr(39), '&#x27;')}</title>" in page
    rows = {_cells(row)[0]: _cells(row) for row in page.split('id="runs"')[1].split("</table>")[0].split("<tr")[2:]}
    # run, group, variant, seed, status, rounds, winning round, weights left, test acc, dense test acc, ticket
    assert rows[ids["imp"]][6:8] == ["2", "25.0%"]
    for control in ("reinit", "random_mask"):
        assert rows[ids[control]][6:9] == ["— (control)", "", ""]
        assert f"ticket-{ids[control]}:winning" not in page.split("<h2>Winning tickets</h2>")[1].split("</table>")[0]
        rounds = page.split(f'id="rounds-{ids[control]}"')[1].split("</table>")[0]
        assert "★ winning" not in rounds
    tickets = page.split("<h2>Winning tickets</h2>")[1].split("</table>")[0]
    assert f"ticket-{ids['imp']}:winning ★ best" in tickets and tickets.count("<tr") == 2
    # The settings every run shares are folded away; what differs comes first.
    config = page.split("<h2>Configuration</h2>")[1]
    assert config.index("Different between runs") < config.index("<details><summary>The ")
    assert re.search(r'<details><summary>The \d+ settings of every run</summary>\n<table id="config">', config)


def test_figures_name_coinciding_curves_and_undertrained_runs(controls):
    study = collect_offline([controls[0] / "imp", controls[0] / "controls"])
    figures = make_figures(study)
    # Every run trains the same epochs per round: three curves on top of each other, named; a linear axis.
    compute = figures["compute"]
    assert compute.notes["coincide"] == (
        "On top of each other (the same values): winning ticket (IMP) = random reinit = random pruning"
    )
    ax = compute.axes[0]
    assert ax.get_yscale() == "linear"
    markers = {line.get_gid(): (line.get_marker(), line.get_linestyle()) for line in ax.lines}
    assert len(set(markers.values())) == 3  # each curve its own marker and line: all three show
    # Every round's best validation loss is its last validation (step 7 of 10, the last point): undertrained.
    assert (
        "The best val/loss of every round came at the round's last validation: the runs are undertrained"
        in (figures["early_stop"].notes["undertrained"])
    )
    assert "undertrained" not in figures["accuracy"].__dict__.get("notes", {})


def _round(r: int, density: float, stop: int) -> Round:
    return Round(r, density, 10 * r, 10 * r + 10, 10 * r + stop, 0.5, 0.9, 0.9)


def test_a_log_compute_axis_reads_in_plain_numbers_and_trained_runs_get_no_note():
    rounds = [_round(r, 0.8**r, stop=4) for r in range(12)]  # 1 to 12 epochs: more than a factor of 10
    curve = [(10 * r + step, {"val/loss": 0.5}) for r in range(12) for step in (4, 8)]  # the best (4) is not the last
    run = RunRounds("r", config={"pruning": {"epochs_per_round": 1, "rounds": 11}}, rounds=rounds, curve=curve)
    figures = make_figures(Study(runs=[run]))
    ax = figures["compute"].axes[0]
    figure_bytes(figures["compute"], "png")  # lays the ticks out
    low, high = ax.get_ylim()
    labels = [t.get_text() for t in ax.get_yticklabels() if low <= t.get_position()[1] <= high]
    assert ax.get_yscale() == "log" and labels == ["1", "2", "5", "10"]  # not 10⁰ and 10¹
    assert not hasattr(figures["early_stop"], "notes")


def _cells(row: str) -> list[str]:
    return [re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(r"<td[^>]*>(.*?)</td>", row)]
