"""Convert published multimodal datasets into RecBole dataset folders, keeping their splits.

A prepared folder ``<out>/<name>/`` holds ``<name>.{train,valid,test}.inter`` (RecBole
``benchmark_filename`` files), one ``<name>.<modality>.npy`` matrix per modality and the
item-token list ``<name>.feature_items`` that says which item each matrix row belongs to.

    python -m recbole_mmssl.data.prepare mmssl SRC_DIR --name tiktok
    python -m recbole_mmssl.data.prepare mmrec data/baby/baby.inter --name baby
    python -m recbole_mmssl.data.prepare features dataset/amazon-baby --feature image=image_feat.npy
    python -m recbole_mmssl.data.prepare ml-100k

``mmssl``: the MMSSL/LATTICE format (``train.json``, ``val.json``, ``test.json`` mapping a user
id to its item ids, plus ``<modality>_feat.npy`` with row i = item i).
``mmrec``: MMRec's ``<name>.inter`` (tab-separated, a split column 0/1/2 = train/valid/test)
with ``<modality>_feat.npy`` beside it, row i = item i.
``features``: install feature matrices into a prepared folder, aligned to its token list.
``ml-100k``: build MovieLens-100k with text and genre features from RecBole's own copy
(:mod:`recbole_mmssl.data.movielens`).
"""

import argparse
import csv
import json
import os
import sys

import numpy as np

from recbole_mmssl.data.amazon import build as build_amazon
from recbole_mmssl.data.features import FeatureFileError, MODALITY_NAME, read_feature_matrix, read_item_tokens
from recbole_mmssl.data.folder import (PHASES, item_map_path, token_list_path, write_benchmark,
                                       write_features, write_token_list)
from recbole_mmssl.data.movielens import MODALITIES as MOVIELENS_MODALITIES
from recbole_mmssl.data.movielens import build as build_movielens
from recbole_mmssl.errors import InputError, MissingInputError, add_debug_flag, reported_input_errors

MMSSL_FILES = {"train": "train.json", "valid": "val.json", "test": "test.json"}
FEATURE_SUFFIX = "_feat.npy"


def _read_mmssl_split(path):
    """Pairs (user, item) of one MMSSL json split, checked for shape and duplicates."""
    if not os.path.isfile(path):
        raise MissingInputError(f"MMSSL split file {path} not found.")
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, dict):
        raise InputError(f"{path} must map user ids to lists of item ids.")
    pairs = []
    for user in sorted(data, key=lambda u: (len(u), u)):
        items = data[user]
        if not isinstance(items, list) or not all(isinstance(i, int) and i >= 0 for i in items):
            raise InputError(f"{path}: user {user} must map to a list of non-negative integer item ids.")
        if len(set(items)) != len(items):
            raise InputError(f"{path}: user {user} lists an item twice.")
        if not user.isdigit():
            raise InputError(f"{path}: user id {user!r} is not a non-negative integer.")
        pairs.extend((user, str(i)) for i in items)
    return pairs


def _feature_files_in(src_dir, modalities=None):
    """Modality -> ``<modality>_feat.npy`` path for the files present in ``src_dir``."""
    if not os.path.isdir(src_dir):
        raise MissingInputError(f"Feature folder {src_dir} not found.")
    found = {
        f[: -len(FEATURE_SUFFIX)]: os.path.join(src_dir, f)
        for f in sorted(os.listdir(src_dir))
        if f.endswith(FEATURE_SUFFIX)
    }
    if modalities is None:
        return found
    missing = [m for m in modalities if m not in found]
    if missing:
        raise MissingInputError(f"No {', '.join(m + FEATURE_SUFFIX for m in missing)} in {src_dir}.")
    return {m: found[m] for m in modalities}


def _write_with_identity_features(dataset_dir, name, splits, features):
    """Write the benchmark files, the token list "0".."n-1" and the features whose row i is item i,
    once every feature file has been read and checked (a refused input writes nothing)."""
    n_items = 1 + max(int(i) for pairs in splits.values() for _, i in pairs)
    rows, matrices = None, {}
    for modality, path in features.items():
        matrix = read_feature_matrix(path)
        if matrix.shape[0] < n_items:
            raise FeatureFileError(
                f"Feature file {path} has {matrix.shape[0]} rows but the interactions use item ids up to {n_items - 1}."
            )
        if rows is not None and matrix.shape[0] != rows:
            raise FeatureFileError(f"Feature files disagree on the number of items: {path} has {matrix.shape[0]} rows.")
        rows, matrices[modality] = matrix.shape[0], matrix
    write_benchmark(dataset_dir, name, splits)
    for modality, matrix in matrices.items():
        write_features(dataset_dir, name, modality, matrix)
    write_token_list(dataset_dir, name, range(rows or n_items))


def from_mmssl(src_dir, name, out_dir="dataset", modalities=None):
    """Convert an MMSSL/LATTICE folder; returns the new dataset folder."""
    splits = {phase: _read_mmssl_split(os.path.join(src_dir, MMSSL_FILES[phase])) for phase in PHASES}
    dataset_dir = os.path.join(out_dir, name)
    _write_with_identity_features(dataset_dir, name, splits, _feature_files_in(src_dir, modalities))
    return dataset_dir


def from_mmrec(inter_path, name, out_dir="dataset", user_field="userID", item_field="itemID",
               split_field="x_label", features_dir=None, modalities=None):
    """Convert an MMRec ``.inter`` file (and the features beside it); returns the new folder."""
    if not os.path.isfile(inter_path):
        raise MissingInputError(f"MMRec interaction file {inter_path} not found.")
    splits = {phase: [] for phase in PHASES}
    seen = set()
    with open(inter_path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t")
        for field in (user_field, item_field, split_field):
            if field not in (reader.fieldnames or []):
                raise InputError(f"{inter_path} has no column {field!r} (columns: {reader.fieldnames}).")
        for line, row in enumerate(reader, start=2):
            label = row[split_field].strip()
            if label not in ("0", "1", "2"):
                raise InputError(f"{inter_path} line {line}: {split_field} is {label!r}; use 0, 1 or 2.")
            user, item = row[user_field].strip(), row[item_field].strip()
            if not item.isdigit() or not user:
                raise InputError(f"{inter_path} line {line}: item id {item!r} must be a row index of the features.")
            if (user, item, label) in seen:
                raise InputError(f"{inter_path} line {line}: user {user} and item {item} repeat in one split.")
            seen.add((user, item, label))
            splits[PHASES[int(label)]].append((user, item))
    if not splits["train"]:
        raise InputError(f"{inter_path} has no training interactions ({split_field} = 0).")
    dataset_dir = os.path.join(out_dir, name)
    src_dir = features_dir or os.path.dirname(os.path.abspath(inter_path))
    _write_with_identity_features(dataset_dir, name, splits, _feature_files_in(src_dir, modalities))
    return dataset_dir


def _read_item_map(path, column):
    """Item token -> source row, from the tab-separated map (first column: item token)."""
    if not os.path.isfile(path):
        raise MissingInputError(f"Item map {path} not found; --rows-indexed-by needs it.")
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t")
        if column not in (reader.fieldnames or [])[1:]:
            raise InputError(f"Item map {path} has no column {column!r} (columns: {reader.fieldnames}).")
        token_column = reader.fieldnames[0]
        return {row[token_column]: int(row[column]) for row in reader}


def install_features(dataset_dir, features, rows_indexed_by=None):
    """Write ``<name>.<modality>.npy`` for each modality -> source file, in token-list order.

    Row r of a source file is the item with token ``str(r)``, or, with ``rows_indexed_by``,
    the item whose ``<name>.item_map.tsv`` entry in that column is r.
    """
    dataset_dir = os.path.normpath(dataset_dir)
    name = os.path.basename(dataset_dir)
    token_list = token_list_path(dataset_dir, name)
    tokens = read_item_tokens(token_list)
    if rows_indexed_by:
        row_of = _read_item_map(item_map_path(dataset_dir, name), rows_indexed_by)
        missing = [t for t in tokens if t not in row_of]
        if missing:
            raise InputError(f"Item map {item_map_path(dataset_dir, name)} has no {rows_indexed_by} for item "
                             f"tokens {missing[:5]}.")
        rows = np.array([row_of[t] for t in tokens])
    else:
        if not all(t.isdigit() for t in tokens):
            raise InputError(f"The item tokens of {token_list} are not row numbers; name the item map's column "
                             "with --rows-indexed-by.")
        rows = np.array([int(t) for t in tokens])
    matrices = {}
    for modality, path in features.items():  # every file read and checked before any is written
        if not MODALITY_NAME.match(modality):
            raise InputError(f"Modality name {modality!r} is not a plain name.")
        matrix = read_feature_matrix(path)
        if rows.max() >= matrix.shape[0]:
            raise FeatureFileError(f"Feature file {path} has {matrix.shape[0]} rows; row {rows.max()} is needed.")
        matrices[modality] = matrix[rows]
    for modality, matrix in matrices.items():
        target = write_features(dataset_dir, name, modality, matrix)
        print(f"{modality}: {features[modality]} -> {target} {matrix.shape}")


def _parse_features(values):
    features = {}
    for value in values or []:
        modality, sep, path = value.partition("=")
        if not sep or not modality or not path:
            raise InputError(f"--feature takes MODALITY=PATH, got {value!r}.")
        features[modality] = path
    return features


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m recbole_mmssl.data.prepare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    mmssl = sub.add_parser("mmssl", help="convert an MMSSL/LATTICE folder (train/val/test.json, *_feat.npy)")
    mmssl.add_argument("src", help="folder with train.json, val.json, test.json and <modality>_feat.npy")
    mmrec = sub.add_parser("mmrec", help="convert an MMRec .inter file (split column 0/1/2) and its features")
    mmrec.add_argument("src", help="the MMRec .inter file; <modality>_feat.npy are read from its folder")
    mmrec.add_argument("--user-field", default="userID")
    mmrec.add_argument("--item-field", default="itemID")
    mmrec.add_argument("--split-field", default="x_label")
    mmrec.add_argument("--features-dir", help="folder of the <modality>_feat.npy files (default: beside src)")
    for p in (mmssl, mmrec):
        p.add_argument("--name", required=True, help="dataset name (folder and file prefix)")
        p.add_argument("--out", default="dataset", help="parent folder of the dataset folder (default: dataset)")
        p.add_argument("--modalities", nargs="+", help="modalities to take (default: every *_feat.npy found)")
    feats = sub.add_parser("features", help="install feature matrices into a prepared dataset folder")
    feats.add_argument("dataset_dir", help="prepared dataset folder, e.g. dataset/amazon-baby")
    feats.add_argument("--feature", action="append", required=True, metavar="MODALITY=PATH")
    feats.add_argument("--rows-indexed-by", metavar="COLUMN",
                       help="column of <name>.item_map.tsv that gives each item's row in the files")
    movielens = sub.add_parser("ml-100k", help="build MovieLens-100k with text and genre features from "
                                               "RecBole's own copy (text needs `pip install -e .[encode]`)")
    movielens.add_argument("--out", default="dataset", help="parent folder of the dataset folder (default: dataset)")
    movielens.add_argument("--seed", type=int, default=2022, help="seed of the random per-user split")
    movielens.add_argument("--modalities", nargs="+", default=list(MOVIELENS_MODALITIES),
                           help="modalities to write (default: text genre)")
    movielens.add_argument("--text-model", help="sentence-transformers model (default: the bundled all-MiniLM-L6-v2)")
    movielens.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    amazon = sub.add_parser("amazon", help="add text and image features to amazon-baby or amazon-sports from the "
                                           "published Amazon product data (2014) files")
    amazon.add_argument("--dataset", required=True, help="the prepared folder's name, e.g. amazon-baby")
    amazon.add_argument("--meta", help="meta_<Category>.json.gz: writes the text modality (MMRec's sentences)")
    amazon.add_argument("--image-features", help="image_features_<Category>.b: writes the image modality")
    amazon.add_argument("--reviews", help="reviews_<Category>_5.json.gz or ratings_<Category>.csv: builds the "
                                          "item map (item token -> ASIN) by matching the interactions")
    amazon.add_argument("--out", default="dataset", help="parent folder of the dataset folder (default: dataset)")
    amazon.add_argument("--text-model", help="sentence-transformers model (default: the bundled all-MiniLM-L6-v2)")
    amazon.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    with reported_input_errors(args.debug):
        if args.command == "mmssl":
            print(from_mmssl(args.src, args.name, args.out, args.modalities))
        elif args.command == "mmrec":
            print(from_mmrec(args.src, args.name, args.out, args.user_field, args.item_field,
                             args.split_field, args.features_dir, args.modalities))
        elif args.command == "amazon":
            print(build_amazon(args.dataset, args.meta, args.image_features, args.reviews, args.out,
                               args.text_model, args.device))
        elif args.command == "ml-100k":
            print(build_movielens(args.out, args.seed, args.modalities, args.text_model, args.device))
        else:
            install_features(args.dataset_dir, _parse_features(args.feature), args.rows_indexed_by)
    return 0


if __name__ == "__main__":
    sys.exit(main())
