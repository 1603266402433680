"""lth-train controls=<IMP run folder>: the paper's controls train IMP's own masks, one W&B run per control."""

import json

import pytest
from conftest import lth_train

from lth_wandb.pruning.ticket import Ticket
from lth_wandb.tracking.runfiles import find_runs, read_run


@pytest.fixture(scope="module")
def imp_run(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("imp")
    result = lth_train(cwd, "pruning.rounds=2")
    assert result.returncode == 0, result.stderr[-3000:]
    (folder,) = cwd.glob("outputs/*/*")
    return cwd, folder


@pytest.mark.slow
def test_controls_of_an_imp_run_train_its_own_masks(imp_run):
    cwd, folder = imp_run
    result = lth_train(cwd, f"controls={folder}", tiny=())
    assert result.returncode == 0, result.stderr[-3000:]
    runs = {read_run(p).config["pruning"]["control"]: read_run(p) for p in find_runs(cwd / "wandb")}
    assert set(runs) == {None, "reinit", "random_mask"}
    imp_id = runs[None].run_id
    assert {runs[c].group for c in ("reinit", "random_mask")} == {f"controls-of-{imp_id}"}
    for control in ("reinit", "random_mask"):
        config = runs[control].config
        assert config["pruning"]["masks_from"] == str(folder.resolve()) and config["pruning"]["rounds"] == 2
        rows = [r for r in runs[control].history if "round/density" in r]
        imp_rows = [r for r in runs[None].history if "round/density" in r]
        assert [r["round/density"] for r in rows] == [r["round/density"] for r in imp_rows]  # IMP's densities
    for number in (1, 2):
        imp_masks = Ticket.load(folder / "tickets" / f"round-{number}" / "ticket").masks
        by_control = {}
        for job in cwd.glob("multirun/*/*/*"):
            if (job / "tickets").is_dir():
                control = read_config_control(job)
                by_control[control] = Ticket.load(job / "tickets" / f"round-{number}" / "ticket").masks
        for name, mask in imp_masks.items():
            assert by_control["reinit"][name].equal(mask)  # IMP's own mask
            assert by_control["random_mask"][name].sum() == mask.sum()  # IMP's per-layer density...
            assert not by_control["random_mask"][name].equal(mask)  # ...at random positions


def read_config_control(job):
    return json.loads((job / "run.json").read_text())["config"]["pruning"]["control"]


@pytest.mark.parametrize(
    ("target", "message"),
    [("nowhere", "not an lth-train run folder (no run.json)"), ("control", "controls need a finished IMP run")],
)
def test_controls_need_a_finished_imp_run(imp_run, tmp_path, target, message):
    cwd, folder = imp_run
    if target == "control":
        control = tmp_path / "control"
        control.mkdir()
        record = json.loads((folder / "run.json").read_text())
        record["config"]["pruning"]["control"] = "reinit"
        (control / "run.json").write_text(json.dumps(record))
        target = str(control)
    result = lth_train(cwd, f"controls={target}", tiny=())
    assert result.returncode == 2 and message in result.stderr, result.stderr[-2000:]


@pytest.mark.slow
def test_controls_of_a_run_analysed_for_instability_leave_the_analysis_out(tmp_path):
    """The IMP run's instability=lmc is not inherited: the reinit control refuses it, which stopped the multirun
    before either control trained. Controls are about masks; both train."""
    imp = lth_train(tmp_path, "pruning.rounds=1", "instability=lmc", "instability.steps=[0]")
    assert imp.returncode == 0, imp.stderr[-3000:]
    (folder,) = tmp_path.glob("outputs/*/*")
    result = lth_train(tmp_path, f"controls={folder}", tiny=())
    assert result.returncode == 0, result.stderr[-3000:]
    runs = {read_run(p).config["pruning"]["control"]: read_run(p) for p in find_runs(tmp_path / "wandb")}
    assert set(runs) == {None, "reinit", "random_mask"}
    assert [runs[c].config["instability"]["enabled"] for c in (None, "reinit", "random_mask")] == [True, False, False]
    assert all(runs[c].state == "finished" for c in runs)
