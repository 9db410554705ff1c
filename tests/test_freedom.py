"""FREEDOM: the frozen item graph (hand-worked oracles F1, F3, and a dense NumPy top-k), the
degree-sensitive pruning (F2: its share of edges and its sampling rule), F4, and scoring on the
full graph."""

import itertools

import numpy as np
import pytest
import torch
from recbole.data.interaction import Interaction

from conftest import built, dense_knn
from recbole_mmssl.model.freedom import degree_sensitive_sample, frozen_item_graph, modality_weights
from recbole_mmssl.model.graphs import node_adjacency

PAD = torch.zeros(1, 2)
IMAGE = torch.cat([PAD, torch.tensor([[1.0, 0.0], [2.0, 1.0], [0.0, 1.0], [-1.0, 0.0]])])  # S1
TEXT = torch.cat([PAD, torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.2], [0.2, 1.0]])])  # L2's second modality


def test_f1_frozen_graph_mixes_binary_graphs():
    graph = frozen_item_graph({"image": IMAGE, "text": TEXT}, modality_weights(["image", "text"]), 2, 5)
    expected = np.array([[0.5, 0.05, 0.45, 0], [0.05, 0.5, 0, 0.45], [0.45, 0.05, 0.5, 0], [0, 0.45, 0.05, 0.5]])
    np.testing.assert_allclose(graph.to_dense().numpy()[1:, 1:], expected, atol=1e-6)
    np.testing.assert_allclose(graph.to_dense().numpy()[1:].sum(1), 1.0, atol=1e-6)


def test_f3_item_graph_part_is_added_without_normalisation():
    graph = frozen_item_graph({"image": IMAGE, "text": TEXT}, modality_weights(["image", "text"]), 2, 5)
    items = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
    np.testing.assert_allclose(torch.sparse.mm(graph, items)[1].numpy(), [0.95, 0.5], atol=1e-6)


def test_frozen_graph_equals_a_dense_top_k_of_cosines():
    generator = torch.Generator().manual_seed(5)
    tables = {m: torch.cat([torch.zeros(1, 7), torch.randn(30, 7, generator=generator)]) for m in ("image", "audio")}
    weights = modality_weights(["image", "audio"], [0.3, 0.7])
    graph = frozen_item_graph(tables, weights, 4, 31).to_dense().numpy()
    expected = 0.3 * dense_knn(tables["image"], 4, False) + 0.7 * dense_knn(tables["audio"], 4, False)
    np.testing.assert_allclose(graph, expected, atol=1e-6)


def test_modality_weights_defaults_and_checks():
    assert modality_weights(["text", "image"]) == {"text": 0.9, "image": 0.1}
    thirds = {"image": 1 / 3, "audio": 1 / 3, "text": 1 / 3}
    assert modality_weights(["image", "audio", "text"]) == pytest.approx(thirds)
    with pytest.raises(ValueError, match="mm_weights"):
        modality_weights(["image", "text"], [0.5, 0.6])


S2_USERS, S2_ITEMS = torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 1, 2])


def test_f2_pruning_keeps_the_share_and_follows_the_degree_rule():
    """Inclusion frequencies of 2 kept edges out of 4 against the exact probabilities of
    drawing without replacement, each draw proportional to 1/sqrt(d_u d_i)."""
    weights = np.array([1 / np.sqrt(2 * 1), 1 / np.sqrt(2 * 2), 1 / np.sqrt(2 * 2), 1 / np.sqrt(2 * 1)])
    exact = np.zeros(4)
    for a, b in itertools.permutations(range(4), 2):
        p = weights[a] / weights.sum() * weights[b] / (weights.sum() - weights[a])
        exact[[a, b]] += p
    generator = torch.Generator().manual_seed(0)
    counts = np.zeros(4)
    draws = 20000
    for _ in range(draws):
        kept = degree_sensitive_sample(S2_USERS, S2_ITEMS, 0.5, generator)
        assert len(kept) == 2 and len(set(kept.tolist())) == 2
        counts[kept.numpy()] += 1
    np.testing.assert_allclose(counts / draws, exact, atol=0.015)
    assert len(degree_sensitive_sample(S2_USERS, S2_ITEMS, 0.2)) == 0  # floor(4 * 0.2) = 0


def test_kept_edges_are_renormalised_on_their_own_degrees():
    kept = torch.tensor([0, 2])  # (u0, i0) and (u1, i1): every kept node has degree 1
    adj = node_adjacency(S2_USERS[kept], S2_ITEMS[kept], 2, 3).to_dense()
    assert adj[0, 2].item() == pytest.approx(1.0) and adj[1, 3].item() == pytest.approx(1.0)
    assert adj.count_nonzero() == 4


def test_empty_pruned_graph_trains_and_scores_use_the_full_graph(toy_multimodal, in_tmp):
    config, _, _ = toy_multimodal
    _, _, model, _ = built("FREEDOM", config, dropout=0.99999, knn_k=3)
    model.pre_epoch_processing()
    assert model.train_adjacency._nnz() == 0
    users, items = model.forward(model.train_adjacency)
    torch.testing.assert_close(users, model.user_embedding / 3)  # F2: only layer 0 is non-zero
    batch = Interaction({"user_id": torch.tensor([1, 2]), "item_id": torch.tensor([3, 4]),
                         "neg_item_id": torch.tensor([5, 6])})
    assert torch.isfinite(model.calculate_loss(batch))
    model.eval()
    full_users, full_items = model.scoring_embeddings()
    expected_users, expected_items = model.forward(model.adjacency)
    torch.testing.assert_close(full_users, expected_users.detach())
    assert not torch.allclose(full_users, users.detach())


@pytest.mark.parametrize("reg_weight", [0.0, 1e-3])
def test_f4_features_learn_only_through_the_modality_terms(toy_multimodal, in_tmp, reg_weight):
    config, _, _ = toy_multimodal
    _, _, model, _ = built("FREEDOM", config, reg_weight=reg_weight, knn_k=3)
    model.pre_epoch_processing()
    batch = Interaction({"user_id": torch.tensor([1, 2]), "item_id": torch.tensor([3, 4]),
                         "neg_item_id": torch.tensor([5, 6])})
    model.calculate_loss(batch).backward()
    feature_grads = [model.feature_tables[m].grad for m in model.modalities]
    projection_grads = [model.projections[m].weight.grad for m in model.modalities]  # the bias cancels in BPR
    if reg_weight:
        assert all(g is not None and g.abs().sum() > 0 for g in feature_grads + projection_grads)
    else:
        assert all(g is None for g in feature_grads + projection_grads)
