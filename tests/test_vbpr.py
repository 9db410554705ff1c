"""VBPR: the score is the ID part plus the content part (hand-worked oracle V1), the loss against a
full-catalogue projection, the paper's biases, and training end to end."""

import numpy as np
import pytest
import torch
from recbole.data.interaction import Interaction

from conftest import built
from recbole_mmssl import run_recbole_mmssl


def test_score_is_id_part_plus_content_part(toy_multimodal, in_tmp):
    config, _, _ = toy_multimodal
    _, _, model, _ = built("VBPR", config, embedding_size=4)
    with torch.no_grad():
        model.projection.bias.uniform_()  # c != 0: shifts every item of a user by theta_u . c
    p = model.user_embedding.detach().numpy()
    gamma_i = model.item_embedding.detach().numpy()
    x = np.concatenate([model.features("image").numpy(), model.features("text").numpy()], axis=1)  # modalities order
    e, c = model.projection.weight.detach().numpy(), model.projection.bias.detach().numpy()
    expected = p[:, :4] @ gamma_i.T + p[:, 4:] @ (x @ e.T).T + (p[:, 4:] @ c)[:, None]
    model.eval()
    users = torch.arange(model.n_users)
    scores = model.full_sort_predict(Interaction({"user_id": users})).reshape(model.n_users, -1)
    np.testing.assert_allclose(scores.numpy(), expected, rtol=1e-4, atol=1e-5)
    pairs = Interaction({"user_id": torch.tensor([3, 5]), "item_id": torch.tensor([7, 2])})
    np.testing.assert_allclose(model.predict(pairs).numpy(), expected[[3, 5], [7, 2]], rtol=1e-4, atol=1e-5)


def test_loss_projects_only_the_batch_items_with_the_full_projections_result(toy_multimodal, in_tmp):
    """V3: the same loss and gradients as projecting every item, then indexing."""
    config, _, _ = toy_multimodal
    _, _, model, _ = built("VBPR", config, reg_weight=0.5)
    batch = Interaction({"user_id": torch.tensor([1, 2, 3]), "item_id": torch.tensor([4, 5, 6]),
                         "neg_item_id": torch.tensor([7, 8, 4])})
    loss = model.calculate_loss(batch)
    loss.backward()
    ours = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    users, items = model.user_embedding, model.item_vectors()
    u, q_pos, q_neg = users[batch["user_id"]], items[batch["item_id"]], items[batch["neg_item_id"]]
    diff = (u * q_pos).sum(-1) - (u * q_neg).sum(-1)
    reference = -torch.log(torch.sigmoid(diff)).mean() + 0.5 * (u.norm() + q_pos.norm() + q_neg.norm()) / 3
    reference.backward()
    assert loss.item() == pytest.approx(reference.item(), rel=1e-6)
    for name, p in model.named_parameters():
        torch.testing.assert_close(ours[name], p.grad, rtol=1e-5, atol=1e-7, msg=name)


def test_paper_biases_add_to_the_score(toy_multimodal, in_tmp):
    config, _, _ = toy_multimodal
    _, _, model, _ = built("VBPR", config, use_bias=True)
    with torch.no_grad():
        model.item_bias.uniform_()
        model.visual_bias.uniform_()
    users, items = torch.tensor([1, 2]), torch.tensor([3, 9])
    plain = (model.user_embedding[users] * model.item_vectors(items)).sum(-1)
    bias = model.item_bias[items] + model.content(items) @ model.visual_bias
    torch.testing.assert_close(model.forward(users, items), plain + bias)
    model.eval()
    scores = model.predict(Interaction({"user_id": users, "item_id": items}))
    torch.testing.assert_close(scores, (plain + bias).detach(), rtol=1e-5, atol=1e-6)


def test_trains_and_the_features_stay_fixed(toy_multimodal, in_tmp):
    config, features, _ = toy_multimodal
    result = run_recbole_mmssl(model="VBPR", config_dict={**config, "epochs": 2}, saved=False)
    assert result["best_valid_result"]["recall@20"] > 0
    _, _, model, _ = built("VBPR", config)
    assert not any("feat" in name for name, _ in model.named_parameters())
