"""Plugin discovery in RecBole-GNN's style: the plugin's models, trainers, datasets and
dataloaders first, RecBole's second, so RecBole's baselines run on the same data and protocol.
"""

import importlib
import importlib.util
import os
import pickle
from logging import getLogger
from pathlib import Path

from recbole.data import utils as recbole_data_utils
from recbole.data.dataloader import FullSortEvalDataLoader
from recbole.utils import ModelType, set_color
from recbole.utils import get_model as get_recbole_model
from recbole.utils import get_trainer as get_recbole_trainer
from recbole.utils.argument_list import dataset_arguments

from recbole_mmssl import trainer as plugin_trainers
from recbole_mmssl.compat import CheckpointMixin
from recbole_mmssl.curves import LearningCurveMixin
from recbole_mmssl.errors import InputError
from recbole_mmssl.evaluation import check_test_mask, test_history_sampler

_PACKAGE_DIR = Path(__file__).resolve().parent


def properties_dir():
    """The plugin's ``properties/`` folder: inside an installed package, or beside a checkout."""
    installed = _PACKAGE_DIR / "properties"
    return installed if installed.is_dir() else _PACKAGE_DIR.parent / "properties"


def repository_dataset_dir():
    """The bundled ``dataset/`` folder of a source checkout."""
    return _PACKAGE_DIR.parent / "dataset"


def _module_names(package_dir, recursive=True):
    """Module names under ``package_dir``: every ``*.py`` stem, or only its top-level modules and
    subpackages."""
    if recursive:
        return {p.stem for p in Path(package_dir).rglob("*.py") if p.stem != "__init__"}
    package_dir = Path(package_dir)
    modules = {p.stem for p in package_dir.glob("*.py")} | {p.parent.name for p in package_dir.glob("*/__init__.py")}
    return modules - {"__init__"}


def get_model(model_name):
    """The model class: ``recbole_mmssl.model.<name>`` first, then RecBole's models."""
    import recbole.model

    name = model_name.lower()
    if name in _module_names(_PACKAGE_DIR / "model", recursive=False):
        module = importlib.import_module(f"recbole_mmssl.model.{name}")
        if hasattr(module, model_name):
            return getattr(module, model_name)
    if name in _module_names(Path(recbole.model.__file__).parent):
        return get_recbole_model(model_name)
    raise InputError(f"Model {model_name!r} is neither a recbole-mmssl model nor one of RecBole's.")


_wrapped_trainers = {}


def get_trainer(model_type, model_name):
    """The trainer class: ``recbole_mmssl.trainer.<Name>Trainer`` first, then RecBole's.

    RecBole's trainers are given :class:`CheckpointMixin` (their best-model reload works on
    torch >= 2.6, and runs resume from their last epoch), :class:`LearningCurveMixin` and
    :class:`EpochHookMixin` (the baselines' per-epoch work, ``learning_rate_decay``).
    """
    if hasattr(plugin_trainers, f"{model_name}Trainer"):
        return getattr(plugin_trainers, f"{model_name}Trainer")
    base = get_recbole_trainer(model_type, model_name)
    if base not in _wrapped_trainers:
        mixins = (plugin_trainers.EpochHookMixin, LearningCurveMixin, CheckpointMixin)
        _wrapped_trainers[base] = type(base.__name__, (*mixins, base), {"__module__": __name__})
    return _wrapped_trainers[base]


def get_dataset_class(config):
    """The dataset class for ``config['model']``; None where RecBole's own should be used."""
    from recbole_mmssl.data.dataset import InteractionDataset, MultiModalDataset

    if config["MODEL_TYPE"] != ModelType.GENERAL:
        return None
    return MultiModalDataset if getattr(config.model_class, "multimodal", False) else InteractionDataset


def create_dataset(config):
    """Build (or reload from ``checkpoint_dir``) the dataset that ``config['model']`` needs."""
    from recbole_mmssl.data.dataset import DATASET_KEYS

    dataset_class = get_dataset_class(config)
    if dataset_class is None:
        return recbole_data_utils.create_dataset(config)
    default_file = os.path.join(config["checkpoint_dir"], f"{config['dataset']}-{dataset_class.__name__}.pth")
    file = config["dataset_save_path"] or default_file
    if os.path.exists(file):
        with open(file, "rb") as f:
            dataset = pickle.load(f)
        keys = list(dataset_arguments) + list(DATASET_KEYS) + ["seed", "repeatable", "data_path"]
        if all(config[key] == dataset.config[key] for key in keys):
            getLogger().info(set_color("Load filtered dataset from", "pink") + f": [{file}]")
            return dataset
    dataset = dataset_class(config)
    if config["save_dataset"]:
        dataset.save()
    return dataset


def get_dataloader(config, phase):
    """The dataloader class: a plugin model's own training loader, else RecBole's choice."""
    if phase == "train" and getattr(config.model_class, "train_dataloader", None) is not None:
        return config.model_class.train_dataloader
    return recbole_data_utils.get_dataloader(config, phase)


def data_preparation(config, dataset):
    """Split ``dataset`` and build the train, valid and test dataloaders.

    As RecBole's ``data_preparation``, plus the plugin's training loaders and the
    ``test_masked_items`` protocol switch for full-ranking tests.
    """
    if config["MODEL_TYPE"] != ModelType.GENERAL:
        return recbole_data_utils.data_preparation(config, dataset)
    check_test_mask(config)
    dataloaders = recbole_data_utils.load_split_dataloaders(config)
    if dataloaders is not None and dataloaders[0].config["test_masked_items"] == config["test_masked_items"]:
        dataset._change_feat_format()
        return dataloaders

    built = dataset.build()
    train_dataset, valid_dataset, test_dataset = built
    train_sampler, valid_sampler, test_sampler = recbole_data_utils.create_samplers(config, dataset, built)
    train_data = get_dataloader(config, "train")(config, train_dataset, train_sampler, shuffle=config["shuffle"])
    valid_data = get_dataloader(config, "valid")(config, valid_dataset, valid_sampler, shuffle=False)
    test_class = get_dataloader(config, "test")
    if test_class is FullSortEvalDataLoader:
        test_sampler = test_history_sampler(config, train_dataset, test_sampler)
    test_data = test_class(config, test_dataset, test_sampler, shuffle=False)
    if config["save_dataloaders"]:
        recbole_data_utils.save_split_dataloaders(config, dataloaders=(train_data, valid_data, test_data))
    getLogger().info(
        set_color("[Evaluation]: ", "pink")
        + f"eval_batch_size = {config['eval_batch_size']}, eval_args = {config['eval_args']}, "
        + f"test_masked_items = {config['test_masked_items']}"
    )
    return train_data, valid_data, test_data
