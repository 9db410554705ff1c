"""The checkpoint format: opens with weights_only=True, stores plain values, refuses what is not
one of its files, never unpickles; the one-off upgrade of the earlier pickled format."""

import collections
import os
import pickle
import zipfile

import numpy as np
import pytest
import torch

from conftest import built
from recbole_mmssl.trainer.checkpoint import FORMAT, VERSION, config_values, load_checkpoint, main as checkpoint_main
from recbole_mmssl.config import Config
from recbole_mmssl.errors import InputError
from recbole_mmssl.quick_start import build_model, create_dataset, load_data_and_model, prepare_data
from recbole_mmssl.utils import get_trainer

SMALL = {"train_batch_size": 16, "embedding_size": 16, "n_heads": 2, "epochs": 2,
         "graph_topk_rate": 0.05, "graph_period": 3}  # k = 3: graphs rebuilt and pairs pending at the end


class Opener:
    """Unpickled, it creates ``path``: the stand-in for code that a pickle can run."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def is_plain(value):
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and is_plain(v) for k, v in value.items())
    return False


@pytest.fixture
def trained(toy_multimodal, in_tmp):
    """An MMSSL run of two epochs; returns (config dict, best checkpoint path, trainer)."""
    config, _, _ = toy_multimodal
    cfg, (train, valid, _), _, trainer = built("MMSSL", {**config, **SMALL})
    trainer.fit(train, valid, saved=True)
    return config, trainer.saved_model_file, trainer


def test_checkpoint_opens_weights_only_with_plain_config(trained):
    _, path, trainer = trained
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == FORMAT and raw["version"] == VERSION
    assert is_plain(raw["config"]) and raw["config"]["model"] == "MMSSL"
    assert not {"device", "MODEL_TYPE", "eval_type", "local_rank"} & set(raw["config"])
    assert all(type(v) is float for v in raw["best_valid_result"].values())
    assert type(raw["best_valid_score"]) is float
    graph = raw["other_parameter"]["modality_graph"]
    assert graph["kind"] == "state" and graph["state"]["graphs"]["image"] is not None  # rebuilt at batch 3
    assert graph["state"]["pending"]["image"], "the pairs accumulated since the last rebuild are kept"
    assert load_checkpoint(path)["config"] == raw["config"]


def test_reload_restores_graph_state_and_scores(trained):
    config, path, trainer = trained
    cfg, model, _, _, _, test = load_data_and_model(path)
    saved = trainer.model.modality_graph
    for m in ("image", "text"):
        for got, expected in zip(model.modality_graph.graphs[m], saved.graphs[m]):
            assert torch.equal(got.to_dense(), expected.to_dense())
        assert len(model.modality_graph.pending[m]) == len(saved.pending[m])
        for (u1, i1), (u2, i2) in zip(model.modality_graph.pending[m], saved.pending[m]):
            assert torch.equal(u1, u2) and torch.equal(i1, i2)
    assert model.modality_graph.batch_in_epoch == saved.batch_in_epoch
    again = get_trainer(cfg["MODEL_TYPE"], "MMSSL")(cfg, model).evaluate(test, load_best_model=False)
    assert dict(again) == dict(trainer.evaluate(test, load_best_model=True))


def test_config_is_rebuilt_from_its_stored_values(toy_multimodal, in_tmp):
    """Stored values win over today's presets and defaults; RecBole's derived entries are derived again."""
    config, _, _ = toy_multimodal
    original = Config(model="MMSSL", config_dict={**config, "variant": "improved"})
    values = config_values(original)
    values["learning_rate"] = 0.0123  # as if the preset had said so when the run started
    values["last_layer_norm"] = "softmax"
    rebuilt = Config.from_values(values)
    for key, value in values.items():
        assert rebuilt[key] == value, key
    assert rebuilt["device"] == original["device"] and rebuilt["MODEL_TYPE"] == original["MODEL_TYPE"]
    assert rebuilt.model_class is original.model_class


def test_the_command_line_does_not_reach_a_rebuilt_config(toy_multimodal, in_tmp, monkeypatch):
    config, _, _ = toy_multimodal
    values = config_values(Config(model="MMSSL", config_dict=config))
    monkeypatch.setattr("sys.argv", ["analyze", "--learning_rate=0.5"])
    assert Config.from_values(values)["learning_rate"] == values["learning_rate"]


@pytest.mark.parametrize("kind", ["missing", "folder", "not_a_checkpoint", "truncated", "no_fields", "pickled"])
def test_refused_files_name_the_file(trained, tmp_path, kind):
    _, path, _ = trained
    target = tmp_path / f"{kind}.pth"
    if kind == "folder":
        target.mkdir()
    elif kind == "not_a_checkpoint":
        target.write_bytes(b"user_id\titem_id\n1\t2\n")
    elif kind == "truncated":
        data = open(path, "rb").read()
        target.write_bytes(data[: len(data) // 2])
    elif kind == "no_fields":
        torch.save({"state_dict": {"w": torch.ones(2)}}, target)
    elif kind == "pickled":
        torch.save({"config": collections.OrderedDict(model=np.float64(1.0)), "x": Opener(tmp_path / "m")}, target)
    with pytest.raises(InputError, match=str(target)):
        load_checkpoint(target)
    assert not (tmp_path / "m").exists()


def write_crafted(path, marker):
    """A checkpoint-shaped file whose unpickling creates ``marker``; checked live, then armed."""
    torch.save({"format": FORMAT, "version": VERSION, "config": {"model": "MMSSL"}, "epoch": 0,
                "state_dict": {}, "hook": Opener(marker)}, path)
    torch.load(path, weights_only=False)
    assert marker.exists(), "the crafted file must be live: unpickled, it creates the marker"
    marker.unlink()


def test_crafted_checkpoint_is_refused_everywhere(trained, tmp_path):
    from recbole_mmssl.experiments.analyze import main as analyze_main
    from recbole_mmssl.experiments.compare import main as compare_main
    from recbole_mmssl.quick_start import run_recbole_mmssl

    config, _, _ = trained
    crafted, marker = tmp_path / "crafted.pth", tmp_path / "marker"
    write_crafted(crafted, marker)
    for call in (lambda: load_data_and_model(crafted),
                 lambda: run_recbole_mmssl(config_dict={**config, **SMALL}, resume_checkpoint=crafted)):
        with pytest.raises(InputError, match="does not open safely"):
            call()
    for tool in (lambda: analyze_main([str(crafted), "--output", str(tmp_path / "a")]),
                 lambda: compare_main(["--checkpoints", str(crafted), "--output", str(tmp_path / "c")])):
        with pytest.raises(SystemExit) as stop:
            tool()
        assert stop.value.code == 2
    assert not marker.exists()


@pytest.mark.parametrize("key", ["state", "learning_rate", "checkpoint_dir"])
def test_code_in_a_stored_config_value_never_runs(trained, tmp_path, key):
    """A checkpoint of the safe format whose configuration holds code as a string value: the
    configuration is rebuilt from plain values, never evaluated."""
    from recbole_mmssl.experiments.analyze import main as analyze_main
    from recbole_mmssl.experiments.compare import main as compare_main
    from recbole_mmssl.trainer.checkpoint import save_checkpoint

    _, path, _ = trained
    marker = tmp_path / "marker"
    checkpoint = load_checkpoint(path)
    checkpoint["config"][key] = f"[__import__('pathlib').Path({str(marker)!r}).touch(), 'INFO'][1]"
    crafted = tmp_path / "crafted.pth"
    save_checkpoint({k: v for k, v in checkpoint.items() if k not in ("format", "version")}, crafted)
    for call in (lambda: load_data_and_model(crafted),
                 lambda: analyze_main([str(crafted), "--output", str(tmp_path / "a")]),
                 lambda: compare_main(["--checkpoints", str(crafted), "--output", str(tmp_path / "c")])):
        try:
            call()
        except (InputError, SystemExit):  # refused, as a value of the wrong kind; or used as the string it is
            pass
        assert not marker.exists()


def test_command_line_values_are_read_as_literals_not_run(toy_multimodal, in_tmp, tmp_path, monkeypatch):
    config, _, _ = toy_multimodal
    marker = tmp_path / "marker"
    monkeypatch.setattr("sys.argv", ["run", f"--seed=__import__('pathlib').Path({str(marker)!r}).touch() or 5",
                                     "--learning_rate=2e-3", "--topk=[10, 20]", "--reproducibility=false"])
    with pytest.raises(InputError, match="seed"):
        Config(model="MMSSL", config_dict=config)
    assert not marker.exists()
    monkeypatch.setattr("sys.argv", ["run", "--learning_rate=2e-3", "--topk=[10, 20]", "--reproducibility=false"])
    cfg = Config(model="MMSSL", config_dict=config)
    assert (cfg["learning_rate"], cfg["topk"], cfg["reproducibility"]) == (2e-3, [10, 20], False)


def test_dataset_caches_are_never_unpickled(toy_multimodal, in_tmp, tmp_path):
    config, _, _ = toy_multimodal
    cfg = Config(model="MMSSL", config_dict=config)
    marker = tmp_path / "marker"
    os.makedirs(cfg["checkpoint_dir"], exist_ok=True)
    for name in ("toy-MultiModalDataset.pth", "toy-for-MMSSL-dataloader.pth"):
        with open(os.path.join(cfg["checkpoint_dir"], name), "wb") as f:
            pickle.dump(Opener(marker), f)
    _, (train, _, _) = prepare_data(cfg)  # RecBole would load both files where they lie
    assert build_model(cfg, train) is not None and not marker.exists()
    for key, value in (("dataset_save_path", os.path.join(cfg["checkpoint_dir"], "toy-MultiModalDataset.pth")),
                       ("save_dataset", True), ("save_dataloaders", True)):
        with pytest.raises(InputError, match=key):
            create_dataset(Config(model="MMSSL", config_dict={**config, key: value}))
    assert not marker.exists()


def old_format(trainer, epoch):
    """What the previous version wrote: a pickled Config, numpy metrics, the modality-graph object."""
    return {"config": trainer.config, "epoch": epoch, "cur_step": 0, "best_valid_score": np.float64(0.5),
            "best_valid_result": collections.OrderedDict((k, np.float64(v)) for k, v in
                                                         trainer.best_valid_result.items()),
            "best_epoch": epoch, "best_model_file": trainer.saved_model_file, "stopped": False,
            "state_dict": trainer.model.state_dict(), "other_parameter": trainer.model.other_parameter(),
            "optimizer": trainer.optimizer.state_dict(),
            "discriminator_optimizer": trainer.d_optimizer.state_dict(),
            "scalers": (trainer.scaler.state_dict(), trainer.d_scaler.state_dict())}


def test_upgrade_needs_trust_and_converts_the_old_format(trained, tmp_path, capsys, monkeypatch):
    import sys

    from recbole_mmssl.model.mmssl import modality_graph

    _, path, trainer = trained
    old = tmp_path / "old.pth"
    with monkeypatch.context() as patch:  # pickled where the class lived in earlier versions
        patch.setitem(sys.modules, "recbole_mmssl.model.mmssl.generator", modality_graph)
        patch.setattr(modality_graph.ModalityGraph, "__module__", "recbole_mmssl.model.mmssl.generator")
        torch.save(old_format(trainer, 1), old, pickle_protocol=4)
    with zipfile.ZipFile(old) as archive:
        pickled = archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))
    assert b"recbole_mmssl.model.mmssl.generator" in pickled
    with pytest.raises(InputError, match="upgrade --trust"):
        load_checkpoint(old)
    with pytest.raises(SystemExit) as stop:
        checkpoint_main(["upgrade", str(old)])
    assert stop.value.code == 2 and "--trust" in capsys.readouterr().err

    checkpoint_main(["upgrade", "--trust", str(old)])
    new = load_checkpoint(old)
    assert new["config"] == config_values(trainer.config)
    assert new["best_valid_result"] == {k: float(v) for k, v in trainer.best_valid_result.items()}
    cfg, model, _, _, _, _ = load_data_and_model(old)
    for name, value in trainer.model.state_dict().items():
        assert torch.equal(model.state_dict()[name], value), name
    for m in ("image", "text"):
        assert torch.equal(model.modality_graph.graphs[m][0].to_dense(),
                           trainer.model.modality_graph.graphs[m][0].to_dense())
    resumed = get_trainer(cfg["MODEL_TYPE"], "MMSSL")(cfg, model)
    resumed.resume_checkpoint(old)
    assert resumed.start_epoch == 2
    assert resumed.d_optimizer.state_dict()["state"][0]["step"] == trainer.d_optimizer.state_dict()["state"][0]["step"]
    with pytest.raises(SystemExit):
        checkpoint_main(["upgrade", "--trust", str(old)])  # already converted


def test_upgrade_renames_keys_of_earlier_versions(tmp_path):
    old = tmp_path / "old.pth"
    torch.save({"config": {"model": "MMSSL", "last_layer_softmax": False}, "epoch": np.int64(3), "state_dict": {}},
               old, pickle_protocol=4)
    written = tmp_path / "new.pth"
    checkpoint_main(["upgrade", "--trust", str(old), "--output", str(written)])
    config = load_checkpoint(written)["config"]
    assert config["last_layer_norm"] == "none" and "last_layer_softmax" not in config
    assert load_checkpoint(written)["epoch"] == 3
