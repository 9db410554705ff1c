"""Config: RecBole's Config that also finds the plugin's models and ``properties/`` files.

Layering, later wins: RecBole's internal files, then the plugin's ``overall.yaml``,
``model/<Model>.yaml`` and ``dataset/<dataset>.yaml``, then the dataset file's
``model_settings[<Model>]`` section, then the chosen ``variant``'s block of the model file's
``presets`` and of ``model_settings[<Model>].presets``, then config files, ``config_dict`` and
the command line.
"""

import ast
import difflib
import os
from functools import lru_cache
from logging import getLogger
from pathlib import Path

import recbole
import yaml
from recbole.config.configurator import Config as RecBoleConfig
from recbole.utils import argument_list

from recbole_mmssl.common import distributed
from recbole_mmssl.config import keys
from recbole_mmssl.common.compat import install_numpy_aliases
from recbole_mmssl.errors import InputError, MissingInputError
from recbole_mmssl.utils import get_model, properties_dir, repository_dataset_dir

DEFAULT_MODEL = "MMSSL"


class Config(RecBoleConfig):
    """RecBole's Config with plugin model lookup and the plugin's property files; the model
    defaults to MMSSL. Keys from the command line, config files or ``config_dict`` that no
    setting knows are logged with the closest known key (RecBole ignores them silently). Every
    value is checked against :mod:`recbole_mmssl.config.keys`; ``config_dict_source`` says in
    its messages where ``config_dict``'s values came from."""

    def __init__(self, model=None, dataset=None, config_file_list=None, config_dict=None, command_line=True,
                 config_dict_source="config_dict", literal_values=False):
        self._command_line = command_line
        self._literal_values = literal_values
        self.origins, self._file_origins = {}, {}  # key -> where its value came from, in words (for error messages)
        super().__init__(model, dataset, config_file_list, config_dict)
        self.origins.update(self._file_origins)  # later sources win, as in RecBole's layering
        self.origins.update({key: config_dict_source for key in self.variable_config_dict})
        self.origins.update({key: f"the flag --{key}" for key in self.cmd_config_dict})
        if command_line:
            self._warn_unknown_keys()
        keys.check(self)

    @classmethod
    def from_values(cls, values):
        """The Config of a finished or interrupted run from its resolved values (a checkpoint's
        ``config``): every stored value as it was, whatever the presets and defaults say now; only
        what RecBole derives (the device, the model's type) is derived again. The command line is
        not read."""
        settings = {key: value for key, value in values.items() if key != "data_path"}
        negatives = settings.get("train_neg_sample_args")
        if isinstance(negatives, dict) and negatives.get("distribution") == "none":
            settings["train_neg_sample_args"] = None  # RecBole writes "none" for no sampling, but reads only None
        config = cls(model=values["model"], dataset=values["dataset"], config_dict=settings, command_line=False,
                     literal_values=True)
        config.final_config_dict.update(values)
        return config

    def check_training(self):
        """Raise :class:`InputError` where this configuration cannot train (:func:`keys.check_training`)."""
        keys.check_training(self)

    def _convert_config_dict(self, config_dict):
        """Strings of the command line and of ``config_dict`` read as Python literals (numbers, lists,
        dicts, True/False/None), never evaluated: RecBole's ``eval`` would run the code in a value, and
        ``config_dict`` may come from a file someone sent (a checkpoint's stored configuration, whose
        values are taken as they are)."""
        if self._literal_values:
            return config_dict
        for key, value in config_dict.items():
            if isinstance(value, str):
                config_dict[key] = _literal(value)
        return config_dict

    def _set_train_neg_sample_args(self):
        _as_input_error(super()._set_train_neg_sample_args)

    def _set_eval_neg_sample_args(self, phase):
        _as_input_error(super()._set_eval_neg_sample_args, phase)

    def _load_cmd_line(self):
        return super()._load_cmd_line() if self._command_line else {}

    def _load_config_files(self, file_list):
        for file in file_list or []:
            if not os.path.isfile(file):
                raise MissingInputError(f"Config file {file} not found.")
            try:
                with open(file, encoding="utf-8") as f:
                    content = yaml.safe_load(f)
            except (yaml.YAMLError, UnicodeDecodeError) as error:
                raise InputError(f"Config file {file} is not valid YAML: {str(error).splitlines()[0]}") from None
            if content is not None and not isinstance(content, dict):
                raise InputError(f"Config file {file} must map config keys to values (key: value lines).")
            self._file_origins.update({key: f"the config file {file}" for key in content or {}})
        return super()._load_config_files(file_list)

    def _update_internal_config_dict(self, file):
        content = super()._update_internal_config_dict(file)
        self.origins.update({key: f"{_short(file)}" for key in content or {}})
        return content

    def _warn_unknown_keys(self):
        known = known_keys() | set(self.internal_config_dict)
        for key in sorted(set(self.external_config_dict) - known):
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            getLogger("recbole_mmssl.config").warning(
                f"Config key {key!r} is not a setting of RecBole or of this plugin, so it has no effect{hint}")

    def compatibility_settings(self):
        install_numpy_aliases()

    def _get_model_and_dataset(self, model, dataset):
        if dataset is None and "dataset" not in self.external_config_dict:
            raise InputError("Name a dataset: --dataset=tiktok on the command line, or 'dataset' in a config file.")
        model = model if model is not None else self.external_config_dict.get("model", DEFAULT_MODEL)
        dataset = dataset if dataset is not None else self.external_config_dict["dataset"]
        if isinstance(model, str):
            return model, get_model(model), dataset
        return model.__name__, model, dataset

    def _load_internal_config_dict(self, model, model_class, dataset):
        super()._load_internal_config_dict(model, model_class, dataset)
        props = properties_dir()
        self._update_internal_config_dict(props / "overall.yaml")
        model_file = props / "model" / f"{model}.yaml"
        if model_file.is_file():
            self._update_internal_config_dict(model_file)
        dataset_file = props / "dataset" / f"{dataset}.yaml"
        if dataset_file.is_file():
            dataset_config = self._update_internal_config_dict(dataset_file) or {}
            self.parameters["Dataset"] += [
                key for key in dataset_config if key not in self.parameters["Dataset"]
            ]
        model_settings = dict(self.internal_config_dict.pop("model_settings", None) or {}).get(model) or {}
        dataset_presets = model_settings.pop("presets", None) or {}
        variant, preset = self._preset(model, dataset, dataset_presets)
        self.origins.update({key: f"the {variant!r} preset" for key in preset})
        if preset.pop("dataset_settings", True):  # False: the preset is the same on every dataset (but its rules)
            self.internal_config_dict.update(model_settings)
            self.origins.update({key: f"{_short(dataset_file)} (model_settings: {model})" for key in model_settings})
            preset.update(dataset_presets.get(variant) or {})
            self.origins.update({key: f"the {variant!r} preset of {_short(dataset_file)}"
                                 for key in dataset_presets.get(variant) or {}})
        self.internal_config_dict.update(preset)

    def _preset(self, model, dataset, dataset_presets):
        """(variant, its keys): the chosen ``variant``'s block of the model file's ``presets`` (none
        where the model has no presets), to which the dataset file's ``model_settings[<Model>].presets``
        add unless the block says ``dataset_settings: False``; config files and flags win over both."""
        presets = self.internal_config_dict.pop("presets", None) or {}
        if not presets:
            return None, {}
        variant = self.external_config_dict.get("variant", self.internal_config_dict.get("variant"))
        if variant not in presets:
            raise InputError(f"Config key 'variant' is {variant!r}; model {model} has the presets {sorted(presets)}.")
        unknown = sorted(set(dataset_presets) - set(presets))
        if unknown:
            raise InputError(f"properties/dataset/{dataset}.yaml sets presets {unknown} that model {model} "
                             f"does not have; its presets are {sorted(presets)}.")
        return variant, dict(presets[variant] or {})

    def _init_device(self):
        """RecBole's device choice; in a process of :func:`recbole_mmssl.common.distributed.spawn`
        (``local_rank`` set), the plugin's process group instead of RecBole's NCCL-only one."""
        if "local_rank" not in self.final_config_dict:
            return super()._init_device()
        gpu_id = self.final_config_dict["gpu_id"]
        gpu_id = ",".join(map(str, gpu_id)) if isinstance(gpu_id, (tuple, list)) else str(gpu_id)
        self.final_config_dict["gpu_id"] = gpu_id
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu_id
        distributed.init_process_group(self)

    def _set_default_parameters(self):
        parent = self.final_config_dict["data_path"]
        _as_input_error(super()._set_default_parameters)
        if self.dataset == "ml-100k":  # RecBole points it at its raw example copy; ours is prepared from that copy
            self.final_config_dict["data_path"] = os.path.join(parent, self.dataset)
        self.final_config_dict["data_path"] = self._resolve_data_path()

    def _resolve_data_path(self):
        """Absolute dataset folder; the repository's bundled ``dataset/`` when the default is unused.

        Absolute paths keep working from Ray Tune's per-trial working directories.
        """
        data_path = Path(self.final_config_dict["data_path"])
        user_set = "data_path" in self.external_config_dict
        if not user_set and not data_path.exists():
            bundled = repository_dataset_dir() / self.dataset
            if bundled.exists():
                data_path = bundled
        return str(data_path.resolve())


def _as_input_error(check, *args):
    """Run one of RecBole's steps that derive and check config values (metrics, topk, eval_args,
    negative sampling): what they refuse is a config value, so it becomes an :class:`InputError`."""
    try:
        check(*args)
    except (ValueError, TypeError, NotImplementedError, RuntimeError) as error:
        raise InputError(f"Config: {error} (RecBole's check of metrics, topk, valid_metric, eval_args and "
                         f"train_neg_sample_args).") from None


def _literal(text):
    """``text`` as the Python literal it spells, or as itself; 'true'/'false' in any case as booleans."""
    try:
        value = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return {"true": True, "false": False}.get(text.strip().lower(), text)
    return value if isinstance(value, (str, int, float, list, tuple, dict, bool, type(None))) else text


def _short(path):
    """A properties file's path from ``properties/`` on (RecBole's own: ``recbole/properties/...``)."""
    parts = Path(path).parts
    for anchor in ("properties",):
        if anchor in parts:
            start = len(parts) - 1 - parts[::-1].index(anchor)
            prefix = "recbole/" if "recbole" in parts[:start] and "recbole_mmssl" not in str(path) else ""
            return prefix + "/".join(parts[start:])
    return str(path)


@lru_cache(maxsize=1)
def known_keys():
    """Every key of RecBole's and the plugin's properties files (every model and dataset, and
    the dataset files' model_settings), and RecBole's argument lists."""
    files = [*(Path(recbole.__file__).parent / "properties").rglob("*.yaml"), *properties_dir().rglob("*.yaml")]
    keys = {"model", "dataset", "config_files", "local_rank"}
    for name in ("general_arguments", "training_arguments", "evaluation_arguments", "dataset_arguments"):
        keys.update(getattr(argument_list, name))
    for file in files:
        with open(file, encoding="utf-8") as f:
            content = yaml.safe_load(f)
        if isinstance(content, dict):
            keys.update(content)
            for settings in (content.get("model_settings") or {}).values():
                keys.update(settings or {})
    return keys


def plugin_default(key):
    """The value of ``key`` in the plugin's ``properties/overall.yaml``."""
    with open(properties_dir() / "overall.yaml", encoding="utf-8") as f:
        return (yaml.safe_load(f) or {}).get(key)
