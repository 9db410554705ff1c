"""Distributed MMSSL on the CPU with gloo: the collectives, two ranks against one, checkpoints, errors."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO, base_config, toy_splits, write_dataset
from recbole_mmssl.common import distributed
from recbole_mmssl.errors import InputError

# 11 batches an epoch; the modality graphs (k = 3) are rebuilt every second batch
SMALL = {"train_batch_size": 15, "embedding_size": 16, "n_heads": 2, "epochs": 2, "graph_topk_rate": 0.04,
         "graph_period": 2}


def free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return str(s.getsockname()[1])


def _collectives(local_rank, settings, out):
    """Rank r holds r + 3 rows (unequal shares); writes what the helpers returned."""
    torch.distributed.init_process_group("gloo", init_method=f"tcp://{settings['ip']}:{settings['port']}",
                                         rank=local_rank, world_size=settings["world_size"])
    r = distributed.rank()
    x = (torch.arange((r + 3) * 2, dtype=torch.float64).view(-1, 2) + 10 * r).requires_grad_(True)
    gathered = distributed.gather(x)
    weights = torch.arange(gathered.numel(), dtype=torch.float64).view_as(gathered) * (r + 1)
    (weights * gathered).sum().backward()
    users, tops = distributed.gather_pairs(torch.arange(r + 3) + 100 * r, torch.full((r + 3, 2), r))
    linear = torch.nn.Linear(2, 1, bias=False)
    linear.weight.data.fill_(float(r))
    distributed.broadcast(linear.parameters())
    linear.weight.grad = torch.full_like(linear.weight, r + 1.0)
    distributed.sum_gradients(linear.parameters())
    torch.save({"gathered": gathered.detach(), "grad": x.grad, "users": users, "tops": tops,
                "weight": linear.weight.data, "summed": linear.weight.grad,
                "shard": (distributed.shard(7).start, distributed.shard(7).stop)},
               Path(out) / f"rank{r}.pt")


def test_collectives_over_unequal_shares(tmp_path):
    distributed.spawn(_collectives, 2, port=free_port(), args=(str(tmp_path),))
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    rows = [torch.arange((r + 3) * 2, dtype=torch.float64).view(-1, 2) + 10 * r for r in range(2)]
    whole = torch.cat(rows)
    # every rank's loss is sum(w_r * gathered) with w_r = (r + 1) * arange: the gradient of a
    # rank's own rows is the sum over ranks of their weights at those rows
    weight_sum = torch.arange(whole.numel(), dtype=torch.float64).view_as(whole) * (1 + 2)
    for r, result in enumerate(ranks):
        assert torch.equal(result["gathered"], whole)
        start = 0 if r == 0 else 3
        assert torch.equal(result["grad"], weight_sum[start:start + r + 3])
        assert torch.equal(result["users"], torch.tensor([0, 1, 2, 100, 101, 102, 103]))
        assert torch.equal(result["tops"], torch.tensor([[0, 0]] * 3 + [[1, 1]] * 4))
        assert torch.equal(result["weight"], torch.zeros(1, 2))  # rank 0's value
        assert torch.equal(result["summed"], torch.full((1, 2), 3.0))
    assert ranks[0]["shard"] == (0, 4) and ranks[1]["shard"] == (4, 7)


def _train(local_rank, settings, config_dict, out):
    """Train MMSSL as a rank of the group and write this rank's final state."""
    from recbole_mmssl.config import Config
    from recbole_mmssl.quick_start import build_model, prepare_data
    from recbole_mmssl.utils import get_trainer

    cfg = Config(model="MMSSL", config_dict={**config_dict, **settings})
    _, (train, valid, _) = prepare_data(cfg)
    model = build_model(cfg, train)
    trainer = get_trainer(cfg["MODEL_TYPE"], "MMSSL")(cfg, model)
    trainer.saved_model_file = os.path.join(out, "model.pth")
    trainer.fit(train, valid, saved=True)
    graphs = {m: p.to_dense() for m, (p, _) in model.modality_graph.graphs.items()}
    torch.save({"state": model.state_dict(), "graphs": graphs, "valid": dict(trainer.best_valid_result),
                "losses": trainer.train_loss_dict}, Path(out) / f"rank{distributed.rank()}.pt")


def toy(tmp_path):
    splits = toy_splits()
    rng = np.random.default_rng(2)
    features = {"image": rng.normal(size=(80, 8)).astype(np.float32),
                "text": rng.normal(size=(80, 5)).astype(np.float32)}
    write_dataset(Path(tmp_path) / "data", "toy", splits, features, [f"i{k}" for k in range(80)])
    return base_config(tmp_path, "toy", modalities=["image", "text"], gpu_id="", **SMALL)  # gloo, also beside a GPU


def train_ranks(tmp_path, config, nproc, world_size=-1):
    out = tmp_path / f"out{nproc}"
    out.mkdir()
    distributed.spawn(_train, nproc, world_size, port=free_port(), args=(config, str(out)))
    return out, [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(max(nproc, world_size))]


@pytest.mark.parametrize("critic, graph_update, shared_forward",
                         [("exact", "batch", False), ("sampled", "full", False), ("sampled", "batch", True)])
def test_two_ranks_end_identical_and_their_checkpoint_reloads_in_one_process(tmp_path, critic, graph_update,
                                                                             shared_forward, monkeypatch):
    from recbole_mmssl.quick_start import load_data_and_model
    from recbole_mmssl.utils import get_trainer

    monkeypatch.chdir(tmp_path)
    config = {**toy(tmp_path), "discriminator": critic, "graph_update": graph_update, "shared_forward": shared_forward}
    out, (rank0, rank1) = train_ranks(tmp_path, config, 2)
    for name, value in rank0["state"].items():
        assert torch.equal(value, rank1["state"][name]), name
    for m, graph in rank0["graphs"].items():
        assert torch.equal(graph, rank1["graphs"][m]) and graph.sum() > 0
    assert rank0["valid"] == rank1["valid"]  # rank 0 evaluated; both chose by its result
    assert sorted(os.listdir(out)) == ["model.pth", "rank0.pt", "rank1.pt"]

    cfg, model, _, _, valid, _ = load_data_and_model(out / "model.pth")  # the best epoch, from rank 0
    assert not distributed.active()
    trainer = get_trainer(cfg["MODEL_TYPE"], "MMSSL")(cfg, model)
    assert dict(trainer.evaluate(valid, load_best_model=False)) == rank0["valid"]


@pytest.mark.parametrize("graph_update", ["batch", "full"])
def test_two_ranks_take_the_steps_of_one_on_the_whole_batch(tmp_path, graph_update, monkeypatch):
    """Without dropout or the discriminator's randomness, splitting each batch changes nothing
    but the order of sums: the contrastive loss reads every rank's rows, the modality graphs
    every rank's top-k pairs, and the weighted gradients add up to the whole batch's."""
    monkeypatch.chdir(tmp_path)
    config = {**toy(tmp_path), "feat_dropout": 0.0, "use_adversarial": False, "graph_update": graph_update}
    _, (one,) = train_ranks(tmp_path, config, 1, world_size=1)
    _, (rank0, _) = train_ranks(tmp_path, config, 2)
    for name, value in one["state"].items():
        torch.testing.assert_close(rank0["state"][name], value, rtol=1e-4, atol=1e-5, msg=name)
    for m, graph in one["graphs"].items():
        assert torch.equal(rank0["graphs"][m], graph)
    for epoch, loss in one["losses"].items():
        assert rank0["losses"][epoch] == pytest.approx(loss, rel=1e-5)


def test_models_without_distributed_training_are_refused(tmp_path, monkeypatch):
    from recbole_mmssl.quick_start import run

    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match="LightGCN"):
        run(model="LightGCN", config_dict=toy(tmp_path), nproc=2)
    with pytest.raises(InputError, match="world_size"):
        distributed.spawn(_train, 2, world_size=1)


def _bad_input(local_rank, settings):
    if local_rank == 1:
        raise InputError("feature file toy.image.npy has 3 rows")


def test_an_input_error_in_a_process_reaches_the_caller_as_one(tmp_path):
    with pytest.raises(InputError, match="toy.image.npy has 3 rows"):
        distributed.spawn(_bad_input, 2, port=free_port())


def test_the_run_script_trains_in_two_processes(tmp_path):
    """`run_recbole_mmssl.py --nproc=2`: one log line on the split, one checkpoint, the test result."""
    import yaml

    config = {**toy(tmp_path), "state": "INFO", "epochs": 1}
    (tmp_path / "toy.yaml").write_text(yaml.safe_dump(config))
    out = subprocess.run([sys.executable, str(REPO / "run_recbole_mmssl.py"), "--config_files=toy.yaml", "--nproc=2",
                          f"--port={free_port()}"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    log = out.stdout + out.stderr
    assert "Distributed training: 2 processes, gloo on cpu; each batch of 15 users is split into 8 + 7 users" in log
    assert log.count("test result") == 1
    assert len(list((tmp_path / "saved").glob("MMSSL-*.pth"))) == 1
