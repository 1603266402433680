"""The criteria at initialisation inside ``LotteryTicket``: round r's masks from θ0, at IMP's density of round r.

Each round r >= 1 starts from the full network: the criterion scores θ0 (``pruning.at_init``) and keeps as many
weights per tensor (layerwise), per pool (global) and per ``layer_rates`` tensor as IMP would keep after r rounds.
One run thus yields the whole density sweep, round by round comparable with IMP; the masks are not nested.

Data comes from the training set in its stored order (a fresh sequential loader over the train dataloader's
dataset, without workers): the training loader's own shuffle generator and workers are left alone, and the global
RNG is restored afterwards, so a run, and a resumed run, draws the same data order as without the scoring.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import pytorch_lightning as pl
from torch.utils.data import DataLoader, IterableDataset

from lth_wandb.lottery.rng import rng_state, set_rng_state
from lth_wandb.lottery.settings import PruningSettings
from lth_wandb.pruning import at_init
from lth_wandb.pruning import masks as M
from lth_wandb.pruning.masks import Masks


def prune_at_init(lottery, trainer: pl.Trainer, pl_module: pl.LightningModule, round: int) -> tuple[Masks, Masks]:
    """Round ``round``'s masks and the full masks they were chosen from: ``lottery``'s criterion on θ0 (the weights
    before any training), to the density IMP with ``lottery.settings`` would have after ``round`` rounds."""
    settings: PruningSettings = lottery.settings
    full = M.full_masks(lottery.masks)
    groups = at_init.target_groups(full, settings.prune_rate, settings.scope, settings.layer_rates, round)
    saved = rng_state()
    try:
        batches = training_batches(trainer.train_dataloader) if settings.criterion in at_init.NEEDS_DATA else ()
        return at_init.masks_at_init(settings.criterion, pl_module, groups, batches, lottery._states.theta0), full
    finally:
        set_rng_state(saved)


def training_batches(loader: Iterable | None) -> Iterator:
    """The training data's batches in stored order, read lazily."""
    if loader is None:
        raise ValueError(
            "a criterion at initialisation needs the train dataloader, but the Trainer has none. Hint: "
            "pass train_dataloaders to fit, or use criterion='magnitude_init'"
        )
    if isinstance(loader, DataLoader) and loader.batch_size is not None:
        if not isinstance(loader.dataset, IterableDataset):
            loader = DataLoader(loader.dataset, batch_size=loader.batch_size, collate_fn=loader.collate_fn)
    yield from loader
