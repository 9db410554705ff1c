"""The sampled critic (discriminator: sampled): the rows' values at sampled columns equal the dense
rows (paper Eqs. 3, 5), its size does not grow with the items, and its loss matches a hand computation."""

import numpy as np
import pytest
import torch

from conftest import built
from recbole_mmssl.model.mmssl.relation_rows import real_rows, relation_rows
from recbole_mmssl.model.mmssl.sampled_critic import (
    RANDOM_ITEM, TOP_ENTRY, TRAINING_ITEM, SetCritic, blockwise_topk, critic_columns,
    masked_row_norms, real_values, relation_values, set_critic_loss)


@pytest.fixture
def block():
    """5 users x 13 items, d = 4, with a few training entries per user (user 4 has none)."""
    gen = torch.Generator().manual_seed(3)
    users, items = torch.randn(5, 4, generator=gen), torch.randn(13, 4, generator=gen)
    rows = torch.tensor([0, 0, 1, 2, 2, 2, 3])
    cols = torch.tensor([2, 7, 0, 1, 5, 12, 7])
    return users, items, (rows, cols)


def test_blockwise_topk_equals_the_dense_rows_topk(block):
    users, items, entries = block
    dense = relation_rows(users, items, entries).topk(4, dim=1).indices
    for size in (3, 5, 13, 100):
        assert torch.equal(blockwise_topk(users, items, entries, 4, block_size=size), dense)


def test_gram_norms_and_values_equal_the_dense_rows(block):
    users, items, entries = block
    users.requires_grad_(True)
    unnormalised = (users @ items.T).index_put(entries, torch.zeros(()))
    norms = masked_row_norms(users, items, entries)
    torch.testing.assert_close(norms, unnormalised.norm(dim=1))
    (grad,) = torch.autograd.grad(norms.sum(), users)
    (dense_grad,) = torch.autograd.grad(unnormalised.norm(dim=1).sum(), users)
    torch.testing.assert_close(grad, dense_grad)
    columns = torch.tensor([[2, 7, 3], [0, 0, 11], [5, 6, 1], [7, 8, 9], [4, 2, 0]])
    observed = torch.zeros_like(columns, dtype=torch.bool)
    for r, c in zip(*entries):
        observed[r] |= columns[r] == c
    values = relation_values(users, items, columns, observed, norms)
    torch.testing.assert_close(values, relation_rows(users, items, entries).gather(1, columns))


@pytest.mark.parametrize("form, tau, use_gumbel", [("orig", 0.005, True), ("orig", 0.5, True), ("head", 0.005, True),
                                                   ("orig", 0.005, False)])
def test_real_values_equal_the_dense_real_rows_without_noise(block, form, tau, use_gumbel):
    users, items, entries = block
    ui_rows = relation_rows(users, items, entries)
    dense = real_rows(entries, ui_rows.clone(), tau, 0.0, form, aux_weight=3.0, use_gumbel=use_gumbel)
    columns = torch.arange(13).repeat(5, 1)[:, [0, 1, 2, 5, 7, 12]]
    observed = torch.zeros_like(columns, dtype=torch.bool)
    for r, c in zip(*entries):
        observed[r] |= columns[r] == c
    values = real_values(ui_rows.gather(1, columns), ui_rows.sum(1), ui_rows.norm(dim=1) > 0, observed,
                         torch.bincount(entries[0], minlength=5), 13, tau, 0.0, form, 3.0, use_gumbel)
    torch.testing.assert_close(values, dense.gather(1, columns), atol=1e-6, rtol=1e-5)


def test_critic_size_does_not_depend_on_the_items():
    sizes = [sum(p.numel() for p in SetCritic(n, 64).parameters()) for n in (100, 1_000_000)]
    assert sizes[0] == sizes[1]


def test_column_sets(block):
    _, _, entries = block
    torch.manual_seed(0)
    tops = [torch.tensor([[1, 3]] * 5), torch.tensor([[4, 7]] * 5)]
    columns, kinds, observed = critic_columns(entries, 5, 13, train_items=2, tops=tops, random_items=3)
    assert columns.shape == kinds.shape == observed.shape == (5, 2 + 4 + 3)
    training = {r: set() for r in range(5)}
    for r, c in zip(*entries):
        training[int(r)].add(int(c))
    for r in range(5):
        picked = [int(c) for c, k in zip(columns[r, :2], kinds[r, :2]) if k == TRAINING_ITEM]
        assert len(picked) == min(2, len(training[r])) and set(picked) <= training[r]
        assert kinds[r, 2:6].tolist() == [TOP_ENTRY] * 4 and kinds[r, 6:].tolist() == [RANDOM_ITEM] * 3
        assert observed[r].tolist() == [int(c) in training[r] for c in columns[r]]


def test_critic_loss_by_hand():
    """-mean D(real) + mean D(fake) + w * 0.3 * mean (||grad|| - 1)^2, the gradient by finite differences."""
    torch.manual_seed(5)
    critic = SetCritic(9, 3, hidden=4, output_scale=100.0).double()
    real, fake = torch.rand(4, 5, dtype=torch.double), torch.rand(4, 5, dtype=torch.double)
    vectors, columns, kinds = torch.randn(9, 3, dtype=torch.double), torch.randint(9, (4, 5)), torch.randint(3, (4, 5))
    torch.manual_seed(11)
    alpha = torch.rand(4, 1, dtype=torch.double)
    mixed = alpha * real + (1 - alpha) * fake

    def d(row, r):
        return critic(row.unsqueeze(0), critic.embed(vectors, columns[r:r + 1], kinds[r:r + 1])).item()

    penalties = []
    for r in range(4):
        grad = np.zeros(5)
        for c in range(5):
            step = torch.zeros(5, dtype=torch.double)
            step[c] = 1e-6
            grad[c] = (d(mixed[r] + step, r) - d(mixed[r] - step, r)) / 2e-6
        penalties.append((np.linalg.norm(grad) - 1) ** 2)
    scores_real = [d(real[r], r) for r in range(4)]
    scores_fake = [d(fake[r], r) for r in range(4)]
    expected = -np.mean(scores_real) + np.mean(scores_fake) + 2.0 * 0.3 * np.mean(penalties)
    torch.manual_seed(11)
    loss = set_critic_loss(critic, real, fake, vectors, columns, kinds, gp_weight=2.0)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("variant", ["reference", "paper"])
def test_mmssl_trains_with_the_sampled_critic(toy_multimodal, in_tmp, variant):
    config, _, _ = toy_multimodal
    cfg, (train, valid, _), model, trainer = built("MMSSL", config, discriminator="sampled", graph_topk_rate=0.05,
                                                   graph_period=2, critic_random_items=8, train_batch_size=16,
                                                   variant=variant)
    assert isinstance(model.discriminator, SetCritic)
    before = [p.detach().clone() for p in model.discriminator.parameters()]
    trainer.fit(train, valid, saved=False)
    after = list(model.discriminator.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(after, before))
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert all(model.modality_graph.nnz(m) > 0 for m in model.modalities)
    batch = next(iter(train))
    losses = model.calculate_loss(batch)
    assert losses[-1].item() != 0  # the generator term reaches the recommender
