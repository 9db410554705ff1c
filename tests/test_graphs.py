"""The shared graph pieces and losses against dense NumPy and hand-worked oracles
(S1 kNN graphs, S2 user-item adjacency, S3 BPR; V2 and B3 norms)."""

import math

import numpy as np
import pytest
import torch

from conftest import dense, dense_knn
from recbole_mmssl.model.graphs import (
    OperatorCache,
    SparseOperator,
    bpr_loss,
    coalesce_edges,
    cosine_values,
    knn_neighbours,
    lightgcn,
    node_adjacency,
    norm_loss,
    one_sided_graphs,
    row_sum_normalise,
    spmm_edges,
)

# S1's four items as rows 1..4 (row 0 is RecBole's padding item)
S1 = torch.tensor([[0.0, 0.0], [1.0, 0.0], [2.0, 1.0], [0.0, 1.0], [-1.0, 0.0]])


def test_s1_knn_neighbours_binary_and_weighted():
    rows, cols, cosines = knn_neighbours(S1, 2)
    assert {(r, c) for r, c in zip(rows.tolist(), cols.tolist())} == {
        (1, 1), (1, 2), (2, 2), (2, 1), (3, 3), (3, 2), (4, 4), (4, 3)}
    binary = dense(rows, cols, row_sum_normalise(rows, cols, torch.ones(len(rows)), 5), 5)
    np.testing.assert_allclose(binary[binary > 0], 0.5)
    np.testing.assert_allclose(binary[4, [3, 4]], [0.5, 0.5])  # a column-degree bug gives (0.5, 0.7071)
    weighted = dense(rows, cols, row_sum_normalise(rows, cols, cosine_values(S1, rows, cols), 5), 5)
    expected = {(1, 1): 0.5279, (2, 2): 0.5279, (1, 2): 0.4721, (2, 1): 0.4721, (3, 2): 0.2701,
                (3, 3): 0.6910, (4, 3): 0.0, (4, 4): 1.0}
    for (i, j), value in expected.items():
        assert weighted[i, j] == pytest.approx(value, abs=1e-4), (i, j)
    assert np.count_nonzero(weighted) == 7  # (4, 3) is a stored zero-weight edge


@pytest.mark.parametrize("weighted", [False, True])
def test_blocked_knn_graph_equals_a_dense_top_k(weighted):
    features = torch.cat([torch.zeros(1, 6), torch.randn(37, 6, generator=torch.Generator().manual_seed(3))])
    rows, cols, cosines = knn_neighbours(features, 5, block_size=4)
    torch.testing.assert_close(cosines, cosine_values(features, rows, cols))  # two ways to the kept cosines
    values = cosines if weighted else torch.ones(len(rows))
    ours = dense(rows, cols, row_sum_normalise(rows, cols, values, 38), 38)
    np.testing.assert_allclose(ours, dense_knn(features, 5, weighted), atol=1e-6)
    assert ours[0].sum() == 0 and ours[:, 0].sum() == 0  # the padding item takes no part


def test_kept_cosines_carry_gradients_to_the_features():
    features = S1.clone().requires_grad_(True)
    rows, cols, _ = knn_neighbours(features, 2)
    cosine_values(features, rows, cols).sum().backward()
    assert features.grad[1:].abs().sum() > 0


def test_coalesce_and_sparse_product_match_dense():
    rows, cols = torch.tensor([0, 1, 0, 2]), torch.tensor([1, 2, 1, 0])
    values = torch.tensor([1.0, 2.0, 3.0, 4.0], requires_grad=True)
    r, c, v = coalesce_edges(rows, cols, values, 3)
    np.testing.assert_allclose(dense(r, c, v, 3), dense(rows, cols, values, 3))
    assert len(v) == 3
    x = torch.randn(3, 2)
    np.testing.assert_allclose(spmm_edges(r, c, v, x).detach().numpy(), dense(rows, cols, values, 3) @ x.numpy(),
                               rtol=1e-6)
    spmm_edges(r, c, v, x).sum().backward()
    np.testing.assert_allclose(values.grad.numpy(), x.sum(1)[cols].numpy(), rtol=1e-6)


S2_USERS, S2_ITEMS = torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 1, 2])


def test_s2_symmetric_adjacency():
    adj = node_adjacency(S2_USERS, S2_ITEMS, 2, 3, "symmetric").to_dense().numpy()
    half, root = 0.5, 1 / math.sqrt(2)
    assert adj[0, 2] == pytest.approx(root) and adj[1, 4] == pytest.approx(root)
    assert adj[0, 3] == pytest.approx(half) and adj[1, 3] == pytest.approx(half)
    np.testing.assert_allclose(adj, adj.T)
    assert np.count_nonzero(adj) == 8 and np.trace(adj) == 0


def test_s2_random_walk_adjacency_with_self_loops():
    adj = node_adjacency(S2_USERS, S2_ITEMS, 2, 3, "random_walk").to_dense().numpy()
    expected = {0: {0, 2, 3}, 1: {1, 3, 4}, 2: {2, 0}, 3: {3, 0, 1}, 4: {4, 1}}
    for node, neighbours in expected.items():
        np.testing.assert_allclose(adj[node, sorted(neighbours)], 1 / len(neighbours))
        assert np.count_nonzero(adj[node]) == len(neighbours)


def test_lightgcn_is_the_mean_of_dense_powers():
    adj = node_adjacency(S2_USERS, S2_ITEMS, 2, 3)
    users, items = torch.randn(2, 4), torch.randn(3, 4)
    out_users, out_items = lightgcn(adj, users, items, 2)
    a, e = adj.to_dense().numpy(), torch.cat([users, items]).numpy()
    expected = (e + a @ e + a @ a @ e) / 3
    np.testing.assert_allclose(torch.cat([out_users, out_items]).numpy(), expected, rtol=1e-5, atol=1e-6)


def test_bpr_and_norm_losses_on_hand_worked_examples():
    assert bpr_loss(torch.tensor([2.0]), torch.tensor([0.0])).item() == pytest.approx(math.log(1 + math.exp(-2)))
    users = torch.tensor([[3.0, 0.0], [0.0, 4.0]])
    pos, neg = torch.tensor([[1.0, 0.0], [0.0, 0.0]]), torch.tensor([[0.0, 0.0], [0.0, 2.0]])
    assert norm_loss(users, pos, neg).item() == pytest.approx(4.0)  # V2: not 5 (row norms), not 15 (squared)
    items = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    assert norm_loss(users, items).item() == pytest.approx(2.0)  # B3: over the rows of the last table


def test_sparse_operator_products_and_gradients_equal_the_dense_ones():
    """P x and its gradient through the CSR copies equal the dense P x and P^T g (P not square,
    with an empty row, so a wrong transpose cannot pass)."""
    gen = torch.Generator().manual_seed(0)
    users, items = torch.randint(0, 7, (30,), generator=gen), torch.randint(0, 5, (30,), generator=gen)
    users[users == 3] = 4
    p, _ = one_sided_graphs(users, items, torch.rand(30, generator=gen), 7, 5)
    x = torch.randn(5, 4, generator=gen, dtype=torch.float32, requires_grad=True)
    weights = torch.randn(7, 4, generator=gen)
    out = SparseOperator(p) @ x
    (out * weights).sum().backward()
    dense_p = p.to_dense().double()
    np.testing.assert_allclose(out.detach().numpy(), (dense_p @ x.detach().double()).numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(x.grad.numpy(), (dense_p.T @ weights.double()).numpy(), rtol=1e-6, atol=1e-7)
    assert not out[3].any()


def test_operator_cache_keeps_the_operators_of_the_graphs_in_use():
    p, q = one_sided_graphs(torch.tensor([0, 1]), torch.tensor([1, 2]), torch.ones(2), 3, 4)
    cache = OperatorCache()
    cache.refresh([p, q])
    first = cache[p]
    cache.refresh([p, q])
    assert cache[p] is first  # the same graph object: built once
    rebuilt, _ = one_sided_graphs(torch.tensor([2]), torch.tensor([3]), torch.ones(1), 3, 4)
    cache.refresh([rebuilt, q])
    assert cache[rebuilt].source is rebuilt
    with pytest.raises(KeyError):
        cache[p]  # a graph no longer in use is forgotten
