"""Config layering: the plugin's property files, per-dataset model settings and variant presets."""

import shutil

import pytest
import yaml

from conftest import REPO
from recbole_mmssl.config import config as config_module
from recbole_mmssl.config import Config, plugin_default
from recbole_mmssl.errors import InputError


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
        if key != "dataset_settings":
            assert improved[key] == value, key
    assert presets["improved"]["dataset_settings"] is False
    assert improved["cl_weight"] == 0.03  # the model file's: the improved preset ignores the dataset's settings

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


# --- every key's type and range (recbole_mmssl/config/keys.py) ------------------------------------

DERIVED = {"MODEL_TYPE", "MODEL_INPUT_TYPE", "eval_type", "device", "local_rank", "single_spec",
           "valid_metric_bigger"}  # set by RecBole on every construction, never by a user


def keys_read_by_the_package():
    """Every literal key in ``config[...]``, ``config.get(...)`` and ``final_config_dict[...]``."""
    import re

    pattern = re.compile(r"""(?:config|final_config_dict)(?:\[|\.get\()\s*["']([A-Za-z_][A-Za-z0-9_]*)["']""")
    found = {}
    for path in list((REPO / "recbole_mmssl").rglob("*.py")) + [REPO / "run_recbole_mmssl.py"]:
        for key in pattern.findall(path.read_text(encoding="utf-8")):
            found.setdefault(key, path.name)
    return found


def test_every_key_the_package_reads_is_described():
    from recbole_mmssl.config.keys import KEYS

    read = keys_read_by_the_package()
    assert len(read) > 60  # the reader finds the package's keys (a regression in it would pass vacuously)
    missing = {key: where for key, where in read.items() if key not in KEYS and key not in DERIVED}
    assert not missing, missing


@pytest.mark.parametrize("model", ["MMSSL", "VBPR", "LATTICE", "FREEDOM", "BM3", "LightGCN", "BPR", "Pop"])
@pytest.mark.parametrize("dataset", ["tiktok", "amazon-baby", "amazon-sports", "ml-100k", "allrecipes", "toy"])
def test_every_shipped_setting_is_allowed(model, dataset):
    variants = ["reference", "paper", "improved"] if model == "MMSSL" else [None]
    for variant in variants:
        Config(model=model, dataset=dataset, config_dict={"data_path": "unused",
                                                          **({"variant": variant} if variant else {})})


@pytest.mark.parametrize("key, value, allowed", [
    ("graph_topk_rate", -0.1, "a number in [0, 1]"),
    ("feature_shuffle_seed", "abc", "an integer >= 0"),
    ("learning_rate", -0.1, "a number >= 0"),
    ("cl_temperature", -1.0, "a number > 0"),
    ("feat_dropout", 1.0, "a number in [0, 1)"),
    ("train_batch_size", 0, "an integer >= 1"),
    ("epochs", 2.5, "an integer >= 1"),
    ("use_adversarial", "yes", "True or False"),
    ("last_layer_norm", "tanh", "one of ['l2', 'none', 'softmax']"),
    ("softmax_share", 1.5, "a number in [0, 1], or one of ['auto']"),
    ("d_betas", [0.5], "a list of 2 values, each a number in [0, 1)"),
    ("modalities", "image", "a list of values, each a non-empty string"),
    ("feature_dims", [384], "a mapping"),
    ("graph_period", 0, "an integer >= 1, or one of ['epoch']"),
    ("port", "http", "a port number 1-65535"),
])
def test_a_wrong_value_names_key_value_what_is_allowed_and_where_it_came_from(key, value, allowed):
    with pytest.raises(InputError) as error:
        Config(model="MMSSL", dataset="toy", config_dict={"data_path": "unused", key: value})
    message = str(error.value)
    assert f"'{key}' is {value!r} (from config_dict)" in message and allowed in message.split("allowed: ", 1)[1]


def test_the_origin_is_the_flag_or_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr("sys.argv", ["run", "--cl_temperature=0"])
    with pytest.raises(InputError, match=r"'cl_temperature' is 0 \(from the flag --cl_temperature\)"):
        Config(model="MMSSL", dataset="toy", config_dict={"data_path": "unused"})
    monkeypatch.setattr("sys.argv", ["run"])
    file = tmp_path / "run.yaml"
    file.write_text("gp_weight: -2\n")
    with pytest.raises(InputError, match=rf"'gp_weight' is -2 \(from the config file {file}\)"):
        Config(model="MMSSL", dataset="toy", config_file_list=[str(file)], config_dict={"data_path": "unused"})


def test_a_wrong_value_in_a_properties_file_names_that_file(properties):
    properties({"model_settings": {"MMSSL": {"g_weight": -1.0}}})
    with pytest.raises(InputError, match=r"'g_weight' is -1.0 \(from properties/dataset/toy.yaml \(model_settings: MMSSL\)\)"):
        build()


def test_several_wrong_values_in_one_message():
    with pytest.raises(InputError) as error:
        Config(model="MMSSL", dataset="toy", config_dict={"data_path": "unused", "n_heads": 0, "gumbel_tau": 0})
    assert "'n_heads' is 0" in str(error.value) and "'gumbel_tau' is 0" in str(error.value)


def test_improved_is_the_same_on_every_dataset_but_its_rules(tmp_path, toy_multimodal):
    """tiktok, ml-100k (when built here) and a dataset without a properties file: every MMSSL key
    of the improved preset resolves alike, except the keys that rules derive from the data."""
    from recbole_mmssl.config.rules import RULES
    from recbole_mmssl.quick_start import prepare_data

    model_keys = set(yaml.safe_load((REPO / "properties" / "model" / "MMSSL.yaml").read_text())) - {"presets"}
    config, _, _ = toy_multimodal
    dataset_keys = ("data_path", "USER_ID_FIELD", "ITEM_ID_FIELD", "load_col", "benchmark_filename", "modalities")
    settings = {"tiktok": {}, "toy": {key: config[key] for key in dataset_keys}}
    if (REPO / "dataset" / "ml-100k").is_dir():
        settings["ml-100k"] = {}
    resolved = {}
    for dataset, extra in settings.items():
        built = Config(model="MMSSL", dataset=dataset, config_dict={**extra, "variant": "improved"})
        prepare_data(built)
        resolved[dataset] = {key: built[key] for key in model_keys}
    assert all(value != "auto" for values in resolved.values() for value in values.values())
    first, *others = resolved.values()
    for values in others:
        differing = {key for key in model_keys if values[key] != first[key]}
        assert differing <= set(RULES), differing
    reference = Config(model="MMSSL", dataset="tiktok", config_dict={"variant": "reference"})
    assert reference["learning_rate"] == 5.4e-4  # the dataset's model_settings still apply to the reference
