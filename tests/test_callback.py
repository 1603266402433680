"""LotteryTicket in a real Trainer: rounds, rewinding, optimizer resets, masks, controls, tickets."""

import contextlib
import copy
import math

import pytest
import pytorch_lightning as pl
import torch
from conftest import TinyNet, loaders, trainer

from lth_wandb import LotteryTicket, Ticket
from lth_wandb.lottery import guards
from lth_wandb.lottery.history import winning_round

# LotteryTicket's note when late rewinding lands inside an epoch (the tests below do so on purpose).
PART_EPOCH = r"is not a whole number of epochs"


class Probe(pl.Callback):
    """Records, at the start of every epoch (after LotteryTicket has rewound), the weights, optimizer and LR."""

    def __init__(self):
        self.starts, self.after_step = {}, {}

    def on_train_epoch_start(self, trainer, pl_module):
        opt = trainer.optimizers[0]
        self.starts[trainer.current_epoch] = {
            "weights": copy.deepcopy(pl_module.state_dict()),
            "opt_state_len": len(opt.state),
            "lr": opt.param_groups[0]["lr"],
        }

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.after_step[trainer.global_step] = copy.deepcopy(pl_module.state_dict())


def fit(cb, model=None, **trainer_kwargs):
    pl.seed_everything(0, verbose=False)
    model = model or TinyNet()
    probe = Probe()
    train, val = loaders()
    trainer([cb, probe], **trainer_kwargs).fit(model, train, val)
    return model, probe


WEIGHTS = ["net.0.weight", "net.2.weight", "net.4.weight"]


def test_imp_rounds_densities_and_history():
    cb = LotteryTicket(rounds=3, epochs_per_round=2, prune_rate=0.2)
    model, _ = fit(cb)
    assert [h["round"] for h in cb.history] == [0, 1, 2, 3]
    for h in cb.history:
        for name in WEIGHTS:
            assert h["layer_density"][name] == pytest.approx(0.8 ** h["round"], abs=0.02)
        assert h["best_value"] == pytest.approx(h["metrics"]["val/loss"])
        assert h["best_step"] % 8 == 0 and 0 < h["best_step"] <= h["end_step"]
        # The paper's early-stopping iteration counts from the round's start: each round here is 16 steps.
        assert h["start_step"] == 16 * h["round"] and 0 < h["early_stop_iteration"] <= 16
        assert h["early_stop_iteration"] == h["best_step"] - h["start_step"]
        assert "val/acc" in h["metrics"]
    assert cb.density() == pytest.approx(0.8**3, abs=0.01)
    assert list(cb.masks) == WEIGHTS  # biases are not pruned by default
    params = dict(model.named_parameters())
    for name in WEIGHTS:
        assert torch.all(params[name][~cb.masks[name]] == 0)
    assert cb.history[-1]["end_epoch"] == 8


def test_rewind_init_copies_theta0_every_round_no_aliasing():
    cb = LotteryTicket(rounds=3, epochs_per_round=1, prune_rate=0.3)
    _, probe = fit(cb, TinyNet(scheduler=True))
    theta0 = probe.starts[0]["weights"]
    for epoch in (1, 2, 3):  # rounds >= 2 catch a rewind copy that drifted with training
        start = probe.starts[epoch]
        mask = cb.ticket(epoch).masks
        for name, value in start["weights"].items():
            expected = theta0[name] * mask[name] if name in mask else theta0[name]
            assert torch.equal(value, expected), (epoch, name)
        assert start["opt_state_len"] == 0  # fresh Adam moments
        assert start["lr"] == pytest.approx(1e-2)  # the StepLR schedule starts again


def test_late_rewind_restores_step_k_weights_optimizer_and_schedule():
    k = 5
    cb = LotteryTicket(rounds=2, epochs_per_round=2, prune_rate=0.3, rewind=k)
    with pytest.warns(UserWarning, match=PART_EPOCH):
        model, probe = fit(cb, TinyNet(scheduler=True))
    at_k = probe.after_step[k]
    for epoch in (2, 4):
        mask = cb.ticket(epoch // 2).masks
        for name, value in probe.starts[epoch]["weights"].items():
            expected = at_k[name] * mask[name] if name in mask else at_k[name]
            assert torch.equal(value, expected), (epoch, name)
        assert probe.starts[epoch]["opt_state_len"] > 0  # Adam moments as after k steps, not fresh
        assert probe.starts[epoch]["lr"] == pytest.approx(1e-2)  # k=5 is inside epoch 0: lr not decayed yet
    assert cb._states.point["step"] == k
    # The optimizer state at the rewind point is step k's, and restoring it never shared storage.
    saved = cb._states.point["optimizers"][0]["state"][0]["step"]
    assert int(saved) == k


class CosineNet(TinyNet):
    """SGD with a cosine over one round of ``epochs`` epochs, stepped per epoch (as lth-train's Classifier)."""

    def __init__(self, epochs: int):
        super().__init__(optimizer="sgd", lr=0.1)
        self.epochs = epochs

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)
        return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.epochs)}


def test_late_rewound_rounds_train_from_step_k_to_round_0s_end():
    """Frankle et al. 2019, Alg. 2: train m*W_k from iteration k to T. With 8 steps per epoch, rewinding to step
    12 (inside epoch 1) makes each later round one epoch shorter, so its per-epoch cosine ends where round 0's
    ended instead of climbing back up for the extra epochs. Rounds in epochs end at epoch ends, so each rewound
    round trains 12 % 8 = 4 steps more than T - k, and the callback says so."""
    cb = LotteryTicket(rounds=2, epochs_per_round=3, prune_rate=0.3, rewind=12)
    with pytest.warns(
        UserWarning, match=r"rewind=12 is not a whole number of epochs .* 4 steps more .*steps_per_round=24"
    ):
        _, probe = fit(cb, CosineNet(epochs=3))
    lrs = [probe.starts[e]["lr"] for e in sorted(probe.starts)]
    assert len(lrs) == cb.total_epochs == 3 + 2 * 2
    round0 = lrs[:3]
    assert lrs[3:5] == pytest.approx(round0[1:]) and lrs[5:7] == pytest.approx(round0[1:])
    assert [h["end_epoch"] for h in cb.history] == [3, 5, 7]
    assert [h["end_step"] - h["start_step"] for h in cb.history] == [24, 16, 16]


def test_a_step_schedule_under_epoch_rounds_needs_a_rewind_step_at_an_epoch_start():
    """The issue's case: T = 8 steps, k = 6, a cosine stepped every step. Rounds in epochs would train 8 steps from
    step 6 and end at schedule step 14 of 8 (lr rising again); refused, with the exact alternative."""
    with pytest.raises(
        ValueError,
        match=r"rewind=6 is not a whole number of epochs \(8 optimizer steps each\).*"
        r"6 steps past.*steps_per_round=8: rewound rounds then train exactly 2 steps",
    ):
        fit(LotteryTicket(rounds=1, epochs_per_round=1, rewind=6), StepCosineNet(steps=8))
    cb = LotteryTicket(rounds=2, steps_per_round=8, rewind=6)
    fit(cb, StepCosineNet(steps=8))
    assert [h["end_step"] - h["start_step"] for h in cb.history] == [8, 2, 2]


class EpochStepLRNet(TinyNet):
    """SGD with the learning rate halved at every epoch end (StepLR, Lightning's default "epoch" interval)."""

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=0.1)
        return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)}


def test_rounds_in_steps_refuse_an_epoch_schedule_that_rounds_would_cut_at_other_points():
    """The IMP reference check's case: T = 8 steps, k = 6, StepLR per epoch of 4 steps. Round 0 ends after 2 epoch
    steps of the schedule, the rewound rounds (2 steps each, starting mid-epoch) after 1, 2, 1: refused. With whole
    epochs (k = 4) every round ends where round 0 ended."""
    with pytest.raises(
        ValueError,
        match=r"steps_per_round=8 with rewind=6 and an epoch-interval LR schedule \(4 optimizer steps an epoch\).*"
        r"round 0 at 2, round 1 at 1, round 2 at 2, round 3 at 1\)\. Hint: .*multiples of 4",
    ):
        fit(LotteryTicket(rounds=3, steps_per_round=8, rewind=6), EpochStepLRNet(), limit_train_batches=4)
    cb = LotteryTicket(rounds=2, steps_per_round=8, rewind=4)
    fit(cb, EpochStepLRNet(), limit_train_batches=4)
    assert [h["end_step"] - h["start_step"] for h in cb.history] == [8, 4, 4]
    assert guards.schedule_positions(8, 4, 4, 2) == [2, 2, 2]
    # rewind="none" never restarts the schedule: nothing to refuse.
    fit(LotteryTicket(rounds=1, steps_per_round=6, rewind="none"), EpochStepLRNet(), limit_train_batches=4)


def test_rewind_step_must_leave_something_to_train():
    with pytest.raises(ValueError, match=r"rewind=24 is not inside round 0, which has 24 optimizer steps"):
        fit(LotteryTicket(rounds=1, epochs_per_round=3, rewind=24))


def test_lr_rewind_keeps_weights_and_replays_schedule():
    cb = LotteryTicket(rounds=2, epochs_per_round=2, prune_rate=0.3, rewind="lr")
    _, probe = fit(cb, TinyNet(scheduler=True))
    trained = cb.ticket(0).trained_weights
    mask = cb.ticket(1).masks
    for name, value in probe.starts[2]["weights"].items():
        expected = trained[name] * mask[name] if name in mask else trained[name]
        assert torch.equal(value, expected)
    assert probe.starts[1]["lr"] == pytest.approx(5e-3)
    assert probe.starts[2]["lr"] == pytest.approx(1e-2)
    assert probe.starts[2]["opt_state_len"] == 0


def test_no_rewind_continues_weights_optimizer_and_schedule():
    cb = LotteryTicket(rounds=3, epochs_per_round=1, prune_rate=0.3, rewind="none")
    _, probe = fit(cb, TinyNet(scheduler=True))
    assert [probe.starts[e]["lr"] for e in range(4)] == pytest.approx([1e-2, 5e-3, 2.5e-3, 1.25e-3])
    assert all(probe.starts[e]["opt_state_len"] > 0 for e in (1, 2, 3))
    trained = cb.ticket(1).trained_weights
    for name, value in probe.starts[2]["weights"].items():
        mask = cb.ticket(2).masks
        assert torch.equal(value, trained[name] * mask[name] if name in mask else trained[name])


class ZeroCheck(pl.Callback):
    """Asserts pruned weights are exactly zero in every forward pass."""

    def __init__(self, lt):
        self.lt, self.checked = lt, 0

    def on_fit_start(self, trainer, pl_module):
        def check(module, args):
            params = dict(pl_module.named_parameters())
            for name, mask in self.lt.masks.items():
                assert torch.all(params[name].detach()[~mask] == 0), name
            self.checked += 1

        self.handle = pl_module.register_forward_pre_hook(check)

    def on_fit_end(self, trainer, pl_module):
        self.handle.remove()


@pytest.mark.parametrize(
    ("optimizer", "trainer_kwargs"),
    [
        ("adam", {}),
        ("sgd", {}),
        ("adam", {"accumulate_grad_batches": 3}),
        ("sgd", {"precision": "bf16-mixed"}),
    ],
)
def test_pruned_weights_stay_zero_with_decay_momentum_accumulation_bf16(optimizer, trainer_kwargs):
    cb = LotteryTicket(rounds=2, epochs_per_round=2, prune_rate=0.5, scope="global")
    check = ZeroCheck(cb)
    pl.seed_everything(0, verbose=False)
    train, val = loaders()
    model = TinyNet(optimizer=optimizer, lr=0.05, weight_decay=0.1)
    trainer([cb, check], **trainer_kwargs).fit(model, train, val)
    assert check.checked > 40 and cb.density() == pytest.approx(0.25, abs=0.01)


def test_global_scope_with_output_layer_override():
    cb = LotteryTicket(rounds=2, epochs_per_round=1, prune_rate=0.5, scope="global", layer_rates={"*4.weight": 0.1})
    fit(cb)
    assert cb.history[-1]["layer_density"]["net.4.weight"] == pytest.approx(0.81, abs=0.03)
    assert cb.density() == pytest.approx(0.25, abs=0.03)


@pytest.mark.parametrize(
    ("criterion", "score"),
    [
        ("magnitude", lambda w, w0: w.abs()),
        ("magnitude_increase", lambda w, w0: w.abs() - w0.abs()),
        ("movement", lambda w, w0: (w - w0).abs()),
        ("random", None),
    ],
)
def test_each_criterion_keeps_the_weights_it_scores_highest(criterion, score):
    cb = LotteryTicket(rounds=1, epochs_per_round=1, prune_rate=0.5, criterion=criterion)
    fit(cb)
    assert cb.density() == pytest.approx(0.5, abs=0.01)
    trained, theta0 = cb.ticket(0).trained_weights, cb.ticket(0).rewind_weights
    for name in WEIGHTS:
        kept = cb.masks[name]
        if score is None:  # random: half of each tensor, not the magnitude ranking
            by_magnitude = trained[name].abs() >= trained[name].abs().flatten().kthvalue(kept.numel() // 2).values
            assert not torch.equal(kept, by_magnitude)
            continue
        values = score(trained[name], theta0[name])
        assert values[kept].min() >= values[~kept].max(), name  # every survivor outscores every pruned weight


def test_parameters_glob_selects_biases_too():
    cb = LotteryTicket(rounds=1, epochs_per_round=1, prune_rate=0.5, parameters=["net.0.*"])
    fit(cb)
    assert list(cb.masks) == ["net.0.weight", "net.0.bias"]


def test_reinit_control_same_densities_fresh_weights():
    ticket_cb = LotteryTicket(rounds=2, epochs_per_round=1, prune_rate=0.5)
    fit(ticket_cb)
    cb = LotteryTicket(rounds=2, epochs_per_round=1, prune_rate=0.5, control="reinit")
    _, probe = fit(cb)
    assert cb.density() == pytest.approx(ticket_cb.density())
    theta0 = probe.starts[0]["weights"]["net.0.weight"]
    start = probe.starts[1]["weights"]["net.0.weight"]
    kept = cb.ticket(1).masks["net.0.weight"]
    assert not torch.allclose(start[kept], theta0[kept])
    assert torch.all(start[~kept] == 0)
    # Fresh values come from the layer's own initialiser: same scale as θ0.
    assert start[kept].abs().max() <= 1 / 20**0.5 + 1e-6
    assert probe.starts[1]["weights"]["net.0.bias"].equal(probe.starts[0]["weights"]["net.0.bias"])


def test_random_mask_control_matches_criterion_layer_densities():
    ticket_cb = LotteryTicket(rounds=2, epochs_per_round=1, prune_rate=0.4, scope="global")
    fit(ticket_cb)
    cb = LotteryTicket(rounds=2, epochs_per_round=1, prune_rate=0.4, scope="global", control="random_mask")
    fit(cb)
    for name in WEIGHTS:
        # Same per-layer count as magnitude would choose on this network, at other positions.
        assert cb.history[1]["layer_density"][name] == pytest.approx(
            ticket_cb.history[1]["layer_density"][name], abs=0.08
        )
    assert not torch.equal(cb.masks["net.0.weight"], ticket_cb.masks["net.0.weight"])
    assert cb.density() == pytest.approx(ticket_cb.density(), abs=0.01)


def test_winning_round_is_sparsest_at_least_as_good_as_dense():
    history = [
        {"round": 0, "best_value": 0.50, "density": 1.0},
        {"round": 1, "best_value": 0.45, "density": 0.7},
        {"round": 2, "best_value": 0.60, "density": 0.4},
    ]
    assert winning_round(history, "min", tolerance=0.0) == 1
    assert winning_round(history, "min", tolerance=0.2) == 2
    assert winning_round(history, "max", tolerance=0.0) == 2
    assert winning_round([{"round": 0, "best_value": None, "density": 1.0}], "min", 0.0) is None


def test_ticket_save_load_and_train_it(tmp_path):
    cb = LotteryTicket(rounds=2, epochs_per_round=1, prune_rate=0.5)
    fit(cb)
    ticket = cb.ticket()
    assert ticket.metadata["round"] == 2 and ticket.density() == pytest.approx(0.25, abs=0.01)
    assert ticket.trained_weights is not None
    assert ticket.metadata["settings"]["prune_rate"] == 0.5
    ticket.save(tmp_path / "t")
    again = LotteryTicket(ticket=tmp_path / "t", rounds=0, epochs_per_round=1)
    _, probe = fit(again)
    for name, value in Ticket.load(tmp_path / "t").rewind_weights.items():
        assert torch.equal(probe.starts[0]["weights"][name], value)
    assert again.history[0]["density"] == pytest.approx(ticket.density())
    for name in ticket.masks:
        assert torch.equal(again.masks[name], ticket.masks[name])


def test_ticket_reinit_control_from_ticket():
    cb = LotteryTicket(rounds=1, epochs_per_round=1, prune_rate=0.5)
    fit(cb)
    ticket = cb.ticket()
    control = LotteryTicket(ticket=ticket, rounds=0, epochs_per_round=1, control="reinit")
    _, probe = fit(control)
    w = probe.starts[0]["weights"]["net.0.weight"]
    kept = ticket.masks["net.0.weight"]
    assert torch.all(w[~kept] == 0)
    assert not torch.allclose(w[kept], ticket.rewind_weights["net.0.weight"][kept])


def test_ticket_random_mask_control_takes_theta0_values_at_its_new_positions():
    pl.seed_everything(0, verbose=False)
    theta0 = TinyNet().state_dict()  # fit() builds the same network from the same seed
    cb = LotteryTicket(rounds=1, epochs_per_round=1, prune_rate=0.5)
    fit(cb)
    ticket = cb.ticket()
    control = LotteryTicket(ticket=ticket, rounds=0, epochs_per_round=1, control="random_mask", seed=3)
    pl.seed_everything(0, verbose=False)
    _, probe = fit(control, TinyNet())
    start = probe.starts[0]["weights"]["net.0.weight"]
    mask = control.masks["net.0.weight"]
    assert mask.sum() == ticket.masks["net.0.weight"].sum() and not torch.equal(mask, ticket.masks["net.0.weight"])
    assert torch.equal(start, theta0["net.0.weight"] * mask)  # θ0 at the new positions, not the ticket's zeros


def test_state_dict_roundtrip():
    cb = LotteryTicket(rounds=1, epochs_per_round=1, prune_rate=0.5, rewind=3)
    with pytest.warns(UserWarning, match=PART_EPOCH):
        fit(cb)
    other = LotteryTicket(rounds=1, epochs_per_round=1, prune_rate=0.5, rewind=3)
    other.load_state_dict(cb.state_dict())
    assert other.round == 1 and other.history == cb.history
    assert torch.equal(other.masks["net.0.weight"], cb.masks["net.0.weight"])
    assert torch.equal(other.ticket(0).rewind_weights["net.0.weight"], cb.ticket(0).rewind_weights["net.0.weight"])
    # The rewind point: its step, weights and the optimizer state to restore with them.
    ours, theirs = other._states.point, cb._states.point
    assert ours["step"] == theirs["step"] == 3
    for name, value in theirs["weights"].items():
        assert torch.equal(ours["weights"][name], value), name
    for index, state in theirs["optimizers"][0]["state"].items():
        for key, value in state.items():
            assert torch.equal(torch.as_tensor(ours["optimizers"][0]["state"][index][key]), torch.as_tensor(value))
    assert ours["schedulers"] == theirs["schedulers"]


def test_random_mask_control_stays_nested_in_the_previous_round():
    cb = LotteryTicket(rounds=3, epochs_per_round=1, prune_rate=0.4, control="random_mask", seed=2)
    fit(cb)
    for number in (1, 2, 3):
        before, after = cb.masks_of(number - 1), cb.masks_of(number)
        for name in WEIGHTS:
            assert not (after[name] & ~before[name]).any()  # nothing pruned earlier comes back
            assert after[name].sum() < before[name].sum()


@pytest.mark.parametrize("rewind", ["init", 2])
def test_schedules_restart_every_round(rewind):
    """A scheduler that counts its own steps (StepLR with step_size 2) must be rewound with the optimizer: a
    round that kept the previous round's count would train at a tenth of the rate."""

    class StepEvery2(TinyNet):
        def configure_optimizers(self):
            opt = torch.optim.SGD(self.parameters(), lr=0.1)
            return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.1)}

    cb = LotteryTicket(rounds=2, epochs_per_round=3, prune_rate=0.3, rewind=rewind)
    with pytest.warns(UserWarning, match=PART_EPOCH) if rewind == 2 else contextlib.nullcontext():
        _, probe = fit(cb, StepEvery2())
    lrs = [probe.starts[e]["lr"] for e in sorted(probe.starts)]
    assert lrs == pytest.approx([0.1, 0.1, 0.01] * 3)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(prune_rate=1.5), r"prune_rate=1.5 is outside \(0, 1\).*Hint"),
        (dict(prune_rate=0), r"prune_rate=0 is outside \(0, 1\)"),
        (dict(rounds=-1), r"rounds=-1 must be an integer >= 0"),
        (dict(epochs_per_round=0), r"epochs_per_round=0 must be an integer >= 1"),
        (dict(scope="per-layer"), r"unknown scope 'per-layer'; valid scopes: \['global', 'layerwise'\]"),
        (dict(criterion="l2"), r"unknown criterion 'l2'; valid criteria: \["),
        (dict(control="shuffle"), r"unknown control 'shuffle'; valid controls: \[None, 'reinit', 'random_mask'\]"),
        (dict(rewind="start"), r"unknown rewind 'start'; allowed: \['init', 'lr', 'none'\] or an int step"),
        (dict(rewind=-3), r"rewind=-3 must be a step >= 0"),
        (dict(mode="up"), r"mode='up' is not one of \['min', 'max'\]"),
        (dict(tolerance=-1), r"tolerance=-1 must be a finite number >= 0"),
        (dict(tolerance=float("inf")), r"tolerance=inf must be a finite number >= 0 .*every round a winner"),
        (dict(parameters=[]), r"parameters=\[\] must be a non-empty list of globs"),
        (dict(parameters=["*", 3]), r"parameters=\['\*', 3\] must be a non-empty list of globs"),
        (dict(layer_rates={"*fc3*": 2}), r"layer_rates\['\*fc3\*'\]=2 is outside \[0, 1\)"),
        (dict(layer_rates={"*": "abc"}), r"layer_rates\['\*'\]='abc' must be a number in \[0, 1\), not str"),
        (dict(layer_rates="abc"), r"layer_rates='abc' must be a mapping of name globs to rates"),
        (dict(prune_rate="0.2"), r"prune_rate='0.2' must be a number in \(0, 1\), not str"),
        (dict(prune_rate=None), r"prune_rate=None must be a number in \(0, 1\), not NoneType"),
        (dict(seed="abc"), r"seed='abc' must be a whole number >= 0"),
        (dict(seed=1.7), r"seed=1.7 must be a whole number >= 0"),
        (dict(monitor=5), r"monitor=5 must be the name of a logged metric"),
    ],
)
def test_bad_arguments_fail_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LotteryTicket(**kwargs)


def test_bad_ticket_type():
    with pytest.raises(TypeError, match="ticket=42 must be a Ticket"):
        LotteryTicket(ticket=42)


def test_empty_selection_fails_at_fit_start_listing_names():
    with pytest.raises(ValueError, match=r"selects no tensor of TinyNet; available names: \['net.0.weight'"):
        fit(LotteryTicket(rounds=1, epochs_per_round=1, parameters=["encoder.*"]))


def test_a_model_without_parameters_is_refused_as_such():
    with pytest.raises(ValueError, match=r"ReLU has no parameters: nothing to train or prune\. Hint: a network with"):
        LotteryTicket(rounds=1, epochs_per_round=1).check_model(torch.nn.ReLU())


def test_max_epochs_mismatch_gives_right_value():
    with pytest.raises(ValueError, match=r"Trainer\(max_epochs=3\) does not match.*set max_epochs=4"):
        fit(LotteryTicket(rounds=1, epochs_per_round=2), max_epochs=3)


def test_matching_max_epochs_accepted():
    cb = LotteryTicket(rounds=1, epochs_per_round=2)
    fit(cb, max_epochs=4)
    assert len(cb.history) == 2


def test_rewind_step_beyond_round0_fails_at_fit_start():
    with pytest.raises(
        ValueError, match=r"rewind=500 is not inside round 0, which has 16 optimizer steps; allowed: 0\.\.15"
    ):
        fit(LotteryTicket(rounds=1, epochs_per_round=2, rewind=500))


def test_ticket_model_mismatch_fails_at_fit_start():
    cb = LotteryTicket(rounds=0, epochs_per_round=1)
    fit(cb)
    ticket = cb.ticket()
    ticket.rewind_weights["net.0.weight"] = torch.zeros(7, 20)
    with pytest.raises(ValueError, match=r"'net.0.weight' has shape \(7, 20\) in the ticket but \(32, 20\)"):
        fit(LotteryTicket(ticket=ticket, rounds=0, epochs_per_round=1))


def test_unlogged_monitor_fails_naming_logged_metrics():
    with pytest.raises(ValueError, match=r"monitor='val/f1' was not logged.*logged metrics: \['val/acc', 'val/loss'\]"):
        fit(LotteryTicket(rounds=0, epochs_per_round=1, monitor="val/f1"))


def test_ticket_before_fit_and_unknown_round():
    cb = LotteryTicket()
    with pytest.raises(ValueError, match="no ticket yet"):
        cb.ticket()
    fit(cb := LotteryTicket(rounds=1, epochs_per_round=1))
    with pytest.raises(ValueError, match=r"round=5 has no ticket; available rounds: \[0, 1\]"):
        cb.ticket(5)


def reference_imp(model, batches, rate, steps, rounds=1, rewind=0, clip=None, momentum=0.0, cosine=False):
    """Frankle & Carbin's IMP with Frankle et al. 2019's late rewinding, written from the papers in plain PyTorch:
    round 0 trains T = ``steps`` iterations and keeps W_k (with the optimizer's and schedule's state) at iteration
    k = ``rewind``; each later round prunes each weight matrix by magnitude, sets the survivors to W_k and trains
    f(x; m*w) (pruned gradients are zero) from iteration k to T. Batches follow the global iteration count."""
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=momentum)
    half_cosine = lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))  # noqa: E731 (StepCosineNet's)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, half_cosine) if cosine else None
    masks, at_k, iteration = {}, None, 0

    def state():
        states = (model.state_dict(), opt.state_dict(), schedule.state_dict() if schedule else None)
        return copy.deepcopy(states)

    for number in range(rounds + 1):
        if number:
            for name, p in model.named_parameters():
                if name.endswith("weight"):
                    kept = p.detach().abs()[masks[name].bool()] if name in masks else p.detach().abs().flatten()
                    threshold = kept.kthvalue(round(rate * kept.numel())).values
                    masks[name] = (p.detach().abs() > threshold).float() * masks.get(name, 1.0)
            weights, opt_state, schedule_state = copy.deepcopy(at_k)
            model.load_state_dict(weights)
            opt.load_state_dict(opt_state)
            if schedule:
                schedule.load_state_dict(schedule_state)
            with torch.no_grad():
                for name, p in model.named_parameters():
                    if name in masks:
                        p.mul_(masks[name])
        for step in range(rewind if number else 0, steps):
            if number == 0 and step == rewind:
                at_k = state()
            x, y = batches[iteration % len(batches)]
            iteration += 1
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            with torch.no_grad():
                for name, p in model.named_parameters():
                    if name in masks:
                        p.grad.mul_(masks[name])
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            opt.step()
            with torch.no_grad():  # momentum restored from W_k's iteration would move pruned weights: m*w keeps 0
                for name, p in model.named_parameters():
                    if name in masks:
                        p.mul_(masks[name])
            if schedule:
                schedule.step()
    return model.state_dict()


def test_gradient_clipping_sees_only_the_survivors_gradients():
    class PlainSGD(TinyNet):
        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    pl.seed_everything(0, verbose=False)
    net = PlainSGD()
    reference = reference_imp(copy.deepcopy(net.net), list(loaders()[0]), rate=0.5, steps=8, clip=0.05)
    cb = LotteryTicket(rounds=1, epochs_per_round=1, prune_rate=0.5)
    fit(cb, net, gradient_clip_val=0.05)
    for name, value in reference.items():
        assert torch.allclose(net.net.state_dict()[name], value, atol=1e-6), name


def test_late_rewinding_matches_the_papers_imp_weights_momentum_and_schedule():
    """Rounds of T = 12 iterations (1.5 epochs), rewinding to k = 5 with SGD momentum and a cosine stepped every
    iteration: each rewound round restores W_5, the momentum and the schedule at iteration 5 and trains 7
    iterations, ending where round 0's cosine ended. Equal to the reference, bit for bit, after two rewound rounds."""
    pl.seed_everything(0, verbose=False)
    net = StepCosineNet(steps=12, momentum=0.9)
    reference = reference_imp(
        copy.deepcopy(net.net), list(loaders()[0]), rate=0.5, steps=12, rounds=2, rewind=5, momentum=0.9, cosine=True
    )
    cb = LotteryTicket(rounds=2, steps_per_round=12, rewind=5, prune_rate=0.5)
    fit(cb, net)
    assert [h["end_step"] for h in cb.history] == [12, 19, 26]
    for name, value in reference.items():
        assert torch.equal(net.net.state_dict()[name], value), name  # bit for bit


def test_reinit_draws_from_theta0s_distribution_whatever_the_initialiser():
    class WideInit(TinyNet):  # an initialiser of its own (like ResNet's kaiming fan_out): 3x the default std
        def __init__(self):
            super().__init__()
            with torch.no_grad():
                for p in self.parameters():
                    p.mul_(3.0)

    cb = LotteryTicket(rounds=1, epochs_per_round=1, prune_rate=0.5, control="reinit", seed=1)
    fit(cb, WideInit())
    for name in WEIGHTS:
        theta0, drawn = cb._states.theta0[name], cb._states.draws[1][name]
        assert torch.equal(drawn.flatten().sort().values, theta0.flatten().sort().values)  # θ0's own values...
        assert not torch.equal(drawn, theta0)  # ...in new places


def test_a_step_limit_is_refused():
    with pytest.raises(ValueError, match=r"Trainer\(max_steps=5\) would end training inside a round"):
        fit(LotteryTicket(rounds=2, epochs_per_round=1), max_steps=5)


def test_a_second_fit_of_a_used_callback_is_refused():
    cb = LotteryTicket(rounds=1, epochs_per_round=1)
    model, _ = fit(cb)
    with pytest.raises(ValueError, match=r"already trained 2 rounds in an earlier fit. Hint: use a new LotteryTicket"):
        fit(cb, model)
    assert cb.history[-1]["density"] == pytest.approx(0.8, abs=0.01) and cb.density() == cb.history[-1]["density"]


def test_lbfgs_is_refused():
    class LBFGSNet(TinyNet):
        def configure_optimizers(self):
            return torch.optim.LBFGS(self.parameters())

    with pytest.raises(ValueError, match=r"cannot keep pruned weights at zero under LBFGS"):
        fit(LotteryTicket(rounds=1, epochs_per_round=1), LBFGSNet())


def test_tied_weights_are_refused():
    class Tied(TinyNet):
        def __init__(self):
            super().__init__()
            self.net[4] = torch.nn.Linear(16, 16)
            self.head = torch.nn.Linear(16, 16)
            self.head.weight = self.net[4].weight

    with pytest.raises(ValueError, match=r"tied weights \['net.4.weight', 'head.weight'\] are one tensor"):
        LotteryTicket().check_model(Tied())


def test_a_layer_pruned_away_is_warned_about():
    cb = LotteryTicket(rounds=3, epochs_per_round=1, prune_rate=0.5, layer_rates={"net.4.weight": 0.99})
    with pytest.warns(UserWarning, match=r"prunes every weight of \['net.4.weight'\]"):
        fit(cb)


def test_resuming_with_other_settings_is_refused():
    cb = LotteryTicket(rounds=1, epochs_per_round=1, prune_rate=0.5)
    fit(cb)
    with pytest.raises(ValueError, match=r"settings differ from the checkpoint's: rounds=3 \(checkpoint: 1\)"):
        LotteryTicket(rounds=3, epochs_per_round=1, prune_rate=0.5).load_state_dict(cb.state_dict())


@pytest.mark.parametrize("control", ["reinit", "random_mask"])
def test_controls_train_imps_own_masks_round_by_round(tmp_path, control):
    """The paper's controls: IMP's mask of each round (reinit), or random masks at its per-layer densities
    (random_mask), rewound every round like IMP, never masks pruned from the control's own weights. Global scope,
    where a control pruning its own weights would also get other per-layer counts."""
    imp = LotteryTicket(rounds=2, epochs_per_round=1, prune_rate=0.5, scope="global")
    fit(imp)
    for number in (1, 2):
        imp.ticket(number).save(tmp_path / "tickets" / f"round-{number}" / "ticket")
    cb = LotteryTicket(
        rounds=2, epochs_per_round=1, prune_rate=0.5, scope="global", control=control, masks_from=tmp_path, seed=5
    )
    _, probe = fit(cb)
    for number in (1, 2):
        theirs, ours = imp.ticket(number).masks, cb.ticket(number).masks
        for name in WEIGHTS:
            assert ours[name].sum() == theirs[name].sum()  # IMP's per-layer density
            assert torch.equal(ours[name], theirs[name]) == (control == "reinit")
            start = probe.starts[number]["weights"][name]
            assert torch.equal(start != 0, ours[name] & (start != 0))  # zero outside the mask
    assert cb.history[-1]["density"] == pytest.approx(imp.history[-1]["density"])


def test_masks_from_needs_a_ticket_per_round(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"has no ticket for rounds \[1, 2\]"):
        LotteryTicket(rounds=2, masks_from=tmp_path)


def test_target_density_sets_the_rounds():
    assert LotteryTicket(target_density=0.036).rounds == 15  # the paper's 3.6% at 20% per round: 0.8^15 = 3.5%
    assert LotteryTicket(target_density=0.25, prune_rate=0.5).rounds == 2
    assert LotteryTicket().rounds == 5
    with pytest.raises(ValueError, match=r"rounds=3 and target_density=0.036 disagree: .* takes 15 rounds"):
        LotteryTicket(rounds=3, target_density=0.036)
    with pytest.raises(ValueError, match=r"target_density=1.5 must be a fraction in \(0, 1\)"):
        LotteryTicket(target_density=1.5)
    cb = LotteryTicket(target_density=0.3, prune_rate=0.5, epochs_per_round=1)
    fit(cb)
    assert [h["round"] for h in cb.history] == [0, 1, 2] and cb.density() == pytest.approx(0.25, abs=0.01)


def test_one_settings_object_for_callback_app_checkpoint_and_ticket():
    import dataclasses
    import inspect

    from lth_wandb.app.config import PruningConfig
    from lth_wandb.lottery.settings import PruningSettings

    fields = {f.name for f in dataclasses.fields(PruningSettings)}
    assert PruningConfig is PruningSettings  # lth-train's `pruning` schema
    # The callback's arguments: the settings, plus where its inputs and spilled rounds live (they change no result).
    assert set(inspect.signature(LotteryTicket).parameters) == fields | {"ticket", "spill_dir"}
    cb = LotteryTicket(rounds=1, epochs_per_round=1, prune_rate=0.5, rewind="3")
    assert cb.settings.rewind == 3 and cb.rewind == 3  # normalised once, for everyone
    with pytest.warns(UserWarning, match=PART_EPOCH):
        fit(cb)
    recorded = cb.settings.as_dict()
    assert cb.state_dict()["settings"] == recorded == cb.ticket(1).metadata["settings"]  # checkpoint and ticket


class StepCosineNet(TinyNet):
    """SGD with a cosine over ``steps`` optimizer steps, stepped after every step (Lightning's "step" interval)."""

    def __init__(self, steps: int, momentum: float = 0.0):
        super().__init__(optimizer="sgd", lr=0.1)
        self.steps, self.momentum = steps, momentum

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=self.lr, momentum=self.momentum)
        cosine = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, self.steps) / self.steps))
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": cosine, "interval": "step"}}


class StepProbe(pl.Callback):
    def __init__(self):
        self.lrs = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])


@pytest.mark.parametrize("rewind", ["init", 4])
def test_rounds_in_steps_end_where_round_0_ends(rewind):
    """steps_per_round=T (the paper counts iterations): round 0 trains T steps, a round rewound to step k trains
    T - k (Frankle et al. 2019, Alg. 2), and a step-wise schedule replays round 0's from k to T."""
    cb = LotteryTicket(rounds=2, steps_per_round=10, prune_rate=0.5, rewind=rewind)
    probe = StepProbe()
    pl.seed_everything(0, verbose=False)
    train, val = loaders()  # 8 batches an epoch: rounds end inside epochs
    trainer([cb, probe], val_check_interval=2).fit(StepCosineNet(steps=10), train, val)
    k = 0 if rewind == "init" else rewind
    round0 = probe.lrs[:10]
    assert len(probe.lrs) == 10 + 2 * (10 - k)
    assert probe.lrs[10 : 20 - k] == pytest.approx(round0[k:]) and probe.lrs[20 - k :] == pytest.approx(round0[k:])
    assert [h["end_step"] - h["start_step"] for h in cb.history] == [10, 10 - k, 10 - k]
    assert [h["density"] for h in cb.history] == pytest.approx([1.0, 0.5, 0.25], abs=0.02)
