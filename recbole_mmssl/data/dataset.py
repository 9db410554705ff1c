"""Datasets: RecBole's Dataset with input checks, and its multimodal extension.

``InteractionDataset`` serves every general model (RecBole's included): it refuses missing or
empty interaction files and users who reach evaluation without training items.
``MultiModalDataset`` also loads the item feature matrices named by ``modalities`` and aligns
their rows with RecBole's internal item ids (id 0, the padding item, gets a zero row); with
``feature_shuffle_seed`` set it permutes the rows across items, the control that shows whether
a model's gain comes from the content.
"""

import os

import numpy as np
import torch
import yaml
from recbole.data.dataset import Dataset

from recbole_mmssl.data.features import (
    FeatureFileError,
    check_modalities,
    read_feature_matrix,
    read_item_tokens,
)
from recbole_mmssl.data.folder import feature_path, token_list_path
from recbole_mmssl.errors import InputError, MissingInputError

DATASET_KEYS = ("modalities", "feature_files", "feature_item_list", "feature_dims", "cold_start_users",
                "feature_shuffle_seed")
COLD_START_POLICIES = ("error", "drop", "keep")
PREPARE_HINT = "python -m recbole_mmssl.data.prepare"


def shuffled_rows(n_items, seed):
    """The control's permutation: item j takes the features of item ``perm[j]``, from ``seed`` alone."""
    return np.random.default_rng(seed).permutation(n_items)


def _recbole_downloadable(dataset_name):
    """Whether RecBole itself knows a download address for ``dataset_name``."""
    import recbole

    url_file = os.path.join(os.path.dirname(recbole.__file__), "properties", "dataset", "url.yaml")
    with open(url_file, encoding="utf-8") as f:
        return dataset_name in (yaml.safe_load(f) or {})


def _check_atomic_file(path):
    """Refuse a missing interaction file, or one with no header or no rows."""
    if not os.path.isfile(path):
        raise MissingInputError(f"Interaction file {path} not found; `{PREPARE_HINT}` writes it.")
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\r\n")
        first_row = f.readline().strip()
    if not header:
        raise InputError(
            f"Interaction file {path} is empty; it needs a header such as 'user_id:token\\titem_id:token'.")
    if not first_row:
        raise InputError(f"Interaction file {path} has a header but no interactions.")


def _check_folder(config, token, dataset_path):
    built_here = config["prepare_command"]
    if not os.path.isdir(dataset_path) and (built_here or not _recbole_downloadable(token)):
        raise MissingInputError(
            f"Dataset folder {dataset_path} not found. Prepare it with `{built_here or PREPARE_HINT}` "
            "(see the README), or set data_path to the folder that holds it."
        )


def _check_inter_files(config, token, dataset_path):
    names = config["benchmark_filename"]
    for name in [f"{token}.inter"] if names is None else [f"{token}.{name}.inter" for name in names]:
        _check_atomic_file(os.path.join(dataset_path, name))


def _feature_paths(config, token, dataset_path):
    """(modality -> feature file, token-list file) that the configuration names."""
    feature_files = config["feature_files"] or {}
    modalities = check_modalities(config["modalities"], feature_files, config["dataset"])
    paths = {m: os.path.join(dataset_path, feature_files[m]) if m in feature_files
             else feature_path(dataset_path, token, m) for m in modalities}
    token_file = os.path.join(dataset_path, config["feature_item_list"]) if config["feature_item_list"] \
        else token_list_path(dataset_path, token)
    missing = [m for m in modalities if not os.path.isfile(paths[m])]
    if missing:
        raise FeatureFileError(_missing_features_message(config, missing, paths, token_file, dataset_path))
    return paths, token_file


def _missing_features_message(config, missing, paths, token_file, dataset_path):
    rows = len(read_item_tokens(token_file)) if os.path.isfile(token_file) else "n_items"
    dims = config["feature_dims"] or {}
    lines = [f"Dataset {config['dataset']} needs item features that are not installed:"]
    for m in missing:
        dim = dims.get(m, "dim")
        dim = " or ".join(map(str, dim)) if isinstance(dim, list) else dim
        lines.append(f"  {m}: {paths[m]} (expected shape ({rows}, {dim}))")
    if config["feature_source"]:
        lines.append(f"Where to get them: {config['feature_source']}")
    flags = " ".join(f"--feature {m}=/path/to/{m}_feat.npy" for m in missing)
    lines.append(f"Install them with:\n  {PREPARE_HINT} features {dataset_path} {flags}")
    return "\n".join(lines)


def check_dataset_files(config, multimodal):
    """Refuse a missing dataset folder, interaction file or feature file before anything is built
    or written (the dataset checks the files' contents as it loads them)."""
    token, dataset_path = config["dataset"], config["data_path"]
    _check_folder(config, token, dataset_path)
    if os.path.isdir(dataset_path):
        _check_inter_files(config, token, dataset_path)
        if multimodal:
            _feature_paths(config, token, dataset_path)


class InteractionDataset(Dataset):
    """RecBole's Dataset that checks its interaction files and its split before training."""

    def _load_data(self, token, dataset_path):
        _check_folder(self.config, token, dataset_path)
        super()._load_data(token, dataset_path)

    def _load_inter_feat(self, token, dataset_path):
        _check_inter_files(self.config, token, dataset_path)
        super()._load_inter_feat(token, dataset_path)

    def build(self):
        """Split as RecBole does, then apply ``cold_start_users`` to the evaluation splits."""
        datasets = super().build()
        policy = self.config["cold_start_users"]
        train_users = torch.unique(datasets[0].inter_feat[self.uid_field])
        for phase, split in zip(("valid", "test"), datasets[1:]):
            users = split.inter_feat[self.uid_field]
            cold = ~torch.isin(users, train_users)
            if not cold.any():
                continue
            cold_users = torch.unique(users[cold])
            examples = list(self.id2token(self.uid_field, cold_users[:5].numpy()))
            what = (
                f"{len(cold_users)} user(s) of the {phase} split of dataset {self.dataset_name} "
                f"have no training interaction (e.g. user tokens {examples})"
            )
            if policy == "error":
                raise InputError(
                    f"{what}. Set cold_start_users: drop to evaluate without them, or keep to "
                    "score them anyway (the MMSSL reference does), or add training items for them."
                )
            if policy == "drop":
                split.inter_feat = split.inter_feat[torch.nonzero(~cold).squeeze(1)]
                self.logger.warning(f"{what}: dropped from {phase} (cold_start_users: drop).")
            else:
                self.logger.info(f"{what}: kept in {phase} (cold_start_users: keep).")
        return datasets


class MultiModalDataset(InteractionDataset):
    """Interactions plus one float32 feature matrix per modality, row i = internal item id i.

    Attributes:
        modality_features (dict[str, torch.Tensor]): ``[item_num, dim]`` per modality, in the
            order of ``config['modalities']``; row 0 (padding) is zero.
    """

    def _load_data(self, token, dataset_path):
        super()._load_data(token, dataset_path)
        self._raw_features = self._read_features(token, dataset_path)

    def _data_processing(self):
        super()._data_processing()
        self.modality_features = self._align_features(*self._raw_features)
        del self._raw_features

    def _read_features(self, token, dataset_path):
        """Read and check the token list and every modality matrix, before any processing."""
        paths, token_file = _feature_paths(self.config, token, dataset_path)
        tokens = read_item_tokens(token_file)
        matrices = {}
        expected_dims = self.config["feature_dims"] or {}
        for m in paths:
            matrices[m] = read_feature_matrix(paths[m], expected_rows=len(tokens), rows_from=token_file)
            dims = expected_dims.get(m)
            dims = [dims] if isinstance(dims, int) else dims
            if dims and matrices[m].shape[1] not in dims:
                raise FeatureFileError(
                    f"Feature file {paths[m]} has {matrices[m].shape[1]} columns; modality {m} of "
                    f"dataset {self.dataset_name} expects {' or '.join(map(str, dims))} (feature_dims)."
                )
        return tokens, matrices, token_file, paths

    def _align_features(self, tokens, matrices, token_file, paths):
        """Reorder feature rows to internal item ids; every item must have a row."""
        row_of = {t: r for r, t in enumerate(tokens)}
        item_tokens = self.field2id_token[self.iid_field][1:]
        rows = np.array([row_of.get(str(t), -1) for t in item_tokens], dtype=np.int64)
        absent = item_tokens[rows < 0]
        if len(absent):
            raise FeatureFileError(
                f"{len(absent)} item(s) of dataset {self.dataset_name}'s interactions have no "
                f"feature row in {token_file} (e.g. item tokens {list(absent[:5])}); every "
                "interacted item needs features in every modality."
            )
        unused = len(tokens) - len(rows)
        if unused:
            self.logger.info(f"{unused} feature row(s) belong to items without interactions; they are not used.")
        shuffle_seed = self.config["feature_shuffle_seed"]
        if shuffle_seed is not None:
            rows = rows[shuffled_rows(len(rows), shuffle_seed)]
            self.logger.warning(f"feature_shuffle_seed {shuffle_seed}: the feature rows are permuted across items "
                                "(control run: the features no longer describe their items).")
        aligned = {}
        for m, matrix in matrices.items():
            table = np.zeros((len(rows) + 1, matrix.shape[1]), dtype=np.float32)
            table[1:] = matrix[rows]
            aligned[m] = torch.from_numpy(table)
        return aligned

    def __str__(self):
        dims = ", ".join(f"{m}: {tuple(t.shape)}" for m, t in self.modality_features.items())
        return f"{super().__str__()}\nItem features: {dims}"
