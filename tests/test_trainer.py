"""MMSSL with MMSSLTrainer on small data: the alternating steps, the modality graphs, end-to-end runs."""

import itertools
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import REPO, base_config, built, content_dataset, toy_splits, write_dataset
from recbole_mmssl import run_recbole_mmssl
from recbole_mmssl.trainer.checkpoint import load_checkpoint
from recbole_mmssl.config import Config
from recbole_mmssl.model.mmssl.modality_graph import ModalityGraph
from recbole_mmssl.model.graphs import one_sided_graphs
from recbole_mmssl.quick_start import build_model, load_data_and_model, prepare_data
from recbole_mmssl.trainer import LOSS_NAMES
from recbole_mmssl.utils import get_trainer

SMALL = {"train_batch_size": 16, "embedding_size": 16, "n_heads": 2, "epochs": 2}


def mmssl(config_dict, **overrides):
    """Config, dataloaders, model and trainer for MMSSL on a generated dataset."""
    cfg = Config(model="MMSSL", config_dict={**config_dict, **SMALL, **overrides})
    _, (train, valid, test) = prepare_data(cfg)
    model = build_model(cfg, train)
    trainer = get_trainer(cfg["MODEL_TYPE"], "MMSSL")(cfg, model)
    return cfg, (train, valid, test), model, trainer


def snapshot(module):
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def changed(before, module):
    return {name for name, p in module.named_parameters() if not torch.equal(before[name], p)}


def test_user_batches(toy_multimodal, in_tmp):
    config, _, _ = toy_multimodal
    _, (train, _, _), model, _ = mmssl(config)
    assert len(train) == 160 // 16 + 1
    dataset = train._dataset
    history = {}
    for u, i in zip(dataset.inter_feat["user_id"].tolist(), dataset.inter_feat["item_id"].tolist()):
        history.setdefault(u, set()).add(i)
    for batch in train:
        users = batch["user_id"].tolist()
        assert len(users) == len(set(users)) == 16
        for u, p, n in zip(users, batch["item_id"].tolist(), batch["neg_item_id"].tolist()):
            assert p in history[u] and n not in history[u] and 1 <= n < dataset.item_num
    dense = torch.zeros(dataset.user_num, dataset.item_num)
    for u, items in history.items():
        dense[u, list(items)] = 1
    users = torch.tensor([3, 1, 7])
    block = torch.zeros(3, dataset.item_num - 1)
    block[model.train_entries(users)] = 1
    torch.testing.assert_close(block, dense[users, 1:])


def test_forward_equals_the_released_equations_in_dense_numpy(toy_multimodal, in_tmp):
    """The forward pass (paper Eqs. 2, 8-10, 12, as the released code computes them) written out with dense float64 matrices, against MMSSL.forward in eval mode,
    with non-empty modality graphs (after one rebuild) so that every branch contributes."""
    config, _, _ = toy_multimodal
    _, (train, _, _), model, trainer = mmssl(config, graph_topk_rate=0.05, graph_period=1)
    model.train()
    model.start_epoch()
    for idx, batch in zip(range(2), train):  # batch 0 accumulates top-k pairs, batch 1 rebuilds
        trainer._recommender_step(batch)
    assert all(0 < model.modality_graph.nnz(m) < model.train_p._nnz() for m in ("image", "text"))
    model.eval()
    out = model.forward()

    def dense(t):
        return t.to_dense().double().numpy()

    def rownorm(x):
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    def softmax(x):
        e = np.exp(x - x.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    data = train._dataset
    r = np.zeros((model.n_users, model.n_items))
    r[data.inter_feat["user_id"].numpy(), data.inter_feat["item_id"].numpy()] = 1
    p = r / np.sqrt(r.sum(1, keepdims=True) + 1e-8)
    q = r.T / np.sqrt(r.sum(0)[:, None] + 1e-8)
    np.testing.assert_allclose(dense(model.train_p), p, rtol=1e-6)
    e_u = model.user_embedding.weight.detach().double().numpy()
    e_i = model.item_embedding.weight.detach().double().numpy()
    w_c = model.attention.w_c.detach().double().numpy()
    shared = sum(w_c[h * 16:(h + 1) * 16] for h in range(2))  # n_heads = 2, d = 16
    f_u, f_i, y_u, y_i = {}, {}, {}, {}
    for m in ("image", "text"):
        x = getattr(model, f"feat_{m}").double().numpy()
        w = model.encoders[m].weight.detach().double().numpy()
        b = model.encoders[m].bias.detach().double().numpy()
        x_bar = x @ w.T + b
        f_u[m] = p @ x_bar
        f_i[m] = q @ f_u[m]
        g_p, g_q = (dense(t) for t in model.modality_graph.graphs[m])
        y_u[m], y_i[m] = g_p @ e_i, g_q @ e_u
    z_u = np.mean([y_u[m] @ shared for m in y_u], axis=0)
    z_i = np.mean([y_i[m] @ shared for m in y_i], axis=0)
    h_u, h_i = [e_u + 0.36 * rownorm(z_u)], [e_i + 0.36 * rownorm(z_i)]
    h_u.append(p @ h_i[0])
    h_i.append(q @ h_u[1])
    h_u.append(softmax(p @ h_i[1]))
    h_i.append(softmax(q @ h_u[2]))
    final_u = np.mean(h_u, axis=0) + 0.55 * sum(rownorm(f_u[m]) for m in f_u)
    final_i = np.mean(h_i, axis=0) + 0.55 * sum(rownorm(f_i[m]) for m in f_i)
    np.testing.assert_allclose(out.user.detach().numpy(), final_u, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out.item.detach().numpy(), final_i, rtol=1e-4, atol=1e-5)
    for m in ("image", "text"):
        np.testing.assert_allclose(out.view_user[m].detach().numpy(), y_u[m], rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(out.feat_item[m].detach().numpy(), f_i[m], rtol=1e-4, atol=1e-4)


def test_discriminator_step_changes_only_the_discriminator(toy_multimodal, in_tmp):
    config, _, _ = toy_multimodal
    _, (train, _, _), model, trainer = mmssl(config)
    model.train()
    batch = next(iter(train))
    recommender, disc = snapshot(model), snapshot(model.discriminator)
    trainer._discriminator_step(batch)
    assert changed(disc, model.discriminator) == set(disc)
    assert {n for n in changed(recommender, model) if not n.startswith("discriminator.")} == set()

    recommender, disc = snapshot(model), snapshot(model.discriminator)
    trainer._recommender_step(batch)
    assert changed(disc, model.discriminator) == set()
    moved = changed(recommender, model)
    assert {"user_embedding.weight", "item_embedding.weight", "encoders.image.weight", "encoders.text.weight",
            "attention.w_c"} <= moved
    assert all(p.requires_grad for p in model.discriminator.parameters())


def test_baby_settings_switch_the_contrastive_branch_off(toy_multimodal, in_tmp, caplog):
    """Oracle 2, with k = 0 and T = 1: views use the training graph in batches 0-1 of epoch 0,
    are zero from batch 2 on and at evaluation; the contrastive loss is then ln(2b-1), gradient-free."""
    config, _, _ = toy_multimodal
    _, (train, valid, _), model, trainer = mmssl(config, graph_topk_rate=1e-4, graph_period=1)
    assert "= 0 semantic neighbours" in caplog.text
    model.train()
    model.start_epoch()
    constant = -math.log(1 / (2 * 16 - 1) + 1e-8)
    for idx, batch in enumerate(train):
        users = batch["user_id"]
        out = model.forward()
        for m in ("image", "text"):
            if idx < 2:
                assert model.modality_graph.nnz(m) == model.train_p._nnz()
                assert out.view_user[m][users].abs().sum() > 0
            else:
                assert model.modality_graph.nnz(m) == 0
                assert torch.count_nonzero(out.view_user[m]) == 0
                loss = model.contrastive_loss(out.view_user[m][users], out.user[users])
                assert loss.item() == pytest.approx(constant, rel=1e-6)
                grads = torch.autograd.grad(loss, list(model.recommender_parameters()), allow_unused=True,
                                            retain_graph=True)
                assert all(g is None or torch.count_nonzero(g) == 0 for g in grads)
        torch.testing.assert_close(out.view_user["image"], out.view_user["text"])
        trainer._discriminator_step(batch)
        trainer._recommender_step(batch)
    model.eval()
    assert all(model.modality_graph.nnz(m) == 0 for m in ("image", "text"))


def test_batch_graph_accumulates_across_epochs_with_period_two():
    """T = 2: batches 0 and 1 accumulate, 2 rebuilds from them, 3 accumulates and is carried
    into the next epoch's first rebuild (docs/design.md, 'Modality graphs')."""
    p, q = one_sided_graphs(torch.tensor([0]), torch.tensor([1]), torch.ones(1), 6, 5)
    graph = ModalityGraph(["image"], 6, 5, (p, q), k=1, period=2, pairing="aligned", update="batch")
    rows = {1: [0.0, 1, 0, 0], 2: [0.0, 0, 1, 0], 3: [1.0, 0, 0, 0], 4: [0.0, 0, 0, 1], 5: [0.0, 1, 0, 0]}

    def step(user):
        graph.after_batch(torch.tensor([user]), {"image": torch.tensor([rows[user]]).topk(1, dim=1).indices})

    def edges():
        g = graph.graphs["image"][0].coalesce()
        return sorted(zip(g.indices()[0].tolist(), g.indices()[1].tolist()))

    graph.start_epoch()
    for user in (1, 2, 3, 4):  # idx 0, 1 accumulate; idx 2 rebuilds; idx 3 accumulates
        step(user)
    assert edges() == [(1, 2), (2, 3)]
    graph.start_epoch()
    step(5)  # idx 0: accumulates (never a rebuild at batch 0)
    assert edges() == [(1, 2), (2, 3)]
    step(1)  # idx 1 accumulates
    step(2)  # idx 2 rebuilds from user 4 (last epoch), 5 and 1
    assert edges() == [(1, 2), (4, 4), (5, 2)]


def test_full_graph_holds_every_users_own_topk():
    p, q = one_sided_graphs(torch.tensor([0]), torch.tensor([1]), torch.ones(1), 4, 6)
    graph = ModalityGraph(["text"], 4, 6, (p, q), k=0, period=1, pairing="reference", update="full")
    torch.manual_seed(0)
    all_rows = torch.rand(3, 5)
    users = torch.tensor([1, 2, 3])
    tops = {"text": all_rows.topk(1, dim=1).indices}
    graph.after_batch(users, tops, lambda m, k: [(users, all_rows.topk(k, dim=1).indices)])  # idx 0: nothing
    graph.after_batch(users, tops, lambda m, k: [(users[:2], all_rows[:2].topk(k, dim=1).indices),
                                                (users[2:], all_rows[2:].topk(k, dim=1).indices)])
    dense = graph.graphs["text"][0].to_dense()
    for r, u in enumerate(users.tolist()):  # k = 0 is raised to 1: each user's own best item
        expected = int(all_rows[r].argmax()) + 1
        assert torch.nonzero(dense[u]).squeeze(1).tolist() == [expected]
        assert dense[u, expected].item() == pytest.approx(1.0)


def test_epoch_period_rebuilds_once_after_the_last_batch():
    p, q = one_sided_graphs(torch.tensor([0]), torch.tensor([1]), torch.ones(1), 4, 5)
    graph = ModalityGraph(["image"], 4, 5, (p, q), k=1, period="epoch", pairing="aligned", update="batch")
    graph.start_epoch()
    for user, col in ((1, 2), (2, 0), (3, 3)):
        row = torch.zeros(1, 4)
        row[0, col] = 1.0
        graph.after_batch(torch.tensor([user]), {"image": row.topk(1, dim=1).indices})
        assert graph.nnz("image") == 1  # still the training graph
    graph.end_epoch(None)
    dense = graph.graphs["image"][0].to_dense()
    assert sorted(map(tuple, torch.nonzero(dense).tolist())) == [(1, 3), (2, 1), (3, 4)]
    with pytest.raises(ValueError, match="graph_period"):  # refused when the configuration is built
        Config(model="MMSSL", dataset="toy", config_dict={"data_path": "unused", "graph_period": 0})


def test_full_graph_once_per_epoch_in_training(toy_multimodal, in_tmp):
    config, _, _ = toy_multimodal
    _, (train, _, _), model, trainer = mmssl(config, variant="paper", graph_period="epoch")
    trainer._train_epoch(train, 0)
    users_with_items = int((model.train_indptr[1:] > model.train_indptr[:-1]).sum())
    for m in ("image", "text"):  # k = floor(78 * 1e-4) = 0 is raised to 1: one item per user
        dense = model.modality_graph.graphs[m][0].to_dense()
        assert int((dense > 0).sum()) == users_with_items
        assert torch.all((dense > 0).sum(1) <= 1)


@pytest.mark.parametrize("overrides", [
    {"variant": "reference"},
    {"variant": "paper"},
    {"use_adversarial": False},
    {"use_contrastive": False},
    {"use_gumbel": False},
    {"gumbel_form": "head", "graph_topk_rate": 0.05, "graph_period": 2},
    {"mixed_precision": "bf16"},
    {"mixed_precision": "fp16"},
])
def test_every_loss_term_is_finite(toy_multimodal, in_tmp, overrides):
    config, _, _ = toy_multimodal
    _, (train, _, _), model, trainer = mmssl(config, **overrides)
    disc = snapshot(model.discriminator)
    losses = dict(zip(LOSS_NAMES, trainer._train_epoch(train, 0)))
    assert all(math.isfinite(v) for v in losses.values())
    assert losses["bpr"] > 0 and losses["emb_reg"] > 0 and losses["feat_reg"] > 0
    if overrides.get("use_adversarial") is False:
        assert losses["generator"] == losses["discriminator"] == 0
        assert changed(disc, model.discriminator) == set()
    else:
        assert losses["discriminator"] != 0 and losses["generator"] != 0
    if overrides.get("use_contrastive") is False:
        assert losses["contrastive"] == 0


@pytest.mark.parametrize("modalities", [["image"], ["image", "text", "audio"]])
def test_any_number_of_modalities(tmp_path, in_tmp, modalities):
    rng = np.random.default_rng(0)
    features = {m: rng.normal(size=(80, 3 + k)).astype(np.float32) for k, m in enumerate(modalities)}
    write_dataset(tmp_path / "data", "multi", toy_splits(), features, [f"i{k}" for k in range(80)])
    _, (train, _, _), model, trainer = mmssl(base_config(tmp_path, "multi", modalities=modalities))
    assert list(model.encoders) == modalities
    losses = trainer._train_epoch(train, 0)
    assert all(math.isfinite(v) for v in losses)


def test_nan_loss_stops_with_a_clear_error(toy_multimodal, in_tmp, monkeypatch):
    config, _, _ = toy_multimodal
    _, (train, _, _), model, trainer = mmssl(config)
    original = model.calculate_loss

    def poisoned(interaction):
        losses = list(original(interaction))
        losses[3] = losses[3] * float("nan")
        return tuple(losses)

    monkeypatch.setattr(model, "calculate_loss", poisoned)
    with pytest.raises(ValueError, match=r"MMSSL loss contrastive is not finite at epoch 0, batch 0"):
        trainer._train_epoch(train, 0)


def test_one_forward_serves_a_whole_evaluation(toy_multimodal, in_tmp, monkeypatch):
    config, _, _ = toy_multimodal
    _, (train, valid, _), model, trainer = mmssl(config, eval_batch_size=200)
    assert len(valid) > 3
    calls = []
    original = model.forward
    monkeypatch.setattr(model, "forward", lambda: calls.append(1) or original())
    first = trainer.evaluate(valid, load_best_model=False)
    assert len(calls) == 1
    trainer._train_epoch(train, 0)
    calls.clear()
    second = trainer.evaluate(valid, load_best_model=False)
    assert len(calls) == 1 and first != second  # the cache was refreshed after training


def test_loss_parts_are_named_in_logs_and_tensorboard(toy_multimodal, in_tmp):
    config, _, _ = toy_multimodal
    _, _, _, trainer = mmssl(config)
    line = trainer._generate_train_loss_output(3, 0.0, 1.5, (1.0, 2.0, 3.0, 4.0, 5.0, 6.0))
    assert all(f"{name}: {v:.4f}" in line for name, v in zip(LOSS_NAMES, (1.0, 2.0, 3.0, 4.0, 5.0, 6.0)))
    logged = []
    trainer.tensorboard = type("Writer", (), {"add_scalar": lambda self, *a: logged.append(a)})()
    trainer._add_train_loss_to_tensorboard(3, (1.0, 2.0, 3.0, 4.0, 5.0, 6.0))
    assert ("Loss/Train/discriminator", 6.0, 3) in logged and ("Loss/Train/recommender", 15.0, 3) in logged


def test_learns_from_content(tmp_path, in_tmp):
    scores = {}
    for shuffle in (False, True):
        root = tmp_path / str(shuffle)
        content_dataset(root, shuffle)
        config = base_config(root, "content", modalities=["image", "text"], epochs=3, train_batch_size=64,
                             embedding_size=32)
        scores[shuffle] = run_recbole_mmssl(model="MMSSL", config_dict=config, saved=False)["best_valid_score"]
    assert scores[False] > scores[True] + 0.1, scores


def test_train_save_reload_gives_identical_scores(toy_multimodal, in_tmp):
    config, _, _ = toy_multimodal
    result = run_recbole_mmssl(model="MMSSL", config_dict={**config, **SMALL})
    (saved,) = [f for f in os.listdir(config["checkpoint_dir"]) if f.endswith(".pth")]
    checkpoint = load_checkpoint(os.path.join(config["checkpoint_dir"], saved))
    assert {"discriminator_optimizer", "optimizer", "other_parameter"} <= set(checkpoint)
    assert any(k.startswith("discriminator.") for k in checkpoint["state_dict"])
    assert "modality_graph" in checkpoint["other_parameter"]
    cfg, model, _, _, _, test_data = load_data_and_model(os.path.join(config["checkpoint_dir"], saved))
    trainer = get_trainer(cfg["MODEL_TYPE"], "MMSSL")(cfg, model)
    assert dict(trainer.evaluate(test_data, load_best_model=False)) == dict(result["test_result"])


def test_resumed_run_reproduces_the_uninterrupted_one(toy_multimodal, in_tmp):
    config, _, _ = toy_multimodal
    # stopping_step 0 with an improving first epoch keeps the checkpoint of epoch 0 in both runs
    _, (train, valid, _), _, full = mmssl(config, epochs=3)
    full.fit(train, valid, saved=False)

    _, (train, valid, _), _, first = mmssl(config, epochs=1)
    first.fit(train, valid, saved=True)
    _, (train, valid, _), _, resumed = mmssl(config, epochs=3)
    resumed.resume_checkpoint(first.saved_model_file)
    assert resumed.start_epoch == 1
    resumed.fit(train, valid, saved=False)

    for name, value in full.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], value, rtol=0, atol=0, msg=name)
    for m in ("image", "text"):
        a, b = full.model.modality_graph.graphs[m][0], resumed.model.modality_graph.graphs[m][0]
        assert torch.equal(a.to_dense(), b.to_dense())


def test_amazon_baby_without_features_stops_before_training(tmp_path):
    """One error line and status 2, without a traceback; --debug shows the traceback."""
    command = [sys.executable, str(REPO / "run_recbole_mmssl.py"), "--dataset=amazon-baby"]
    out = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2
    assert "error: Dataset amazon-baby needs item features that are not installed" in out.stderr
    assert "expected shape (7050, 4096)" in out.stderr and "prepare features" in out.stderr
    assert "Traceback" not in out.stderr and "epoch 0 training" not in out.stdout + out.stderr
    debug = subprocess.run(command + ["--debug"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "FeatureFileError" in debug.stderr


def test_reference_is_unchanged_by_the_new_switches(toy_multimodal, in_tmp):
    """With the new keys absent and with them set to their defaults: the same losses through
    three alternating steps, then the same forward, exactly."""
    config, _, _ = toy_multimodal
    defaults = {"last_layer_norm": "softmax", "softmax_share": 1.0, "adjacency_norm": "one_sided", "propagation": "alternating",
                "propagation_gain": None, "feature_norm": "none", "feature_shuffle_seed": None,
                "feat_reg_weight": 1e-5, "own_content_weight": 0.0}
    runs = []
    for extra in ({}, defaults):
        _, (train, _, _), model, trainer = mmssl(config, graph_topk_rate=0.05, **extra)
        trainer._reseed(0, train)
        model.train()
        model.start_epoch()
        losses = []
        for batch in itertools.islice(train, 3):
            losses.append(trainer._discriminator_step(batch)[0])
            losses.extend(trainer._recommender_step(batch)[0])
        model.eval()
        runs.append((losses, model.forward()))
    (losses_a, out_a), (losses_b, out_b) = runs
    assert len(losses_a) == 18 and all(torch.equal(a, b) for a, b in zip(losses_a, losses_b))
    assert torch.equal(out_a.user, out_b.user) and torch.equal(out_a.item, out_b.item)
    for m in ("image", "text"):
        assert torch.equal(out_a.view_user[m], out_b.view_user[m]) and torch.equal(out_a.feat_item[m], out_b.feat_item[m])


def test_zero_feature_regulariser_is_not_computed(toy_multimodal, in_tmp):
    config, _, _ = toy_multimodal
    _, (train, _, _), model, _ = mmssl(config, feat_reg_weight=0)
    model.train()
    losses = model.calculate_loss(next(iter(train)))
    assert losses[2].item() == 0 and losses[2].grad_fn is None
    assert losses[0].grad_fn is not None


@pytest.mark.parametrize("own_weight", [0.0, 0.7])
def test_lightgcn_style_switches_compute_the_dense_equations(toy_multimodal, in_tmp, own_weight):
    """No last-layer softmax, symmetric adjacency, simultaneous layers, standardised features and an
    item's own content in its final embedding, against dense float64 NumPy (modality graphs empty:
    k = 0, so layer 0 is the ID embeddings)."""
    config, _, _ = toy_multimodal
    _, (train, _, _), model, trainer = mmssl(config, last_layer_norm="none", adjacency_norm="symmetric",
                                             propagation="simultaneous", feature_norm="standardize",
                                             graph_topk_rate=0.0, own_content_weight=own_weight)
    model.train()
    model.start_epoch()
    for batch in itertools.islice(train, 2):
        trainer._recommender_step(batch)
    assert all(model.modality_graph.nnz(m) == 0 for m in ("image", "text"))
    model.eval()
    out = model.forward()

    data = train._dataset
    n_users, n_items = model.n_users, model.n_items
    r = np.zeros((n_users, n_items))
    r[data.inter_feat["user_id"].numpy(), data.inter_feat["item_id"].numpy()] = 1
    du, di = r.sum(1), r.sum(0)
    sym = np.divide(r, np.sqrt(np.outer(du, di)), out=np.zeros_like(r), where=r > 0)
    adjacency = np.block([[np.zeros((n_users, n_users)), sym], [sym.T, np.zeros((n_items, n_items))]])
    layers = [np.vstack([model.user_embedding.weight.detach().double().numpy(),
                         model.item_embedding.weight.detach().double().numpy()])]
    for _ in range(2):
        layers.append(adjacency @ layers[-1])
    gnn = np.mean(layers, axis=0)

    def rownorm(x):
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    p = r / np.sqrt(du[:, None] + 1e-8)
    q = r.T / np.sqrt(di[:, None] + 1e-8)
    mm_u, mm_i, own = 0, 0, 0
    for m in ("image", "text"):
        raw = data.modality_features[m].double().numpy()
        x = np.zeros_like(raw)
        x[1:] = (raw[1:] - raw[1:].mean(0)) / raw[1:].std(0)
        np.testing.assert_allclose(getattr(model, f"feat_{m}").numpy(), x, rtol=1e-4, atol=1e-5)
        x_bar = x @ model.encoders[m].weight.detach().double().numpy().T + model.encoders[m].bias.detach().double().numpy()
        f_u = p @ x_bar
        mm_u, mm_i, own = mm_u + rownorm(f_u), mm_i + rownorm(q @ f_u), own + rownorm(x_bar)
    np.testing.assert_allclose(out.user.detach().numpy(), gnn[:n_users] + 0.55 * mm_u, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out.item.detach().numpy(), gnn[n_users:] + 0.55 * mm_i + own_weight * own,
                               rtol=1e-4, atol=1e-5)


def test_every_trainer_applies_the_learning_rate_decay_and_the_pre_epoch_hook(toy_multimodal, in_tmp):
    config, _, _ = toy_multimodal
    _, (train, _, _), _, trainer = built("LightGCN", config, learning_rate=0.01, learning_rate_decay=[0.5, 2])
    trainer._train_epoch(train, 4)
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.01 * 0.5 ** 2)
    _, (train, _, _), model, trainer = built("FREEDOM", config, dropout=0.75, knn_k=3)
    n_edges = len(model.edge_users)
    graphs = []
    for epoch in range(2):
        trainer._train_epoch(train, epoch)
        graphs.append(model.train_adjacency.coalesce().indices())
    assert graphs[0].shape[1] == graphs[1].shape[1] == 2 * int(n_edges * 0.25)  # both directions of the kept edges
    assert not torch.equal(graphs[0], graphs[1])  # drawn again each epoch
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(config.get("learning_rate", 1e-3))


def _train_batches(config, n_batches, **overrides):
    """Seeded model and trainer after ``n_batches`` discriminator + recommender steps; also returns
    the losses of every step and how many forward passes ran."""
    torch.manual_seed(0)
    _, (train, _, _), model, trainer = mmssl(config, **overrides)
    model.train()
    model.start_epoch()
    forwards = []
    original = model.forward
    model.forward = lambda: forwards.append(1) or original()
    losses = []
    for batch in itertools.islice(train, n_batches):
        losses.append(trainer._discriminator_step(batch)[0])
        losses.extend(trainer._recommender_step(batch)[0])
    return model, torch.stack(losses), len(forwards)


def test_shared_forward_trains_exactly_as_two_forwards_without_dropout(toy_multimodal, in_tmp):
    """Without dropout the two steps' forwards are the same function of the same parameters, so
    sharing one changes nothing but the number of forwards (exact discriminator)."""
    config, _, _ = toy_multimodal
    keys = {"feat_dropout": 0.0, "d_dropout": [0.0, 0.0], "graph_topk_rate": 0.05}
    separate, separate_losses, separate_forwards = _train_batches(config, 3, **keys)
    shared, shared_losses, shared_forwards = _train_batches(config, 3, shared_forward=True, **keys)
    assert (separate_forwards, shared_forwards) == (6, 3)
    torch.testing.assert_close(shared_losses, separate_losses, rtol=1e-5, atol=1e-7)
    for (name, a), b in zip(separate.named_parameters(), shared.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-7, msg=name)
    for m in shared.modalities:
        graph, expected = shared.modality_graph.graphs[m][0], separate.modality_graph.graphs[m][0]
        assert torch.equal(graph.to_dense(), expected.to_dense())


def test_shared_forward_gives_the_critic_the_discriminator_steps_columns(toy_multimodal, in_tmp):
    """Sampled critic: the recommender step's generator loss reads the discriminator step's column
    sets, at values computed here from the dense relation rows (paper Eq. 3)."""
    from recbole_mmssl.model.mmssl.relation_rows import relation_rows

    config, _, _ = toy_multimodal
    keys = {"discriminator": "sampled", "graph_topk_rate": 0.05, "critic_random_items": 8, "feat_dropout": 0.0}
    torch.manual_seed(0)
    _, (train, _, _), separate, _ = mmssl(config, **keys)
    torch.manual_seed(0)
    _, _, model, _ = mmssl(config, shared_forward=True, **keys)
    batch = next(iter(train))
    for m in (separate, model):
        m.train()
        m.start_epoch()
    torch.manual_seed(1)
    separate_d = separate.discriminator_loss(batch)
    torch.manual_seed(1)
    shared_d = model.discriminator_loss(batch)
    torch.testing.assert_close(shared_d, separate_d)  # the same forward and columns, so the same critic loss
    picked, out = model._shared["picked"], model._shared["out"]
    users = batch[model.USER_ID]
    entries = model.train_entries(users)
    assert all(picked["graph_tops"][m].shape == (len(users), model.modality_graph.k) for m in model.modalities)

    with torch.no_grad():
        fake = torch.cat([relation_rows(out.feat_user[m][users], out.feat_item[m][1:], entries)
                          .gather(1, picked["columns"]) for m in model.modalities])
        n = len(model.modalities)
        columns = model.discriminator.embed(out.item[1:], picked["columns"].repeat(n, 1), picked["kinds"].repeat(n, 1))
        expected = -model.discriminator(fake, columns).mean()
    losses = model.calculate_loss(batch)
    assert model._shared is None
    torch.testing.assert_close(losses[-1], model.g_weight * expected, rtol=1e-5, atol=0)
    separate_losses = separate.calculate_loss(batch)
    for a, b in zip(losses[:3], separate_losses[:3]):  # bpr and the regularisers see the same forward
        torch.testing.assert_close(a, b)


def test_contrastive_shortcut_on_empty_modality_graphs_trains_as_the_full_loss(toy_multimodal, in_tmp, monkeypatch):
    """With empty modality graphs (graph_period 1 leaves them empty from the third batch on) the
    contrastive loss is a constant without gradient; computing it as such changes nothing: the
    same losses and parameters, bit for bit, as the b x b computation."""
    from recbole_mmssl.model.mmssl.recommender import MMSSL

    config, _, _ = toy_multimodal
    runs = []
    for shortcut in (True, False):
        if not shortcut:
            full = MMSSL.contrastive_loss
            monkeypatch.setattr(MMSSL, "contrastive_loss", lambda self, a, p, empty=False: full(self, a, p, False))
        _, (train, _, _), model, trainer = mmssl(config, graph_topk_rate=0.05, use_adversarial=False)
        trainer._reseed(0, train)
        model.train()
        model.start_epoch()
        losses = [trainer._recommender_step(batch)[0] for batch in itertools.islice(train, 5)]
        assert model.modality_graph.nnz("image") == 0  # the later batches ran on empty graphs
        runs.append((losses, {k: v.clone() for k, v in model.state_dict().items()}))
    (losses_a, state_a), (losses_b, state_b) = runs
    assert all(torch.equal(a, b) for la, lb in zip(losses_a, losses_b) for a, b in zip(la, lb))
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)


def test_checkpoint_folder_made_by_another_rank_meanwhile_is_no_error(toy_multimodal, in_tmp, monkeypatch):
    """Ranks start together: another one may create the folder between RecBole's check and its makedirs."""
    import recbole.trainer.trainer as recbole_trainer

    def racy_ensure_dir(path):
        missing = not os.path.exists(path)
        os.makedirs(path, exist_ok=True)  # the other rank, just now
        if missing:
            os.makedirs(path)

    monkeypatch.setattr(recbole_trainer, "ensure_dir", racy_ensure_dir)
    config, _, _ = toy_multimodal
    folder = os.path.join(str(in_tmp), "fresh", "checkpoints")
    *_, trainer = mmssl({**config, "checkpoint_dir": folder})
    assert os.path.isdir(folder) and trainer.saved_model_file.startswith(folder)
