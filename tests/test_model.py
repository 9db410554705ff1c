"""MMSSL's parts against independent oracles (checked against the released code) and hand-computed references."""

import contextlib
import math

import numpy as np
import pytest
import torch
import yaml

from conftest import REPO
from recbole_mmssl.config import Config
from recbole_mmssl.model.mmssl.discriminator import Discriminator, discriminator_loss
from recbole_mmssl.model.mmssl.modality_graph import topk_pairs
from recbole_mmssl.model.mmssl.relation_rows import real_rows, relation_rows
from recbole_mmssl.model.feature_norm import normalise_features
from recbole_mmssl.model.graphs import one_sided_graphs, symmetric_graphs, with_mean_row_sum
from recbole_mmssl.model.mmssl.layers import CrossModalAttention, propagate
from recbole_mmssl.model.mmssl import resolve_variant


def test_reference_attention_reduces_to_one_linear_map_per_view():
    """Oracle 1: output = mean_m concat(H copies of Y^m) @ W_c, computed in float64 NumPy."""
    torch.manual_seed(0)
    attention = CrossModalAttention(8, 4, "reference").double()
    views = [torch.randn(5, 8, dtype=torch.float64) for _ in range(3)]
    w_c = attention.w_c.detach().numpy()
    expected = np.mean([np.tile(v.numpy(), (1, 4)) @ w_c for v in views], axis=0)
    np.testing.assert_allclose(attention(views).detach().numpy(), expected, rtol=1e-10, atol=1e-12)
    assert attention.w_c.shape == (32, 8)


def test_paper_attention_is_a_real_attention():
    torch.manual_seed(1)
    attention = CrossModalAttention(8, 2, "paper").double()
    views = [torch.randn(4, 8, dtype=torch.float64) for _ in range(3)]
    weights = attention.attention_weights(torch.stack(views))
    assert weights.shape == (4, 2, 3, 3)
    torch.testing.assert_close(weights.sum(-1), torch.ones(4, 2, 3, dtype=torch.float64))
    # Independent per-node loop: softmax_k <q_m^h, k_k^h> / sqrt(d_h), values = the raw views.
    wq, wk, wc = (t.detach().numpy() for t in (attention.w_q, attention.w_k, attention.w_c))
    out = np.zeros((4, 8))
    for n in range(4):
        y = np.stack([v[n].numpy() for v in views])  # M x d
        per_modality = []
        for m in range(3):
            heads = []
            for h in range(2):
                q = (y[m] @ wq)[h * 4:(h + 1) * 4]
                k = (y @ wk)[:, h * 4:(h + 1) * 4]
                logits = k @ q / 2.0
                a = np.exp(logits - logits.max())
                a /= a.sum()
                heads.append(a @ y)
            per_modality.append(np.concatenate(heads) @ wc)
        out[n] = np.mean(per_modality, axis=0)
    np.testing.assert_allclose(attention(views).detach().numpy(), out, rtol=1e-9)
    reference = CrossModalAttention(8, 2, "reference").double()
    reference.w_c.data.copy_(attention.w_c.data)
    assert not torch.allclose(reference(views), attention(views))


def dense_graph(n_users, n_items, edges):
    g = np.zeros((n_users, n_items))
    for u, i in edges:
        g[u, i] += 1
    return g


def test_one_sided_normalisation_and_propagation_match_dense_numpy():
    edges = [(0, 1), (0, 2), (1, 2), (2, 0), (2, 1), (2, 3), (3, 3), (2, 3)]  # (2, 3) twice: counts add
    users = torch.tensor([u for u, _ in edges])
    items = torch.tensor([i for _, i in edges])
    p, q = one_sided_graphs(users, items, torch.ones(len(edges), dtype=torch.float64), 5, 4)
    g = dense_graph(5, 4, edges)
    p_np = g / np.sqrt(g.sum(1, keepdims=True) + 1e-8)
    q_np = g.T / np.sqrt(g.sum(0)[:, None] + 1e-8)
    np.testing.assert_allclose(p.to_dense().numpy(), p_np)
    np.testing.assert_allclose(q.to_dense().numpy(), q_np)
    assert not p.to_dense()[4].any()  # user 4 has no edge: its row stays zero

    rng = np.random.default_rng(0)
    eu, ei = rng.normal(size=(5, 3)), rng.normal(size=(4, 3))

    def softmax(x):
        e = np.exp(x - x.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    hu1 = p_np @ ei
    hi1 = q_np @ hu1
    hu2 = softmax(p_np @ hi1)
    hi2 = softmax(q_np @ hu2)
    users_out, items_out = propagate(p, q, torch.from_numpy(eu), torch.from_numpy(ei), 2)
    np.testing.assert_allclose(users_out.numpy(), (eu + hu1 + hu2) / 3, rtol=1e-10)
    np.testing.assert_allclose(items_out.numpy(), (ei + hi1 + hi2) / 3, rtol=1e-10)


def test_generator_rows_are_zero_on_training_items_and_unit_norm():
    """Oracle 4."""
    torch.manual_seed(2)
    block = (torch.rand(6, 10) < 0.3).float()
    rows = relation_rows(torch.randn(6, 4), torch.randn(10, 4), block.nonzero(as_tuple=True))
    assert torch.all(rows[block.bool()] == 0)
    torch.testing.assert_close(rows.norm(dim=1), torch.ones(6))


@pytest.mark.parametrize("form", ["orig", "head"])
def test_gumbel_rows_are_probability_rows(form, monkeypatch):
    torch.manual_seed(3)
    block = (torch.rand(4, 12) < 0.25).float()
    block[:, 0] = 1.0
    captured = {}
    original = torch.softmax

    def spy(x, dim):
        result = original(x, dim=dim)
        captured["soft"] = result.clone()
        return result

    monkeypatch.setattr(torch, "softmax", spy)
    rows = real_rows(block.nonzero(as_tuple=True), torch.zeros(4, 12), tau=0.005, noise_scale=1e-5, form=form,
                     aux_weight=100.0)
    soft = captured["soft"]
    assert torch.all(soft >= 0)
    torch.testing.assert_close(soft.sum(1), torch.ones(4))
    degree = block.sum(1, keepdim=True)
    if form == "orig":  # sharpened: about 1/deg on each training item (noise: +-0.2% per unit), 0 elsewhere
        torch.testing.assert_close(soft[block.bool()], (block / degree)[block.bool()], atol=0, rtol=0.02)
        assert torch.all(soft[~block.bool()] < 1e-30)
    else:  # the refactor's precedence slip: nearly uniform, training items only e times heavier
        torch.testing.assert_close(soft, torch.exp(block) / torch.exp(block).sum(1, keepdim=True), atol=1e-3, rtol=0)
    torch.testing.assert_close(rows.norm(dim=1), torch.ones(4))


def test_reference_pairing_oracle():
    """Oracle 7: b = 3, k = 2 pairs (B0,a0), (B1,a1), (B2,b0), (B0,b1), (B1,c0), (B2,c1)."""
    users = torch.tensor([10, 11, 12])
    rows = torch.tensor([[0.0, 9, 8, 0], [7, 0, 0, 6], [0, 0, 5, 4]])  # top-2 columns: [1,2], [0,3], [2,3]
    paired, items = topk_pairs(users, rows.topk(2, dim=1).indices, "reference")
    a, b, c = [2, 3], [1, 4], [3, 4]  # item id = column + 1
    assert list(zip(paired.tolist(), items.tolist())) == [
        (10, a[0]), (11, a[1]), (12, b[0]), (10, b[1]), (11, c[0]), (12, c[1])]
    paired, items = topk_pairs(users, rows.topk(2, dim=1).indices, "aligned")
    assert list(zip(paired.tolist(), items.tolist())) == [
        (10, a[0]), (10, a[1]), (11, b[0]), (11, b[1]), (12, c[0]), (12, c[1])]
    paired, items = topk_pairs(users, rows.topk(0, dim=1).indices, "reference")
    assert len(paired) == len(items) == 0


def test_discriminator_sizes_and_range():
    """Oracle 3: Amazon-Baby's discriminator is 7050 -> 1762 -> 881 -> 1, and D(x) is in (0, 100)."""
    torch.manual_seed(4)
    disc = Discriminator(7050)
    linears = [m for m in disc.layers if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(7050, 1762), (1762, 881), (881, 1)]
    assert sum(p.numel() for p in disc.parameters()) == 13_983_233
    scores = disc(torch.rand(64, 7050))
    assert scores.shape == (64,) and torch.all((scores > 0) & (scores < 100))
    assert all(isinstance(m, torch.nn.LeakyReLU) and m.negative_slope == 1.0
               for m in disc.layers if isinstance(m, torch.nn.LeakyReLU))


def test_gradient_penalty_is_zero_for_a_unit_gradient_critic():
    """A critic whose input gradient has norm 1 everywhere gets no penalty: L_D = -D(real) + D(fake)."""

    class UnitCritic(torch.nn.Module):
        def forward(self, x):
            return x[:, 0] * 1.0

        def precision(self, device):
            return contextlib.nullcontext()

    real, fake = torch.rand(8, 5), torch.rand(8, 5)
    loss = discriminator_loss(UnitCritic(), real, fake, gp_weight=1.0)
    torch.testing.assert_close(loss, -real[:, 0].mean() + fake[:, 0].mean())


class LinearCritic(torch.nn.Module):
    """D(x) = x . w: its input gradient is w in every row, so the penalty is 0.3 (||w|| - 1)^2."""

    def __init__(self, w):
        super().__init__()
        self.w = torch.nn.Parameter(w)

    def forward(self, x):
        return x @ self.w

    def precision(self, device):
        return contextlib.nullcontext()


class SquareCritic(LinearCritic):
    """D(x) = ||x||^2 / 2: its input gradient at x is x itself."""

    def forward(self, x):
        return (x * x).sum(1) / 2


def test_gradient_penalty_at_a_non_zero_value():
    """By hand: weight gp_weight * 0.3 (the released code's constant) times the mean squared gap of
    the gradient norm to 1; with real = fake every interpolated row is the real row."""
    torch.manual_seed(6)
    real, fake = torch.rand(8, 5, dtype=torch.float64), torch.rand(8, 5, dtype=torch.float64)
    w = torch.tensor([2.0, 0.0, 1.0, 2.0, 0.0], dtype=torch.float64)  # ||w|| = 3
    loss = discriminator_loss(LinearCritic(w), real, fake, gp_weight=2.0)
    expected = -(real @ w).mean() + (fake @ w).mean() + 2.0 * 0.3 * (3.0 - 1.0) ** 2
    torch.testing.assert_close(loss, expected)

    rows = torch.rand(6, 4, dtype=torch.float64) * 2
    loss = discriminator_loss(SquareCritic(w[:4]), rows, rows.clone(), gp_weight=1.0)
    norms = rows.norm(dim=1)
    torch.testing.assert_close(loss, 0.3 * ((norms - 1) ** 2).mean())  # the two mean D terms cancel


def test_relation_and_real_rows_against_dense_numpy():
    """rownorm((X Y^T) with the training entries zeroed), and without noise the real rows
    rownorm(softmax(R / tau) + aux_weight * S) (form orig) or rownorm(softmax(R) + aux_weight * S)
    (form head), computed here in float64 NumPy."""
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=(5, 3)), rng.normal(size=(9, 3))
    block = rng.random((5, 9)) < 0.3
    block[:, 0] = True
    entries = tuple(torch.from_numpy(np.stack(np.nonzero(block))))
    scores = np.where(block, 0.0, x @ y.T)
    expected = scores / np.linalg.norm(scores, axis=1, keepdims=True)
    rows = relation_rows(torch.from_numpy(x), torch.from_numpy(y), entries)
    np.testing.assert_allclose(rows.numpy(), expected, rtol=1e-12)
    for form, tau, aux in (("orig", 0.3, 100.0), ("orig", 2.0, 3.0), ("head", 0.3, 0.5)):
        logits = block / tau if form == "orig" else block * 1.0
        soft = np.exp(logits - logits.max(1, keepdims=True))
        soft /= soft.sum(1, keepdims=True)
        mixed = soft + aux * expected
        real = real_rows(entries, torch.from_numpy(expected.copy()), tau, 0.0, form, aux)
        np.testing.assert_allclose(real.numpy(), mixed / np.linalg.norm(mixed, axis=1, keepdims=True), rtol=1e-10)
    plain = block + 3.0 * expected  # w/o-GT: the interactions themselves
    real = real_rows(entries, torch.from_numpy(expected.copy()), 0.3, 1e-5, "orig", 3.0, use_gumbel=False)
    np.testing.assert_allclose(real.numpy(), plain / np.linalg.norm(plain, axis=1, keepdims=True), rtol=1e-10)


@pytest.mark.parametrize("precision, tolerance", [(torch.bfloat16, 2e-2), (torch.float16, 2e-3)])
def test_low_precision_critic_losses_stay_near_float32(precision, tolerance):
    """The discriminator's loss in bfloat16 (3 significant digits) and float16 (with its own loss
    scaling, 4 digits) against float32 on the same weights and draws, within a relative tolerance."""
    torch.manual_seed(8)
    exact = Discriminator(64, negative_slope=0.2)
    low = Discriminator(64, negative_slope=0.2, dtype=precision)
    low.load_state_dict(exact.state_dict())
    real, fake = torch.rand(32, 64), torch.rand(32, 64)
    losses = []
    for disc in (exact, low):
        torch.manual_seed(9)
        losses.append(discriminator_loss(disc, real, fake, gp_weight=1.0))
    torch.testing.assert_close(losses[1], losses[0], rtol=tolerance, atol=tolerance * abs(losses[0].item()))


def test_scaled_gradient_penalty_equals_the_unscaled_one():
    """The float16 loss scale of the inner gradient is removed again: same penalty, same gradients."""
    disc = Discriminator(16, negative_slope=0.2).double()
    real, fake = torch.rand(6, 16, dtype=torch.float64), torch.rand(6, 16, dtype=torch.float64)
    results = []
    for scale in (1.0, 4096.0):
        torch.manual_seed(5)
        disc.zero_grad()
        loss = discriminator_loss(disc, real, fake, gp_weight=1.0, grad_scale=scale)
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in disc.parameters()]))
    torch.testing.assert_close(results[0][0], results[1][0])
    for a, b in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(a, b)


def test_topk_per_dataset_settings():
    """Oracle 6: k = floor(I * graph_topk_rate) is 0, 367, 67 and 201."""
    items = {"amazon-baby": 7050, "amazon-sports": 18357, "tiktok": 6710, "allrecipes": 10067}
    expected = {"amazon-baby": 0, "amazon-sports": 367, "tiktok": 67, "allrecipes": 201}
    for name, n_items in items.items():
        settings = yaml.safe_load((REPO / "properties" / "dataset" / f"{name}.yaml").read_text())
        rate = settings["model_settings"]["MMSSL"]["graph_topk_rate"]
        assert int(n_items * rate) == expected[name], name


def test_variant_presets_and_overrides():
    base = {"variant": "reference", "attention": None, "d_negative_slope": None, "graph_update": None,
            "graph_pairing": None}
    assert resolve_variant(base) == {"attention": "reference", "d_negative_slope": 1.0, "graph_update": "batch",
                                     "graph_pairing": "reference"}
    paper = dict(base, variant="paper", graph_pairing="reference")
    assert resolve_variant(paper) == {"attention": "paper", "d_negative_slope": 0.01, "graph_update": "full",
                                      "graph_pairing": "reference"}
    with pytest.raises(ValueError, match="variant"):
        resolve_variant(dict(base, variant="orig"))


def test_contrastive_constant_matches_ln_2b_minus_1():
    """With zero modality views the InfoNCE (paper Eq. 11) is -ln(1/(2b-1) + 1e-8)."""
    from recbole_mmssl.model.mmssl import MMSSL

    model = MMSSL.__new__(MMSSL)
    torch.nn.Module.__init__(model)
    model.cl_temperature = 0.5
    anchors = torch.zeros(1024, 16, requires_grad=True)
    loss = model.contrastive_loss(anchors, torch.randn(1024, 16))
    assert loss.item() == pytest.approx(-math.log(1 / 2047 + 1e-8), rel=1e-6)
    assert loss.item() == pytest.approx(7.6241, abs=1e-4)


def test_symmetric_normalisation_and_lightgcn_propagation_match_dense_numpy():
    """adjacency_norm symmetric: P = D_u^-1/2 G D_i^-1/2, Q = P^T; propagation simultaneous
    without the last-layer softmax is LightGCN's layer mean."""
    edges = [(0, 1), (0, 2), (1, 2), (2, 0), (2, 1), (2, 3), (3, 3)]
    users = torch.tensor([u for u, _ in edges])
    items = torch.tensor([i for _, i in edges])
    p, q = symmetric_graphs(users, items, torch.ones(len(edges), dtype=torch.float64), 5, 4)
    g = dense_graph(5, 4, edges)
    du, di = g.sum(1), g.sum(0)
    expected = np.zeros_like(g)
    for u, i in edges:
        expected[u, i] = 1 / math.sqrt(du[u] * di[i])
    np.testing.assert_allclose(p.to_dense().numpy(), expected)
    np.testing.assert_allclose(q.to_dense().numpy(), expected.T)

    rng = np.random.default_rng(1)
    eu, ei = rng.normal(size=(5, 3)), rng.normal(size=(4, 3))
    # LightGCN on the bipartite adjacency A = [[0, P], [P^T, 0]]: E^(l) = A E^(l-1)
    a = np.block([[np.zeros((5, 5)), expected], [expected.T, np.zeros((4, 4))]])
    layers = [np.vstack([eu, ei])]
    for _ in range(3):
        layers.append(a @ layers[-1])
    mean = np.mean(layers, axis=0)
    users_out, items_out = propagate(p, q, torch.from_numpy(eu), torch.from_numpy(ei), 3,
                                     last_norm="none", alternating=False)
    np.testing.assert_allclose(users_out.numpy(), mean[:5], rtol=1e-10)
    np.testing.assert_allclose(items_out.numpy(), mean[5:], rtol=1e-10)


def _dense_last_layer(last_norm, share):
    """The last layer's row map in NumPy: a softmax written out, blended with the identity."""
    if last_norm == "l2":
        return lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)
    if last_norm == "none":
        return lambda x: x
    return lambda x: share * np.exp(x) / np.exp(x).sum(1, keepdims=True) + (1 - share) * x


@pytest.mark.parametrize("last_norm, share", [("none", 1.0), ("l2", 1.0), ("softmax", 1.0), ("softmax", 0.3),
                                              ("softmax", 0.0)])
@pytest.mark.parametrize("readout", ["mean", "last"])
def test_alternating_propagation_against_dense_numpy(last_norm, share, readout):
    """H_U^l = P H_I^(l-1), then H_I^l = Q H_U^l; the last layer's user rows are mapped (unit
    length, or s softmax + (1 - s) identity) before the items read them, then the items' rows; the
    readout is the mean of the layers 0..L or the last layer alone."""
    edges = [(0, 0), (0, 2), (1, 1), (2, 2), (2, 0), (1, 2)]
    users = torch.tensor([u for u, _ in edges])
    items = torch.tensor([i for _, i in edges])
    p, q = one_sided_graphs(users, items, torch.ones(len(edges), dtype=torch.float64), 3, 3)
    pd, qd = p.to_dense().numpy(), q.to_dense().numpy()
    rng = np.random.default_rng(4)
    eu, ei = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    last = _dense_last_layer(last_norm, share)
    hu1 = pd @ ei
    hi1 = qd @ hu1
    hu2 = last(pd @ hi1)
    hi2 = last(qd @ hu2)
    users_out, items_out = propagate(p, q, torch.from_numpy(eu), torch.from_numpy(ei), 2, last_norm=last_norm,
                                     readout=readout, softmax_share=share)
    expected_users, expected_items = ((eu + hu1 + hu2) / 3, (ei + hi1 + hi2) / 3) if readout == "mean" else (hu2, hi2)
    np.testing.assert_allclose(users_out.numpy(), expected_users, rtol=1e-10)
    np.testing.assert_allclose(items_out.numpy(), expected_items, rtol=1e-10)


@pytest.mark.parametrize("share, same_as", [(0.0, "none"), (1.0, "softmax")])
def test_softmax_share_at_its_ends_is_exactly_none_or_the_softmax(share, same_as):
    """The improved preset's rule gives 0 or 1 on the bundled datasets: those must be the
    unblended forms bit for bit, so that the share adds no rounding there."""
    users, items = torch.tensor([0, 0, 1, 2, 2]), torch.tensor([0, 1, 1, 0, 2])
    p, q = one_sided_graphs(users, items, torch.ones(5), 3, 3)
    eu, ei = torch.randn(3, 8, generator=torch.Generator().manual_seed(0)), torch.randn(3, 8)
    blended = propagate(p, q, eu, ei, 2, last_norm="softmax", softmax_share=share)
    plain = propagate(p, q, eu, ei, 2, last_norm=same_as)
    assert all(torch.equal(a, b) for a, b in zip(blended, plain))


def test_propagation_gain_sets_the_mean_row_sum():
    """with_mean_row_sum: the rows with edges sum to ``gain`` on average; within the graph, the
    entries keep their ratios (one factor for all)."""
    users, items = torch.tensor([0, 0, 1, 2, 2, 2]), torch.tensor([0, 1, 1, 0, 1, 2])
    p, _ = one_sided_graphs(users, items, torch.ones(6, dtype=torch.float64), 4, 3)
    scaled = with_mean_row_sum(p, 2.0)
    dense, original = scaled.to_dense().numpy(), p.to_dense().numpy()
    sums = dense.sum(1)
    assert sums[3] == 0 and np.isclose(sums[:3].mean(), 2.0)  # user 3 has no edge and stays empty
    np.testing.assert_allclose(dense, original * (2.0 / original.sum(1)[:3].mean()), rtol=1e-12)


def test_feature_norms():
    """Statistics over the real items (rows 1..), never the padding row 0."""
    rng = np.random.default_rng(3)
    raw = np.zeros((7, 4), dtype=np.float32)
    raw[1:] = rng.normal(loc=2.5, scale=3.0, size=(6, 4))
    raw[1:, 2] = 4.0  # a constant column
    table = torch.from_numpy(raw)
    same, _ = normalise_features(table, "none")
    assert torch.equal(same, table)

    standard, stats = normalise_features(table, "standardize")
    real = raw[1:].astype(np.float64)
    expected = (real - real.mean(0)) / np.where(real.std(0) == 0, 1, real.std(0))
    expected[:, 2] = 0.0
    np.testing.assert_allclose(standard[1:].numpy(), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(standard[1:].numpy()[:, [0, 1, 3]].mean(0), 0, atol=1e-6)
    np.testing.assert_allclose(standard[1:].numpy()[:, [0, 1, 3]].std(0), 1, rtol=1e-5)
    assert torch.count_nonzero(standard[0]) == 0 and stats["constant_columns"] == 1
    assert stats["mean"] == pytest.approx(real.mean())

    raw[3] = 0.0  # an item whose features are all zero
    unit, _ = normalise_features(table, "l2")
    norms = unit[1:].norm(dim=1).numpy()
    np.testing.assert_allclose(np.delete(norms, 2), 1, rtol=1e-6)  # row 3 of the table = real row 2
    assert norms[2] == 0 and torch.count_nonzero(unit[0]) == 0
    np.testing.assert_allclose(unit[1].numpy(), raw[1] / np.linalg.norm(raw[1]), rtol=1e-6)
    with pytest.raises(ValueError, match="feature_norm"):  # refused when the configuration is built
        Config(model="MMSSL", dataset="toy", config_dict={"data_path": "unused", "feature_norm": "minmax"})
