"""LATTICE against hand-worked oracles (S1, S2; L1-L5), dense NumPy
versions of its item graphs and forward pass, and end-to-end runs."""

import numpy as np
import pytest
import torch

from conftest import base_config, write_dataset
from recbole_mmssl.config import Config
from recbole_mmssl.quick_start import build_model, prepare_data
from recbole_mmssl.utils import get_trainer

S1 = np.array([[1, 0], [2, 1], [0, 1], [-1, 0]], dtype=np.float32)  # oracle S1
T2 = np.array([[1, 0], [0, 1], [1, 0.2], [0.2, 1]], dtype=np.float32)  # oracle L2, modality t
S2_TRAIN = [("u0", "i0"), ("u0", "i1"), ("u1", "i1"), ("u1", "i2")]  # oracle S2


# --- independent dense NumPy versions of the kNN graphs and the mixed item graph ----------------------

def np_knn(x, k):
    """Dense weighted kNN matrix of the rows of x: each row keeps its k largest cosines (self included)."""
    unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    sim = unit @ unit.T
    knn = np.zeros_like(sim)
    for i, row in enumerate(sim):
        keep = np.argsort(-row, kind="stable")[:k]
        knn[i, keep] = row[keep]
    return knn


def np_normalise(knn):
    """K_ij / sqrt(r_i r_j) with r the row sums; 0 where r <= 0."""
    r = knn.sum(1)
    inv = np.where(r > 0, 1 / np.sqrt(np.where(r > 0, r, 1)), 0)
    return inv[:, None] * knn * inv[None, :]


def np_padded_knn(x, k):
    """np_knn over rows 1.. of x, in a matrix over all rows: row 0, RecBole's padding item, has no edges."""
    out = np.zeros((len(x), len(x)))
    out[1:, 1:] = np_knn(x[1:], k)
    return out


def np_item_graph(learned, original, alpha, lam, mix):
    """The mixed item graph A from dense unnormalised learned kNN matrices and normalised original ones."""
    if mix == "code":
        return (1 - lam) * np_normalise(sum(a * k for a, k in zip(alpha, learned))) + \
            lam * sum(a * s for a, s in zip(alpha, original))
    return sum(a * (lam * s + (1 - lam) * np_normalise(k)) for a, k, s in zip(alpha, learned, original))


def np_rownorm(x):
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def dense(graph, n):
    rows, cols, values = (t.detach().cpu().numpy() for t in graph)
    out = np.zeros((n, n))
    np.add.at(out, (rows, cols), values)
    return out


def numpy_of(t):
    return t.detach().double().cpu().numpy()


# --- models on generated data ----------------------------------------------------------------------

def lattice(config_dict, **overrides):
    """Config, dataloaders and a fresh LATTICE model."""
    cfg = Config(model="LATTICE", config_dict={**config_dict, **overrides})
    _, data = prepare_data(cfg)
    return cfg, data, build_model(cfg, data[0])


def tiny(tmp_path, features, **overrides):
    """LATTICE on 2 users and 4 items (S2's training graph; i3 only in valid and test), with k = 2,
    d = d' = 2 and identity projections W_m = I, b_m = 0. Returns (model, internal ids of i0..i3,
    internal ids of u0, u1)."""
    splits = {"train": S2_TRAIN, "valid": [("u0", "i3")], "test": [("u1", "i3")]}
    write_dataset(tmp_path / "data", "tiny", splits, features, [f"i{k}" for k in range(4)])
    config = base_config(tmp_path, "tiny", modalities=list(features), embedding_size=2, feat_embed_dim=2, knn_k=2)
    _, (train, _, _), model = lattice(config, **overrides)
    with torch.no_grad():
        for projection in model.projections.values():
            projection.weight.copy_(torch.eye(2))
            projection.bias.zero_()
    tokens = train._dataset.field2token_id
    return model, [tokens["item_id"][f"i{k}"] for k in range(4)], [tokens["user_id"][f"u{k}"] for k in range(2)]


def on_items(graph, model, ids):
    """The dense graph on items i0..i3 (token order), after checking the padding item has no edges."""
    matrix = dense(graph, model.n_items)
    assert not matrix[0].any() and not matrix[:, 0].any()
    return matrix[np.ix_(ids, ids)]


# --- S1, L1-L4 ------------------------------------------------------------------------------------

def test_s1_weighted_knn_graph(in_tmp):
    """The original graph of S1's features: hand-worked values, the NumPy oracle, the stored zero-weight edge."""
    model, ids, _ = tiny(in_tmp, {"image": S1})
    expected = np_normalise(np_knn(S1.astype(np.float64), 2))
    by_hand = np.array([[0.5279, 0.4721, 0, 0], [0.4721, 0.5279, 0, 0], [0, 0.2701, 0.6910, 0], [0, 0, 0, 1]])
    np.testing.assert_allclose(expected, by_hand, atol=5e-5)
    graph = model.original_graph("image")
    np.testing.assert_allclose(on_items(graph, model, ids), expected, atol=1e-6)
    edges = set(zip(graph[0].tolist(), graph[1].tolist()))
    assert len(graph[0]) == 8 and (ids[3], ids[2]) in edges  # k edges per row, the (3, 2) one of weight 0


@pytest.mark.parametrize("mix", ["code", "paper"])
def test_l1_one_modality_identity_projection_gives_the_original_graph(in_tmp, mix):
    model, ids, _ = tiny(in_tmp, {"image": S1}, lattice_mix=mix)
    expected = np_normalise(np_knn(S1.astype(np.float64), 2))
    for lam in (0.0, 0.5, 0.9):
        model.lambda_coeff = lam
        np.testing.assert_allclose(on_items(model.item_graph(), model, ids), expected, atol=1e-6)


@pytest.mark.parametrize("mix, row0, row3", [
    ("code", [0.5164, 0.2355, 0.2497, 0], [0, 0.2516, 0, 0.7443]),
    ("paper", [0.5164, 0.2361, 0.2475, 0], [0, 0.2475, 0, 0.7525]),
])
def test_l2_mixing_order(in_tmp, mix, row0, row3):
    model, ids, _ = tiny(in_tmp, {"image": S1, "text": T2}, lattice_mix=mix)
    knn = [np_knn(x.astype(np.float64), 2) for x in (S1, T2)]
    expected = np_item_graph(knn, [np_normalise(k) for k in knn], [0.5, 0.5], 0.9, mix)
    np.testing.assert_allclose(expected[[0, 3]], [row0, row3], atol=5e-5)
    np.testing.assert_allclose(on_items(model.item_graph(), model, ids), expected, atol=1e-6)


def test_l3_item_graph_propagation_and_row_normalisation(in_tmp):
    model, ids, _ = tiny(in_tmp, {"image": S1}, cf_model="mf")
    e_items = np.array([[1, 0], [0, 1], [1, 1], [0, 0]], dtype=np.float32)
    with torch.no_grad():
        model.item_embedding.weight[ids] = torch.from_numpy(e_items)
    graph = model.item_graph()
    h = numpy_of(model.item_graph_embeddings(graph))[ids]
    expected = np_normalise(np_knn(S1.astype(np.float64), 2)) @ e_items
    np.testing.assert_allclose(h, expected, atol=1e-6)
    np.testing.assert_allclose(h, [[0.5279, 0.4721], [0.4721, 0.5279], [0.6910, 0.9611], [0, 0]], atol=5e-5)
    _, items = model.propagate(graph)
    unit = numpy_of(items)[ids] - e_items  # mf: item = E_i + H / ||H||
    np.testing.assert_allclose(unit, [[0.7454, 0.6667], [0.6667, 0.7454], [0.5838, 0.8119], [0, 0]], atol=5e-5)


def test_l4_random_walk_user_item_adjacency(in_tmp):
    """Rows of (D+I)^-1 (A+I) on S2; items are nodes n_users + item id."""
    model, items, users = tiny(in_tmp, {"image": S1})
    matrix = model.adjacency.to_dense().numpy()
    node = {**{f"u{k}": u for k, u in enumerate(users)}, **{f"i{k}": model.n_users + i for k, i in enumerate(items)}}
    rows = {"u0": ({"u0", "i0", "i1"}, 1 / 3), "u1": ({"u1", "i1", "i2"}, 1 / 3), "i0": ({"i0", "u0"}, 1 / 2),
            "i1": ({"i1", "u0", "u1"}, 1 / 3), "i2": ({"i2", "u1"}, 1 / 2)}
    for name, (neighbours, value) in rows.items():
        expected = np.zeros(len(matrix))
        expected[[node[n] for n in neighbours]] = value
        np.testing.assert_allclose(matrix[node[name]], expected, atol=1e-7, err_msg=name)


# --- the learned graphs and the forward pass against dense NumPy ------------------------------------

def train_one_epoch(config, **overrides):
    cfg, (train, valid, test), model = lattice(config, **overrides)
    trainer = get_trainer(cfg["MODEL_TYPE"], "LATTICE")(cfg, model)
    trainer._train_epoch(train, 0)
    return train, model


@pytest.mark.parametrize("mix, cf_model", [("code", "lightgcn"), ("paper", "mf")])
def test_item_graph_and_forward_equal_dense_numpy(toy_multimodal, in_tmp, mix, cf_model):
    """After one epoch (trained features and projections, moved ω): the model's A against dense
    top-k cosines of X^m W_m^T + b_m, mixed with those of the raw features from the files, and the
    final vectors against a dense forward pass."""
    config, features, tokens = toy_multimodal
    train, model = train_one_epoch(config, lattice_mix=mix, cf_model=cf_model, train_batch_size=16, knn_k=5,
                                   embedding_size=8, feat_embed_dim=6, learning_rate=0.01)
    dataset, n = train._dataset, model.n_items
    ids = dataset.field2token_id["item_id"]
    row_of = {ids[t]: r for r, t in enumerate(tokens) if t in ids}  # feature rows of the items in the data
    learned, original = [], []
    for m in ("image", "text"):
        raw = np.zeros((n, features[m].shape[1]))
        raw[list(row_of)] = features[m][list(row_of.values())]
        assert not np.allclose(raw, numpy_of(model.features(m)), atol=1e-4)  # the table was trained
        original.append(np_normalise(np_padded_knn(raw, 5)))
        projection = model.projections[m]
        z = numpy_of(model.features(m)) @ numpy_of(projection.weight).T + numpy_of(projection.bias)
        learned.append(np_padded_knn(z, 5))
    alpha = np.exp(numpy_of(model.modal_logits)) / np.exp(numpy_of(model.modal_logits)).sum()
    assert abs(alpha[0] - 0.5) > 1e-6  # ω was trained at the epoch's first batch
    expected = np_item_graph(learned, original, alpha, 0.9, mix)
    model.eval()
    with torch.no_grad():
        graph = model.item_graph()
        users, items = model.final_embeddings()
    np.testing.assert_allclose(dense(graph, n), expected, atol=1e-5)

    e_u, e_i = numpy_of(model.user_embedding.weight), numpy_of(model.item_embedding.weight)
    if cf_model == "lightgcn":
        size = model.n_users + n
        adjacency = np.eye(size)
        for u, i in zip(dataset.inter_feat["user_id"].numpy(), dataset.inter_feat["item_id"].numpy()):
            adjacency[u, model.n_users + i] = adjacency[model.n_users + i, u] = 1
        adjacency /= adjacency.sum(1, keepdims=True)
        layers = [np.concatenate([e_u, e_i])]
        for _ in range(2):
            layers.append(adjacency @ layers[-1])
        e_u, e_i = np.split(np.mean(layers, axis=0), [model.n_users])
    np.testing.assert_allclose(numpy_of(users), e_u, atol=1e-5)
    np.testing.assert_allclose(numpy_of(items), e_i + np_rownorm(expected @ numpy_of(model.item_embedding.weight)),
                               atol=1e-5)


def test_loss_is_bpr_plus_half_squared_norms_over_the_configured_batch_size(toy_multimodal, in_tmp):
    config, _, _ = toy_multimodal
    _, (train, _, _), model = lattice(config, train_batch_size=16, embedding_size=8, reg_weight=0.1)
    batch = next(iter(train))
    model.train()
    model.pre_epoch_processing()
    loss = model.calculate_loss(batch).item()
    users, items = (numpy_of(t) for t in model.propagate(model.item_graph()))
    u = users[batch["user_id"].numpy()]
    pos, neg = items[batch["item_id"].numpy()], items[batch["neg_item_id"].numpy()]
    diff = (u * pos).sum(1) - (u * neg).sum(1)
    squares = (u ** 2).sum() + (pos ** 2).sum() + (neg ** 2).sum()
    expected = np.mean(np.log1p(np.exp(-diff))) + 0.1 * 0.5 * squares / 16
    assert loss == pytest.approx(expected, rel=1e-5)


# --- L5: when the graph's parameters get gradients ---------------------------------------------------

GRAPH_PARAMETERS = ("projections.image.weight", "modal_logits", "feature_tables.image")


def recorded_steps(toy_multimodal, epochs=2, **overrides):
    """Run RecBole's training loop for ``epochs`` epochs of 10 batches; before each optimizer step,
    record the gradient (None or a copy) and the value of each graph parameter."""
    config, _, _ = toy_multimodal
    cfg, (train, _, _), model = lattice(config, train_batch_size=16, embedding_size=8, feat_embed_dim=8, **overrides)
    trainer = get_trainer(cfg["MODEL_TYPE"], "LATTICE")(cfg, model)
    params = dict(model.named_parameters())
    records, step = [], trainer.optimizer.step

    def recording_step(*args, **kwargs):
        records.append({name: (None if params[name].grad is None else params[name].grad.clone(),
                               params[name].detach().clone()) for name in GRAPH_PARAMETERS})
        return step(*args, **kwargs)

    trainer.optimizer.step = recording_step
    for epoch in range(epochs):
        trainer._train_epoch(train, epoch)
    assert len(records) == 10 * epochs
    return records


def nonzero(grad):
    return grad is not None and bool(grad.abs().sum() > 0)


def test_l5_graph_gradients_only_at_the_first_batch_of_each_epoch(toy_multimodal, in_tmp):
    records = recorded_steps(toy_multimodal)
    for name in GRAPH_PARAMETERS:
        grads = [r[name][0] for r in records]
        assert nonzero(grads[0]) and nonzero(grads[10]), name
        assert all(g is None for g in grads[1:10] + grads[11:]), name
        values = [r[name][1] for r in records]
        assert not torch.equal(values[0], values[1])
        assert all(torch.equal(values[1], v) for v in values[2:10])  # Adam skips parameters without gradient


def test_l5_graph_rebuilt_with_gradient_every_batch(toy_multimodal, in_tmp):
    records = recorded_steps(toy_multimodal, epochs=1, graph_rebuild="batch")
    assert all(nonzero(r[name][0]) for r in records for name in GRAPH_PARAMETERS)


def test_l5_torch111_zero_gradients_keep_adam_moving(toy_multimodal, in_tmp):
    records = recorded_steps(toy_multimodal, epochs=1, torch111_zero_grad=True)
    for name in GRAPH_PARAMETERS:
        grads, values = [r[name][0] for r in records], [r[name][1] for r in records]
        assert nonzero(grads[0])
        assert all(g is not None and not g.any() for g in grads[1:]), name
        assert all(not torch.equal(a, b) for a, b in zip(values[1:], values[2:])), name


def test_frozen_features_and_bad_choices(toy_multimodal, in_tmp):
    config, _, _ = toy_multimodal
    _, _, model = lattice(config, freeze_features=True)
    assert all(not isinstance(model.features(m), torch.nn.Parameter) for m in model.modalities)
    assert not any(name.startswith("feature_tables") for name, _ in model.named_parameters())
    with pytest.raises(ValueError, match="lattice_mix"):
        lattice(config, lattice_mix="both")


# --- end to end ------------------------------------------------------------------------------------
