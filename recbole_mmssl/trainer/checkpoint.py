"""The checkpoint format: files that open with ``torch.load(weights_only=True)``, so that opening
one never runs code.

A checkpoint is a dict of plain values and tensors: ``format`` and ``version``; ``config``, the
run's resolved configuration as plain values (rebuilt into a ``Config`` by
:meth:`recbole_mmssl.config.Config.from_values`, so that later changes to presets never change
what an old run resumes with); the training progress (``epoch``, ``cur_step``, the best
validation score, result and epoch, whether early stopping ended the run); the model's
``state_dict``, its other parameters (:func:`encode_other`), and the optimizers' and scalers'
state dicts. Files are written beside their path, then moved over it.

Checkpoints of the earlier, pickled format are converted once, by a command that says the file
is trusted (unpickling it runs whatever code it names):

    python -m recbole_mmssl.checkpoint upgrade --trust saved/MMSSL-old.pth
"""

import argparse
import enum
import os
import pickle
import re
import zipfile

import numpy as np
import torch

from recbole_mmssl.common.files import atomic_path
from recbole_mmssl.errors import InputError, MissingInputError, add_debug_flag, reported_input_errors

FORMAT = "recbole-mmssl checkpoint"
VERSION = 1
FIELDS = ("format", "version", "config", "epoch", "state_dict")
# Config entries that RecBole derives from the model class, the metrics and the machine on every
# construction: never stored, so that a checkpoint holds no classes, enums or devices.
DERIVED_KEYS = frozenset({"MODEL_TYPE", "MODEL_INPUT_TYPE", "eval_type", "device", "local_rank", "single_spec"})
# Modules of earlier versions whose pickled classes ``upgrade`` finds in their new place
MOVED_MODULES = {"recbole_mmssl.model.mmssl.generator": "recbole_mmssl.model.mmssl.modality_graph"}
# Keys of earlier versions that ``upgrade`` renames: old key -> (new key, old value -> new value)
RENAMED_KEYS = {"last_layer_softmax": ("last_layer_norm", {True: "softmax", False: "none"})}


def plain(value, where="value"):
    """``value`` as plain Python (None, bool, int, float, str, and lists, tuples and dicts of them)."""
    if isinstance(value, np.generic):  # before float: numpy's float64 is a float subclass
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    if isinstance(value, enum.Enum):
        return plain(value.value, where)
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v, where) for v in value)
    if isinstance(value, dict):
        return {plain(k, where): plain(v, f"{where}[{k!r}]") for k, v in value.items()}
    raise TypeError(f"{where} of type {type(value).__name__} has no plain form for a checkpoint")


def config_values(config):
    """The resolved configuration of ``config`` (a RecBole ``Config``) as plain values."""
    return {key: plain(value, f"config key {key!r}")
            for key, value in config.final_config_dict.items() if key not in DERIVED_KEYS}


def metrics(result):
    """A validation or test result as {metric: float} (None stays None)."""
    return None if result is None else {str(k): float(v) for k, v in result.items()}


def encode_other(other):
    """A model's ``other_parameter()`` in plain form: tensors and plain values as they are, numpy
    arrays as tensors, scipy sparse matrices by their CSR arrays, and objects with a ``state_dict``
    (MMSSL's modality graphs) by it; :func:`decode_other` restores them."""
    import scipy.sparse as sp

    encoded = {}
    for name, value in (other or {}).items():
        if hasattr(value, "state_dict"):
            encoded[name] = {"kind": "state", "state": value.state_dict()}
        elif isinstance(value, np.ndarray):
            encoded[name] = {"kind": "numpy", "tensor": torch.from_numpy(np.ascontiguousarray(value))}
        elif sp.issparse(value):
            csr = sp.csr_matrix(value)
            encoded[name] = {"kind": "scipy_csr", "shape": tuple(csr.shape), "data": torch.from_numpy(csr.data),
                             "indices": torch.from_numpy(csr.indices), "indptr": torch.from_numpy(csr.indptr)}
        else:
            encoded[name] = {"kind": "value", "value": value if isinstance(value, torch.Tensor) else plain(value, name)}
    return encoded


def decode_other(model, encoded):
    """Restore what :func:`encode_other` stored onto ``model`` (through ``load_other_parameter``)."""
    import scipy.sparse as sp

    values = {}
    for name, item in (encoded or {}).items():
        kind = item["kind"]
        if kind == "state":
            getattr(model, name).load_state_dict(item["state"])
            values[name] = getattr(model, name)
        elif kind == "numpy":
            values[name] = item["tensor"].numpy()
        elif kind == "scipy_csr":
            values[name] = sp.csr_matrix((item["data"].numpy(), item["indices"].numpy(), item["indptr"].numpy()),
                                         shape=item["shape"])
        else:
            values[name] = item["value"]
    model.load_other_parameter(values)


def save_checkpoint(state, path):
    """Write ``state`` (a dict of plain values and tensors) as a checkpoint at ``path``, atomically."""
    checkpoint = {"format": FORMAT, "version": VERSION, **state}
    with atomic_path(path) as partial:
        torch.save(checkpoint, partial)


def load_checkpoint(path, map_location=None):
    """A checkpoint of this package, opened with ``weights_only=True``: nothing in it runs.

    A missing file, a file that is not a checkpoint, one that needs unpickling, or one without
    this package's fields raises :class:`InputError` naming the file.
    """
    path = str(path)
    if os.path.isdir(path):
        raise InputError(f"Checkpoint {path} is a folder; name the .pth file in it (model.pth).")
    if not os.path.isfile(path):
        raise MissingInputError(f"Checkpoint {path} does not exist.")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; a cut-off one has no directory
        raise InputError(f"{path} is not a checkpoint: not a torch.save archive (another kind of file, or one cut "
                         "off while it was written).")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        raise InputError(
            f"Checkpoint {path} does not open safely: it holds objects that only unpickling can restore "
            f"({_unsafe_global(error)}). If it is a checkpoint of an earlier recbole-mmssl that you trust, "
            f"convert it once: python -m recbole_mmssl.checkpoint upgrade --trust {path}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, KeyError, IndexError) as error:
        raise InputError(f"{path} is not a readable checkpoint ({_first_line(error)}).") from None
    check_fields(checkpoint, path)
    return checkpoint


def check_fields(checkpoint, path):
    """Refuse a loaded object that is not a checkpoint of this format."""
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise InputError(f"{path} is not a recbole-mmssl checkpoint (no 'format': {FORMAT!r}).")
    if checkpoint.get("version") != VERSION:
        raise InputError(f"Checkpoint {path} has format version {checkpoint.get('version')!r}; this recbole-mmssl "
                         f"reads version {VERSION}.")
    missing = [field for field in FIELDS if field not in checkpoint]
    if missing or not isinstance(checkpoint["config"], dict) or "model" not in checkpoint["config"]:
        raise InputError(f"Checkpoint {path} lacks the fields {missing or ['config.model']}.")


def _unsafe_global(error):
    """What torch's weights-only loader refused, from its long message."""
    found = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
    return f"it names {found.group(1)}" if found else _first_line(error)


def _first_line(error):
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def upgrade(path, output=None):
    """Convert a trusted checkpoint of the earlier pickled format (a pickled RecBole ``Config``,
    numpy metrics, MMSSL's modality-graph object) to this format; returns the file written."""
    output = str(output or path)
    try:
        old = torch.load(str(path), map_location="cpu", weights_only=False, pickle_module=_MovedClasses)
    except FileNotFoundError:
        raise MissingInputError(f"Checkpoint {path} does not exist.") from None
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, AttributeError,
            ModuleNotFoundError) as error:
        raise InputError(f"{path} is not a checkpoint of an earlier recbole-mmssl ({_first_line(error)}).") from None
    if isinstance(old, dict) and old.get("format") == FORMAT:
        raise InputError(f"{path} already has the current format; nothing to upgrade.")
    if not isinstance(old, dict) or "config" not in old or "state_dict" not in old:
        raise InputError(f"{path} is not a checkpoint of an earlier recbole-mmssl (no config or state_dict).")
    state = dict(old)
    config = state["config"]
    state["config"] = config_values(config) if hasattr(config, "final_config_dict") else plain(config, "config")
    for old_key, (new_key, values) in RENAMED_KEYS.items():
        if old_key in state["config"]:
            state["config"][new_key] = values[state["config"].pop(old_key)]
    state["epoch"] = int(state.get("epoch", -1))
    state.setdefault("cur_step", 0)
    state["best_valid_score"] = plain(state.get("best_valid_score"), "best_valid_score")
    state["best_valid_result"] = metrics(state.get("best_valid_result"))
    state["best_epoch"] = int(state.get("best_epoch", state["epoch"]))
    state["other_parameter"] = encode_other(state.get("other_parameter"))
    if "scalers" in state:
        state["scalers"] = [plain(s, "scalers") for s in state["scalers"]]
    save_checkpoint(state, output)
    return output


class _MovedClasses:
    """A pickle module for torch.load that finds classes of earlier versions where they live now."""

    class Unpickler(pickle.Unpickler):
        def find_class(self, module, name):
            return super().find_class(MOVED_MODULES.get(module, module), name)

    load = pickle.load


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m recbole_mmssl.checkpoint",
        description="Convert checkpoints of an earlier recbole-mmssl to the current format, which opens "
                    "without running code.")
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("upgrade", help="convert trusted checkpoints of the earlier, pickled format")
    up.add_argument("files", nargs="+", help="checkpoint files (.pth)")
    up.add_argument("--trust", action="store_true",
                    help="required: opening an old checkpoint unpickles it, which runs any code it names")
    up.add_argument("--output", help="where to write the converted file (one input only; default: in place)")
    add_debug_flag(up)
    args = parser.parse_args(argv)
    with reported_input_errors(args.debug):
        if not args.trust:
            raise InputError("upgrade unpickles each file, which runs any code the file names: pass --trust "
                             "only for checkpoints you or this package wrote.")
        if args.output and len(args.files) > 1:
            raise InputError("--output takes one input file; without it each file is converted in place.")
        for path in args.files:
            print(f"upgraded {path} -> {upgrade(path, args.output)}")

