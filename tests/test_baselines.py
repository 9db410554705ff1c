"""The multimodal baselines side by side: each learns from the content (true features beat the
same features shuffled across items), reloads with the same scores, and trains from the run
script on bundled TikTok."""

import os
import re
import subprocess
import sys

import pytest

from conftest import REPO, base_config, content_dataset
from recbole_mmssl import run_recbole_mmssl
from recbole_mmssl.quick_start import load_data_and_model
from recbole_mmssl.utils import get_trainer

BASELINES = ["VBPR", "LATTICE", "FREEDOM", "BM3"]
# Short runs in which the content shows. BM3's scores never read the features: they shape the
# shared predictor through the alignment terms, so the test weights those up and fixes the tables.
CONTENT_RUNS = {
    "VBPR": {"epochs": 5},
    "LATTICE": {"epochs": 3, "learning_rate": 0.01},
    "FREEDOM": {"epochs": 2, "learning_rate": 0.01, "knn_k": 5},
    "BM3": {"epochs": 3, "learning_rate": 0.01, "freeze_features": True, "cl_weight": 10.0, "dropout": 0.3},
}


@pytest.mark.parametrize("model", BASELINES)
def test_learns_from_content(tmp_path, in_tmp, model):
    """The margin that MMSSL's test requires (0.1), over two seeds for the noisier models."""
    scores = {}
    for shuffle in (False, True):
        root = tmp_path / str(shuffle)
        content_dataset(root, shuffle)
        runs = [base_config(root, "content", modalities=["image", "text"], train_batch_size=64, embedding_size=32,
                            seed=seed, **CONTENT_RUNS[model]) for seed in (1, 2)]
        scores[shuffle] = sum(run_recbole_mmssl(model=model, config_dict=config, saved=False)["best_valid_score"]
                              for config in runs) / len(runs)
    assert scores[False] > scores[True] + 0.1, scores


@pytest.mark.parametrize("model", BASELINES)
def test_train_save_reload_gives_identical_scores(toy_multimodal, in_tmp, model):
    config, _, _ = toy_multimodal
    result = run_recbole_mmssl(model=model, config_dict={**config, "epochs": 2, "embedding_size": 8})
    (saved,) = [f for f in os.listdir(config["checkpoint_dir"]) if f.endswith(".pth") and f.startswith(model)]
    cfg, reloaded, _, _, _, test_data = load_data_and_model(os.path.join(config["checkpoint_dir"], saved))
    trainer = get_trainer(cfg["MODEL_TYPE"], model)(cfg, reloaded)
    assert dict(trainer.evaluate(test_data, load_best_model=False)) == dict(result["test_result"])


@pytest.mark.parametrize("model", BASELINES)
def test_run_script_trains_on_bundled_tiktok(tmp_path, model):
    out = subprocess.run(
        [sys.executable, str(REPO / "run_recbole_mmssl.py"), f"--model={model}", "--dataset=tiktok", "--epochs=1",
         "--show_progress=False", f"--checkpoint_dir={tmp_path / 'saved'}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    log = out.stdout + out.stderr
    assert "Item features: image: (6711, 128), audio: (6711, 128)" in log
    assert re.search(r"test result: OrderedDict\(.*'recall@20'", log)
