"""Shared helpers: small generated datasets in RecBole's benchmark layout."""

from pathlib import Path

import importlib.util

import numpy as np
import pytest

import recbole_mmssl  # noqa: F401  (installs the numpy aliases and registers NDCG_ref)

REPO = Path(__file__).resolve().parents[1]
PHASES = ("train", "valid", "test")


def write_inter(path, pairs, header="user_id:token\titem_id:token"):
    with open(path, "w", encoding="utf-8") as f:
        f.write(header + "\n")
        f.writelines(f"{u}\t{i}\n" for u, i in pairs)


def write_dataset(root, name, splits, features=None, token_order=None):
    """Write ``splits`` (phase -> [(user, item)]) and ``features`` (modality -> array whose
    rows follow ``token_order``) as a prepared dataset folder; returns the folder."""
    folder = Path(root) / name
    folder.mkdir(parents=True, exist_ok=True)
    for phase in PHASES:
        write_inter(folder / f"{name}.{phase}.inter", splits[phase])
    if token_order is not None:
        (folder / f"{name}.feature_items").write_text("".join(f"{t}\n" for t in token_order))
    for modality, array in (features or {}).items():
        np.save(folder / f"{name}.{modality}.npy", array)
    return folder


def toy_splits(n_users=40, n_items=80, seed=0):
    """Per user: 4 train, 1 valid, 1 test item, drawn at random; tokens 'u<k>' and 'i<k>'."""
    rng = np.random.default_rng(seed)
    splits = {phase: [] for phase in PHASES}
    for u in range(n_users):
        items = rng.choice(n_items, size=6, replace=False)
        for phase, chosen in zip(PHASES, (items[:4], items[4:5], items[5:])):
            splits[phase].extend((f"u{u}", f"i{i}") for i in chosen)
    return splits


def base_config(tmp_path, dataset, **overrides):
    """A config dict for a generated dataset under ``tmp_path/data``; quiet and one epoch."""
    config = {
        "dataset": dataset,
        "data_path": str(Path(tmp_path) / "data"),
        "checkpoint_dir": str(Path(tmp_path) / "saved"),
        "USER_ID_FIELD": "user_id",
        "ITEM_ID_FIELD": "item_id",
        "load_col": {"inter": ["user_id", "item_id"]},
        "benchmark_filename": ["train", "valid", "test"],
        "state": "ERROR",
        "show_progress": False,
        "epochs": 1,
        "train_batch_size": 64,
        "seed": 7,
    }
    config.update(overrides)
    return config


def content_dataset(root, shuffle, seed=0):
    """Users pick items by the items' latent vectors, which the features reveal (or, shuffled, hide)."""
    rng = np.random.default_rng(seed)
    n_users, n_items, dim = 300, 120, 4
    latent, prefs = rng.normal(size=(n_items, dim)), rng.normal(size=(n_users, dim))
    splits = {"train": [], "valid": [], "test": []}
    for u in range(n_users):
        logits = 3 * latent @ prefs[u]
        prob = np.exp(logits - logits.max())
        items = rng.choice(n_items, size=8, replace=False, p=prob / prob.sum())
        for phase, chosen in zip(splits, (items[:6], items[6:7], items[7:])):
            splits[phase] += [(f"u{u}", f"i{i}") for i in chosen]
    image = latent @ rng.normal(size=(dim, 16)) + 0.1 * rng.normal(size=(n_items, 16))
    text = latent @ rng.normal(size=(dim, 8)) + 0.1 * rng.normal(size=(n_items, 8))
    if shuffle:
        perm = rng.permutation(n_items)
        image, text = image[perm], text[perm]
    features = {"image": image.astype(np.float32), "text": text.astype(np.float32)}
    write_dataset(root / "data", "content", splits, features, [f"i{k}" for k in range(n_items)])


def dense(rows, cols, values, n):
    out = np.zeros((n, n))
    np.add.at(out, (rows.numpy(), cols.numpy()), values.detach().numpy())
    return out


def dense_knn(features, k, weighted):
    """Row-sum normalised kNN graph of the real rows (1..), by a dense NumPy top-k of cosines."""
    x = features[1:].numpy().astype(np.float64)
    unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    sim = unit @ unit.T
    graph = np.zeros((len(x) + 1, len(x) + 1))
    for i in range(len(x)):
        top = np.argsort(-sim[i], kind="stable")[:k]
        graph[i + 1, top + 1] = sim[i, top] if weighted else 1.0
    r = graph.sum(1)
    inv = np.where(r > 0, 1 / np.sqrt(np.where(r > 0, r, 1)), 0)
    return graph * inv[:, None] * inv[None, :]


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run in a temporary working directory (RecBole writes log/ and log_tensorboard/ there)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def toy_multimodal(tmp_path):
    """A generated multimodal dataset whose feature rows are in a shuffled token order.

    Returns (config dict, {modality: array}, token order).
    """
    splits = toy_splits()
    tokens = [f"i{k}" for k in np.random.default_rng(1).permutation(80)]
    rng = np.random.default_rng(2)
    features = {"image": rng.normal(size=(80, 8)).astype(np.float32),
                "text": rng.normal(size=(80, 5)).astype(np.float32)}
    write_dataset(Path(tmp_path) / "data", "toy", splits, features, tokens)
    config = base_config(tmp_path, "toy", modalities=["image", "text"])
    return config, features, tokens


def built(model, config_dict, **overrides):
    """(config, (train, valid, test) dataloaders, model, trainer) for ``model`` on a generated dataset."""
    from recbole_mmssl.config import Config
    from recbole_mmssl.quick_start import build_model, prepare_data
    from recbole_mmssl.utils import get_trainer

    cfg = Config(model=model, config_dict={**config_dict, **overrides})
    _, loaders = prepare_data(cfg)
    instance = build_model(cfg, loaders[0])
    return cfg, loaders, instance, get_trainer(cfg["MODEL_TYPE"], model)(cfg, instance)


def bundled(name):
    path = REPO / "dataset" / name
    assert path.is_dir(), f"bundled dataset {path} is missing"
    return path



class Interrupt(Exception):
    """Raised by :func:`stop_after`: a run interrupted as a killed process would be."""


def stop_after(epoch):
    """A trainer callback that interrupts the run once ``epoch`` has finished (and been saved)."""
    def callback(epoch_idx, valid_score):
        if epoch_idx == epoch:
            raise Interrupt

    return callback


HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


def is_picture(path):
    """A PNG file. The tested environment installs matplotlib (requirements.txt), so a missing
    matplotlib fails this check instead of turning it into a check that no picture exists."""
    assert HAS_MATPLOTLIB, "matplotlib, which requirements.txt installs, is missing"
    path = Path(path)
    return path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
