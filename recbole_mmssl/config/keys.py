"""The type and range of every config key the package reads, RecBole's included, in one place.

:func:`check` runs when a :class:`recbole_mmssl.config.Config` is built, before anything is
written: a wrong value raises one :class:`InputError` that names the key, the value, what is
allowed and where the value came from (a flag, a config file, ``config_dict`` or a properties
file). ``tests/test_config.py`` reads the package's code and checks that every key it reads has
an entry here.
"""

import numbers

from recbole_mmssl.config.rules import AUTO
from recbole_mmssl.data.dataset import COLD_START_POLICIES
from recbole_mmssl.errors import InputError
from recbole_mmssl.evaluation import TEST_MASKS
from recbole_mmssl.model.feature_norm import FEATURE_NORMS
from recbole_mmssl.model.graphs import ADJACENCY_NORMS
from recbole_mmssl.model.mmssl.layers import LAST_LAYER_NORMS


class Allowed:
    """A test of a value and the words that say what it accepts."""

    def __init__(self, test, words):
        self.test, self.words = test, words

    def __call__(self, value):
        return self.test(value)

    def __or__(self, other):
        return Allowed(lambda v: self(v) or other(v), f"{self.words}, or {other.words}")


def _number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _range_words(low, high, low_open, high_open):
    if low is not None and high is not None:
        return f" in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    if low is not None:
        return f" {'>' if low_open else '>='} {low}"
    return f" {'<' if high_open else '<='} {high}" if high is not None else ""


def _in_range(value, low, high, low_open, high_open):
    return ((low is None or (value > low if low_open else value >= low))
            and (high is None or (value < high if high_open else value <= high)))


def number(low=None, high=None, low_open=False, high_open=False):
    return Allowed(lambda v: _number(v) and _in_range(v, low, high, low_open, high_open),
                   "a number" + _range_words(low, high, low_open, high_open))


def integer(low=None, high=None):
    return Allowed(lambda v: isinstance(v, numbers.Integral) and not isinstance(v, bool)
                   and _in_range(v, low, high, False, False), "an integer" + _range_words(low, high, False, False))


def one_of(*values):
    return Allowed(lambda v: v in values and all(type(v) is type(c) for c in values if c == v),
                   f"one of {sorted(values, key=str)}")


def list_of(item, length=None):
    size = f"{length} " if length else ""
    return Allowed(lambda v: isinstance(v, (list, tuple)) and (length is None or len(v) == length)
                   and all(item(x) for x in v), f"a list of {size}values, each {item.words}")


NONE = Allowed(lambda v: v is None, "~ (none)")
BOOL = Allowed(lambda v: isinstance(v, bool), "True or False")
TEXT = Allowed(lambda v: isinstance(v, str) and v != "", "a non-empty string")
DICT = Allowed(lambda v: isinstance(v, dict), "a mapping")
WEIGHT = number(0)  # loss weights, regularisers, scales: >= 0
RATE = number(0, 1)  # shares and rates
DROPOUT = number(0, 1, high_open=True)
POSITIVE = number(0, low_open=True)
COUNT = integer(1)  # sizes and counts
LAYERS = integer(0)
SEED = integer(0)

KEYS = {
    # --- RecBole's run, training and evaluation keys that the package reads or passes on
    "model": TEXT, "dataset": TEXT, "data_path": TEXT, "checkpoint_dir": TEXT,
    "seed": SEED, "reproducibility": BOOL, "state": one_of("INFO", "DEBUG", "WARNING", "ERROR", "CRITICAL",
                                                          "info", "debug", "warning", "error", "critical"),
    "show_progress": BOOL, "verbose": BOOL, "shuffle": BOOL,
    "gpu_id": Allowed(lambda v: isinstance(v, (str, int)) and not isinstance(v, bool), "a GPU id string such as '0' "
                      "or '0,1' ('' for the CPU)"),
    "use_gpu": BOOL,
    "epochs": COUNT, "stopping_step": LAYERS, "eval_step": COUNT, "train_batch_size": COUNT, "eval_batch_size": COUNT,
    "learner": one_of("adam", "adamw", "sgd", "adagrad", "rmsprop", "sparse_adam"),
    "learning_rate": WEIGHT, "weight_decay": WEIGHT, "clip_grad_norm": NONE | DICT,
    "metrics": TEXT | list_of(TEXT), "topk": COUNT | list_of(COUNT), "valid_metric": TEXT,
    "eval_args": DICT, "train_neg_sample_args": NONE | DICT, "NEG_PREFIX": TEXT,
    "USER_ID_FIELD": TEXT, "ITEM_ID_FIELD": TEXT, "load_col": NONE | DICT,
    "benchmark_filename": NONE | list_of(TEXT),
    "save_dataset": BOOL, "dataset_save_path": NONE | TEXT, "save_dataloaders": BOOL,
    "dataloaders_save_path": NONE | TEXT,
    # --- the plugin's run-wide keys (properties/overall.yaml)
    "learning_rate_decay": NONE | list_of(POSITIVE, 2),
    "tail_ratio": number(0, 1, True, True), "test_masked_items": one_of(*TEST_MASKS),
    "cold_start_users": one_of(*COLD_START_POLICIES),
    "modalities": NONE | list_of(TEXT), "feature_files": NONE | DICT, "feature_item_list": NONE | TEXT,
    "feature_dims": NONE | DICT, "feature_source": NONE | TEXT, "prepare_command": NONE | TEXT,
    "feature_shuffle_seed": NONE | SEED, "feature_norm": one_of(*FEATURE_NORMS),
    "nproc": COUNT, "world_size": one_of(-1) | COUNT, "ip": TEXT,
    "port": Allowed(lambda v: (isinstance(v, int) and not isinstance(v, bool) and 0 < v < 65536)
                    or (isinstance(v, str) and v.isdigit() and 0 < int(v) < 65536), "a port number 1-65535"),
    "offset": integer(0),
    # --- shared by several models
    "embedding_size": COUNT, "n_layers": LAYERS, "reg_weight": WEIGHT, "cl_weight": WEIGHT,
    "dropout": DROPOUT,
    "freeze_features": BOOL,
    # --- MMSSL (properties/model/MMSSL.yaml)
    "variant": one_of("reference", "paper", "improved"),
    "attention": NONE | one_of("reference", "paper"), "d_negative_slope": NONE | number(0),
    "graph_update": NONE | one_of("batch", "full"), "graph_pairing": NONE | one_of("reference", "aligned"),
    "n_heads": COUNT, "feat_dropout": DROPOUT, "id_weight": WEIGHT, "mm_weight": WEIGHT, "own_content_weight": WEIGHT,
    "last_layer_norm": one_of(*LAST_LAYER_NORMS), "softmax_share": RATE | one_of(AUTO), "adjacency_norm": one_of(*ADJACENCY_NORMS),
    "propagation_gain": NONE | POSITIVE, "propagation": one_of("alternating", "simultaneous"),
    "readout": one_of("mean", "last"),
    "emb_reg_weight": WEIGHT, "feat_reg_weight": WEIGHT, "cl_temperature": POSITIVE, "g_weight": WEIGHT,
    "gumbel_tau": POSITIVE, "gumbel_noise_scale": WEIGHT, "gumbel_form": one_of("orig", "head"),
    "aux_weight": WEIGHT, "gp_weight": WEIGHT, "d_dropout": list_of(DROPOUT, 2), "d_output_scale": POSITIVE,
    "d_learning_rate": WEIGHT, "d_betas": list_of(DROPOUT, 2), "discriminator": one_of("exact", "sampled"),
    "critic_train_items": LAYERS, "critic_top_items": LAYERS, "critic_random_items": LAYERS, "critic_hidden": COUNT,
    "graph_topk_rate": RATE, "graph_period": COUNT | one_of("epoch"),
    "use_adversarial": BOOL, "use_contrastive": BOOL, "use_gumbel": BOOL,
    "mixed_precision": NONE | one_of("bf16", "fp16"), "shared_forward": BOOL,
    # --- VBPR, LATTICE, FREEDOM, BM3 (properties/model/<NAME>.yaml)
    "use_bias": BOOL, "feat_embed_dim": COUNT, "knn_k": COUNT, "lambda_coeff": RATE, "n_ui_layers": LAYERS,
    "n_mm_layers": LAYERS, "cf_model": one_of("lightgcn", "mf"), "lattice_mix": one_of("code", "paper"),
    "graph_rebuild": one_of("epoch", "batch"), "torch111_zero_grad": BOOL, "mm_weights": NONE | list_of(WEIGHT),
}


def origin(config, key):
    """Where ``config``'s value of ``key`` came from, in words."""
    if key in config.cmd_config_dict:
        return f"the flag --{key}"
    if key in config.variable_config_dict:
        return "config_dict"
    return config.origins.get(key, "RecBole's defaults")


CLIP_GRAD_NORM_ARGS = ("max_norm", "norm_type", "error_if_nonfinite", "foreach")  # torch's clip_grad_norm_


def _valid_metric(values):
    metric, metrics, topk = values.get("valid_metric"), values.get("metrics"), values.get("topk")
    if not isinstance(metric, str) or metrics is None or topk is None:
        return None
    names = [m.lower() for m in ([metrics] if isinstance(metrics, str) else metrics)]
    ks = [topk] if isinstance(topk, int) else list(topk)
    name, _, k = metric.lower().partition("@")
    if name in names and (not k or (k.isdigit() and int(k) in ks)):
        return None
    return (f"'valid_metric' is {metric!r}; it must be one of the evaluated metrics {names} at one of the "
            f"cut-offs 'topk' {ks}, for example {names[0]}@{ks[-1]}")


def _clip_grad_norm(values):
    clip = values.get("clip_grad_norm")
    unknown = sorted(set(clip) - set(CLIP_GRAD_NORM_ARGS)) if isinstance(clip, dict) else []
    if unknown or (isinstance(clip, dict) and "max_norm" not in clip):
        return f"'clip_grad_norm' is {clip!r}; it takes max_norm (required) and {', '.join(CLIP_GRAD_NORM_ARGS[1:])}"
    return None


def _attention_heads(values):
    size, heads = values.get("embedding_size"), values.get("n_heads")
    if values.get("attention") == "paper" and isinstance(size, int) and isinstance(heads, int) and size % heads:
        return f"'embedding_size' {size} must be divisible by 'n_heads' {heads} for attention: paper"
    return None


def _modality_weights(values):
    weights, modalities = values.get("mm_weights"), values.get("modalities")
    if weights is None or not modalities or values.get("model") != "FREEDOM":
        return None
    if len(weights) != len(modalities) or abs(sum(weights) - 1) > 1e-6:
        return f"'mm_weights' is {weights}; give one weight per modality {list(modalities)}, summing to 1"
    return None


RELATIONS = (_clip_grad_norm, _attention_heads, _modality_weights)  # rules across keys


def check(config):
    """Raise one :class:`InputError` naming every key of ``config`` whose value is not allowed, alone
    or together with the keys it depends on."""
    values = config.final_config_dict
    wrong = [f"{key!r} is {values[key]!r} (from {origin(config, key)}); allowed: {allowed.words}"
             for key, allowed in KEYS.items() if key in values and not allowed(values[key])]
    if not wrong:
        wrong = [message for message in (relation(values) for relation in RELATIONS) if message]
    if wrong:
        raise InputError("Config key " + "; config key ".join(wrong) + ".")


def check_training(config):
    """The rules for a configuration that trains: it validates on ``valid_metric``, so that metric
    must be evaluated (a configuration that only evaluates, e.g. at other cut-offs, need not)."""
    message = _valid_metric(config.final_config_dict)
    if message:
        raise InputError(f"Config key {message}.")
