"""Masks, criteria and pruning: the pure maths, without Lightning."""

import math

import pytest
import torch

from lth_wandb.pruning import criteria
from lth_wandb.pruning import masks as M
from lth_wandb.pruning.prune import prune, shuffle_positions


def test_pack_unpack_roundtrip_odd_sizes():
    g = torch.Generator().manual_seed(0)
    for shape in [(1,), (7,), (3, 5), (300, 784), (2, 3, 3, 3)]:
        mask = torch.rand(shape, generator=g) > 0.7
        packed = M.pack_bits(mask)
        assert packed.dtype == torch.uint8 and packed.numel() == math.ceil(mask.numel() / 8)
        assert torch.equal(M.unpack_bits(packed, shape), mask)


def test_unpack_rejects_wrong_length():
    with pytest.raises(ValueError, match="packed mask has 2 bytes but shape"):
        M.unpack_bits(torch.zeros(2, dtype=torch.uint8), (100,))


def test_density_and_layer_densities():
    masks = {"a": torch.tensor([True, False, True, True]), "b": torch.zeros(4, dtype=torch.bool)}
    assert M.density(masks) == pytest.approx(3 / 8)
    assert M.layer_densities(masks) == {"a": 0.75, "b": 0.0}
    assert M.density({}) == 1.0


def test_enforcer_zeroes_in_place_and_keeps_storage():
    w = torch.randn(10)
    ptr = w.data_ptr()
    mask = torch.arange(10) % 2 == 0
    M.MaskEnforcer([w], [mask])()
    assert w.data_ptr() == ptr
    assert torch.all(w[~mask] == 0) and torch.all(w[mask] != 0)


def test_layerwise_prunes_exact_fraction_of_remaining_each_round():
    g = torch.Generator().manual_seed(1)
    weights = {"a": torch.randn(100, 50, generator=g), "b": torch.randn(10, 100, generator=g)}
    masks = M.full_masks(weights)
    for r in range(1, 6):
        new = prune({n: w.abs() for n, w in weights.items()}, masks, 0.2, "layerwise")
        assert not torch.any(new["a"] & ~masks["a"]), "pruned weights must stay pruned"
        masks = new
        for name, w in weights.items():
            assert abs(M.layer_densities(masks)[name] - 0.8**r) < 2 / w.numel() * r
    # Kept entries are the largest magnitudes.
    kept_min = weights["a"].abs()[masks["a"]].min()
    assert kept_min >= weights["a"].abs()[~masks["a"]].max()


@pytest.mark.parametrize("scope", ["layerwise", "global"])
def test_a_half_count_rounds_up(scope):
    """README's choice: a round removes floor(p * kept + 1/2). Python's round() would remove 2 of 5 and 4 of 9."""
    weights = {"five": torch.arange(1.0, 6.0), "nine": torch.arange(1.0, 10.0)}
    masks = M.full_masks(weights)
    rates = {} if scope == "layerwise" else {"five": 0.5, "nine": 0.5}  # each on its own in global scope too
    new = prune(weights, masks, 0.5, scope, rates)
    assert {name: int((~m).sum()) for name, m in new.items()} == {"five": 3, "nine": 5}
    assert new["five"].tolist() == [False, False, False, True, True]  # the smallest go


def test_global_scope_ranks_across_tensors():
    scores = {"small": torch.full((10,), 1.0), "large": torch.full((10,), 5.0)}
    masks = M.full_masks(scores)
    new = prune(scores, masks, 0.5, "global")
    assert new["small"].sum() == 0 and new["large"].sum() == 10


def test_layer_rate_override_pruned_on_its_own_in_global_scope():
    scores = {"hidden": torch.arange(100.0), "out.weight": torch.arange(10.0) / 1000}
    new = prune(scores, M.full_masks(scores), 0.2, "global", layer_rates={"out.*": 0.1})
    assert int(new["out.weight"].sum()) == 9  # 10% of its own 10, despite tiny scores
    assert int(new["hidden"].sum()) == 80
    assert torch.equal(new["out.weight"], torch.arange(10) >= 1)


def test_ties_prune_exact_count():
    scores = {"w": torch.ones(10)}
    new = prune(scores, M.full_masks(scores), 0.3)
    assert int(new["w"].sum()) == 7


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(rate=1.5), r"prune_rate=1.5 is outside \(0, 1\)"),
        (dict(rate=0.0), r"prune_rate=0.0 is outside \(0, 1\)"),
        (dict(rate=0.2, scope="local"), r"unknown scope 'local'; valid scopes: \['global', 'layerwise'\]"),
        (dict(rate=0.2, layer_rates={"w": 1.0}), r"layer_rates\['w'\]=1.0 is outside \[0, 1\)"),
    ],
)
def test_prune_validates(kwargs, message):
    scores = {"w": torch.ones(4)}
    with pytest.raises(ValueError, match=message):
        prune(scores, M.full_masks(scores), **kwargs)


def test_criteria_values():
    final, ref = torch.tensor([1.0, -3.0, 0.5]), torch.tensor([-2.0, 1.0, 0.5])
    assert torch.equal(criteria.get("magnitude")(final, ref, None), torch.tensor([1.0, 3.0, 0.5]))
    assert torch.equal(criteria.get("magnitude_increase")(final, ref, None), torch.tensor([-1.0, 2.0, 0.0]))
    assert torch.equal(criteria.get("movement")(final, ref, None), torch.tensor([3.0, 4.0, 0.0]))
    a = criteria.get("random")(final, None, torch.Generator().manual_seed(3))
    b = criteria.get("random")(final, None, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.shape == final.shape


def test_unknown_criterion_lists_valid_names():
    with pytest.raises(ValueError, match=r"unknown criterion 'l1'; valid criteria: \['magnitude', "):
        criteria.get("l1")


def test_shuffle_positions_keeps_counts_and_nesting():
    g = torch.Generator().manual_seed(0)
    old = {"w": torch.rand(50, 20, generator=g) > 0.3}
    new = prune({"w": torch.rand(50, 20, generator=g)}, old, 0.5)
    shuffled = shuffle_positions(new, old, torch.Generator().manual_seed(1))
    assert int(shuffled["w"].sum()) == int(new["w"].sum())
    assert not torch.any(shuffled["w"] & ~old["w"])
    assert not torch.equal(shuffled["w"], new["w"])


def test_layer_rate_keys_are_globs_or_dotted_suffixes():
    from lth_wandb.pruning.prune import matches, rate_overrides

    names = ["net.fc1.weight", "net.out.weight", "net.xout.weight"]
    assert [n for n in names if matches(n, "*out.weight")] == ["net.out.weight", "net.xout.weight"]
    assert [n for n in names if matches(n, "out.weight")] == ["net.out.weight"]  # a whole dotted suffix only
    assert [n for n in names if matches(n, "fc1.weight")] == ["net.fc1.weight"]
    assert rate_overrides(names, {"fc1.weight": 0.1, "*weight": 0.3}) == {
        "net.fc1.weight": 0.1, "net.out.weight": 0.3, "net.xout.weight": 0.3,
    }  # fmt: skip
