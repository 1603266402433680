"""Pruning at initialisation: SNIP, GraSP, SynFlow and |θ0| score θ0, and round r prunes afresh to IMP's density."""

import json
import math
from types import SimpleNamespace

import pytest
import torch
from conftest import TinyNet, loaders, lth_train, trainer
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lth_wandb import LotteryTicket
from lth_wandb.app.controls import expand_argv
from lth_wandb.app.resume import ResumeError
from lth_wandb.lottery.init_masks import prune_at_init
from lth_wandb.pruning import at_init, criteria
from lth_wandb.pruning import masks as M
from lth_wandb.pruning.prune import prune
from lth_wandb.pruning.ticket import Ticket


def linear(weight) -> nn.Linear:
    weight = torch.tensor(weight)
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    with torch.no_grad():
        layer.weight.copy_(weight)
    return layer


# -- the scores, by hand ------------------------------------------------------------------------------------------


def test_snip_is_gradient_times_weight_by_hand():
    w = [[1.0, -2.0], [0.5, 1.0]]
    net = nn.Sequential(linear(w))
    x, y = torch.tensor([[1.0, 2.0]]), torch.tensor([1])
    scores = at_init.snip(net, ["0.weight"], [(x, y)])
    # logits z = W x = (-3, 2.5); dL/dz = softmax(z) - onehot(1); dL/dW_ij = dL/dz_i * x_j.
    p0 = math.exp(-3) / (math.exp(-3) + math.exp(2.5))
    dz = [p0, (1 - p0) - 1]
    expected = [[abs(dz[i] * xj * w[i][j]) for j, xj in enumerate([1.0, 2.0])] for i in range(2)]
    assert torch.allclose(scores["0.weight"], torch.tensor(expected), rtol=1e-5)
    assert net[0].weight.grad is None  # the module's own gradients are left alone


def test_snip_scores_a_batchnorm_net_in_eval_mode_by_hand():
    # SNIP's authors (is_train: False) and Synaptic-Flow (prune_train_mode=False) score with BatchNorm's running
    # statistics. z_i = γ_i (h_i - μ_i) / s_i + β_i with h = W x and s_i = sqrt(σ²_i + eps), so for the mean loss
    # over the batch dL/dW_ij = Σ_b dL/dz_bi γ_i / s_i x_bj, dL/dz_b = (softmax(z_b) - onehot(y_b)) / batch.
    w, gamma, beta, mu, var = [[1.0, -2.0], [0.5, 1.0]], [2.0, 0.5], [0.1, -0.3], [0.4, -1.0], [4.0, 0.25]
    bn = nn.BatchNorm1d(2)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor(gamma)), bn.bias.copy_(torch.tensor(beta))
        bn.running_mean.copy_(torch.tensor(mu)), bn.running_var.copy_(torch.tensor(var))
    net = nn.Sequential(linear(w), bn).train()
    xs, ys = [[1.0, 2.0], [-1.0, 0.5]], [1, 0]
    s = [math.sqrt(v + bn.eps) for v in var]
    grad = [[0.0, 0.0], [0.0, 0.0]]
    for x, y in zip(xs, ys, strict=True):
        h = [sum(w[i][j] * x[j] for j in range(2)) for i in range(2)]
        z = [gamma[i] * (h[i] - mu[i]) / s[i] + beta[i] for i in range(2)]
        p = [math.exp(zi) / sum(math.exp(zk) for zk in z) for zi in z]
        for i in range(2):
            dz = (p[i] - (i == y)) / len(xs)
            for j in range(2):
                grad[i][j] += dz * gamma[i] / s[i] * x[j]
    expected = torch.tensor([[abs(grad[i][j] * w[i][j]) for j in range(2)] for i in range(2)])
    batch = (torch.tensor(xs), torch.tensor(ys))
    scores = at_init.snip(net, ["0.weight"], [batch])["0.weight"]
    assert torch.allclose(scores, expected, rtol=1e-5)
    # The module keeps its mode and statistics. Training mode (batch statistics) would give other logits, so scores.
    assert net.training and torch.equal(bn.running_mean, torch.tensor(mu)) and net[0].weight.grad is None
    with torch.no_grad():
        assert not torch.allclose(net(batch[0]), net.eval()(batch[0]))


def test_synflow_is_path_flow_by_hand():
    net = nn.Sequential(linear([[1.0, -2.0], [3.0, 0.5]]), linear([[-1.0, 2.0]]))
    names = ["0.weight", "1.weight"]
    values = {n: p.detach().double().abs() for n, p in net.named_parameters()}
    scores = at_init.synflow_scores(net, names, values, (2,))
    # R = sum_k |W2_k| sum_j |W1_kj|: a W1 entry scores |W2_k| |W1_kj|, a W2 entry |W2_k| sum_j |W1_kj|.
    assert scores["0.weight"].tolist() == [[1.0, 2.0], [6.0, 1.0]]
    assert scores["1.weight"].tolist() == [[3.0, 7.0]]
    # One iteration is one-shot pruning by those scores: the two best of the 6 entries, globally.
    masks = at_init.synflow(net, [(names, 2)], [torch.ones(1, 2)], iterations=1)
    assert masks["0.weight"].tolist() == [[False, False], [True, False]]
    assert masks["1.weight"].tolist() == [[False, True]]
    assert net[0].weight.tolist() == [[1.0, -2.0], [3.0, 0.5]]  # signs and values restored


def test_grasp_keeps_the_weights_with_the_lowest_minus_theta_hg():
    # Logits z = (a, b) = W * 1, target 0, no temperature. With p = softmax(z): g = dL/dz = (-p1, p1) and
    # H = diag(p) - p p^T, so Hg = 2 p0 p1 (-p1, p1). The paper prunes the highest -θ ⊙ Hg first.
    a, b = 2.0, -1.0
    net = nn.Sequential(linear([[a], [b]]))
    batches = [(torch.ones(1, 1), torch.tensor([0]))]
    scores = at_init.grasp(net, ["0.weight"], batches, samples_per_class=1, temperature=1.0)["0.weight"]
    p0 = 1 / (1 + math.exp(b - a))
    p1 = 1 - p0
    hg = [2 * p0 * p1 * -p1, 2 * p0 * p1 * p1]
    minus_theta_hg = [-a * hg[0], -b * hg[1]]  # (0.21, 0.10): the paper removes the first weight
    assert torch.allclose(-scores.reshape(-1), torch.tensor(minus_theta_hg), rtol=1e-5)
    mask = at_init.masks_at_init("grasp", net, [(["0.weight"], 1)], batches)["0.weight"]
    assert mask.reshape(-1).tolist() == [False, True]


def test_synflow_avoids_the_layer_collapse_of_global_magnitude():
    # A first layer of tiny weights: global |θ0| empties it; SynFlow's flow is conserved per layer, so it keeps it.
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(20, 20, bias=False), nn.ReLU(), nn.Linear(20, 20, bias=False))
    with torch.no_grad():
        net[0].weight.mul_(1e-3)
    groups = [(["0.weight", "2.weight"], 40)]
    by_magnitude = at_init.masks_at_init("magnitude_init", net, groups)
    by_synflow = at_init.masks_at_init("synflow", net, groups, [torch.ones(1, 20)])
    assert by_magnitude["0.weight"].sum() == 0
    assert by_synflow["0.weight"].sum() > 0 and M.kept(by_synflow) == 40


# -- densities per round ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scope", ["layerwise", "global"])
def test_round_r_has_imps_density_after_r_rounds(scope):
    full = {"a.weight": torch.ones(10, 10, dtype=torch.bool), "b.weight": torch.ones(5, 10, dtype=torch.bool),
            "out.weight": torch.ones(10, dtype=torch.bool)}  # fmt: skip
    groups = at_init.target_groups(full, 0.2, scope, {"*out.weight": 0.1}, 2)
    # By hand: 100 -> 80 -> 64, 50 -> 40 -> 32, pooled 150 -> 120 -> 96; the output layer at 10%: 10 -> 9 -> 8.
    if scope == "layerwise":
        assert groups == [(["a.weight"], 64), (["b.weight"], 32), (["out.weight"], 8)]
    else:
        assert groups == [(["out.weight"], 8), (["a.weight", "b.weight"], 96)]
    # The same counts as two IMP rounds (any scores), rounding included.
    imp = full
    for _ in range(2):
        imp = prune({n: torch.rand(m.shape) for n, m in full.items()}, imp, 0.2, scope, {"*out.weight": 0.1})
    for names, count in groups:
        assert sum(int(imp[n].sum()) for n in names) == count


def test_the_callback_prunes_theta0_afresh_each_round(data):
    torch.manual_seed(0)
    model = TinyNet()
    theta0 = {n: t.clone() for n, t in model.state_dict().items()}
    lottery = LotteryTicket(rounds=3, epochs_per_round=1, criterion="synflow", scope="global")
    trainer([lottery]).fit(model, *data)
    names = list(lottery.masks_of(0))
    size = sum(p.numel() for n, p in model.named_parameters() if n in names)
    first_batch = [next(iter(data[0]))]
    for r in (1, 2, 3):
        groups = [(names, at_init.kept_after(size, 0.2, r))]
        expected = at_init.masks_at_init("synflow", TinyNet(), groups, first_batch, theta0)
        assert all(lottery.masks_of(r)[n].equal(expected[n]) for n in names), r  # from θ0 and the full network
    assert all(t.equal(theta0[n]) for n, t in lottery._states.theta0.items())  # θ0 untouched by the scoring


def test_the_shuffle_control_moves_each_rounds_mask_within_the_full_layer(data):
    """Masks are not nested across rounds: random_mask ("Missing the mark") draws each round's positions from the
    whole layer, at the per-layer counts the criterion chose."""
    runs = {}
    for control in (None, "random_mask"):
        torch.manual_seed(0)
        runs[control] = LotteryTicket(rounds=2, epochs_per_round=1, criterion="snip", scope="global", control=control)
        trainer([runs[control]]).fit(TinyNet(), *data)
    snip, shuffled = runs[None], runs["random_mask"]
    for r in (1, 2):
        counts = {n: int(m.sum()) for n, m in snip.masks_of(r).items()}
        assert {n: int(m.sum()) for n, m in shuffled.masks_of(r).items()} == counts
    assert any((shuffled.masks_of(2)[n] & ~shuffled.masks_of(1)[n]).any() for n in snip.masks_of(1))


# -- nothing disturbed --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("criterion", ["snip", "grasp", "synflow", "magnitude_init"])
def test_scoring_leaves_theta0_the_module_and_every_rng_alone(criterion):
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3)).eval()
    theta0 = {n: t.clone() for n, t in net.state_dict().items()}
    live = {n: t.clone() for n, t in net.state_dict().items()}
    shuffle = torch.Generator().manual_seed(5)
    data = TensorDataset(torch.randn(30, 4), torch.arange(30) % 3)
    loader = DataLoader(data, batch_size=8, shuffle=True, generator=shuffle)
    settings = LotteryTicket(criterion=criterion, scope="global").settings
    before, shuffle_before = torch.get_rng_state(), shuffle.get_state()
    full = M.full_masks({"0.weight": net[0].weight, "3.weight": net[3].weight})
    lottery = SimpleNamespace(settings=settings, masks=full, _states=SimpleNamespace(theta0=theta0))
    masks, start = prune_at_init(lottery, SimpleNamespace(train_dataloader=loader), net, 2)
    assert all(m.all() for m in start.values())  # chosen from the full network
    assert M.kept(masks) == at_init.kept_after(56, 0.2, 2)
    assert torch.equal(torch.get_rng_state(), before) and torch.equal(shuffle.get_state(), shuffle_before)
    assert all(t.equal(theta0[n]) and net.state_dict()[n].equal(live[n]) for n, t in live.items())
    assert not net.training and all(p.grad is None for p in net.parameters())


def test_two_fits_with_the_same_seed_pick_the_same_masks():
    def fit():
        torch.manual_seed(0)
        model = TinyNet()
        lottery = LotteryTicket(rounds=2, epochs_per_round=1, criterion="snip")
        train, val = loaders()
        shuffled = DataLoader(train.dataset, batch_size=32, shuffle=True)  # draws its order from the global RNG
        trainer([lottery]).fit(model, shuffled, val)
        return lottery, model

    (a, model_a), (b, model_b) = fit(), fit()
    for r in (1, 2):
        assert all(a.masks_of(r)[n].equal(m) for n, m in b.masks_of(r).items())
    assert all(p.equal(q) for p, q in zip(model_a.parameters(), model_b.parameters(), strict=True))


# -- errors -------------------------------------------------------------------------------------------------------


def test_a_batch_that_is_not_inputs_and_targets_is_refused(data):
    dicts = DataLoader([{"x": torch.randn(20), "y": 0}] * 8, batch_size=4)
    lottery = LotteryTicket(rounds=1, epochs_per_round=1, criterion="snip")
    with pytest.raises(ValueError, match=r"criterion 'snip' needs \(inputs, targets\) batches.*gave a dict"):
        at_init.snip(TinyNet(), ["net.0.weight"], dicts)
    with pytest.raises(ValueError, match=r"needs \(inputs, targets\) batches"):
        trainer([lottery]).fit(DictNet(), dicts, data[1])  # round 0 trains; round 1's SNIP cannot read a dict


class DictNet(TinyNet):
    def training_step(self, batch, batch_idx):
        return nn.functional.cross_entropy(self(batch["x"]), batch["y"])


def test_criterion_names_and_rewind_are_checked():
    with pytest.raises(ValueError, match=r"at initialisation: \['grasp', 'magnitude_init', 'snip', 'synflow'\]"):
        LotteryTicket(criterion="snipp")
    with pytest.raises(ValueError, match=r"criterion='grasp' with rewind='lr'.*Hint: rewind='init'"):
        LotteryTicket(criterion="grasp", rewind="lr")
    assert criteria.is_at_init("synflow") and not criteria.is_at_init("magnitude")


# -- lth-train ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def snip_run(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("snip")
    result = lth_train(cwd, "pruning=snip", "pruning.rounds=2", "trainer.val_every_n_steps=null")
    assert result.returncode == 0, result.stderr[-3000:]
    (folder,) = cwd.glob("outputs/*/*")
    return cwd, folder


def test_lth_train_pruning_snip_end_to_end(snip_run):
    _, folder = snip_run
    config = json.loads((folder / "run.json").read_text())["config"]["pruning"]
    assert config["criterion"] == "snip" and config["scope"] == "global"
    tickets = [Ticket.load(folder / "tickets" / f"round-{r}" / "ticket") for r in (1, 2)]
    # demo: 50% per round, the output layer on its own at 25%.
    sizes = {n: m.numel() for n, m in tickets[0].masks.items()}
    pooled = sum(size for n, size in sizes.items() if n != "net.out.weight")
    for r, ticket in enumerate(tickets, start=1):
        assert int(ticket.masks["net.out.weight"].sum()) == at_init.kept_after(sizes["net.out.weight"], 0.25, r)
        assert M.kept(ticket.masks) - int(ticket.masks["net.out.weight"].sum()) == at_init.kept_after(pooled, 0.5, r)


def test_controls_can_run_only_the_shuffle(snip_run):
    _, folder = snip_run
    argv = expand_argv([f"controls={folder}", "pruning.control=random_mask"])
    assert "pruning.control=random_mask" in argv and "pruning=snip" in argv and argv[0] == "-m"
    assert [a for a in argv if a.startswith("pruning.control")] == ["pruning.control=random_mask"]
    with pytest.raises(ResumeError, match=r"controls are \['reinit', 'random_mask'\]"):
        expand_argv([f"controls={folder}", "pruning.control=shuffle"])


@pytest.mark.slow
def test_missing_the_mark_shuffle_of_a_snip_run(snip_run):
    cwd, folder = snip_run
    result = lth_train(cwd, f"controls={folder}", "pruning.control=random_mask", tiny=())
    assert result.returncode == 0, result.stderr[-3000:]
    (job,) = [j for j in cwd.glob("multirun/*/*/*") if (j / "tickets").is_dir()]
    assert json.loads((job / "run.json").read_text())["config"]["pruning"]["control"] == "random_mask"
    for r in (1, 2):
        snip = Ticket.load(folder / "tickets" / f"round-{r}" / "ticket").masks
        shuffled = Ticket.load(job / "tickets" / f"round-{r}" / "ticket").masks
        for name, mask in snip.items():
            assert shuffled[name].sum() == mask.sum() and not shuffled[name].equal(mask)  # per layer, moved
