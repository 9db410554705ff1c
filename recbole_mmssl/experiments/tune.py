"""Hyperparameter search with Ray Tune, locally or on an existing Ray cluster.

    python run_recbole_mmssl.py --dataset=tiktok --tune=properties/tune/mmssl.yaml --num_samples=8

Every trial reports its validation metric (RecBole's ``valid_metric``) after each epoch, so
an ASHA scheduler can stop weak trials early. A trial keeps its checkpoints in its own folder,
so a resumed search (``--resume``) continues an unfinished trial from its last epoch. The
dataset is built once by the driver and shared through Ray's object store. Results: a table
of all trials sorted by the metric (printed and ``trials.csv``), the best configuration as a
RecBole YAML (``best_config.yaml``) and the best trial's test metrics, in the experiment folder. Only this module imports Ray.
"""

import math
import os
import pickle
import sys
import time
from contextlib import contextmanager
from logging import getLogger
from pathlib import Path

import pandas as pd
import torch
import yaml
from recbole.utils import init_seed
from recbole.utils.argument_list import dataset_arguments

from recbole_mmssl.common.files import atomic_path, save_csv
from recbole_mmssl.config import Config
from recbole_mmssl.config.keys import KEYS
from recbole_mmssl.data.dataset import DATASET_KEYS
from recbole_mmssl.errors import InputError
from recbole_mmssl.quick_start import start_logging, train_in_folder
from recbole_mmssl.utils import check_inputs, create_dataset

SAMPLERS = {
    "choice": 1, "grid": 1, "uniform": 2, "quniform": 3, "loguniform": 2, "qloguniform": 3,
    "randint": 2, "qrandint": 3,
}
TUNE_FLAGS = ("tune", "num_samples", "cpus_per_trial", "gpus_per_trial", "max_concurrent_trials", "ray_address",
              "tune_output", "experiment_name", "resume", "grace_period", "reduction_factor", "config_files")


EPOCHS_DONE = "epochs_done"  # ASHA's clock: epochs trained, which a resumed trial continues (Ray's own restarts)


class SearchSpaceError(InputError):
    """A search-space file that cannot be used as it is."""


def _domain(tune, path, name, entry):
    """A Ray Tune domain from one ``{sampler: args}`` entry of a YAML search space."""
    (sampler, args), = entry.items()
    if sampler not in SAMPLERS:
        raise SearchSpaceError(f"{path}: {name} uses sampler {sampler!r}; use one of {sorted(SAMPLERS)}.")
    if sampler in ("choice", "grid"):
        if not isinstance(args, list) or not args:
            raise SearchSpaceError(f"{path}: {name}: {sampler} takes a non-empty list of values.")
        _check_values(path, name, args)
        return tune.choice(args) if sampler == "choice" else tune.grid_search(args)
    if not isinstance(args, list) or len(args) != SAMPLERS[sampler] or not all(
            isinstance(a, (int, float)) for a in args):
        raise SearchSpaceError(f"{path}: {name}: {sampler} takes {SAMPLERS[sampler]} numbers, got {args!r}.")
    if args[0] >= args[1]:
        raise SearchSpaceError(f"{path}: {name}: {sampler} needs low < high, got {args!r}.")
    if sampler.endswith("loguniform") and args[0] <= 0:
        raise SearchSpaceError(f"{path}: {name}: {sampler} needs positive bounds, got {args!r}.")
    _check_values(path, name, args[:2] if "randint" not in sampler else [args[0], args[1] - 1])
    return getattr(tune, sampler)(*args)


def _as_number(value):
    """A choice written as a number that YAML reads as text (``1e-6``: YAML wants ``1.0e-6``)."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _check_values(path, name, values):
    """Every value a key can take in the space must be one the key allows (the ends of a range)."""
    allowed = KEYS.get(name)
    wrong = [v for v in values if allowed is not None and not allowed(v)]
    if wrong:
        raise SearchSpaceError(f"{path}: {name} can take {wrong[0]!r}; {name} allows {allowed.words}.")


def _hyper_line(tune, path, number, line):
    """One line of RecBole's ``.hyper`` format: ``name choice [..]`` or ``name uniform low,high`` etc.

    As in RecBole (hyperopt), ``loguniform`` bounds are natural logarithms of the values.
    """
    parts = line.split()
    name, sampler, value = parts[0], parts[1], "".join(parts[2:])
    if sampler == "choice":
        values = yaml.safe_load(value)
        if not isinstance(values, list) or not values:
            raise SearchSpaceError(f"{path} line {number}: choice takes a list, got {value!r}.")
        values = [_as_number(v) for v in values]
        _check_values(path, name, values)
        return name, tune.choice(values)
    try:
        bounds = [float(v) for v in value.split(",")]
    except ValueError:
        raise SearchSpaceError(f"{path} line {number}: {name}'s bounds {value!r} are not numbers.") from None
    _check_values(path, name, [math.exp(b) for b in bounds[:2]] if sampler == "loguniform" else bounds[:2])
    if sampler == "uniform" and len(bounds) == 2:
        return name, tune.uniform(*bounds)
    if sampler == "quniform" and len(bounds) == 3:
        return name, tune.quniform(*bounds)
    if sampler == "loguniform" and len(bounds) == 2:
        return name, tune.loguniform(math.exp(bounds[0]), math.exp(bounds[1]))
    raise SearchSpaceError(f"{path} line {number}: cannot read {line!r} "
                           "(use choice [..], uniform low,high, quniform low,high,q or loguniform low,high).")


def load_search_space(path):
    """(space, fixed): Ray domains per tuned key, and plain values set for every trial.

    YAML: ``key: {sampler: args}`` with samplers choice, grid, uniform, quniform, loguniform,
    qloguniform, randint, qrandint; any other value is fixed. ``.hyper``: RecBole's format.
    """
    from ray import tune

    path = str(path)
    if not os.path.isfile(path):
        raise SearchSpaceError(f"Search-space file {path} not found.")
    space, fixed = {}, {}
    if path.endswith((".yaml", ".yml")):
        with open(path, encoding="utf-8") as f:
            entries = yaml.safe_load(f) or {}
        if not isinstance(entries, dict):
            raise SearchSpaceError(f"{path} must map config keys to search spaces.")
        for name, entry in entries.items():
            if isinstance(entry, dict) and len(entry) == 1 and next(iter(entry)) in SAMPLERS:
                space[name] = _domain(tune, path, name, entry)
            elif isinstance(entry, dict) and len(entry) == 1 and next(iter(entry)) not in SAMPLERS:
                raise SearchSpaceError(f"{path}: {name} uses sampler {next(iter(entry))!r}; "
                                       f"use one of {sorted(SAMPLERS)}.")
            else:
                fixed[name] = entry
    else:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                line = line.strip()
                if line and not line.startswith("#"):
                    if len(line.split()) < 3:
                        raise SearchSpaceError(f"{path} line {number}: expected 'name sampler values'.")
                    name, domain = _hyper_line(tune, path, number, line)
                    space[name] = domain
    if not space:
        raise SearchSpaceError(f"{path} defines no searched key.")
    return space, fixed


def _report():
    try:
        from ray.train import report  # Ray >= 2.7
    except ImportError:
        from ray.air.session import report  # Ray 2.6
    return report


def _trial(params, model, dataset, base_config, metric, dataset_bytes, threads):
    """One trial: train on the shared dataset, report the validation metric every epoch."""
    import ray  # an optional dependency (the [tune] extra): imported where a search runs

    sys.argv = sys.argv[:1]  # RecBole's Config would read a Ray worker's flags as config keys
    report = _report()
    gpus = ",".join(str(g) for g in ray.get_gpu_ids())
    folder = os.path.join(os.getcwd(), "saved")  # the trial's own folder, kept when a search is resumed
    config = Config(model=model, dataset=dataset, config_dict={
        **base_config, **params, "checkpoint_dir": folder, "gpu_id": gpus, "show_progress": False})
    torch.set_num_threads(threads)
    trainer, (_, _, test) = train_in_folder(
        config, folder, pickle.loads(dataset_bytes), verbose=False,
        callback_fn=lambda epoch, score: report({metric: score, "epoch": epoch, EPOCHS_DONE: epoch + 1}))
    test_result = trainer.evaluate(test, load_best_model=True)
    report({metric: trainer.best_valid_score, "epoch": -1, EPOCHS_DONE: len(trainer.epoch_records), "finished": True,
            **{f"valid/{k}": v for k, v in (trainer.best_valid_result or {}).items()},
            **{f"test/{k}": v for k, v in test_result.items()}})


def _results_table(results, metric, mode, param_names):
    """One row per trial, best first: status, epochs, best validation metric, test metrics, params."""
    rows = []
    for result in results:
        history = result.metrics_dataframe
        scores = history[metric].dropna() if history is not None and metric in history else pd.Series(dtype=float)
        last = result.metrics or {}
        config = result.config or {}
        if result.error is not None:
            status = f"failed: {str(result.error).strip().splitlines()[-1][:200]}"
        else:
            status = "completed" if last.get("finished") else "stopped early"
        done = history[EPOCHS_DONE].dropna() if history is not None and EPOCHS_DONE in history else []
        row = {"trial": last.get("trial_id", Path(str(result.log_dir)).name), "status": status,
               "epochs": int(max(done)) if len(done) else 0,
               metric: (scores.max() if mode == "max" else scores.min()) if len(scores) else float("nan")}
        row.update({name: config.get(name) for name in param_names})
        row.update({k: v for k, v in last.items() if k.startswith("test/")})
        rows.append(row)
    table = pd.DataFrame(rows)
    return table.sort_values(metric, ascending=(mode == "min"), na_position="last").reset_index(drop=True)


@contextmanager
def ray_session(ray_address=None):
    """Ray, connected to ``ray_address`` or started locally on loopback without a dashboard; a
    Ray started here stops on exit, one already running is left as it is."""
    import ray

    started = not ray.is_initialized()
    if started:
        local = {"include_dashboard": False, "_node_ip_address": "127.0.0.1"}
        ray.init(address=ray_address, **({} if ray_address else local))
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def run_search(model, dataset, space_file, config_file_list=None, config_dict=None, num_samples=1,
               cpus_per_trial=1, gpus_per_trial=0, max_concurrent_trials=None, ray_address=None,
               output_dir="ray_results", experiment_name=None, resume=False, grace_period=1,
               reduction_factor=2):
    """Run (or resume) a search; returns (trials table, best config dict, experiment folder)."""
    from ray import air, tune  # the optional [tune] extra
    from ray.tune.schedulers import ASHAScheduler

    logger = getLogger()
    space, fixed = load_search_space(space_file)
    files = [os.path.abspath(f) for f in config_file_list or []]
    driver = Config(model=model, dataset=dataset, config_file_list=files, config_dict={**fixed, **(config_dict or {})})
    check_inputs(driver)
    unknown = [name for name in space if name not in driver.final_config_dict]
    if unknown:
        raise SearchSpaceError(f"{space_file}: unknown config key(s) {unknown} for model {driver['model']}.")
    data_keys = [name for name in space if name in set(dataset_arguments) | set(DATASET_KEYS)]
    if data_keys:
        raise SearchSpaceError(f"{space_file}: {data_keys} change the dataset, which is built once per search.")
    start_logging(driver)
    base = {k: v for k, v in driver.external_config_dict.items() if k not in TUNE_FLAGS + ("model", "dataset")}
    metric = driver["valid_metric"].lower()
    mode = "max" if driver["valid_metric_bigger"] else "min"

    with ray_session(ray_address):
        init_seed(driver["seed"], driver["reproducibility"])
        dataset_bytes = pickle.dumps(create_dataset(driver))  # with_parameters stores it once in Ray's object store
        trainable = tune.with_resources(
            tune.with_parameters(_trial, model=driver["model"], dataset=driver["dataset"], base_config=base,
                                 metric=metric, dataset_bytes=dataset_bytes,
                                 threads=max(1, int(cpus_per_trial))),  # Ray names a trial's CPUs by its placement group
            {"cpu": cpus_per_trial, "gpu": gpus_per_trial})
        storage = os.path.abspath(output_dir)
        name = experiment_name or f"{driver['model']}-{driver['dataset']}-{time.strftime('%Y%m%d-%H%M%S')}"
        experiment = os.path.join(storage, name)
        if resume:
            tuner = tune.Tuner.restore(experiment, trainable, resume_errored=False, restart_errored=False)
        else:
            # a trial's final report (its test metrics) repeats its last epochs_done
            max_t = driver["epochs"] + 1
            scheduler = ASHAScheduler(time_attr=EPOCHS_DONE, max_t=max_t,
                                      grace_period=min(grace_period, max_t), reduction_factor=reduction_factor)
            tuner = tune.Tuner(
                trainable, param_space=space,
                tune_config=tune.TuneConfig(metric=metric, mode=mode, num_samples=num_samples, scheduler=scheduler,
                                            max_concurrent_trials=max_concurrent_trials),
                run_config=air.RunConfig(name=name, storage_path=storage, verbose=1,
                                         failure_config=air.FailureConfig(max_failures=0)))
        results = tuner.fit()

    table = _results_table(results, metric, mode, list(space))
    save_csv(os.path.join(experiment, "trials.csv"), table)
    best = None
    done = table[~table["status"].str.startswith("failed") & table[metric].notna()]
    if len(done):
        params = {name: _plain(done.iloc[0][name]) for name in space}
        best = {"model": driver["model"], "dataset": driver["dataset"], **base, **params}
        with atomic_path(os.path.join(experiment, "best_config.yaml")) as partial, \
                open(partial, "w", encoding="utf-8") as f:
            f.write(f"# Best trial of {name} by {metric} ({mode}): {done.iloc[0][metric]}\n")
            yaml.safe_dump(best, f, sort_keys=False)
    logger.info(f"Search {name}: {len(table)} trials, results in {experiment}")
    return table, best, experiment


def _plain(value):
    """numpy scalars and containers as plain Python values, for YAML."""
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
