"""Quick start: train and evaluate any model the plugin can run, as RecBole's quick_start does.

The steps of a run are written once, here, and every tool builds its runs from them: the data
(:func:`prepare_data`), a trainer with a fresh model (:func:`build_trainer`), one configuration
trained in its own folder (:func:`train_in_folder`), and a trainer restored from a checkpoint
(:func:`load_trainer`). RecBole's own ``recbole.quick_start`` is not used: it imports Ray at
module level and reloads checkpoints in a way torch >= 2.6 refuses.
"""

import logging
import os
from logging import getLogger

from recbole.utils import get_environment, init_logger, init_seed, set_color

from recbole_mmssl.common import distributed
from recbole_mmssl.config import Config, keys, rules
from recbole_mmssl.errors import InputError
from recbole_mmssl.trainer.checkpoint import config_values, decode_other, load_checkpoint
from recbole_mmssl.trainer.resume import load_resumable
from recbole_mmssl.utils import check_inputs, create_dataset, data_preparation, get_trainer


# Keys a resumed run takes from today's configuration: where and how long it runs, not what it computes
RUN_CONTROL = frozenset({"epochs", "stopping_step", "checkpoint_dir", "data_path", "show_progress", "state",
                         "gpu_id", "use_gpu", "device", "worker", "nproc", "world_size", "local_rank", "ip",
                         "port", "offset", "eval_batch_size", "log_wandb", "wandb_project"})


def resumed_config(config, checkpoint, resume_file):
    """The configuration a run resumed from ``checkpoint`` continues with: the values it was
    trained with, whatever the presets and defaults say today, and today's :data:`RUN_CONTROL`
    keys. A value set explicitly today (flag, config file, ``config_dict``) that differs from the
    stored one is refused: the run would silently change what it computes half-way."""
    stored, today = checkpoint["config"], config_values(config)
    changed = sorted(key for key in config.external_config_dict
                     if key in stored and key not in RUN_CONTROL and today.get(key) not in (stored[key], rules.AUTO))
    if changed:
        listing = ", ".join(f"{key} = {stored[key]!r} (now {today.get(key)!r}, {config.origins.get(key, 'set')})"
                            for key in changed)
        raise InputError(f"Checkpoint {resume_file} was trained with {listing}. Resume it with its own values "
                         f"(leave those keys out), or start a new run in another folder.")
    kept = {key: today[key] for key in RUN_CONTROL | (set(today) - set(stored)) if key in today}
    resumed = Config.from_values({**stored, **kept})
    resumed.origins.update({key: config.origins[key] for key in kept if key in config.origins})
    resumed.origins.update({key: f"the checkpoint {resume_file}" for key in stored if key not in kept})
    return resumed


def start_logging(config):
    """RecBole's ``init_logger``, also for the second and later runs of one process.

    Its ``logging.basicConfig`` adds no handler where the root logger already has some, so a
    later run would log into the first run's file and leave its own file open; the handlers
    that this function added for the previous run are closed and removed first.
    """
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "recbole_mmssl_run", False)]:
        root.removeHandler(handler)
        handler.close()
    before = set(root.handlers)
    init_logger(config)
    for handler in set(root.handlers) - before:
        handler.recbole_mmssl_run = True


def prepare_data(config, dataset=None):
    """The dataset (built unless given) and its train, valid and test dataloaders, seeded as
    RecBole does; the configuration's ``auto`` values are then derived from the training split
    (:mod:`recbole_mmssl.config.rules`)."""
    init_seed(config["seed"], config["reproducibility"])
    dataset = dataset if dataset is not None else create_dataset(config)
    loaders = data_preparation(config, dataset)
    rules.resolve(config, loaders[0]._dataset)
    return dataset, loaders


def build_model(config, train_data):
    """A freshly initialised model on ``config['device']``, built from the training split."""
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    return config.model_class(config, train_data._dataset).to(config["device"])


def build_trainer(config, train_data):
    """The trainer for ``config['model']``, holding a freshly initialised model."""
    return get_trainer(config["MODEL_TYPE"], config["model"])(config, build_model(config, train_data))


def attach_run_folder(trainer, folder, resume=None):
    """Give a run its own folder: ``model.pth`` (best), ``model-last.pth`` and ``epochs.csv``;
    ``resume``: (path, content) of the checkpoint found there that the run goes on from."""
    os.makedirs(folder, exist_ok=True)
    trainer.saved_model_file = os.path.join(folder, "model.pth")
    trainer.curve_file = os.path.join(folder, "epochs.csv")
    if resume:
        trainer.resume_checkpoint(*resume)
    return trainer


def train_in_folder(config, folder, dataset=None, callback_fn=None, verbose=True):
    """Train ``config`` in its own ``folder`` (:func:`attach_run_folder`: an unfinished run found there
    goes on, with the values it was trained with, :func:`resumed_config`); returns the trainer, at
    its last epoch, and the (train, valid, test) dataloaders."""
    resume = None
    for name in ("model-last.pth", "model.pth"):  # an unfinished run: from its last epoch, else its best
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            resume = (path, load_resumable(path, config))
            config, dataset = resumed_config(config, resume[1], path), None
            break
    _, (train, valid, test) = prepare_data(config, dataset)
    trainer = attach_run_folder(build_trainer(config, train), folder, resume)
    trainer.fit(train, valid, saved=True, show_progress=False, verbose=verbose, callback_fn=callback_fn)
    return trainer, (train, valid, test)


def run_recbole_mmssl(model=None, dataset=None, config_file_list=None, config_dict=None, saved=True,
                      resume_checkpoint=None):
    """Train ``model`` on ``dataset``, select the best validation epoch, evaluate it on test.

    ``resume_checkpoint`` continues an interrupted run from its saved checkpoint (the best epoch
    so far, which RecBole keeps), writing on to the same file.

    Returns:
        dict: ``best_valid_score``, ``valid_score_bigger``, ``best_valid_result``, ``test_result``.
    """
    config = Config(model=model, dataset=dataset, config_file_list=config_file_list, config_dict=config_dict)
    check_inputs(config)
    resumed = load_resumable(resume_checkpoint, config) if resume_checkpoint else None  # before anything is written
    if resumed:
        config = resumed_config(config, resumed, resume_checkpoint)
    init_seed(config["seed"], config["reproducibility"])
    start_logging(config)
    logger = getLogger()
    logger.info(config)
    dataset, (train_data, valid_data, test_data) = prepare_data(config)
    logger.info(dataset)
    trainer = build_trainer(config, train_data)
    logger.info(trainer.model)
    if resume_checkpoint:
        trainer.resume_checkpoint(resume_checkpoint, resumed)
    best_valid_score, best_valid_result = trainer.fit(
        train_data, valid_data, saved=saved, show_progress=config["show_progress"]
    )
    if not distributed.is_main():
        return None
    test_result = trainer.evaluate(test_data, load_best_model=saved, show_progress=config["show_progress"])
    logger.info(set_color("The running environment of this training is as follows:\n", "yellow")
                + get_environment(config).draw())
    logger.info(set_color("best valid ", "yellow") + f": {best_valid_result}")
    logger.info(set_color("test result", "yellow") + f": {test_result}")
    return {
        "best_valid_score": best_valid_score,
        "valid_score_bigger": config["valid_metric_bigger"],
        "best_valid_result": best_valid_result,
        "test_result": test_result,
    }


def run(model=None, dataset=None, config_file_list=None, config_dict=None, saved=True, resume_checkpoint=None,
        nproc=1, world_size=-1, ip="localhost", port="5678", group_offset=0):
    """:func:`run_recbole_mmssl` in this process, or, with ``nproc`` > 1 or ``world_size`` > 0,
    in ``nproc`` processes of a distributed run (RecBole's ``run`` arguments); returns rank 0's
    result."""
    kwargs = {"model": model, "dataset": dataset, "config_file_list": config_file_list, "saved": saved,
              "resume_checkpoint": resume_checkpoint}
    if nproc == 1 and world_size <= 0:
        return run_recbole_mmssl(config_dict=config_dict, **kwargs)
    config = Config(model=model, dataset=dataset, config_file_list=config_file_list, config_dict=config_dict)
    distributed.check_model(config)  # before any process starts
    return distributed.spawn(_distributed_worker, nproc, world_size, ip, port, group_offset,
                             args=(config_dict, kwargs))


def _distributed_worker(local_rank, settings, config_dict, kwargs):
    return run_recbole_mmssl(config_dict={**(config_dict or {}), **settings}, **kwargs)


def load_data_and_model(model_file, config_changes=None):
    """Rebuild config, dataset, dataloaders and the trained model from a saved checkpoint.

    ``config_changes`` (key -> value, or a function of the rebuilt config that returns them) are
    applied to the run's stored configuration first.

    Returns:
        tuple: config, model, dataset, train_data, valid_data, test_data.
    """
    checkpoint = load_checkpoint(model_file, map_location="cpu")
    config = Config.from_values(checkpoint["config"])
    changes = config_changes(config) if callable(config_changes) else config_changes
    for key, value in (changes or {}).items():
        config[key] = value
        config.origins[key] = "the tool's options"
    keys.check(config)
    start_logging(config)
    dataset, (train_data, valid_data, test_data) = prepare_data(config)
    model = build_model(config, train_data)
    model.load_state_dict(checkpoint["state_dict"])
    decode_other(model, checkpoint.get("other_parameter"))
    return config, model, dataset, train_data, valid_data, test_data


def load_trainer(model_file, config_changes=None):
    """A trainer holding the model of ``model_file``, ready to evaluate, and the (train, valid,
    test) dataloaders; ``config_changes`` as in :func:`load_data_and_model`."""
    config, model, _, train, valid, test = load_data_and_model(model_file, config_changes)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    trainer.eval_collector.data_collect(train)
    return trainer, (train, valid, test)
