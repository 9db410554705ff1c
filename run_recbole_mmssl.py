"""Train and evaluate a model with the plugin, or search its hyperparameters with Ray Tune.

    python run_recbole_mmssl.py --dataset=tiktok                      # MMSSL on the bundled TikTok
    python run_recbole_mmssl.py --model=LightGCN --dataset=tiktok     # any RecBole model, same protocol
    python run_recbole_mmssl.py --dataset=tiktok --tune=properties/tune/mmssl.yaml --num_samples=8
    python run_recbole_mmssl.py --dataset=tiktok --nproc=2            # MMSSL in two processes

Takes RecBole's flags (--model, --dataset, --config_files) and any --key=value override.
Errors in the input or configuration are printed as one line (exit status 2); --debug shows
their traceback.
"""

import argparse
import sys

import pandas as pd

from recbole_mmssl.errors import reported_input_errors
from recbole_mmssl.experiments.tune import run_search
from recbole_mmssl.quick_start import run as run_training


def main():
    """Parse the flags, then train, or search."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", "-m", default=None, help="model name, the plugin's or RecBole's (default: MMSSL)")
    parser.add_argument("--dataset", "-d", default=None, help="dataset name: a folder under data_path")
    parser.add_argument("--config_files", default=None, help="space-separated config files")
    parser.add_argument("--resume_checkpoint", metavar="FILE", default=None,
                        help="continue an interrupted run from its saved checkpoint")
    ddp = parser.add_argument_group("distributed training (MMSSL; RecBole's flags): gloo on CPU, NCCL on CUDA")
    ddp.add_argument("--nproc", type=int, default=1, help="processes on this machine")
    ddp.add_argument("--world_size", type=int, default=-1, help="processes on all machines (default: nproc)")
    ddp.add_argument("--ip", default="localhost", help="address of the machine that runs rank 0")
    ddp.add_argument("--port", default="5678", help="a free port on that machine")
    ddp.add_argument("--group_offset", type=int, default=0, help="rank of this machine's first process")
    tune = parser.add_argument_group("hyperparameter search (Ray Tune)")
    tune.add_argument("--tune", metavar="FILE", help="search space: a YAML file or RecBole's .hyper format")
    tune.add_argument("--num_samples", type=int, default=1, help="samples of the space (grids repeat)")
    tune.add_argument("--cpus_per_trial", type=float, default=1)
    tune.add_argument("--gpus_per_trial", type=float, default=0, help="fractions share a GPU")
    tune.add_argument("--max_concurrent_trials", type=int, default=None)
    tune.add_argument("--ray_address", default=None, help="join this Ray cluster (default: a local Ray)")
    tune.add_argument("--tune_output", default="ray_results", help="folder of the experiment folders")
    tune.add_argument("--experiment_name", default=None)
    tune.add_argument("--resume", metavar="NAME", help="resume the interrupted experiment NAME")
    tune.add_argument("--grace_period", type=int, default=1, help="ASHA: epochs before a trial can be stopped")
    tune.add_argument("--reduction_factor", type=float, default=2, help="ASHA: keep 1/this of trials per rung")
    parser.add_argument("--debug", action="store_true", help="show the traceback of input errors")
    args, overrides = parser.parse_known_args()
    sys.argv = sys.argv[:1] + overrides  # RecBole's Config reads the --key=value overrides from sys.argv
    config_files = args.config_files.split() if args.config_files else None
    if args.resume_checkpoint and args.tune:
        parser.error("--resume_checkpoint continues one run; a search resumes with --resume=NAME")
    if args.tune and (args.nproc > 1 or args.world_size > 0):
        parser.error("a search runs each trial in one process; drop --nproc/--world_size")
    if args.resume and not args.tune:
        parser.error("--resume needs the experiment's --tune file")

    with reported_input_errors(args.debug):
        run(args, config_files)


def run(args, config_files):
    """Train and evaluate one run, or search."""
    if args.tune:
        table, best, folder = run_search(
            args.model, args.dataset, args.tune, config_file_list=config_files, num_samples=args.num_samples,
            cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial,
            max_concurrent_trials=args.max_concurrent_trials, ray_address=args.ray_address,
            output_dir=args.tune_output, experiment_name=args.resume or args.experiment_name,
            resume=bool(args.resume), grace_period=args.grace_period, reduction_factor=args.reduction_factor)
        with pd.option_context("display.max_columns", None, "display.width", 250):
            print(table.to_string())
        print(f"\nTrials: {folder}/trials.csv")
        if best is not None:
            print(f"Best configuration: {folder}/best_config.yaml "
                  f"(python run_recbole_mmssl.py --config_files={folder}/best_config.yaml)")
    else:
        run_training(model=args.model, dataset=args.dataset, config_file_list=config_files,
                     resume_checkpoint=args.resume_checkpoint, nproc=args.nproc, world_size=args.world_size,
                     ip=args.ip, port=args.port, group_offset=args.group_offset)


if __name__ == "__main__":
    main()
