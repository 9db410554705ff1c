"""BM3: the readout (hand-worked oracle B1), the loss on hand-worked examples (B2-B4) and the
predictor in the scores (B5)."""

import math

import numpy as np
import pytest
import torch
from recbole.data.interaction import Interaction
from torch import nn

from conftest import built
from recbole_mmssl.model.bm3 import cosine_distance
from recbole_mmssl.model.graphs import node_adjacency


@pytest.fixture
def bm3(toy_multimodal, in_tmp):
    config, _, _ = toy_multimodal
    _, _, model, _ = built("BM3", config, embedding_size=2, dropout=0.0)
    with torch.no_grad():
        model.predictor.weight.copy_(torch.eye(2))
        model.predictor.bias.zero_()
    return model


def test_b1_readout_with_the_id_residual(bm3):
    bm3.adjacency = node_adjacency(torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 1, 2]), 2, 3)
    bm3.user_embedding = nn.Parameter(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    bm3.item_embedding = nn.Parameter(torch.tensor([[1.0, 1.0], [2.0, 0.0], [0.0, 2.0]]))
    users, items = bm3.forward()
    np.testing.assert_allclose(users.detach().numpy(), [[1.3536, 0.3536], [0.5, 1.2071]], atol=1e-4)
    np.testing.assert_allclose(items.detach().numpy(), [[1.8536, 1.5], [3.25, 0.25], [0.0, 3.3536]], atol=1e-4)


def fixed_readout(model, monkeypatch, users, items):
    users, items = torch.tensor(users), torch.tensor(items)
    monkeypatch.setattr(model, "forward", lambda: (users, items))


@pytest.mark.parametrize("item_row, expected", [((2.0, 0.0), 0.0), ((0.0, 3.0), 2.0)])
def test_b2_rec_loss(bm3, monkeypatch, item_row, expected):
    """L_rec = c(u, i) + c(i, u) with P = identity and no dropout; 1 - cos of orthogonal rows is 1."""
    fixed_readout(bm3, monkeypatch, [[0.0, 0.0], [1.0, 0.0]], [[0.0, 0.0], item_row])
    bm3.reg_weight, bm3.cl_weight = 0.0, 0.0
    batch = Interaction({"user_id": torch.tensor([1]), "item_id": torch.tensor([1])})
    assert bm3.calculate_loss(batch).item() == pytest.approx(expected, abs=1e-6)


def test_alignment_reconstruction_and_regulariser_by_hand(bm3, monkeypatch):
    users, items = [[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]], [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]]
    fixed_readout(bm3, monkeypatch, users, items)
    bm3.reg_weight, bm3.cl_weight = 0.5, 2.0
    with torch.no_grad():
        for m in bm3.modalities:  # Z^m = (0, 1) for every item
            bm3.projections[m].weight.zero_()
            bm3.projections[m].bias.copy_(torch.tensor([0.0, 1.0]))
    batch = Interaction({"user_id": torch.tensor([1, 2]), "item_id": torch.tensor([1, 2])})
    rec = ((1 - 1) + (1 - 1 / math.sqrt(2))) * 2 / 2  # pairs (u1, i1): cos 1; (u2, i2): cos 1/sqrt(2), both ways
    align = ((1 - 0) + (1 - 1 / math.sqrt(2))) / 2  # Z = (0, 1) against i1 = (1, 0) and i2 = (1, 1)
    mask = 0.0  # Z against itself
    reg = (math.sqrt(9 + 16) + math.sqrt(1 + 2)) / 3  # all rows, unsquared, over the item rows
    expected = rec + 0.5 * reg + 2.0 * len(bm3.modalities) * (align + mask)
    assert bm3.calculate_loss(batch).item() == pytest.approx(expected, rel=1e-6)


def test_b4_targets_carry_no_gradient_and_their_scale_does_not_matter():
    online = torch.randn(5, 3, requires_grad=True)
    target = torch.randn(5, 3, requires_grad=True)
    loss = cosine_distance(online, target)
    loss.backward()
    assert target.grad is None and online.grad is not None
    assert cosine_distance(online, 7.5 * target).item() == pytest.approx(loss.item(), rel=1e-6)


def test_targets_are_detached_in_the_model(bm3):
    h = torch.randn(4, 2, requires_grad=True)
    assert not bm3.target(h).requires_grad


def test_b5_scores_use_the_predictor(bm3, monkeypatch):
    with torch.no_grad():
        bm3.predictor.weight.copy_(2 * torch.eye(2))
        bm3.predictor.bias.copy_(torch.tensor([1.0, 0.0]))
    h_users, h_items = bm3.forward()
    bm3.eval()
    pairs = Interaction({"user_id": torch.tensor([1, 3]), "item_id": torch.tensor([2, 5])})
    online_u = 2 * h_users[pairs["user_id"]] + torch.tensor([1.0, 0.0])
    online_i = 2 * h_items[pairs["item_id"]] + torch.tensor([1.0, 0.0])
    torch.testing.assert_close(bm3.predict(pairs), (online_u * online_i).sum(-1).detach())
