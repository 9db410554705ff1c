"""Item feature files: one ``.npy`` matrix per modality plus one item-token list.

Row ``r`` of every modality matrix of a dataset belongs to the item whose token is on line
``r`` of the token list (``<dataset>.feature_items``). Every check here raises
:class:`FeatureFileError` naming the file and what to do.
"""

import os
import re

import numpy as np

from recbole_mmssl.errors import InputError

MODALITY_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


class FeatureFileError(InputError):
    """A feature file or feature setting that cannot be used as it is."""


def read_item_tokens(path):
    """The item tokens of a token-list file, one per line, in row order."""
    if not os.path.isfile(path):
        raise FeatureFileError(
            f"Item-token list {path} not found. It holds one item token per line, line r "
            "naming the item of row r of every feature matrix; "
            "`python -m recbole_mmssl.data.prepare` writes it."
        )
    with open(path, encoding="utf-8") as f:
        tokens = f.read().splitlines()
    while tokens and tokens[-1].strip() == "":
        tokens.pop()
    tokens = [t.strip() for t in tokens]
    if not tokens:
        raise FeatureFileError(f"Item-token list {path} is empty.")
    blank = [i + 1 for i, t in enumerate(tokens) if not t]
    if blank:
        raise FeatureFileError(f"Item-token list {path} has empty lines (line {blank[0]}); give every row a token.")
    seen, duplicates = set(), []
    for t in tokens:
        if t in seen:
            duplicates.append(t)
        seen.add(t)
    if duplicates:
        raise FeatureFileError(
            f"Item-token list {path} names {len(duplicates)} item token(s) twice, e.g. "
            f"{duplicates[:5]}; each item must own exactly one feature row."
        )
    return tokens


def read_feature_matrix(path, expected_rows=None, rows_from=None):
    """Load a 2-D numeric ``.npy`` matrix with finite values, as float32.

    ``expected_rows`` is checked against the row count, ``rows_from`` names its source.
    """
    if not os.path.isfile(path):
        raise FeatureFileError(f"Feature file {path} not found.")
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as err:
        raise FeatureFileError(f"Feature file {path} is not a plain numeric .npy array: {err}") from err
    if array.ndim != 2:
        raise FeatureFileError(
            f"Feature file {path} holds an array of shape {array.shape}; it must be 2-D "
            "(one row per item, one column per feature dimension)."
        )
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise FeatureFileError(f"Feature file {path} has dtype {array.dtype}; it must hold numbers.")
    if expected_rows is not None and array.shape[0] != expected_rows:
        raise FeatureFileError(
            f"Feature file {path} has {array.shape[0]} rows but {rows_from} lists {expected_rows} "
            "items; the two must have one row per listed item, in the same order."
        )
    array = np.asarray(array, dtype=np.float32)
    bad = ~np.isfinite(array)
    if bad.any():
        rows = np.unique(np.nonzero(bad)[0])
        raise FeatureFileError(
            f"Feature file {path} has NaN or Inf values in {len(rows)} row(s), e.g. rows "
            f"{rows[:5].tolist()}; fill or drop those items before training."
        )
    return array


def check_modalities(modalities, feature_files, dataset):
    """The modality names of the config, checked: a non-empty list of distinct, declared names."""
    if isinstance(modalities, str):
        modalities = [modalities]
    if not modalities:
        raise FeatureFileError(
            f"Config key 'modalities' is empty for dataset {dataset}; name the item feature "
            "modalities to load, e.g. modalities: [image, text]."
        )
    for name in modalities:
        if not isinstance(name, str) or not MODALITY_NAME.match(name):
            raise FeatureFileError(f"Modality name {name!r} in config key 'modalities' is not a plain name.")
    if len(set(modalities)) != len(modalities):
        raise FeatureFileError(f"Config key 'modalities' lists a modality twice: {modalities}.")
    if feature_files:
        unknown = [m for m in modalities if m not in feature_files]
        if unknown:
            raise FeatureFileError(
                f"Unknown modality {unknown} for dataset {dataset}: its 'feature_files' declares "
                f"{sorted(feature_files)}. Choose among those, or add the file under 'feature_files'."
            )
    return list(modalities)
