"""Per-epoch records: the learning-curve CSV and PNG, and the last-epoch checkpoint that resumes a run."""

import os

import pandas as pd
import pytest
import torch

from conftest import Interrupt, is_picture, stop_after
from recbole_mmssl.trainer.checkpoint import load_checkpoint
from recbole_mmssl.config import Config
from recbole_mmssl.quick_start import build_model, prepare_data
from recbole_mmssl.trainer import LOSS_NAMES
from recbole_mmssl.utils import get_trainer

SMALL = {"train_batch_size": 16, "embedding_size": 16, "n_heads": 2}


def trainer_for(config_dict, model="MMSSL", **overrides):
    cfg = Config(model=model, config_dict={**config_dict, **SMALL, **overrides})
    _, (train, valid, _) = prepare_data(cfg)
    return get_trainer(cfg["MODEL_TYPE"], model)(cfg, build_model(cfg, train)), train, valid


@pytest.mark.parametrize("model, losses", [("MMSSL", [f"loss/{n}" for n in LOSS_NAMES]), ("LightGCN", ["loss/total"])])
def test_every_run_writes_its_learning_curves(toy_multimodal, in_tmp, model, losses):
    config, _, _ = toy_multimodal
    trainer, train, valid = trainer_for(config, model, epochs=3)
    trainer.fit(train, valid, saved=True)
    table = pd.read_csv(trainer.curve_file)
    assert table["epoch"].tolist() == [0, 1, 2]
    assert set(losses) <= set(table.columns) and (table["train_seconds"] > 0).all()
    assert {"valid/recall@20", "valid/ndcg@20", "valid_score", "valid_seconds"} <= set(table.columns)
    assert table["valid_score"].tolist() == pytest.approx(table["valid/recall@20"].tolist())
    assert trainer.best_valid_score == pytest.approx(table["valid_score"].max())
    assert is_picture(trainer.curve_file[:-len(".csv")] + ".png")
    assert os.path.basename(trainer.curve_file).startswith(f"{model}-")


def test_interrupted_run_resumes_from_its_last_epoch(toy_multimodal, in_tmp):
    """Interrupted after epoch 1 of 4, resumed from the last-epoch checkpoint: the same weights,
    best result and per-epoch losses as the run that was never interrupted."""
    config, _, _ = toy_multimodal
    full, train, valid = trainer_for(config, epochs=4, checkpoint_dir=str(in_tmp / "full"))
    full.fit(train, valid, saved=True)
    assert not os.path.exists(full.last_checkpoint_file)  # a finished run leaves only its best checkpoint

    first, train, valid = trainer_for(config, epochs=4, checkpoint_dir=str(in_tmp / "first"))
    with pytest.raises(Interrupt):
        first.fit(train, valid, saved=True, callback_fn=stop_after(1))
    last = load_checkpoint(first.last_checkpoint_file)
    assert last["epoch"] == 1 and last["best_model_file"] == first.saved_model_file
    assert [row["epoch"] for row in last["epoch_records"]] == [0, 1]

    resumed, train, valid = trainer_for(config, epochs=4, checkpoint_dir=str(in_tmp / "resumed"))
    resumed.resume_checkpoint(first.last_checkpoint_file)
    assert resumed.start_epoch == 2 and resumed.saved_model_file == first.saved_model_file
    resumed.fit(train, valid, saved=True)
    for name, value in full.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[name], value), name
    assert resumed.best_valid_result == full.best_valid_result and resumed.best_epoch == full.best_epoch
    for a, b in zip(full.epoch_records, resumed.epoch_records):
        assert {k: v for k, v in a.items() if "seconds" not in k} == {k: v for k, v in b.items() if "seconds" not in k}
    assert len(resumed.epoch_records) == 4


def test_a_copied_run_resumes_into_its_copy(toy_multimodal, in_tmp):
    """A run folder copied while the run was interrupted writes on into the copy, not the original."""
    import shutil

    config, _, _ = toy_multimodal
    first, train, valid = trainer_for(config, epochs=3, checkpoint_dir=str(in_tmp / "first"))
    with pytest.raises(Interrupt):
        first.fit(train, valid, saved=True, callback_fn=stop_after(0))
    copy = shutil.copytree(in_tmp / "first", in_tmp / "copy")
    original = {f: os.path.getmtime(in_tmp / "first" / f) for f in os.listdir(in_tmp / "first")}

    resumed, train, valid = trainer_for(config, epochs=3, checkpoint_dir=str(in_tmp / "other"))
    resumed.resume_checkpoint(copy / os.path.basename(first.last_checkpoint_file))
    assert resumed.saved_model_file == str(copy / os.path.basename(first.saved_model_file))
    resumed.fit(train, valid, saved=True)
    assert {f: os.path.getmtime(in_tmp / "first" / f) for f in os.listdir(in_tmp / "first")} == original


def test_a_stopped_run_is_not_trained_again(toy_multimodal, in_tmp, monkeypatch):
    """Early stopping marks the best checkpoint stopped; resumed from it, the run returns its best
    result without training, and can still be evaluated with RecBole's item-count metrics."""
    config, _, _ = toy_multimodal
    first, train, valid = trainer_for(config, model="BPR", epochs=50, stopping_step=0)
    score, result = first.fit(train, valid, saved=True)
    assert first.cur_step > 0 and len(first.epoch_records) < 50  # it stopped early
    assert load_checkpoint(first.saved_model_file)["stopped"] is True
    assert not os.path.exists(first.last_checkpoint_file)

    resumed, train, valid = trainer_for(config, model="BPR", epochs=50, stopping_step=0,
                                        metrics=["Recall", "ItemCoverage"])
    resumed.resume_checkpoint(first.saved_model_file)
    monkeypatch.setattr(resumed, "_train_epoch", lambda *a, **k: pytest.fail("a stopped run trained again"))
    assert resumed.fit(train, valid, saved=True) == (score, result)
    assert 0 < resumed.evaluate(valid)["itemcoverage@20"] <= 1


def test_without_matplotlib_the_csv_is_written_and_the_log_says_why(toy_multimodal, in_tmp, monkeypatch, caplog):
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    config, _, _ = toy_multimodal
    trainer, train, valid = trainer_for(config, "BPR", epochs=2)
    with caplog.at_level("WARNING"):
        trainer.fit(train, valid, saved=False)
    assert pd.read_csv(trainer.curve_file)["epoch"].tolist() == [0, 1]
    assert not os.path.exists(trainer.curve_file[:-len(".csv")] + ".png")
    assert "matplotlib is not installed" in caplog.text
