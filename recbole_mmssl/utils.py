"""Plugin discovery in RecBole-GNN's style: the plugin's models, trainers, datasets and
dataloaders first, RecBole's second, so RecBole's baselines run on the same data and protocol.
"""

import importlib
import importlib.util
from logging import getLogger
from pathlib import Path

from recbole.data import utils as recbole_data_utils
from recbole.data.dataloader import FullSortEvalDataLoader
from recbole.utils import ModelType, set_color
from recbole.utils import get_model as get_recbole_model
from recbole.utils import get_trainer as get_recbole_trainer

from recbole_mmssl import trainer as plugin_trainers
from recbole_mmssl.data.dataset import InteractionDataset, MultiModalDataset, check_dataset_files
from recbole_mmssl.trainer.resume import CheckpointMixin
from recbole_mmssl.trainer.curves import LearningCurveMixin
from recbole_mmssl.errors import InputError
from recbole_mmssl.evaluation import test_history_sampler

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


# RecBole's dataset class per model type, for models without a dataset class of their own
_RECBOLE_DATASETS = {ModelType.SEQUENTIAL: "SequentialDataset", ModelType.KNOWLEDGE: "KnowledgeBasedDataset"}
# Keys that make RecBole load (or write for later loading) a pickled dataset or dataloaders
CACHE_KEYS = ("save_dataset", "dataset_save_path", "save_dataloaders", "dataloaders_save_path")


def get_dataset_class(config):
    """The dataset class for ``config['model']``: the plugin's for general models, else RecBole's."""
    if config["MODEL_TYPE"] == ModelType.GENERAL:
        return MultiModalDataset if getattr(config.model_class, "multimodal", False) else InteractionDataset
    module = importlib.import_module("recbole.data.dataset")
    own = getattr(module, f"{config['model']}Dataset", None)
    return own or getattr(module, _RECBOLE_DATASETS.get(config["MODEL_TYPE"], "Dataset"))


def refuse_pickled_caches(config):
    """RecBole can save the dataset and dataloaders as pickles and load them back; loading a pickle
    runs whatever code it names, so this package never does, and refuses the keys that ask for it."""
    asked = [key for key in CACHE_KEYS if config[key]]
    if asked:
        raise InputError(
            f"Config keys {asked} ask for a pickled dataset or dataloader cache. recbole-mmssl builds the "
            "dataset from its files on every run and never loads such a cache (unpickling a file can run "
            "code); remove the keys or set them to False / ~.")


def check_inputs(config):
    """What a training run reads, checked before anything is built or written: a configuration that
    can train, no pickled caches asked for, and the dataset folder with its interaction and feature
    files."""
    config.check_training()
    refuse_pickled_caches(config)
    if config["MODEL_TYPE"] == ModelType.GENERAL:
        check_dataset_files(config, multimodal=getattr(config.model_class, "multimodal", False))


def create_dataset(config):
    """The dataset that ``config['model']`` needs, built from the dataset's files (never from a cache)."""
    refuse_pickled_caches(config)
    return get_dataset_class(config)(config)


def get_dataloader(config, phase):
    """The dataloader class: a plugin model's own training loader, else RecBole's choice."""
    if phase == "train" and getattr(config.model_class, "train_dataloader", None) is not None:
        return config.model_class.train_dataloader
    return recbole_data_utils.get_dataloader(config, phase)


def data_preparation(config, dataset):
    """Split ``dataset`` and build the train, valid and test dataloaders.

    As RecBole's ``data_preparation`` (without its pickled dataloader cache), plus the plugin's
    training loaders and the ``test_masked_items`` protocol switch for full-ranking tests.
    """
    refuse_pickled_caches(config)
    built = dataset.build()
    train_dataset, valid_dataset, test_dataset = built
    train_sampler, valid_sampler, test_sampler = recbole_data_utils.create_samplers(config, dataset, built)
    train_data = get_dataloader(config, "train")(config, train_dataset, train_sampler, shuffle=config["shuffle"])
    valid_data = get_dataloader(config, "valid")(config, valid_dataset, valid_sampler, shuffle=False)
    test_class = get_dataloader(config, "test")
    if test_class is FullSortEvalDataLoader:
        test_sampler = test_history_sampler(config, train_dataset, test_sampler)
    test_data = test_class(config, test_dataset, test_sampler, shuffle=False)
    getLogger().info(
        set_color("[Evaluation]: ", "pink")
        + f"eval_batch_size = {config['eval_batch_size']}, eval_args = {config['eval_args']}, "
        + f"test_masked_items = {config['test_masked_items']}"
    )
    return train_data, valid_data, test_data
