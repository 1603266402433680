"""Pruning at initialisation: criteria that score θ0 before any training, and the masks they choose.

- ``magnitude_init``: |θ0|.
- ``snip`` (Lee et al. 2019): |g ⊙ θ|, g the loss gradient on the first ``SNIP_BATCHES`` batch(es), in inference
  (eval) mode, as the authors' code (``is_train: False``) and Synaptic-Flow (``prune_train_mode=False``) score it:
  a BatchNorm normalises with its running statistics, not the batch's.
- ``grasp`` (Wang et al. 2020): the paper removes the weights with the *highest* −θ ⊙ Hg (H the Hessian, g the
  gradient; removing them least reduces the gradient flow). Here higher means kept, so the score is θ ⊙ Hg. Hg is
  a Hessian-gradient product by double backprop on a class-balanced sample (``GRASP_SAMPLES_PER_CLASS`` per class)
  with logits divided by ``GRASP_TEMPERATURE``, in training mode (batch statistics), as the authors' code
  (github.com/alecwangcq/GraSP) does.
- ``synflow`` (Tanaka et al. 2020): data-free. Every weight replaced by |θ| (in float64), an all-ones input, R =
  sum of the output, score |∂R/∂θ ⊙ θ|, recomputed with the current mask ``SYNFLOW_ITERATIONS`` times while the
  density follows d^(k/n), k = 1..n. In inference mode, as the authors' code.

The module is called through ``torch.func.functional_call`` on copies of ``state`` (θ0), on the module's device
(batches are moved there): its own parameters, buffers and gradients are never touched. Pure PyTorch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from itertools import islice

import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from lth_wandb.pruning.masks import Masks
from lth_wandb.pruning.prune import check_rate, check_scope, rate_overrides

SNIP_BATCHES = 1  # the SNIP paper's choice: one mini-batch
GRASP_SAMPLES_PER_CLASS = 10  # GraSP: "10 samples per class" for CIFAR-10 (its code's default is 25)
GRASP_TEMPERATURE = 200.0  # logits / T before the loss, as GraSP's code, so the softmax is not saturated
SYNFLOW_ITERATIONS = 100  # SynFlow's paper: 100 iterations with an exponential density schedule

Scores = dict[str, torch.Tensor]
# (names ranked together, entries to keep among them): one group per tensor (layerwise or a layer_rates override),
# or the pooled tensors of a global scope.
Groups = list[tuple[list[str], int]]


def kept_after(n: int, rate: float, rounds: int) -> int:
    """Entries IMP keeps of ``n`` after ``rounds`` rounds at ``rate``, with its own rounding each round."""
    for _ in range(rounds):
        n -= math.floor(rate * n + 0.5)
    return n


def target_groups(
    masks: Masks, rate: float, scope: str, layer_rates: Mapping[str, float] | None, rounds: int
) -> Groups:
    """The groups and counts IMP would reach after ``rounds`` rounds from the full ``masks``: each tensor at
    (1 - rate)^r (layerwise) or one pool (global), and ``layer_rates``' tensors at (1 - their rate)^r on their own."""
    check_rate(rate)
    check_scope(scope)
    overrides = rate_overrides(masks, layer_rates)
    groups = [([n], kept_after(masks[n].numel(), overrides.get(n, rate), rounds))
              for n in masks if scope == "layerwise" or n in overrides]  # fmt: skip
    pooled = [n for n in masks if scope == "global" and n not in overrides]
    if pooled:
        groups.append((pooled, kept_after(sum(masks[n].numel() for n in pooled), rate, rounds)))
    return groups


def keep_top(scores: Mapping[str, torch.Tensor], groups: Groups, current: Masks | None = None) -> Masks:
    """Keep the ``count`` best-scoring entries of each group (entries ``current`` prunes rank last; NaN too).
    Ties go by position, so counts are exact. Returns CPU bool masks."""
    new: Masks = {}
    for names, count in groups:
        flat = torch.cat([scores[n].detach().reshape(-1).double() for n in names])
        if current is not None:
            alive = torch.cat([current[n].reshape(-1).to(flat.device) for n in names])
            flat = flat.masked_fill(~alive, -math.inf)
        keep = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
        keep[torch.topk(flat.nan_to_num(nan=-math.inf), count, sorted=False).indices] = True
        start = 0
        for n in names:
            new[n] = keep[start : start + scores[n].numel()].reshape(scores[n].shape).cpu()
            start += scores[n].numel()
    return {n: new[n] for n in scores if n in new}


# ----------------------------------------------------------------------------------------------------------------
# Scores


def magnitude_init(module: nn.Module, names: Sequence[str], batches=None, state=None) -> Scores:
    """|θ0|: magnitude pruning before training (no data)."""
    values = _copies(module, state)
    return {n: values[n].detach().abs() for n in names}


def snip(
    module: nn.Module, names: Sequence[str], batches: Iterable, state=None, n_batches: int = SNIP_BATCHES
) -> Scores:
    """|g ⊙ θ| with g the cross-entropy gradient summed over the first ``n_batches`` (x, y) batches, the module in
    eval mode (the SNIP authors' ``is_train: False``)."""
    values, grads = _copies(module, state), None
    for x, y in islice(pairs(batches, "snip"), n_batches):
        params, device = _leaves(values, names), values[names[0]].device
        loss = F.cross_entropy(_call(module, values, params, x.to(device), train=False), y.to(device))
        step = torch.autograd.grad(loss, [params[n] for n in names])
        grads = step if grads is None else [a + b for a, b in zip(grads, step, strict=True)]
    if grads is None:
        raise ValueError("criterion 'snip' found no batch in the train dataloader. Hint: give it training data")
    return {n: (g * values[n]).abs() for n, g in zip(names, grads, strict=True)}


def grasp(
    module: nn.Module,
    names: Sequence[str],
    batches: Iterable,
    state=None,
    samples_per_class: int = GRASP_SAMPLES_PER_CLASS,
    temperature: float = GRASP_TEMPERATURE,
) -> Scores:
    """θ ⊙ Hg on a class-balanced sample: higher is kept, i.e. the paper's highest −θ ⊙ Hg are pruned first."""
    values = _copies(module, state)
    x, y = balanced_sample(module, values, pairs(batches, "grasp"), samples_per_class)
    params, device = _leaves(values, names), values[names[0]].device
    x, y = x.to(device), y.to(device)
    wanted = [params[n] for n in names]
    loss = F.cross_entropy(_call(module, values, params, x, train=True) / temperature, y)
    g = [t.detach() for t in torch.autograd.grad(loss, wanted)]
    loss = F.cross_entropy(_call(module, values, params, x, train=True) / temperature, y)
    grads = torch.autograd.grad(loss, wanted, create_graph=True)
    hg = torch.autograd.grad(sum((a * b).sum() for a, b in zip(grads, g, strict=True)), wanted)
    return {n: (values[n] * h).detach() for n, h in zip(names, hg, strict=True)}


def synflow_scores(module: nn.Module, names: Sequence[str], values: Mapping[str, torch.Tensor], shape) -> Scores:
    """One SynFlow pass: ``values`` are already |θ| (masked), float64. Score |∂R/∂θ ⊙ θ|, R = sum(f(1))."""
    params = _leaves(values, names)
    ones = torch.ones((1, *shape), dtype=torch.float64, device=values[names[0]].device)
    flow = _call(module, values, params, ones, train=False).sum()
    grads = torch.autograd.grad(flow, [params[n] for n in names], allow_unused=True)
    return {
        n: (torch.zeros_like(values[n]) if g is None else (g * values[n]).abs())
        for n, g in zip(names, grads, strict=True)
    }


def synflow(module: nn.Module, groups: Groups, batches: Iterable, state=None, iterations=SYNFLOW_ITERATIONS) -> Masks:
    """SynFlow's masks: ``iterations`` prunings from the full network to ``groups``' counts, the density of each
    group following d^(k/iterations), scores recomputed with the current mask each time."""
    first = next(iter(batches), None)
    x = first[0] if isinstance(first, (tuple, list)) and first else first
    if not isinstance(x, torch.Tensor):
        raise ValueError(
            f"criterion 'synflow' reads one input's shape from the train dataloader, but its first batch is "
            f"{type(first).__name__}. Hint: yield (inputs, targets) pairs or input tensors"
        )
    names = [n for group, _ in groups for n in group]
    absolute = {k: (v.double().abs() if v.is_floating_point() else v) for k, v in _copies(module, state).items()}
    masks = {n: torch.ones_like(absolute[n], dtype=torch.bool) for n in names}
    sizes = [sum(absolute[n].numel() for n in group) for group, _ in groups]
    for k in range(1, iterations + 1):
        values = {**absolute, **{n: absolute[n] * masks[n] for n in names}}
        scores = synflow_scores(module, names, values, tuple(x.shape[1:]))
        step = [(group, count if k == iterations else max(count, round(size * (count / size) ** (k / iterations))))
                for (group, count), size in zip(groups, sizes, strict=True)]  # fmt: skip
        masks = {n: m.to(absolute[n].device) for n, m in keep_top(scores, step, masks).items()}
    return {n: m.cpu() for n, m in masks.items()}


SCORES: dict[str, Callable[..., Scores]] = {"grasp": grasp, "magnitude_init": magnitude_init, "snip": snip}
CRITERIA = ("grasp", "magnitude_init", "snip", "synflow")
NEEDS_DATA = frozenset({"grasp", "snip", "synflow"})


def masks_at_init(criterion: str, module: nn.Module, groups: Groups, batches: Iterable = (), state=None) -> Masks:
    """The masks ``criterion`` picks from θ0 (``state``, or the module's own values) for ``groups``' counts."""
    if criterion == "synflow":
        return synflow(module, groups, batches, state)
    if criterion not in SCORES:
        raise ValueError(f"unknown at-init criterion {criterion!r}; valid: {list(CRITERIA)}")
    names = [n for group, _ in groups for n in group]
    return keep_top(SCORES[criterion](module, names, batches, state), groups)


# ----------------------------------------------------------------------------------------------------------------
# Helpers


def pairs(batches: Iterable, criterion: str) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The (inputs, integer targets) batches a loss needs; anything else is refused with what is needed."""
    for batch in batches:
        ok = isinstance(batch, (tuple, list)) and len(batch) == 2 and all(isinstance(t, torch.Tensor) for t in batch)
        if not ok or batch[1].is_floating_point():
            raise ValueError(
                f"criterion {criterion!r} needs (inputs, targets) batches, targets as class indices, for the "
                f"cross-entropy of pl_module(inputs); the train dataloader gave a {type(batch).__name__}"
                f"{f' of {len(batch)}' if isinstance(batch, (tuple, list)) else ''}. Hint: yield (x, y) tensor "
                "pairs, or use a data-free criterion ('synflow', 'magnitude_init')"
            )
        yield batch[0], batch[1]


def balanced_sample(module, values, batches: Iterator, per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to ``per_class`` samples of every class (as many classes as the module has outputs), in data order,
    read until each class is full or the data ends."""
    xs, ys, counts, classes = [], [], {}, None
    for x, y in batches:
        if classes is None:
            with torch.no_grad():
                device = next(t.device for t in values.values() if t.is_floating_point())
                classes = _call(module, values, {}, x[:1].to(device), train=False).shape[-1]
        for i in range(len(y)):
            label = int(y[i])
            if counts.get(label, 0) < per_class:
                counts[label] = counts.get(label, 0) + 1
                xs.append(x[i : i + 1])
                ys.append(y[i : i + 1])
        if len(counts) >= classes and min(counts.values()) >= per_class:
            break
    if not xs:
        raise ValueError("criterion 'grasp' found no batch in the train dataloader. Hint: give it training data")
    return torch.cat(xs), torch.cat(ys)


def _copies(module: nn.Module, state: Mapping[str, torch.Tensor] | None) -> dict[str, torch.Tensor]:
    """Independent copies of every parameter and buffer (from ``state`` where it has them), on the module's
    device: a BatchNorm in training mode updates its running statistics in these, never in θ0 or the module."""
    own = {**dict(module.named_parameters()), **dict(module.named_buffers())}
    state = state or {}
    return {n: state.get(n, t).detach().to(t.device, t.dtype, copy=True) for n, t in own.items()}


def _leaves(values: Mapping[str, torch.Tensor], names: Sequence[str]) -> dict[str, torch.Tensor]:
    return {n: values[n].detach().clone().requires_grad_(True) for n in names}


def _call(module, values, params, x, *, train: bool) -> torch.Tensor:
    """``module(x)`` with ``values`` (and the gradient leaves ``params``) in place of its own tensors, in train or
    eval mode; the module's own mode is restored after."""
    mode = module.training
    module.train(train)
    try:
        return functional_call(module, {**values, **params}, (x,))
    finally:
        module.train(mode)
