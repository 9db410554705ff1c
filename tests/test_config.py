"""Config layering: the plugin's property files, per-dataset model settings and variant presets."""

import shutil

import pytest
import yaml

from conftest import REPO
from recbole_mmssl import config as config_module
from recbole_mmssl.config import Config, plugin_default


@pytest.fixture
def properties(tmp_path, monkeypatch):
    """A copy of properties/ with a dataset file 'toy' that sets a reference value and an improved one."""
    folder = tmp_path / "properties"
    shutil.copytree(REPO / "properties", folder)
    monkeypatch.setattr(config_module, "properties_dir", lambda: folder)

    def write(dataset_settings):
        (folder / "dataset" / "toy.yaml").write_text(yaml.safe_dump(dataset_settings))
        return folder

    return write


def build(**config_dict):
    return Config(model="MMSSL", dataset="toy", config_dict={"data_path": "unused", **config_dict})


def test_presets_layer_over_model_and_dataset_settings(properties):
    folder = properties({"model_settings": {"MMSSL": {
        "learning_rate": 0.1, "cl_weight": 0.2, "presets": {"improved": {"learning_rate": 0.3}}}}})
    presets = yaml.safe_load((folder / "model" / "MMSSL.yaml").read_text())["presets"]
    reference = build()
    assert reference["learning_rate"] == 0.1 and reference["cl_weight"] == 0.2
    assert reference["last_layer_norm"] == "softmax" and reference["adjacency_norm"] == "one_sided"
    assert reference["presets"] is None and reference["model_settings"] is None

    paper = build(variant="paper")
    assert paper["last_layer_norm"] == "none" and paper["adjacency_norm"] == "symmetric"
    assert paper["learning_rate"] == 0.1  # the dataset's value stays where the preset sets none

    improved = build(variant="improved")
    for key, value in presets["improved"].items():
        if key != "learning_rate":
            assert improved[key] == value, key
    assert improved["learning_rate"] == 0.3  # the dataset's improved block wins over its reference value

    flagged = build(variant="paper", last_layer_norm="softmax", learning_rate=0.5)
    assert flagged["last_layer_norm"] == "softmax" and flagged["adjacency_norm"] == "symmetric"
    assert flagged["learning_rate"] == 0.5


def test_unknown_variants_are_refused(properties):
    properties({})
    with pytest.raises(ValueError, match=r"'variant' is 'best'.*\['improved', 'paper', 'reference'\]"):
        build(variant="best")
    properties({"model_settings": {"MMSSL": {"presets": {"tuned": {"learning_rate": 0.3}}}}})
    with pytest.raises(ValueError, match=r"toy.yaml sets presets \['tuned'\]"):
        build()


def test_models_without_presets_ignore_variant(properties):
    properties({"model_settings": {"LightGCN": {"n_layers": 3}}})
    config = Config(model="LightGCN", dataset="toy", config_dict={"data_path": "unused"})
    assert config["n_layers"] == 3
    assert config["stopping_step"] == plugin_default("stopping_step") != 10  # the plugin's, not RecBole's 10


def test_unknown_keys_are_logged_with_the_closest_known_key(toy_multimodal, caplog):
    config, _, _ = toy_multimodal
    with caplog.at_level("WARNING", logger="recbole_mmssl.config"):
        Config(model="MMSSL", config_dict={**config, "gumbel_taus": 0.1, "learning_rate": 0.01})
    warnings = [r.getMessage() for r in caplog.records if r.name == "recbole_mmssl.config"]
    assert len(warnings) == 1 and "'gumbel_taus'" in warnings[0] and "did you mean 'gumbel_tau'" in warnings[0]


@pytest.mark.parametrize("model", ["MMSSL", "VBPR", "LATTICE", "FREEDOM", "BM3", "LightGCN"])
def test_every_key_of_the_properties_files_is_known(toy_multimodal, caplog, model):
    """The plugin's own settings, another model's and RecBole's given together raise no warning."""
    config, _, _ = toy_multimodal
    ours = {}
    for name in ("overall.yaml", "model/MMSSL.yaml", "model/BM3.yaml", "dataset/tiktok.yaml"):
        ours.update(yaml.safe_load((REPO / "properties" / name).read_text()))
    ours = {k: v for k, v in ours.items() if k not in ("presets", "model_settings", "benchmark_filename",
                                                       "modalities", "feature_dims", "load_col")}
    with caplog.at_level("WARNING", logger="recbole_mmssl.config"):
        Config(model=model, config_dict={**ours, **config, "eval_step": 2, "checkpoint_dir": "x"})
    assert not [r.getMessage() for r in caplog.records if r.name == "recbole_mmssl.config"]


def test_input_errors_share_one_class():
    from recbole_mmssl.data.features import FeatureFileError
    from recbole_mmssl.errors import InputError, MissingInputError
    from recbole_mmssl.experiments.tune import SearchSpaceError

    assert issubclass(FeatureFileError, InputError) and issubclass(SearchSpaceError, InputError)
    assert issubclass(MissingInputError, InputError) and issubclass(MissingInputError, FileNotFoundError)
    with pytest.raises(InputError, match="'variant' is 'best'"):
        Config(model="MMSSL", dataset="tiktok", config_dict={"variant": "best"})
