"""Resuming any model: a run interrupted after an epoch and resumed from its last-epoch checkpoint
ends with the weights and per-epoch records of the uninterrupted run."""

import pytest
import torch

from conftest import Interrupt, built, stop_after


def records(trainer):
    """The per-epoch records without their timings."""
    return [{k: v for k, v in row.items() if not k.endswith("_seconds")} for row in trainer.epoch_records]


SMALL = {"epochs": 4, "embedding_size": 16, "train_batch_size": 32, "stopping_step": 10}


@pytest.mark.parametrize("model", ["LightGCN", "VBPR", "FREEDOM", "BPR", "MMSSL"])
def test_interrupted_run_resumes_to_the_uninterrupted_one(toy_multimodal, in_tmp, model):
    config, _, _ = toy_multimodal
    extra = {"n_heads": 2} if model == "MMSSL" else {}
    _, (train, valid, _), _, whole = built(model, {**config, **SMALL, **extra, "checkpoint_dir": str(in_tmp / "a")})
    whole.fit(train, valid, saved=True)

    _, (train, valid, _), _, cut = built(model, {**config, **SMALL, **extra, "checkpoint_dir": str(in_tmp / "b")})
    with pytest.raises(Interrupt):
        cut.fit(train, valid, saved=True, callback_fn=stop_after(1))
    _, (train, valid, _), _, resumed = built(model, {**config, **SMALL, **extra, "checkpoint_dir": str(in_tmp / "b")})
    resumed.resume_checkpoint(cut.last_checkpoint_file)
    assert resumed.start_epoch == 2
    resumed.fit(train, valid, saved=True)

    for name, value in whole.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[name], value), name
    assert records(resumed) == records(whole) and len(records(whole)) == 4
    assert resumed.best_valid_result == whole.best_valid_result


def test_resumed_optimizer_holds_the_saved_values(toy_multimodal, in_tmp):
    """Adam's step counts and moments come back with their values, not just their keys."""
    config, _, _ = toy_multimodal
    _, (train, valid, _), _, first = built("LightGCN", {**config, **SMALL, "epochs": 1})
    first.fit(train, valid, saved=True)
    _, _, _, again = built("LightGCN", {**config, **SMALL})
    again.resume_checkpoint(first.saved_model_file)
    saved, restored = first.optimizer.state_dict()["state"], again.optimizer.state_dict()["state"]
    assert saved.keys() == restored.keys() and saved
    for index, state in saved.items():
        for name, value in state.items():
            assert torch.equal(torch.as_tensor(restored[index][name]), torch.as_tensor(value)), (index, name)


def test_a_resumed_run_keeps_the_values_it_was_trained_with(toy_multimodal, in_tmp):
    """Today's defaults and presets never reach a resumed run; today's run-control keys (epochs) do;
    a value set explicitly today that differs from the stored one is refused, naming it."""
    from recbole_mmssl.config import Config
    from recbole_mmssl.errors import InputError
    from recbole_mmssl.quick_start import run_recbole_mmssl, train_in_folder
    from recbole_mmssl.trainer.checkpoint import load_checkpoint, save_checkpoint

    config, _, _ = toy_multimodal
    folder = in_tmp / "run"
    first = {**config, **SMALL, "epochs": 2, "checkpoint_dir": str(folder)}
    trainer, _ = train_in_folder(Config(model="LightGCN", config_dict=first), str(folder))
    checkpoint = load_checkpoint(folder / "model.pth")
    assert checkpoint["config"]["learning_rate"] != 0.0123
    checkpoint["config"]["learning_rate"] = 0.0123  # as if today's default had changed since the run started
    save_checkpoint({k: v for k, v in checkpoint.items() if k not in ("format", "version")}, folder / "model.pth")

    resumed, _ = train_in_folder(Config(model="LightGCN", config_dict={**first, "epochs": 3}), str(folder))
    assert resumed.config["learning_rate"] == 0.0123 and resumed.config["epochs"] == 3
    assert "checkpoint" in resumed.config.origins["learning_rate"]
    assert [row["epoch"] for row in resumed.epoch_records] == [0, 1, 2]

    with pytest.raises(InputError, match=r"model\.pth was trained with embedding_size = 16 \(now 8"):
        train_in_folder(Config(model="LightGCN", config_dict={**first, "embedding_size": 8}), str(folder))
    with pytest.raises(InputError, match="learning_rate = 0.0123"):
        run_recbole_mmssl(model="LightGCN", config_dict={**first, "learning_rate": 0.5},
                          resume_checkpoint=str(folder / "model.pth"))
