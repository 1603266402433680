"""Instability analysis (linear mode connectivity): the maths, the step captures, the branch start, and lth-train's
``instability`` section end to end (instability.json and the offline W&B run)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from conftest import TinyNet, lth_train, trainer
from omegaconf import OmegaConf
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lth_wandb.analysis import instability as lmc
from lth_wandb.app import instability as app
from lth_wandb.app.config import Config
from lth_wandb.lottery.callback import LotteryTicket
from lth_wandb.lottery.instability import StartFrom, StepCapture, error_on
from lth_wandb.tracking.runfiles import find_runs, read_run

# -- the maths ----------------------------------------------------------------------------------------------------


def test_alphas_are_evenly_spaced_with_exact_ends():
    alphas = lmc.alphas(30)
    assert len(alphas) == 30 and alphas[0] == 0.0 and alphas[-1] == 1.0
    assert [b - a for a, b in zip(alphas[:-1], alphas[1:], strict=True)] == pytest.approx([1 / 29] * 29)
    with pytest.raises(ValueError, match=r"points=1 must be an int >= 2 .*the paper uses 30"):
        lmc.alphas(1)


def test_interpolation_ends_are_exact_and_masked_entries_stay_zero():
    g = torch.Generator().manual_seed(0)
    mask = torch.rand(6, 5, generator=g) > 0.5
    a = {"w": torch.randn(6, 5, generator=g) * mask, "b": torch.randn(5, generator=g), "n": torch.tensor(3)}
    b = {"w": torch.randn(6, 5, generator=g) * mask, "b": torch.randn(5, generator=g), "n": torch.tensor(7)}
    start, end = lmc.interpolate(a, b, 0.0), lmc.interpolate(a, b, 1.0)
    assert all(torch.equal(start[k], a[k]) and torch.equal(end[k], b[k]) for k in a)
    assert start["w"].data_ptr() != a["w"].data_ptr()  # new tensors, not the ends themselves
    for alpha in lmc.alphas(30):
        assert not lmc.interpolate(a, b, alpha)["w"][~mask].any()
    mid = lmc.interpolate(a, b, 0.5)
    assert torch.allclose(mid["w"], (a["w"] + b["w"]) / 2) and torch.allclose(mid["b"], (a["b"] + b["b"]) / 2)
    assert lmc.interpolate(a, b, 0.25)["n"] == 3 and lmc.interpolate(a, b, 0.75)["n"] == 7  # nearer end's
    torch.testing.assert_close(lmc.interpolate(a, b, 0.3)["b"], 0.7 * a["b"] + 0.3 * b["b"])


def test_interpolation_refuses_different_networks_and_alphas_off_the_segment():
    a = {"w": torch.zeros(3)}
    with pytest.raises(ValueError, match=r"differ in names: only in the first \[\], only in the second \['v'\]"):
        lmc.interpolate(a, {"w": torch.zeros(3), "v": torch.zeros(1)}, 0.5)
    with pytest.raises(ValueError, match=r"w: \(3,\) torch.float32 against \(4,\).*Hint: interpolate two copies"):
        lmc.interpolate(a, {"w": torch.zeros(4)}, 0.5)
    with pytest.raises(ValueError, match=r"alpha=1.5 must be a number in \[0, 1\]"):
        lmc.interpolate(a, a, 1.5)


def tent(w: float) -> float:
    """A known error along a 1-parameter path from w=0 to w=1: a slope plus a tent peaking at the grid point 10/29."""
    return 0.1 + 0.05 * w + 0.2 * max(0.0, 1 - 5 * abs(w - 10 / 29))


def test_error_path_finds_a_known_barrier():
    path = lmc.error_path({"w": torch.tensor([0.0])}, {"w": torch.tensor([1.0])}, lambda s: tent(float(s["w"])))
    assert len(path.errors) == 30 and path.end_errors == (pytest.approx(0.1), pytest.approx(0.15))
    assert max(path.errors) == pytest.approx(tent(10 / 29))
    # Highest error 0.3 + 0.05 * 10/29, less the ends' mean (0.1 + 0.15) / 2.
    assert path.instability == pytest.approx(0.175 + 0.05 * 10 / 29)
    assert not lmc.is_stable(path.instability)


def test_instability_is_the_highest_error_less_the_mean_of_the_ends():
    assert lmc.instability([0.10, 0.10, 0.10]) == 0.0
    assert lmc.instability([0.10, 0.13, 0.11]) == pytest.approx(0.025)
    # A straight path between unequal ends: its barrier is half their difference (the paper's definition).
    assert lmc.instability([0.10, 0.12, 0.14]) == pytest.approx(0.02)
    with pytest.raises(ValueError, match="at least its two ends"):
        lmc.instability([0.1])
    with pytest.raises(ValueError, match="must all be finite"):
        lmc.instability([0.1, math.nan])


def test_earliest_stable_step_is_where_the_network_stays_stable():
    assert lmc.earliest_stable_step({0: 0.001, 100: 0.0}) == 0
    assert lmc.earliest_stable_step({2000: 0.005, 0: 0.30, 500: 0.03, 100: 0.01}) == 2000  # 100 was a fluke
    assert lmc.earliest_stable_step({0: 0.30, 100: 0.019, 500: 0.0}) == 100
    assert lmc.earliest_stable_step({0: 0.0, 100: 0.02}) is None  # 2 points is not below 2 points
    assert lmc.earliest_stable_step({0: 0.05, 100: 0.03}, threshold=0.04) == 100
    assert lmc.earliest_stable_step({}) is None


# -- capturing round 0 and starting from it -----------------------------------------------------------------------


def data(n: int = 256, batch_size: int = 32) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 20, generator=g)
    return DataLoader(TensorDataset(x, x[:, :3].argmax(1)), batch_size=batch_size)  # not shuffled: 8 steps an epoch


def fitted(max_steps: int, callbacks=()) -> TinyNet:
    pl.seed_everything(0, verbose=False)
    model = TinyNet(lr=0.05)
    trainer(list(callbacks), max_steps=max_steps, limit_val_batches=0).fit(model, data())
    return model


def test_step_capture_holds_exact_copies_of_the_state_after_k_steps():
    capture = StepCapture([5, 0, 3, 5, 100])
    model = fitted(12, [capture])
    assert capture.steps == [0, 3, 5, 100] and sorted(capture.states) == [0, 3, 5] and capture.missing() == [100]
    for k in (0, 3, 5):
        stopped = fitted(k)  # the same run, stopped after k steps
        weights = capture.states[k]["weights"]
        assert all(torch.equal(weights[n], t) for n, t in stopped.state_dict().items())
        # Copies, not views: the live model went on training without touching them.
        assert all(
            w.data_ptr() != t.data_ptr() for w, t in zip(weights.values(), model.state_dict().values(), strict=True)
        )
    assert not torch.equal(capture.states[5]["weights"]["net.0.weight"], model.state_dict()["net.0.weight"])
    assert capture.states[0]["optimizers"][0]["state"] == {}  # no step taken yet
    assert int(capture.states[5]["optimizers"][0]["state"][0]["step"]) == 5

    resumed = StepCapture([3, 5, 7])
    resumed.load_state_dict(capture.state_dict())
    assert sorted(resumed.states) == [3, 5] and resumed.missing() == [7]


def test_step_capture_with_a_lottery_captures_round_0_only():
    lottery = LotteryTicket(rounds=1, epochs_per_round=1, prune_rate=0.5)  # round 0: steps 0..8 (8 batches)
    capture, everything = StepCapture([3, 8, 10], lottery), StepCapture([3, 8, 10])
    pl.seed_everything(0, verbose=False)
    trainer([lottery, capture, everything], limit_val_batches=0).fit(TinyNet(lr=0.05), data())
    assert sorted(capture.states) == [3] and capture.missing() == [8, 10]  # from step 8 on, round 1 trains
    assert sorted(everything.states) == [3, 8, 10]
    pruned = lottery.masks_of(1)["net.0.weight"]
    assert not everything.states[10]["weights"]["net.0.weight"][~pruned].any()  # what a lottery-blind one catches


def test_step_capture_refuses_bad_steps():
    with pytest.raises(ValueError, match=r"steps=\[0, -1\] must be a non-empty list .*Hint: \[0\]"):
        StepCapture([0, -1])
    with pytest.raises(ValueError, match=r"steps=\[\] must be a non-empty list"):
        StepCapture([])


def test_start_from_a_captured_step_continues_the_run_exactly():
    """Weights, Adam's moments and its step count at k = 8 (one epoch), trained 8 more steps on the same data
    order: the uninterrupted 16-step run, bit for bit."""
    capture = StepCapture([8])
    straight = fitted(16, [capture])
    point = capture.states[8]
    branch = fitted(8, [StartFrom(point["weights"], {}, point["optimizers"], point["schedulers"])])
    assert all(torch.equal(branch.state_dict()[n], t) for n, t in straight.state_dict().items())


def test_start_from_keeps_the_mask_through_training():
    capture = StepCapture([4])
    fitted(4, [capture])
    weights = capture.states[4]["weights"]
    mask = torch.rand(weights["net.0.weight"].shape, generator=torch.Generator().manual_seed(1)) > 0.7
    model = fitted(10, [StartFrom(weights, {"net.0.weight": mask}, capture.states[4]["optimizers"])])
    trained = model.net[0].weight.detach()
    assert not trained[~mask].any() and trained[mask].all()
    assert not torch.equal(trained[mask], weights["net.0.weight"][mask])  # it did train
    with pytest.raises(ValueError, match=r"masks name \['nope'\], which the model does not have"):
        fitted(1, [StartFrom(weights, {"nope": mask})])


def test_error_on_counts_misclassified_test_examples():
    model = nn.Linear(3, 3, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.eye(3))
    x = torch.eye(3).repeat(2, 1)  # 6 one-hot inputs, predicted as their own index
    loader = DataLoader(TensorDataset(x, torch.tensor([0, 1, 2, 0, 1, 1])), batch_size=4)
    evaluate = error_on(model, loader)
    assert evaluate(model.state_dict()) == pytest.approx(1 / 6)
    assert evaluate({"weight": torch.eye(3)[[1, 2, 0]]}) == pytest.approx(
        5 / 6
    )  # predicts 2, 0, 1: only the last is right


# -- lth-train's section ------------------------------------------------------------------------------------------


def section(**values) -> OmegaConf:
    cfg = OmegaConf.structured(Config)
    cfg.instability.enabled = True
    for key, value in values.items():
        cfg.instability[key] = value
    return cfg


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"steps": [0, 22]}, r"steps=\[22\] are not before the end of round 0 \(22 optimizer steps\).*\[0, 21\]"),
        ({"rounds": [0, 3]}, r"rounds=\[0, 3\]: this run has rounds 0..2"),
        ({"points": 1}, r"points=1 must be an int >= 2"),
        ({"threshold": 2.0}, r"threshold=2.0 must be an error fraction in \(0, 1\)"),
    ],
)
def test_the_section_is_checked_before_training(values, message):
    with pytest.raises(ValueError, match=message):
        app.capture_for(section(**values), LotteryTicket(rounds=2), 22)


def test_the_section_refuses_the_reinit_control_and_is_off_by_default():
    with pytest.raises(ValueError, match="control=reinit draws fresh values.*Hint: instability.enabled=false"):
        app.capture_for(section(), LotteryTicket(rounds=2, control="reinit"), 22)
    assert app.capture_for(OmegaConf.structured(Config), LotteryTicket(rounds=2), 22) is None
    assert app.capture_for(section(steps=[5, 0]), LotteryTicket(rounds=2), 22).steps == [0, 5]
    assert app.capture_for(section(steps=7), LotteryTicket(rounds=2), 22).steps == [7]  # one step, as sweeps set it
    with pytest.raises(ValueError, match=r"steps=\['7'\] must be a non-empty list"):
        app.capture_for(section(steps="7"), LotteryTicket(rounds=2), 22)
    with pytest.raises(ValueError, match=r"steps=\[0.5\] must be a non-empty list"):
        app.capture_for(section(steps=0.5), LotteryTicket(rounds=2), 22)
    assert app.rounds_to_analyse(None, 2) == [0, 1, 2]


def test_the_papers_protocol_measures_the_runs_own_rewind_step():
    """protocol=paper: the masks at k are those IMP finds rewinding to k, so a run measures k = pruning.rewind."""
    assert app.capture_for(section(), LotteryTicket(rounds=2), 22).steps == [0]  # run protocol, steps unset
    assert app.capture_for(section(protocol="paper"), LotteryTicket(rounds=2, rewind=5), 22).steps == [5]
    assert app.capture_for(section(protocol="paper"), LotteryTicket(rounds=2), 22).steps == [0]  # init: k = 0
    assert app.capture_for(section(protocol="paper", steps=5), LotteryTicket(rounds=2, rewind=5), 22).steps == [5]


@pytest.mark.parametrize(
    ("values", "rewind", "message"),
    [
        ({"protocol": "lmc"}, "init", r"protocol='lmc' is not one of \['run', 'paper'\]\. Hint: 'run' measures"),
        ({"protocol": "paper"}, "lr", r"protocol='paper' analyses the masks IMP finds rewinding to step k, but "
                                      r"pruning.rewind='lr' does not rewind to a step\. Hint"),
        ({"protocol": "paper", "steps": [0, 5]}, 5, r"steps=\[0, 5\] with protocol='paper': a run measures only its "
                                                    r"own rewind step k=5.*Hint: leave instability.steps unset"),
    ],
)  # fmt: skip
def test_the_papers_protocol_is_checked(values, rewind, message):
    with pytest.raises(ValueError, match=message):
        app.capture_for(section(**values), LotteryTicket(rounds=2, rewind=rewind), 22)


def test_the_presets_compose():
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="lth_wandb.conf", version_base="1.3"):
        default = compose(config_name="config").instability
        lmc_preset = compose(config_name="config", overrides=["instability=lmc", "instability.steps=5"]).instability
    assert default.enabled is False and default.points == 30
    assert lmc_preset.enabled is True and lmc_preset.steps == 5 and lmc_preset.threshold == 0.02
    assert lmc_preset.rounds is None


def test_copy_seeds_come_from_the_run_seed():
    assert app.copy_seeds(0) == app.copy_seeds(0)
    assert len({*app.copy_seeds(0), *app.copy_seeds(1)}) == 4
    assert all(0 <= s < 2**32 - 1 for s in app.copy_seeds(2**32 - 1))


def test_lth_train_writes_instability_json_and_logs_it_to_wandb(tmp_path):
    done = lth_train(tmp_path, "pruning.rounds=1", "instability.enabled=true", "instability.steps=[0,5]",
                     "instability.points=7", "hydra.run.dir=run")  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "run" / "instability.json").read_text())
    results = report["results"]
    assert [(r["round"], r["step"]) for r in results] == [(0, 0), (0, 5), (1, 0), (1, 5)]
    assert report["points"] == 7 and report["round_steps"] == 22  # digits: 22 steps an epoch, 1 epoch a round
    assert report["protocol"] == "run"
    assert report["missing_steps"] == []
    for r in results:
        assert r["alphas"] == lmc.alphas(7) and len(r["errors"]) == 7 and all(0 <= e <= 1 for e in r["errors"])
        assert r["instability"] == pytest.approx(max(r["errors"]) - (r["errors"][0] + r["errors"][-1]) / 2)
        assert r["stable"] == (r["instability"] < 0.02) and r["steps_trained"] == 22 - r["step"]
        assert r["seeds"] == list(app.copy_seeds(0))
    assert results[0]["density"] == 1.0 and 0.45 < results[2]["density"] < 0.55
    assert "instability: round 0 (density 1.000), k=0:" in done.stdout

    run = read_run(find_runs(tmp_path / "wandb")[0])
    assert run.exit_code == 0
    rows = [row for row in run.history if "round/instability" in row]
    assert [(row["round"], row["round/instability_step"]) for row in rows] == [(0, 0), (0, 5), (1, 0), (1, 5)]
    assert [row["round/instability"] for row in rows] == pytest.approx([r["instability"] for r in results])
    assert {m["name"]: m.get("step_metric") for m in run.metrics if "name" in m}["round/instability"] == "round"
    paths = next(row for row in run.history if "instability/paths" in row)["instability/paths"]
    assert paths["_type"] == "table-file" and paths["nrows"] == 4 * 7
    for number, step in report["earliest_stable_step"].items():
        assert run.summary[f"instability/round-{number}/earliest_stable_step"] == step


def test_steps_after_an_early_birds_round_0_are_reported_missing(tmp_path):
    """An early bird ends round 0 after 2 of its 3 epochs (44 of 66 steps): step 50 never comes in round 0."""
    early = ("pruning.early_bird=true", "pruning.early_bird_window=2", "pruning.early_bird_threshold=0.95")
    done = lth_train(tmp_path, "pruning.rounds=1", "pruning.epochs_per_round=3", *early, "logger=none",
                     "instability.enabled=true", "instability.steps=[0,50]", "instability.rounds=[1]",
                     "instability.points=3", "hydra.run.dir=run")  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "run" / "instability.json").read_text())
    assert report["missing_steps"] == [50] and report["round_steps"] == 66
    assert [(r["round"], r["step"], r["steps_trained"]) for r in report["results"]] == [(1, 0, 66)]
    assert "round 0 ended before steps [50]: not measured" in done.stdout


@pytest.mark.slow
def test_lth_train_instability_is_reproducible_and_lenet_is_stable_at_initialisation(tmp_path):
    """The demo (LeNet-300-100, digits, 3 epochs a round): the paper's anchor, LeNet stable at k = 0, in every
    round; the same seed gives the same numbers, another seed other ones."""
    args = ("pruning.rounds=2", "instability=lmc", "instability.steps=[0,20]")
    reports = []
    for seed, folder in ((0, "a"), (0, "b"), (1, "c")):
        done = lth_train(
            tmp_path, *args, f"seed={seed}", f"hydra.run.dir={folder}", tiny=("trainer.enable_progress_bar=false",)
        )
        assert done.returncode == 0, done.stderr
        report = json.loads(Path(tmp_path / folder / "instability.json").read_text())
        reports.append([(r["round"], r["step"], r["errors"], r["instability"]) for r in report["results"]])
        assert report["earliest_stable_step"] == {"0": 0, "1": 0, "2": 0}
    assert reports[0] == reports[1] and reports[0] != reports[2]
