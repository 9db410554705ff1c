"""Compare models over several seeds on one dataset and protocol, with paired tests.

    python -m recbole_mmssl.compare --models MMSSL LightGCN Pop --dataset tiktok --n_seeds 3
    python -m recbole_mmssl.compare --run reference=MMSSL --run improved=MMSSL:improved.yaml \\
        --models LightGCN --dataset tiktok --seeds 2022 2023 2024 --epochs=50
    python -m recbole_mmssl.compare --checkpoints saved/MMSSL-a.pth saved/LightGCN-b.pth
    python -m recbole_mmssl.compare --models LightGCN Pop --datasets tiktok ml-100k --n_seeds 3

Every (run, seed) trains with RecBole's early stopping on the validation metric and is tested
at its best validation epoch. Runs go one after another in this process, or through Ray
(``--parallel``, ``--ray_address``) side by side. A restarted comparison skips finished runs
and continues unfinished ones from their last epoch. Output folder (``--output``):

* ``comparison.csv``: one row per run and seed: best epoch, epochs, seconds per epoch, every
  validation and test metric.
* ``comparison.md``: mean ± sd per run and metric; for each run against the first one, the
  p-values of a paired t-test and a Wilcoxon signed-rank test over the test users on
  Recall@20 and NDCG@20 (each user's score averaged over the seeds first).
* ``comparison.png``: test Recall@20 and NDCG@20 per run (mean, sd bars).
* ``<label>/seed-<seed>/``: the run's log, checkpoint, learning curves, ``result.json`` and
  its per-user test scores ``test_users.npz``.

With ``--datasets A B ...`` the same runs and seeds go to each dataset (a run's config file
applies on every dataset; each dataset's yaml still sets its own values): each dataset's files
above in ``<output>/<dataset>/``, and ``across_datasets.md`` and ``.csv`` in ``<output>``: per run
and dataset the test Recall@20 and NDCG@20 (mean ± sd) with the paired t-test p against the
first run, and per run its wins, ties and losses against the first run (test Recall@20, p < 0.05)
and its mean rank by mean test Recall@20.
"""

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from recbole.config.configurator import Config as RecBoleConfig

from recbole_mmssl.common.files import atomic_path, save_csv, write_text
from recbole_mmssl.common.plots import bar_chart
from recbole_mmssl.config import Config
from recbole_mmssl.errors import InputError, MissingInputError, add_debug_flag, reported_input_errors
from recbole_mmssl.experiments.rankings import collect_rankings, per_user_metrics
from recbole_mmssl.experiments.report import (PAIRED_METRICS, checkpoint_labels, markdown_table, paired_tests,
                                              pooled_user_scores)
from recbole_mmssl.experiments.tune import ray_session
from recbole_mmssl.quick_start import load_trainer, start_logging, train_in_folder
from recbole_mmssl.trainer.checkpoint import load_checkpoint
from recbole_mmssl.utils import check_inputs

OVERRIDES = "the --key=value flags"  # where a run's config_dict values come from, in messages
SUMMARY_METRICS = ("valid/recall@20", "valid/ndcg@20", "test/recall@10", "test/recall@20", "test/recall@50",
                   "test/ndcg@20", "test/ndcg_ref@20", "test/precision@20", "best_epoch", "seconds_per_epoch")


class RunSpec(NamedTuple):
    """One labelled configuration: a model, and optionally a config file of its own."""

    label: str
    model: str
    config_file: str = None


def parse_run(text):
    """``LABEL=MODEL[:config.yaml]`` (or a bare model name, its own label)."""
    label, _, rest = text.partition("=") if "=" in text else (text, "", text)
    model, _, config_file = rest.partition(":")
    if not label or not model:
        raise InputError(f"--run {text!r}: write LABEL=MODEL or LABEL=MODEL:config.yaml.")
    if config_file and not os.path.isfile(config_file):
        raise MissingInputError(f"--run {text!r}: config file {config_file} not found.")
    return RunSpec(label, model, os.path.abspath(config_file) if config_file else None)


def _config_files(run, config_files):
    """The config files every run reads, then the run's own."""
    return list(config_files) + ([run.config_file] if run.config_file else [])


def _run_logger(folder):
    """A log file of this run alone (RecBole's own logger writes to the first run's file only)."""
    handler = logging.FileHandler(folder / "log.txt")
    handler.setFormatter(logging.Formatter("%(asctime)-15s %(levelname)s  %(message)s"))
    logging.getLogger().addHandler(handler)
    return handler


def run_one(run, dataset, seed, folder, config_files=(), overrides=None, threads=None):
    """Train (or resume) and test one run in ``folder``; returns its result (also ``result.json``)."""
    folder = Path(folder)
    if (folder / "result.json").is_file():
        return json.loads((folder / "result.json").read_text())
    if threads:
        torch.set_num_threads(threads)
    config = Config(model=run.model, dataset=dataset, config_file_list=_config_files(run, config_files) or None,
                    config_dict={**(overrides or {}), "seed": seed, "checkpoint_dir": str(folder),
                                 "show_progress": False}, config_dict_source=OVERRIDES)
    folder.mkdir(parents=True, exist_ok=True)
    start_logging(config)
    handler = _run_logger(folder)
    try:
        trainer, (_, _, test) = train_in_folder(config, folder)
        test_result = trainer.evaluate(test, load_best_model=True)
        rankings = collect_rankings(trainer, test)
        scores = per_user_metrics(config, rankings)
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    tokens = test._dataset.id2token(test._dataset.uid_field, rankings.users)
    with atomic_path(folder / "test_users.npz") as partial, open(partial, "wb") as f:
        np.savez_compressed(f, users=tokens.astype(str), **scores)
    seconds = [row["train_seconds"] for row in trainer.epoch_records]
    result = {
        "label": run.label, "model": config["model"], "seed": seed, "best_epoch": trainer.best_epoch,
        "epochs": len(trainer.epoch_records), "seconds_per_epoch": float(np.mean(seconds)) if seconds else None,
        "valid": {k: float(v) for k, v in (trainer.best_valid_result or {}).items()},
        "test": {k: float(v) for k, v in test_result.items()},
    }
    write_text(folder / "result.json", json.dumps(result, indent=1))
    return result


def _run_remote(args):
    """A Ray task: one run on a worker, with its resources' threads."""
    sys.argv = sys.argv[:1]  # RecBole's Config would read a Ray worker's flags as config keys
    return run_one(*args)


def run_all(jobs, parallel=False, ray_address=None, cpus_per_trial=1, gpus_per_trial=0, max_concurrent_trials=None):
    """Run ``jobs`` (argument tuples of :func:`run_one`) here one by one, or as Ray tasks."""
    if not (parallel or ray_address):
        return [run_one(*job) for job in jobs]
    with ray_session(ray_address) as ray:
        task = ray.remote(num_cpus=cpus_per_trial, num_gpus=gpus_per_trial)(_run_remote)
        limit = max_concurrent_trials or len(jobs)
        pending, results = {}, {}
        queue = list(enumerate(jobs))
        while queue or pending:
            while queue and len(pending) < limit:
                index, job = queue.pop(0)
                threads = max(1, int(cpus_per_trial))
                pending[task.remote(job[:6] + (threads,))] = index
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                results[pending.pop(ref)] = ray.get(ref)
        return [results[i] for i in range(len(jobs))]


def result_of_checkpoint(path, label=None):
    """The result and per-user test scores of an already finished run, from its best checkpoint."""
    checkpoint = load_checkpoint(path, map_location="cpu")
    trainer, (_, _, test) = load_trainer(path)
    config = trainer.config
    test_result = trainer.evaluate(test, load_best_model=False)
    rankings = collect_rankings(trainer, test)
    scores = per_user_metrics(config, rankings)
    tokens = test._dataset.id2token(test._dataset.uid_field, rankings.users).astype(str)
    result = {
        "label": label or config["model"], "model": config["model"], "seed": config["seed"],
        "best_epoch": checkpoint.get("best_epoch", checkpoint["epoch"]), "epochs": None,
        "seconds_per_epoch": None, "checkpoint": str(path),
        "valid": {k: float(v) for k, v in (checkpoint.get("best_valid_result") or {}).items()},
        "test": {k: float(v) for k, v in test_result.items()},
    }
    return result, {"users": tokens, **scores}


def results_table(results):
    """One row per run and seed with flat metric columns."""
    rows = []
    for r in results:
        row = {k: r[k] for k in ("label", "model", "seed", "best_epoch", "epochs", "seconds_per_epoch")}
        row.update({f"valid/{k}": v for k, v in r["valid"].items()})
        row.update({f"test/{k}": v for k, v in r["test"].items()})
        rows.append(row)
    return pd.DataFrame(rows)


def summary_table(table):
    """Mean ± sd over seeds per label (labels in their first order)."""
    labels = list(dict.fromkeys(table["label"]))
    metrics = [m for m in SUMMARY_METRICS if m in table.columns and table[m].notna().any()]
    rows = []
    for label in labels:
        runs = table[table["label"] == label]
        row = {"run": label, "model": runs["model"].iloc[0], "seeds": len(runs)}
        for metric in metrics:
            values = runs[metric].dropna().astype(float)
            sd = values.std(ddof=1) if len(values) > 1 else float("nan")
            digits = 1 if metric in ("best_epoch", "seconds_per_epoch") else 4
            row[metric] = f"{values.mean():.{digits}f} ± {sd:.{digits}f}" if len(values) > 1 else \
                f"{values.mean():.{digits}f}"
        rows.append(row)
    return pd.DataFrame(rows)


def write_comparison(results, per_user, output, description):
    """``comparison.csv``, ``comparison.md`` and ``comparison.png`` in ``output``; returns the tables."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    table = results_table(results)
    save_csv(output / "comparison.csv", table)
    summary = summary_table(table)
    labels = list(dict.fromkeys(table["label"]))
    tests = paired_tests(pooled_user_scores(per_user), labels[0]) if len(labels) > 1 else pd.DataFrame()
    lines = [f"# Comparison: {description}", "",
             "Mean ± sd over seeds; each run tested at its best validation epoch.", "", markdown_table(summary)]
    if len(tests):
        lines += ["", f"Paired tests against {labels[0]} over the test users (per-user scores averaged over "
                  "seeds; p-values two-sided):", "", markdown_table(tests)]
    write_text(output / "comparison.md", "\n".join(lines) + "\n")
    long = table.melt(id_vars=["label"], value_vars=[f"test/{m}" for m in PAIRED_METRICS], var_name="metric")
    stats = long.groupby(["metric", "label"], sort=False)["value"].agg(["mean", "std"]).reset_index()
    bar_chart(stats, "metric", "label", "mean", output / "comparison.png", description, error="std")
    return table, summary, tests


def _load_per_user(folder):
    with np.load(folder / "test_users.npz") as data:
        return {k: data[k] for k in data.files}


def compare(runs, dataset, seeds, output, config_files=(), overrides=None, **ray_options):
    """Run every labelled configuration over every seed (skipping finished runs) and write the
    comparison; returns its (table, summary, tests)."""
    output = Path(output).resolve()
    jobs = [(run, dataset, seed, output / run.label / f"seed-{seed}", tuple(config_files), overrides)
            for run in runs for seed in seeds]
    check_configs(jobs)
    results = run_all(jobs, **ray_options)
    per_user = {}
    for run, _, _, folder, _, _ in jobs:
        per_user.setdefault(run.label, []).append(_load_per_user(folder))
    description = f"{', '.join(r.label for r in runs)} on {dataset}, seeds {', '.join(map(str, seeds))}"
    return write_comparison(results, per_user, output, description)


def compare_datasets(runs, datasets, seeds, output, config_files=(), overrides=None, **ray_options):
    """:func:`compare` on each dataset (into ``<output>/<dataset>/``), then the across-datasets
    table in ``output``; returns it. Every configuration is checked before anything runs."""
    output = Path(output).resolve()
    check_configs([(run, dataset, seeds[0], None, tuple(config_files), overrides)
                   for dataset in datasets for run in runs])
    per_dataset = {dataset: compare(runs, dataset, seeds, output / dataset, config_files, overrides, **ray_options)
                   for dataset in datasets}
    return write_across_datasets(per_dataset, output, seeds)


def check_configs(jobs):
    """Build the configuration of every job before any run starts or any folder is written, so
    that a mistake in one of them stops the comparison at once."""
    for run, dataset, seed, _, config_files, overrides in jobs:
        check_inputs(Config(model=run.model, dataset=dataset, config_file_list=_config_files(run, config_files) or None,
                            config_dict={**(overrides or {}), "seed": seed}, config_dict_source=OVERRIDES))


def across_datasets_table(per_dataset):
    """(per run and dataset: test Recall@20 and NDCG@20 as mean ± sd with the paired t-test p
    against the first run; per run: wins, ties and losses against the first run on test Recall@20
    (p < 0.05) and the mean rank by mean test Recall@20 over the datasets)."""
    rows, ranks, record = [], {}, {}
    for dataset, (table, _, tests) in per_dataset.items():
        labels = list(dict.fromkeys(table["label"]))
        means = table.groupby("label", sort=False)["test/recall@20"].mean()
        for label, rank in means.rank(ascending=False, method="average").items():
            ranks.setdefault(label, []).append(rank)
        p_values = tests.set_index("label") if len(tests) else pd.DataFrame()
        for label in labels:
            runs = table[table["label"] == label]
            row = {"run": label, "dataset": dataset, "seeds": len(runs)}
            for metric in PAIRED_METRICS:
                values = runs[f"test/{metric}"].astype(float)
                sd = f" ± {values.std(ddof=1):.4f}" if len(values) > 1 else ""
                row[f"test/{metric}"] = f"{values.mean():.4f}{sd}"
                row[f"{metric} p"] = float(p_values.loc[label, f"{metric} t-test p"]) \
                    if label in p_values.index else float("nan")
            rows.append(row)
            if label in p_values.index:
                diff, p = p_values.loc[label, "recall@20 mean diff"], p_values.loc[label, "recall@20 t-test p"]
                outcome = "ties" if not p < 0.05 else ("wins" if diff > 0 else "losses")
                record.setdefault(label, {"wins": 0, "ties": 0, "losses": 0})[outcome] += 1
    labels = list(dict.fromkeys(row["run"] for row in rows))
    overall = pd.DataFrame([{"run": label, **record.get(label, {"wins": "", "ties": "", "losses": ""}),
                             "datasets": len(ranks[label]), "mean rank": float(np.mean(ranks[label]))}
                            for label in labels])
    return pd.DataFrame(rows), overall


def write_across_datasets(per_dataset, output, seeds):
    """``across_datasets.md`` and ``across_datasets.csv`` in ``output``; returns the two tables."""
    detail, overall = across_datasets_table(per_dataset)
    first = detail["run"].iloc[0]
    save_csv(output / "across_datasets.csv", detail.merge(overall, on="run"))
    lines = [f"# Across datasets: {', '.join(per_dataset)}; seeds {', '.join(map(str, seeds))}", "",
             f"Test metrics at each run's best validation epoch, mean ± sd over seeds; p: paired t-test over the "
             f"test users against {first} (per-user scores averaged over seeds). Each dataset's own tables are "
             f"in its folder.", "", markdown_table(detail), "",
             f"Against {first} on test Recall@20 (a win or loss needs p < 0.05), and the mean rank by mean test "
             "Recall@20 (1 = best):", "", markdown_table(overall)]
    write_text(output / "across_datasets.md", "\n".join(lines) + "\n")
    return detail, overall


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=[], help="models, each its own label")
    parser.add_argument("--run", action="append", default=[], metavar="LABEL=MODEL[:config.yaml]",
                        help="a labelled configuration (repeatable); runs come before --models")
    parser.add_argument("--dataset", "-d")
    parser.add_argument("--datasets", nargs="+", help="several datasets: each dataset's comparison in "
                        "<output>/<dataset>/, and a table across them in <output>/")
    parser.add_argument("--seeds", nargs="+", type=int, help="seeds (default: seed .. seed+n_seeds-1)")
    parser.add_argument("--n_seeds", type=int, default=3)
    parser.add_argument("--config_files", default=None, help="space-separated config files for every run")
    parser.add_argument("--output", default=None, help="output folder (default: comparisons/<dataset>-<labels>)")
    parser.add_argument("--checkpoints", nargs="+", metavar="[LABEL=]FILE", help="compare finished runs instead")
    ray_group = parser.add_argument_group("running side by side (Ray)")
    ray_group.add_argument("--parallel", action="store_true", help="run through a local Ray")
    ray_group.add_argument("--ray_address", default=None, help="run on this Ray cluster")
    ray_group.add_argument("--cpus_per_trial", type=float, default=1)
    ray_group.add_argument("--gpus_per_trial", type=float, default=0)
    ray_group.add_argument("--max_concurrent_trials", type=int, default=None)
    add_debug_flag(parser)
    args, rest = parser.parse_known_args(argv)
    unknown = [a for a in rest if not (a.startswith("--") and "=" in a)]
    if unknown:
        parser.error(f"unrecognised arguments {unknown}; config overrides are written --key=value")

    overrides = RecBoleConfig._convert_config_dict(None, dict(a[2:].split("=", 1) for a in rest))
    sys.argv = sys.argv[:1]  # the runs' configs take the overrides from config_dict, not from sys.argv
    start = time.time()
    with reported_input_errors(args.debug):
        output = _run(parser, args, overrides)
    report = output / ("comparison.md" if (output / "comparison.md").is_file() else "across_datasets.md")
    print(report.read_text(encoding="utf-8"))
    print(f"Written: {report} and the tables beside it ({time.time() - start:.0f} s)")


def _run(parser, args, overrides):
    """The comparison that ``main``'s arguments ask for; returns its output folder."""
    if args.checkpoints:
        results, per_user = [], {}
        for label, path in checkpoint_labels(args.checkpoints):
            result, scores = result_of_checkpoint(path, label)
            results.append(result)
            per_user.setdefault(result["label"], []).append(scores)
        output = Path(args.output or "comparisons/checkpoints")
        description = ", ".join(dict.fromkeys(r["label"] for r in results))
        write_comparison(results, per_user, output, description)
    else:
        if args.dataset and args.datasets:
            parser.error("give --dataset or --datasets, not both")
        datasets = args.datasets or ([args.dataset] if args.dataset else [])
        if not datasets:
            parser.error("name a --dataset (or several with --datasets)")
        specs = [parse_run(r) for r in args.run] + [RunSpec(m, m) for m in args.models]
        if not specs:
            parser.error("name the runs: --models A B, or --run LABEL=MODEL[:config.yaml]")
        if len({s.label for s in specs}) != len(specs):
            parser.error(f"run labels must differ: {[s.label for s in specs]}")
        if not args.seeds and args.n_seeds < 1:
            parser.error(f"--n_seeds must be 1 or more, got {args.n_seeds}")
        first_seed = int(overrides.pop("seed", 2022))
        seeds = args.seeds or list(range(first_seed, first_seed + args.n_seeds))
        output = Path(args.output or f"comparisons/{'-'.join(datasets)}-{'-'.join(s.label for s in specs)}")
        options = {"parallel": args.parallel, "ray_address": args.ray_address, "cpus_per_trial": args.cpus_per_trial,
                   "gpus_per_trial": args.gpus_per_trial, "max_concurrent_trials": args.max_concurrent_trials}
        config_files = args.config_files.split() if args.config_files else ()
        if len(datasets) == 1:
            compare(specs, datasets[0], seeds, output, config_files, overrides, **options)
        else:
            compare_datasets(specs, datasets, seeds, output, config_files, overrides, **options)
    return output
