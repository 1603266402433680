"""LotteryTicket with a ``torch.compile``d submodule: the compiled network is pruned, its masks hold through every
optimizer step and rewind, and it finds the tickets the eager network finds."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from conftest import TinyNet, loaders, trainer

from lth_wandb import LotteryTicket


def fit(backend: str | None):
    pl.seed_everything(0, verbose=False)
    model = TinyNet()
    if backend is not None:
        model.net = torch.compile(model.net, backend=backend)
    lottery = LotteryTicket(rounds=2, epochs_per_round=2, prune_rate=0.5)
    trainer([lottery]).fit(model, *loaders())
    return model, lottery


def check_compiled(backend: str) -> None:
    eager_model, eager = fit(None)
    model, lottery = fit(backend)
    # The compiled module's parameters are its original module's, under `_orig_mod`: those are pruned.
    assert list(lottery.masks) == [f"net._orig_mod.{i}.weight" for i in (0, 2, 4)]
    assert lottery.density() == pytest.approx(0.25, abs=0.01)
    params = dict(model.named_parameters())
    for name, mask in lottery.masks.items():
        assert not params[name][~mask].any()  # the masks hold after the last optimizer step
    for round in range(3):
        for name, mask in eager.masks_of(round).items():
            assert torch.equal(lottery.masks_of(round)[name.replace("net.", "net._orig_mod.")], mask), (round, name)
    # What the compiled graph computes is the masked network, as the eager network's.
    x = loaders()[1].dataset.tensors[0]
    with torch.no_grad():
        assert torch.allclose(model(x), eager_model(x), atol=1e-5)


def test_a_compiled_submodule_is_pruned_and_its_masks_hold():
    check_compiled("aot_eager")  # AOTAutograd's graphs without code generation: seconds


@pytest.mark.slow
def test_a_compiled_submodule_is_pruned_and_its_masks_hold_under_inductor():
    check_compiled("inductor")  # the default backend, generated C++ on the CPU (about a minute)
