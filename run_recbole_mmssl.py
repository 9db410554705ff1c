"""Train and evaluate a model with the plugin: python run_recbole_mmssl.py --dataset=tiktok

Takes RecBole's flags (--model, --dataset, --config_files) and any --key=value override.
"""

import argparse

from recbole_mmssl.quick_start import run_recbole_mmssl

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", "-m", default="MMSSL", help="model name: the plugin's or RecBole's")
    parser.add_argument("--dataset", "-d", default="tiktok", help="dataset name (a folder under data_path)")
    parser.add_argument("--config_files", default=None, help="space-separated config files")
    args, _ = parser.parse_known_args()
    config_files = args.config_files.split() if args.config_files else None
    run_recbole_mmssl(model=args.model, dataset=args.dataset, config_file_list=config_files)
