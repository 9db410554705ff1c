"""Plugin discovery, checkpoints on current torch, and whole runs through the quick start."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from recbole.model.general_recommender import LightGCN
from recbole.trainer import Trainer
from recbole.utils import ModelType

from conftest import REPO
from recbole_mmssl.trainer.checkpoint import load_checkpoint
from recbole_mmssl.common.compat import install_numpy_aliases
from recbole_mmssl.trainer.resume import CheckpointMixin
from recbole_mmssl.config import Config
from recbole_mmssl.quick_start import load_data_and_model, prepare_data, build_model, run_recbole_mmssl
from recbole_mmssl.utils import get_model, get_trainer

METRIC_KEYS = {f"{m}@{k}" for m in ("recall", "ndcg", "ndcg_ref", "precision") for k in (10, 20, 50)}


def test_numpy_aliases_recbole_reads():
    install_numpy_aliases()
    assert np.float_ is np.float64 and np.complex_ is np.complex128 and np.unicode_ is np.str_
    assert np.float is np.float64 and np.long is np.int_


def test_scipy_dok_update_recbole_graph_models_call():
    import scipy.sparse as sp

    matrix = sp.dok_matrix((3, 4), dtype=np.float32)
    matrix._update({(0, 1): 1, (2, 3): 1, (1, 0): 1})
    expected = np.zeros((3, 4), dtype=np.float32)
    expected[0, 1] = expected[2, 3] = expected[1, 0] = 1
    np.testing.assert_array_equal(matrix.toarray(), expected)
    assert matrix.nnz == 3


def test_discovery_falls_back_to_recbole():
    assert get_model("LightGCN") is LightGCN
    trainer = get_trainer(ModelType.GENERAL, "LightGCN")
    assert issubclass(trainer, Trainer) and issubclass(trainer, CheckpointMixin)
    assert get_trainer(ModelType.GENERAL, "BPR") is trainer
    with pytest.raises(ValueError, match="NoSuchModel"):
        get_model("NoSuchModel")


@pytest.mark.parametrize("mask", ["train", "train_valid"])
def test_lightgcn_trains_saves_and_reloads(toy_multimodal, in_tmp, mask):
    config, _, _ = toy_multimodal
    config.update(epochs=2, test_masked_items=mask)
    result = run_recbole_mmssl(model="LightGCN", config_dict=config)
    assert set(result["test_result"]) == METRIC_KEYS
    assert set(result["best_valid_result"]) == METRIC_KEYS
    assert result["best_valid_score"] == result["best_valid_result"]["recall@20"]

    saved = sorted(f for f in os.listdir(config["checkpoint_dir"]) if f.endswith(".pth"))
    assert len(saved) == 1 and saved[0].startswith("LightGCN-")  # the best checkpoint, no last-epoch one
    cfg, model, _, _, _, test_data = load_data_and_model(os.path.join(config["checkpoint_dir"], saved[0]))
    trainer = get_trainer(cfg["MODEL_TYPE"], cfg["model"])(cfg, model)
    again = trainer.evaluate(test_data, load_best_model=False)
    assert dict(again) == dict(result["test_result"])


def test_resume_restores_model_and_progress(toy_multimodal, in_tmp):
    config, _, _ = toy_multimodal
    cfg = Config(model="LightGCN", config_dict=config)
    _, (train, valid, _) = prepare_data(cfg)
    model = build_model(cfg, train)
    trainer = get_trainer(cfg["MODEL_TYPE"], "LightGCN")(cfg, model)
    trainer.fit(train, valid, saved=True)
    checkpoint = load_checkpoint(trainer.saved_model_file)

    fresh = get_trainer(cfg["MODEL_TYPE"], "LightGCN")(cfg, build_model(cfg, train))
    fresh.resume_checkpoint(trainer.saved_model_file)
    assert fresh.start_epoch == checkpoint["epoch"] + 1 == 1
    for name, value in fresh.model.state_dict().items():
        assert torch.equal(value, checkpoint["state_dict"][name])
    assert fresh.optimizer.state_dict()["state"].keys() == trainer.optimizer.state_dict()["state"].keys()


def test_interrupted_mmssl_run_resumes_to_the_same_result(toy_multimodal, in_tmp):
    config, _, _ = toy_multimodal
    full = run_recbole_mmssl(config_dict={**config, "epochs": 3})
    first = run_recbole_mmssl(config_dict={**config, "epochs": 2, "checkpoint_dir": str(in_tmp / "first")})
    (checkpoint,) = (in_tmp / "first").glob("*.pth")
    resumed = run_recbole_mmssl(config_dict={**config, "epochs": 3}, resume_checkpoint=checkpoint)
    assert load_checkpoint(checkpoint)["best_valid_result"] == first["best_valid_result"]
    assert resumed["best_valid_result"] == full["best_valid_result"]
    assert resumed["test_result"] == full["test_result"]


def test_run_script_trains_lightgcn_on_bundled_tiktok(tmp_path):
    """RecBole's protocol on the bundled data (the default, train, runs in the compare and preset tests)."""
    mask = "train_valid"
    out = subprocess.run(
        [sys.executable, str(REPO / "run_recbole_mmssl.py"), "--model=LightGCN", "--dataset=tiktok",
         "--epochs=1", "--show_progress=False", f"--test_masked_items={mask}",
         f"--checkpoint_dir={tmp_path / 'saved'}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    log = out.stdout + out.stderr
    assert f"test_masked_items = {mask}" in log
    test_line = re.search(r"test result: OrderedDict\((.*)\)", log).group(1)
    for key in ("recall@20", "precision@20", "ndcg@20", "ndcg_ref@20", "recall@50"):
        assert f"'{key}'" in test_line
    assert "The number of items: 6711" in log


def test_recbole_list_metrics_evaluate(toy_multimodal, in_tmp):
    """RecBole's own ItemCoverage, AveragePopularity, GiniIndex, ShannonEntropy and TailPercentage
    run through its trainer (its collector cannot hand them over unpatched)."""
    config, _, _ = toy_multimodal
    metrics = ["Recall", "ItemCoverage", "AveragePopularity", "GiniIndex", "ShannonEntropy", "TailPercentage"]
    result = run_recbole_mmssl(model="BPR", config_dict={**config, "metrics": metrics}, saved=False)
    test = result["test_result"]
    assert 0 < test["itemcoverage@20"] <= 1 and test["averagepopularity@20"] > 0
    assert 0 <= test["giniindex@20"] <= 1 and 0 <= test["tailpercentage@20"] <= 1


def test_improved_preset_trains_on_bundled_tiktok(tmp_path):
    out = subprocess.run(
        [sys.executable, str(REPO / "run_recbole_mmssl.py"), "--dataset=tiktok", "--variant=improved", "--epochs=1",
         "--show_progress=False", f"--checkpoint_dir={tmp_path / 'saved'}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    log = re.sub(r"\x1b\[[0-9;]*m", "", out.stdout + out.stderr)  # without the log's colours
    settings = yaml.safe_load((REPO / "properties" / "model" / "MMSSL.yaml").read_text())["presets"]["improved"]
    assert settings.pop("dataset_settings") is False and settings["softmax_share"] == "auto"
    for key, value in settings.items():
        assert re.search(rf"\n{key} = {re.escape(str(value))}\n", log), key  # the run's config as RecBole prints it
    assert "Rules on tiktok (9298 users, 6710 items, 59541 training interactions): softmax_share = 0" in log
    assert "epoch 0 training" in log and re.search(r"test result: OrderedDict\(.*'recall@20'", log)


def test_runs_show_no_warnings_of_recboles_own_code(tmp_path):
    """pandas' chained-assignment FutureWarning, torch's GradScaler and sparse-tensor deprecations
    and its sparse-invariant note are silenced; a warning a user should act on still shows."""
    code = ("import warnings\n"
            "from recbole_mmssl.quick_start import run_recbole_mmssl\n"
            "for model in ('MMSSL', 'LightGCN'):\n"
            "    run_recbole_mmssl(model=model, dataset='tiktok', saved=False, config_dict={'epochs': 1, "
            "'variant': 'improved', 'state': 'ERROR', 'show_progress': False} if model == 'MMSSL' else "
            "{'epochs': 1, 'state': 'ERROR', 'show_progress': False})\n"
            "warnings.warn('a warning of the user', UserWarning)\n")
    out = subprocess.run([sys.executable, "-W", "default", "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    warned = [line for line in out.stderr.splitlines() if "Warning:" in line]
    assert len(warned) == 1 and "a warning of the user" in warned[0], warned
