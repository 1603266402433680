"""Early-bird tickets (You et al. 2020): the distance maths, the detector's rule against a sequence worked out by
hand, the callback ending round 0 at the epoch the rule fires (also under late rewinding and across a resume),
lth-train's W&B run holding the distances and the epoch, and the settings' errors."""

from __future__ import annotations

import csv

import pytest
import pytorch_lightning as pl
import torch
from conftest import TinyNet, loaders, lth_train, lth_train_main, trainer
from pytorch_lightning.callbacks import Checkpoint
from pytorch_lightning.loggers import CSVLogger

from lth_wandb.analysis.early_bird import EarlyBirdDetector, channel_masks, mask_distance, scaling_factors
from lth_wandb.lottery.callback import LotteryTicket
from lth_wandb.pruning.prune import prune

# TinyNet at lr 1e-2, seed 0: the would-be mask's largest distance over a window of 3 falls to 0.107 after epoch 6
# and 0.087 after epoch 7 (measured), so a threshold of 0.1 ends round 0 after 7 of its 10 epochs.
SETTLING = dict(rounds=2, epochs_per_round=10, early_bird=True, early_bird_threshold=0.1, early_bird_window=3)
FIRES_AT = 7


def bits(*values: int) -> dict[str, torch.Tensor]:
    """A two-tensor mask from 0/1 values: the first three entries are tensor "a", the rest tensor "b"."""
    flat = torch.tensor(values, dtype=torch.bool)
    return {"a": flat[:3].clone(), "b": flat[3:].reshape(-1, 1).clone()}


# --------------------------------------------------------------------------------------------------------------
# The maths


def test_mask_distance_is_the_share_of_entries_that_differ():
    assert mask_distance(bits(1, 1, 0, 0, 1, 1, 0, 0), bits(1, 1, 0, 0, 1, 1, 0, 0)) == 0.0
    # One entry of "a" and two of "b" differ: 3 of 8, whichever tensor they are in.
    assert mask_distance(bits(1, 1, 0, 0, 1, 1, 0, 0), bits(1, 0, 0, 0, 0, 1, 1, 0)) == pytest.approx(3 / 8)
    assert mask_distance(bits(1, 0, 0, 0, 0, 1, 1, 0), bits(1, 1, 0, 0, 1, 1, 0, 0)) == pytest.approx(3 / 8)
    assert mask_distance(bits(1, 1, 1, 1, 1, 1, 1, 1), bits(0, 0, 0, 0, 0, 0, 0, 0)) == 1.0


def test_mask_distance_refuses_masks_of_other_tensors():
    with pytest.raises(ValueError, match="different tensors or shapes"):
        mask_distance({"a": torch.ones(3, dtype=torch.bool)}, {"b": torch.ones(3, dtype=torch.bool)})
    with pytest.raises(ValueError, match="different tensors or shapes"):
        mask_distance({"a": torch.ones(3, dtype=torch.bool)}, {"a": torch.ones(4, dtype=torch.bool)})
    with pytest.raises(ValueError, match="no entries"):
        mask_distance({}, {})


# Five masks of 8 entries. With window 3 and threshold 0.25 (2 of 8 entries), by hand:
#   m1 -> queue [m1]: not full.            m2 -> [m1 m2]: not full.
#   m3 -> [m1 m2 m3]: d(m3,m1) = 4/8 > 2/8: no.
#   m4 -> [m2 m3 m4]: d(m4,m2) = 3/8 > 2/8: no (d(m4,m3) = 1/8 alone would pass: the paper's rule is the window).
#   m5 -> [m3 m4 m5]: d(m5,m3) = 2/8, d(m5,m4) = 1/8: both <= 2/8: fires at the 5th mask.
SEQUENCE = [
    bits(1, 1, 1, 1, 0, 0, 0, 0),
    bits(1, 1, 1, 0, 1, 0, 0, 0),
    bits(1, 1, 0, 0, 1, 1, 0, 0),
    bits(1, 1, 0, 0, 1, 1, 1, 0),
    bits(1, 1, 0, 0, 1, 1, 1, 1),
]


def test_detector_fires_where_the_hand_worked_sequence_settles():
    detector = EarlyBirdDetector(threshold=0.25, window=3)
    fired = [detector.update(m) for m in SEQUENCE]
    assert fired == [False, False, False, False, True]
    assert detector.distances == pytest.approx([2 / 8, 1 / 8])  # newest against each older one, oldest first
    assert detector.last_distance == pytest.approx(1 / 8) and detector.max_distance == pytest.approx(2 / 8)
    # At exactly the threshold it fires (the paper fails a distance only when it is > 0.1); just below, not.
    below = EarlyBirdDetector(threshold=0.249, window=3)
    assert [below.update(m) for m in SEQUENCE] == [False] * 5


def test_detector_resumes_from_its_state_dict():
    whole = EarlyBirdDetector(threshold=0.25, window=3)
    fired = [whole.update(m) for m in SEQUENCE]
    first = EarlyBirdDetector(threshold=0.25, window=3)
    for m in SEQUENCE[:3]:
        first.update(m)
    resumed = EarlyBirdDetector(threshold=0.25, window=3)
    resumed.load_state_dict(first.state_dict())
    assert resumed.distances == first.distances
    assert [resumed.update(m) for m in SEQUENCE[3:]] == fired[3:]
    assert resumed.distances == whole.distances
    with pytest.raises(ValueError, match=r"threshold, window = \(0.25, 3\) cannot resume with \(0.25, 4\)"):
        EarlyBirdDetector(threshold=0.25, window=4).load_state_dict(first.state_dict())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(threshold=1.0), r"threshold=1.0 must be a number in \[0, 1\)"),
        (dict(threshold=True), r"threshold=True must be a number"),
        (dict(window=1), "window=1 must be an integer >= 2"),
    ],
)
def test_detector_arguments_are_checked(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EarlyBirdDetector(**kwargs)


# The paper's channel masks on a constructed BatchNorm net: 10 channels, their |γ| in ascending order 0.01 0.05
# 0.15 0.2 0.3 0.4 0.6 0.7 0.8 0.9. The authors' rule (EarlyBird.pruning) takes the threshold at sorted position
# ⌊10 p⌋ and keeps |γ| > threshold: p = 0.3 -> position 3, threshold 0.2, prunes 4 channels; p = 0.5 -> 0.4, 6;
# p = 0.7 -> 0.7, 8.
GAMMA_1, GAMMA_2 = [0.9, -0.05, 0.4, 0.2], [0.01, -0.7, 0.3, 0.6, -0.15, 0.8]
PAPER_MASKS = {
    0.3: ([1, 0, 1, 0], [0, 1, 1, 1, 0, 1]),
    0.5: ([1, 0, 0, 0], [0, 1, 0, 1, 0, 1]),
    0.7: ([1, 0, 0, 0], [0, 0, 0, 0, 0, 1]),
}


class BNNet(pl.LightningModule):
    """Conv(1->4)-BN-ReLU-Conv(4->6)-BN-ReLU-pool-Linear(6->3) on 1x4x4 inputs, SGD lr 0.1 without momentum."""

    def __init__(self, gammas=(GAMMA_1, GAMMA_2)):
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
            torch.nn.Conv2d(4, 6, 3, padding=1), torch.nn.BatchNorm2d(6), torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(6, 3),
        )  # fmt: skip
        with torch.no_grad():
            self.net[1].weight.copy_(torch.tensor(gammas[0])), self.net[4].weight.copy_(torch.tensor(gammas[1]))

    def forward(self, x):
        return self.net(x.reshape(-1, 1, 4, 4)[:, :, :, :4])

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.cross_entropy(self(x[:, :16]), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val/loss", torch.nn.functional.cross_entropy(self(x[:, :16]), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.parametrize("ratio", sorted(PAPER_MASKS))
def test_channel_masks_are_the_papers_on_known_scaling_factors(ratio):
    factors = scaling_factors(BNNet())
    assert list(factors) == ["net.1.weight", "net.4.weight"]
    masks = channel_masks(factors, ratio)
    expected = PAPER_MASKS[ratio]
    assert masks["net.1.weight"].tolist() == [bool(b) for b in expected[0]]
    assert masks["net.4.weight"].tolist() == [bool(b) for b in expected[1]]


def test_a_tie_at_the_threshold_is_pruned_with_it():
    # As the authors' `gt`: with 0.3 made -0.2, sorted positions 3 and 4 both hold 0.2, so p = 0.3 prunes 5 of 10.
    tied = channel_masks(scaling_factors(BNNet((GAMMA_1, [0.01, -0.7, -0.2, 0.6, -0.15, 0.8]))), 0.3)
    assert tied["net.4.weight"].tolist() == [False, True, False, True, False, True]
    assert sum(int(m.sum()) for m in tied.values()) == 5


def test_channel_masks_arguments_are_checked():
    with pytest.raises(ValueError, match=r"ratio=1.0 must be the share of channels pruned, in \(0, 1\).*0.3"):
        channel_masks(scaling_factors(BNNet()), 1.0)
    with pytest.raises(ValueError, match="no BatchNorm scaling factors to rank. Hint"):
        channel_masks({}, 0.5)


CHANNELS = dict(rounds=1, epochs_per_round=6, early_bird=True, early_bird_mask="channels", early_bird_ratio=0.5)


class ChannelWatch(pl.Callback):
    """After LotteryTicket: the channel masks at train start and at every epoch end of round 0, computed here."""

    def __init__(self, lottery: LotteryTicket):
        self.lottery, self.masks = lottery, []

    def on_train_start(self, trainer, pl_module):
        self.masks.append(channel_masks(scaling_factors(pl_module), 0.5))

    def on_train_epoch_end(self, trainer, pl_module):
        if self.lottery.round == 0:
            self.masks.append(channel_masks(scaling_factors(pl_module), 0.5))


def test_the_channel_early_bird_watches_the_papers_masks_from_the_untrained_network():
    # Window 3 from the untrained network's mask: the rule first holds at the 3rd mask, after epoch 2 (the weights
    # mask's window starts at epoch 1's end, so it could end round 0 after epoch 3 at the earliest).
    pl.seed_everything(0, verbose=False)
    lottery = LotteryTicket(**CHANNELS, early_bird_window=3, early_bird_threshold=0.9)
    watch = ChannelWatch(lottery)
    trainer([lottery, watch]).fit(BNNet(), *loaders())
    assert lottery.history[0]["early_bird_epoch"] == 2 and lottery.total_epochs == 2 + 6
    replay = EarlyBirdDetector(threshold=0.9, window=3)
    assert [replay.update(m) for m in watch.masks] == [False, False, True]
    assert lottery._early_bird.detector.distances == replay.distances
    # Round 1 is pruned by the run's criterion (layer-wise magnitude, 20%), as IMP.
    assert lottery.history[1]["density"] == pytest.approx(0.8, abs=0.02)


@pytest.mark.filterwarnings("ignore:LotteryTicket. early_bird_window")
def test_the_l1_penalty_adds_lambda_sign_gamma_while_searching_only():
    # One SGD step (lr 0.1) from the same weights and batch: the L1 run's γ moves by -0.1 * λ * sign(γ) more.
    def one_step(l1):
        pl.seed_everything(0, verbose=False)
        model = BNNet()
        lottery = LotteryTicket(**{**CHANNELS, "rounds": 0, "epochs_per_round": 1}, early_bird_l1=l1)
        trainer([lottery], limit_train_batches=1, limit_val_batches=0).fit(model, *loaders())
        return model.net[4].weight.detach().clone()

    plain, penalised = one_step(0.0), one_step(0.5)
    assert torch.allclose(penalised - plain, -0.1 * 0.5 * torch.tensor(GAMMA_2).sign(), atol=1e-6)
    # Once the early bird has fired, the penalty stops.
    bird = LotteryTicket(**CHANNELS, early_bird_l1=0.5)._early_bird
    model = BNNet()
    bird._factors = list(scaling_factors(model).values())
    for g in bird._factors:
        g.grad = torch.zeros_like(g)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    bird.penalise(optimizer)
    assert torch.equal(model.net[4].weight.grad, 0.5 * torch.tensor(GAMMA_2).sign())
    bird.epoch = 3
    bird.penalise(optimizer)
    assert torch.equal(model.net[4].weight.grad, 0.5 * torch.tensor(GAMMA_2).sign())


def test_channel_masks_need_batchnorm():
    with pytest.raises(ValueError, match=r"early_bird_mask='channels' ranks BatchNorm scaling factors, and TinyNet "
                       r"has no affine BatchNorm\. Hint: early_bird_mask='weights'"):  # fmt: skip
        trainer([LotteryTicket(**CHANNELS)]).fit(TinyNet(), *loaders())


# --------------------------------------------------------------------------------------------------------------
# The callback


class WouldBe(pl.Callback):
    """After LotteryTicket at every epoch end of round 0: round 1's mask by layer-wise magnitude, computed here."""

    def __init__(self, lottery: LotteryTicket):
        self.lottery, self.masks = lottery, []

    def on_train_epoch_end(self, trainer, pl_module):
        if self.lottery.round == 0:
            params = dict(pl_module.named_parameters())
            scores = {n: params[n].detach().abs() for n in self.lottery.masks}
            self.masks.append(prune(scores, self.lottery.masks, self.lottery.prune_rate, "layerwise"))


def logged(path) -> list[dict[str, str]]:
    (metrics,) = path.rglob("metrics.csv")
    with metrics.open() as f:
        return list(csv.DictReader(f))


def test_early_bird_ends_round_0_where_the_mask_settles(tmp_path):
    pl.seed_everything(0, verbose=False)
    lottery = LotteryTicket(**SETTLING)
    watch = WouldBe(lottery)
    run = trainer([lottery, watch], logger=CSVLogger(tmp_path, name="eb"))
    run.fit(TinyNet(lr=1e-2), *loaders())

    assert lottery.history[0]["early_bird_epoch"] == FIRES_AT == lottery.history[0]["end_epoch"]
    assert [h["end_epoch"] for h in lottery.history] == [FIRES_AT, FIRES_AT + 10, FIRES_AT + 20]
    assert "early_bird_epoch" not in lottery.history[1]
    assert lottery.ticket(0).metadata["early_bird_epoch"] == FIRES_AT
    assert lottery.ticket(0).metadata["settings"]["early_bird_threshold"] == 0.1
    assert lottery.total_epochs == FIRES_AT + 2 * 10 == run.current_epoch == run.fit_loop.max_epochs
    # What it watched is round 1's mask: the last would-be mask is the mask round 1 trained with.
    assert len(watch.masks) == FIRES_AT
    for name, mask in lottery.masks_of(1).items():
        assert torch.equal(watch.masks[-1][name], mask)
    # Logged per epoch of round 0 from the second on: this epoch's mask against the last one, then the window's
    # largest distance; the rule first holds at FIRES_AT.
    expected = [mask_distance(b, a) for a, b in zip(watch.masks, watch.masks[1:], strict=False)]
    rows = [r for r in logged(tmp_path) if r.get("early_bird/distance")]
    assert [float(r["early_bird/distance"]) for r in rows] == pytest.approx(expected)
    largest = [max(expected[i - 1], mask_distance(watch.masks[i], watch.masks[i - 2])) for i in range(2, FIRES_AT)]
    assert [float(r["early_bird/max_distance"]) for r in rows if r["early_bird/max_distance"]] == pytest.approx(
        largest
    )
    assert [i + 1 for i, d in enumerate(largest, start=2) if d <= 0.1][0] == FIRES_AT
    (fired,) = [r for r in logged(tmp_path) if r.get("early_bird/epoch")]
    assert float(fired["early_bird/epoch"]) == FIRES_AT and int(fired["epoch"]) == FIRES_AT - 1


def test_without_a_settled_mask_round_0_runs_its_full_length():
    pl.seed_everything(0, verbose=False)
    lottery = LotteryTicket(**{**SETTLING, "early_bird_threshold": 0.0, "rounds": 1})
    trainer([lottery]).fit(TinyNet(lr=1e-2), *loaders())
    assert lottery.history[0]["early_bird_epoch"] is None
    assert [h["end_epoch"] for h in lottery.history] == [10, 20] and lottery.total_epochs == 20


def test_late_rewinding_waits_for_the_rewind_step():
    # 8 steps per epoch. The loosest rule holds at epoch 2 (16 steps), but rounds rewind to step 20, which round 0
    # must pass first: it ends after epoch 3 (24 steps). Later rounds start at step 20: 10 - 20 // 8 = 8 epochs.
    pl.seed_everything(0, verbose=False)
    lottery = LotteryTicket(**{**SETTLING, "rounds": 1, "early_bird_threshold": 0.9, "early_bird_window": 2}, rewind=20)
    run = trainer([lottery])
    with pytest.warns(UserWarning, match="rewind=20 is not a whole number of epochs"):  # on purpose, as said above
        run.fit(TinyNet(lr=1e-2), *loaders())
    assert lottery.history[0]["early_bird_epoch"] == 3 and lottery.history[0]["end_step"] == 24
    assert lottery.rewound_epochs == 8 and [h["end_epoch"] for h in lottery.history] == [3, 11]
    assert lottery._states.point["step"] == 20 and run.current_epoch == 11


class SaveAt(Checkpoint):
    """Saves once, at the end of epoch ``epoch`` (1-based), after every other callback's epoch end."""

    def __init__(self, epoch: int, path):
        self.epoch, self.path = epoch, path

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch + 1 == self.epoch:
            trainer.save_checkpoint(self.path)


def test_a_resumed_run_fires_at_the_same_epoch_with_the_same_masks(tmp_path):
    # Saved two epochs before the rule holds: a resumed run that lost the window would start it afresh and could
    # fire at epoch 6 + 3 at the earliest.
    path = tmp_path / "epoch-5.ckpt"
    pl.seed_everything(0, verbose=False)
    whole = LotteryTicket(**SETTLING, seed=0)
    trainer([whole, SaveAt(FIRES_AT - 2, path)], enable_checkpointing=True).fit(TinyNet(lr=1e-2), *loaders())
    assert whole.history[0]["early_bird_epoch"] == FIRES_AT

    pl.seed_everything(1, verbose=False)  # the model's fresh values are replaced by the checkpoint's
    resumed = LotteryTicket(**SETTLING, seed=0)
    run = trainer([resumed])
    run.fit(TinyNet(lr=1e-2), *loaders(), ckpt_path=path)
    assert resumed.history[0]["early_bird_epoch"] == FIRES_AT and run.current_epoch == whole.total_epochs
    untimed = [{k: v for k, v in h.items() if k != "seconds"} for h in resumed.history]
    assert untimed == [{k: v for k, v in h.items() if k != "seconds"} for h in whole.history]
    for r in range(3):
        for name, mask in whole.masks_of(r).items():
            assert torch.equal(resumed.masks_of(r)[name], mask), (r, name)


def test_a_checkpoint_from_before_early_birds_loads():
    pl.seed_everything(0, verbose=False)
    lottery = LotteryTicket(**SETTLING, seed=0)
    trainer([lottery]).fit(TinyNet(lr=1e-2), *loaders())
    state = lottery.state_dict()
    assert state["round0_epochs"] == FIRES_AT and state["early_bird"]["epoch"] == FIRES_AT
    old = {k: v for k, v in state.items() if k not in ("round0_epochs", "early_bird")}
    old["settings"] = {k: v for k, v in state["settings"].items() if not k.startswith("early_bird")}
    plain = LotteryTicket(rounds=2, epochs_per_round=10, seed=0)
    plain.load_state_dict(old)
    assert plain.total_epochs == 30 and plain.round == 2


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(early_bird="yes"), "early_bird='yes' must be true or false"),
        (dict(early_bird_threshold=1.0), r"early_bird_threshold=1.0 must be a number in \[0, 1\).*Hint"),
        (dict(early_bird_threshold=-0.1), r"early_bird_threshold=-0.1 must be a number in \[0, 1\)"),
        (dict(early_bird_window=1), "early_bird_window=1 must be an integer >= 2.*Hint"),
        (dict(steps_per_round=100), "early_bird with steps_per_round=100: .*epoch ends.*Hint"),
        (dict(criterion="random"), r"early_bird with criterion='random'.*Allowed: \['magnitude'.*Hint"),
        (dict(early_bird_mask="bn"), r"early_bird_mask='bn' is not one of \['weights', 'channels'\]\. Hint"),
        (dict(early_bird_ratio=0.0), r"early_bird_ratio=0.0 must be the share of channels pruned, in \(0, 1\).*Hint"),
        (dict(early_bird_l1=-1.0), r"early_bird_l1=-1.0 must be a finite number >= 0.*Hint"),
    ],
)
def test_early_bird_settings_are_checked(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LotteryTicket(**{**SETTLING, **kwargs})


def test_the_channel_watch_takes_any_criterion_for_the_rounds_after():
    lottery = LotteryTicket(**CHANNELS, criterion="random")
    assert lottery.settings.early_bird_mask == "channels" and lottery.criterion == "random"


def test_a_window_as_long_as_round_0_warns_that_it_cannot_end_it_early(recwarn):
    LotteryTicket(epochs_per_round=3, early_bird_window=5)  # early_bird off: nothing to say
    assert not [w for w in recwarn if "early_bird_window" in str(w.message)]
    with pytest.warns(UserWarning, match="early_bird_window=5 with epochs_per_round=5: .* never ends it early.*Hint"):
        LotteryTicket(**{**SETTLING, "epochs_per_round": 5, "early_bird_window": 5})


# --------------------------------------------------------------------------------------------------------------
# lth-train


@pytest.mark.slow
def test_lth_train_early_bird_logs_the_distances_and_the_epoch_to_wandb(tmp_path):
    from lth_wandb.tracking.runfiles import find_runs, read_run

    # Window 3 at threshold 0.95 holds as soon as the window is full: round 0 ends after epoch 3 of 6.
    args = ("pruning.early_bird=true", "pruning.early_bird_window=3", "pruning.early_bird_threshold=0.95")
    result = lth_train(tmp_path, "pruning.rounds=1", "pruning.epochs_per_round=6", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = find_runs(tmp_path / "wandb")
    run = read_run(run_dir)
    assert run.state == "finished" and run.config["pruning"]["early_bird"] is True
    distances = [r for r in run.history if "early_bird/distance" in r]
    assert [r["epoch"] for r in distances] == [1, 2] and all(0 < r["early_bird/distance"] < 1 for r in distances)
    assert [r["early_bird/epoch"] for r in run.history if "early_bird/epoch" in r] == [3]
    assert run.summary["early_bird/epoch"] == 3
    rounds = [r for r in run.history if "round/density" in r]
    steps_per_epoch = rounds[0]["trainer/global_step"] // 3
    assert [r["trainer/global_step"] for r in rounds] == [3 * steps_per_epoch, 9 * steps_per_epoch]
    assert max(r.get("epoch", 0) for r in run.history) == 8  # 3 + 6 epochs, 0-based
    # lth-report counts the compute of each round from round 0's true length.
    from lth_wandb.report.sources import collect_offline

    (reported,) = collect_offline(tmp_path / "wandb").runs
    assert [reported.epochs_at(r) for r in reported.rounds] == [3, 9]


def test_lth_train_refuses_a_bad_threshold_in_one_line(monkeypatch, tmp_path, capsys):
    code = lth_train_main(monkeypatch, tmp_path, "pruning.early_bird=true", "pruning.early_bird_threshold=1.5")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "early_bird_threshold=1.5 must be a number in [0, 1)" in err[0], err
    assert not (tmp_path / "wandb").exists()
