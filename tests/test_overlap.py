"""Mask overlap: the IoU and churn maths on masks small enough to count by hand, the per-round keys an offline
lth-train run records, and lth-report's overlap table and heatmap for two seeds (checked against the tickets on
disk)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import lth_train

from lth_wandb.analysis import overlap
from lth_wandb.pruning.ticket import Ticket
from lth_wandb.report import cli
from lth_wandb.report.data import Round, RunRounds, Study
from lth_wandb.report.overlap import cells, pair_rows, study_overlap
from lth_wandb.tracking.runfiles import find_runs, read_run


def masks(**tensors) -> dict[str, torch.Tensor]:
    return {name: torch.tensor(values, dtype=torch.bool) for name, values in tensors.items()}


def close(matrix: torch.Tensor, expected: list[list[float]]) -> bool:
    return matrix.shape == (len(expected), len(expected[0])) and torch.allclose(matrix, torch.tensor(expected).double())


# ------------------------------------------------------------------------------------------------------------
# The maths


def test_nested_masks_iou_is_the_density_ratio_and_churn_zero():
    before = masks(a=[[1, 1], [1, 0]], b=[1, 1, 1, 1])  # 3 + 4 kept
    after = masks(a=[[1, 0], [0, 0]], b=[1, 1, 0, 0])  # 1 + 2 kept, inside `before`
    assert overlap.counts(before, after) == {"a": (1, 3, 1), "b": (2, 4, 2)}
    assert overlap.iou(before, after) == pytest.approx(3 / 7)  # = 3 kept / 7 kept: the density ratio
    assert overlap.layer_iou(before, after) == pytest.approx({"a": 1 / 3, "b": 2 / 4})
    assert overlap.churn(before, after) == 0.0 and overlap.layer_churn(before, after) == {"a": 0.0, "b": 0.0}
    assert overlap.iou(after, before) == overlap.iou(before, after)  # symmetric
    assert overlap.iou(before, before) == 1.0 and overlap.churn(before, before) == 0.0


def test_non_nested_masks():
    a = masks(w=[1, 1, 1, 1, 0, 0, 0, 0])
    b = masks(w=[0, 0, 1, 1, 1, 1, 0, 0])  # same density, half moved
    assert overlap.iou(a, b) == pytest.approx(2 / 6)
    assert overlap.churn(a, b) == pytest.approx(0.5)  # 2 of the 4 kept positions are new
    c = masks(w=[0, 0, 0, 1, 1, 0, 0, 0])  # sparser, one of its two kept positions was pruned in `a`
    assert overlap.iou(a, c) == pytest.approx(1 / 5) and overlap.churn(a, c) == pytest.approx(0.5)
    disjoint = masks(w=[0, 0, 0, 0, 1, 1, 0, 0])
    assert overlap.iou(a, disjoint) == 0.0 and overlap.churn(a, disjoint) == 1.0
    # Two tensors together: counts add up before dividing (not a mean of the per-tensor values).
    two_a, two_b = masks(x=[1, 1, 0, 0], y=[1, 0]), masks(x=[0, 1, 1, 0], y=[1, 0])
    assert overlap.iou(two_a, two_b) == pytest.approx(2 / 4)  # both 1+1, union 3+1
    assert overlap.layer_iou(two_a, two_b) == pytest.approx({"x": 1 / 3, "y": 1.0})
    assert overlap.layer_churn(two_a, two_b) == pytest.approx({"x": 0.5, "y": 0.0})


def test_empty_masks():
    empty, full = masks(w=[0, 0, 0]), masks(w=[1, 1, 1])
    assert overlap.iou(empty, empty) == 1.0 and overlap.churn(empty, empty) == 0.0  # identical
    # A layer pruned away keeps nothing the other mask pruned: nested, so no churn (but no overlap either).
    assert overlap.iou(empty, full) == 0.0 and overlap.churn(full, empty) == 0.0


def test_chance_iou_is_what_independent_random_masks_share():
    assert overlap.chance_iou(0.5, 0.5) == pytest.approx(1 / 3)
    assert overlap.chance_iou(1.0, 0.2) == pytest.approx(0.2) and overlap.chance_iou(0.0, 0.0) == 1.0
    g = torch.Generator().manual_seed(0)
    a = {"w": torch.rand(200_000, generator=g) < 0.2}
    b = {"w": torch.rand(200_000, generator=g) < 0.3}
    assert overlap.iou(a, b) == pytest.approx(overlap.chance_iou(0.2, 0.3), abs=0.003)
    assert overlap.churn(a, b) == pytest.approx(1 - 0.3, abs=0.005)  # about 1 - the denser mask's density


def test_overlap_matrix():
    a, b, c = masks(w=[1, 1, 0, 0]), masks(w=[1, 0, 1, 0]), masks(w=[1, 1, 1, 0])
    other = masks(v=[1, 1, 0, 0])  # another network: no shared positions to compare
    iou = overlap.overlap_matrix([a, b, c, other])
    assert iou.dtype == torch.float64 and torch.equal(iou[:3, :3], iou[:3, :3].T)
    assert close(iou[:3, :3], [[1, 1 / 3, 2 / 3], [1 / 3, 1, 2 / 3], [2 / 3, 2 / 3, 1]])
    assert all(math.isnan(iou[3, j]) for j in range(3)) and iou[3, 3] == 1.0
    churn = overlap.overlap_matrix([a, b, c], "churn")
    assert close(churn, [[0, 0.5, 0], [0.5, 0, 0], [0, 0, 0]])
    assert overlap.overlap_matrix([]).shape == (0, 0)


def test_mistakes_are_named():
    with pytest.raises(ValueError, match=r"prune different tensors: only in the first \['a'\], only in the second"):
        overlap.iou(masks(a=[1]), masks(b=[1]))
    with pytest.raises(ValueError, match=r"'w' has shape \(2,\) in the first masks but \(3,\) in the second"):
        overlap.churn(masks(w=[1, 0]), masks(w=[1, 0, 0]))
    with pytest.raises(ValueError, match=r"measure='dice' is not one of \['churn', 'iou'\]"):
        overlap.overlap_matrix([], "dice")
    with pytest.raises(ValueError, match=r"density_b=1.5 must be a fraction of weights kept, in \[0, 1\]"):
        overlap.chance_iou(0.5, 1.5)


# ------------------------------------------------------------------------------------------------------------
# Across runs, from tickets on disk (hand-made, so every number is known)


def _run(tmp: Path, name: str, rounds: dict[int, tuple[float, dict]], **pruning) -> RunRounds:
    for r, (_, mask) in rounds.items():
        Ticket(masks(**mask), None).save(tmp / name / "tickets" / f"round-{r}" / "ticket")
    made = [Round(r, d, None, None, None, None, None, None) for r, (d, _) in rounds.items()]
    config = {"seed": pruning.pop("seed", 0), "pruning": {"rewind": "init", **pruning}}
    return RunRounds(run_id=name, config=config, rounds=made, output_dir=str(tmp / name))


def test_study_overlap_pairs_runs_at_equal_density(tmp_path):
    dense = (1.0, {"w": [1] * 8})
    imp0 = _run(tmp_path, "imp0", {0: dense, 1: (0.5, {"w": [1, 1, 1, 1, 0, 0, 0, 0]})})
    imp1 = _run(tmp_path, "imp1", {0: dense, 1: (0.5, {"w": [0, 0, 1, 1, 1, 1, 0, 0]})}, seed=1)
    # Pruning after every epoch, no rewinding: its round 2 stands for 50% (within 15%), round 1 for nothing.
    every_epoch = {0: dense, 1: (0.75, {"w": [1, 1, 1, 1, 1, 1, 0, 0]}), 2: (0.5, {"w": [1, 1, 1, 1, 0, 0, 0, 0]})}
    cont = _run(tmp_path, "cont", every_epoch, rewind="none", epochs_per_round=1)
    lost = RunRounds(run_id="lost", rounds=[Round(1, 0.5, None, None, None, None, None, None)])
    study = Study(runs=[imp0, imp1, cont, lost])

    result = study_overlap(study)
    (level,) = result.levels  # 75% has one ticket only; dense is left out
    assert [(m.run.run_id, m.round.round) for m in level.members] == [("imp0", 1), ("imp1", 1), ("cont", 2)]
    assert close(level.iou, [[1, 1 / 3, 1], [1 / 3, 1, 1 / 3], [1, 1 / 3, 1]])
    assert result.missing == [("lost", "no output folder found (run.json)")]
    rows = {(row.a, row.b, row.same_seed): row for row in pair_rows(result, list(study.series()))}
    imp, no_rewind = "winning ticket (IMP) (rewind=init)", "no rewinding (rewind=none)"
    # Pairs of runs with the same seed apart from the others: their IoU is not averaged with different seeds'.
    assert list(rows) == [(imp, imp, False), (imp, no_rewind, True), (imp, no_rewind, False)]
    seeds = rows[(imp, imp, False)]
    assert seeds.iou == pytest.approx([1 / 3]) and seeds.chance == pytest.approx([1 / 3])
    assert rows[(imp, no_rewind, True)].iou == pytest.approx([1.0]) and rows[(imp, no_rewind, True)].churn == [0.0]
    assert rows[(imp, no_rewind, False)].iou == pytest.approx([1 / 3])  # seed 0 found the same mask, seed 1 not
    assert rows[(imp, no_rewind, False)].churn == pytest.approx([0.5])
    assert cells(rows[(imp, no_rewind, True)])[:3] == [imp, no_rewind, "same"]

    # --at picks the levels; a ticket folder that is broken is named, not fatal.
    (tmp_path / "imp1" / "tickets" / "round-1" / "ticket" / "ticket.json").write_text("{")
    result = study_overlap(study, at=[1.0, 0.5])
    assert [m.run.run_id for m in result.levels[0].members] == ["imp0", "cont"]
    assert ("imp1", "round 1") in [(label, why.split(":")[0]) for label, why in result.missing]


# ------------------------------------------------------------------------------------------------------------
# Real runs: two seeds of a tiny lth-train, offline


@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory) -> Path:
    """A Hydra multirun of lth-train with seeds 0 and 1, three rounds each (100%, ~50%, ~25% of the weights)."""
    cwd = tmp_path_factory.mktemp("seeds")
    done = lth_train(cwd, "-m", "pruning.rounds=2", "seed=0,1")
    assert done.returncode == 0, done.stderr[-3000:]
    return cwd


def test_rounds_record_mask_overlap_with_the_previous_round(two_seeds):
    run = read_run(find_runs(two_seeds / "wandb")[0])
    rows = [row for row in run.history if "round/density" in row]
    assert [row["round"] for row in rows] == [0, 1, 2]
    assert not any(k.startswith(("round/mask_iou_prev", "round/mask_churn", "round/churn/")) for k in rows[0])
    layers = [k[len("round/density/") :] for k in rows[0] if k.startswith("round/density/")]
    assert len(layers) == 3
    for before, row in zip(rows, rows[1:], strict=False):
        # IMP's masks nest: the IoU is the density ratio and nothing comes back.
        assert row["round/mask_iou_prev"] == pytest.approx(row["round/density"] / before["round/density"])
        assert row["round/mask_churn"] == 0 and all(row[f"round/churn/{name}"] == 0 for name in layers)
    on_round_axis = {m.get("name"): m.get("step_metric") for m in run.metrics}
    assert on_round_axis["round/mask_iou_prev"] == "round" and on_round_axis[f"round/churn/{layers[0]}"] == "round"


AT_INIT = Path(__file__).resolve().parents[1] / "conf" / "pruning" / "magnitude_init.yaml"


@pytest.mark.skipif(not AT_INIT.is_file(), reason="needs the at-init criteria (conf/pruning/magnitude_init.yaml)")
def test_masks_drawn_afresh_each_round_churn(tmp_path):
    """Random pruning of an at-init criterion draws every round's positions from the full network: not nested."""
    done = lth_train(tmp_path, "pruning=magnitude_init", "pruning.control=random_mask", "pruning.rounds=2")
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [row for row in read_run(find_runs(tmp_path / "wandb")[0]).history if "round/density" in row]
    (folder,) = [p.parent for p in (tmp_path / "outputs").rglob("run.json")]
    before, after = (Ticket.load(folder / "tickets" / f"round-{r}" / "ticket").masks for r in (1, 2))
    assert rows[2]["round/mask_iou_prev"] == pytest.approx(overlap.iou(before, after))
    assert rows[2]["round/mask_iou_prev"] < rows[2]["round/density"] / rows[1]["round/density"] - 0.05
    assert (
        rows[2]["round/mask_churn"] == pytest.approx(overlap.churn(before, after)) and rows[2]["round/mask_churn"] > 0.1
    )
    for name, value in overlap.layer_churn(before, after).items():
        assert rows[2][f"round/churn/{name}"] == pytest.approx(value)


def test_report_compares_the_tickets_of_two_seeds(two_seeds, tmp_path, capsys):
    html, md = tmp_path / "r.html", tmp_path / "results.md"
    assert cli.main(["--offline", str(two_seeds), "--html", str(html), "--markdown", str(md), "--at", "50,25"]) == 0
    folders = sorted(p.parent for p in (two_seeds / "multirun").rglob("run.json"))
    assert len(folders) == 2

    def ticket(folder: Path, r: int) -> dict[str, torch.Tensor]:
        return Ticket.load(folder / "tickets" / f"round-{r}" / "ticket").masks

    text = md.read_text()
    table = text[text.index(cli.OVERLAP_TITLE) :].splitlines()[2:]
    head = "| tickets | vs | seeds | weights left | pairs | mask IoU (mean ± std) | chance IoU | churn |"
    assert table[0].startswith(head)
    rows = [line.strip("| ").split(" | ") for line in table[2:]]
    assert [row[:3] + row[4:5] for row in rows] == [["winning ticket (IMP)", "(its other seeds)", "different", "1"]] * 2
    for row, r in zip(rows, (1, 2), strict=True):
        a, b = ticket(folders[0], r), ticket(folders[1], r)
        expected = overlap.iou(a, b)
        assert 0 < expected < 1  # two seeds find different masks
        assert row[5] == f"{expected:.3f} ± 0.000" and row[7] == f"{overlap.churn(a, b):.3f}"
        kept = Ticket.load(folders[0] / "tickets" / f"round-{r}" / "ticket").density()
        assert row[3] == f"{kept:.1%}" and row[6] == f"{overlap.chance_iou(kept, kept):.3f}"

    page = html.read_text()
    assert 'id="overlap"' in page and 'id="fig-overlap"' in page
    png = tmp_path / "r-figures" / "overlap.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (tmp_path / "r-figures" / "overlap.svg").is_file()
    assert page.count("mask IoU vs previous") == 2  # each run's rounds table shows it


def test_heatmap_holds_the_pairwise_iou(two_seeds, tmp_path):
    from lth_wandb.report.html import write_html_report
    from lth_wandb.report.sources import collect_offline

    study = collect_offline(two_seeds)
    for run in study.runs:  # the per-round keys, read into the report's rounds
        first, second = run.rounds[:2]
        assert first.mask_iou_prev is None and second.mask_iou_prev == pytest.approx(second.density / first.density)
        assert second.mask_churn == 0.0 and Path(run.output_dir, "run.json").is_file()
    report = write_html_report(study, tmp_path / "r.html", at=[0.25])
    (level,) = report.overlap.levels
    (image,) = [im for ax in report.figures["overlap"].axes for im in ax.images if im.get_gid() == "overlap:0"]
    values = np.ma.filled(image.get_array(), np.nan)
    assert values.shape == (2, 2) and np.isnan(values[0, 0]) and np.isnan(values[1, 1])  # a ticket vs itself: blank
    assert values[0, 1] == values[1, 0] == pytest.approx(float(level.iou[0, 1])) and values[0, 1] < 1
    assert image.get_clim() == (0.0, pytest.approx(math.ceil(values[0, 1] * 10) / 10))  # colours span the others


def test_wandb_report_carries_the_overlap_table(two_seeds):
    from lth_wandb.report.sources import collect_offline
    from lth_wandb.report.wandb_report import build_report, describe, report_spec

    report = build_report("team", "lth", study=collect_offline(two_seeds))
    (block,) = [b for b in report_spec(report)["spec"]["blocks"] if b["type"] == "markdown-block"]
    lines = block["content"].splitlines()
    assert lines[0].startswith("| tickets | vs | seeds | weights left |") and len(lines) == 2 + 2  # 50% and 25%
    assert all(line.startswith("| winning ticket (IMP) | (its other seeds) |") for line in lines[2:])
    assert "markdown: | tickets | vs" in describe(report)
