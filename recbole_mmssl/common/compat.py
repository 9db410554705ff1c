"""The one place that adapts RecBole 1.2.1 to the libraries it now runs beside.

* numpy 2 removed ``np.float_``, ``np.complex_`` and ``np.unicode_``, which RecBole's
  ``Config.compatibility_settings`` reads on every construction; RecBole's metrics and
  dataset code also use the old aliases ``np.float``, ``np.bool``, ``np.long``.
* scipy 1.13 removed ``dok_matrix._update``, which RecBole's LightGCN, NGCF, NCL and other
  graph baselines call to build their adjacency matrices.
* RecBole 1.2.1's evaluation collector calls ``.cpu()`` on non-tensor data, which breaks its
  own ItemCoverage, AveragePopularity, GiniIndex and TailPercentage metrics.
* RecBole 1.2.1's own code triggers warnings that a user cannot act on in every run: pandas'
  chained-assignment ``FutureWarning`` (its dataset's ``fillna(inplace=True)``), torch's
  deprecation of ``torch.cuda.amp.GradScaler`` (its trainer) and of ``torch.sparse.FloatTensor``
  (its graph models). Exactly those messages are filtered, from RecBole's modules only; torch's
  note that sparse invariant checks are off by default is answered by opting out explicitly
  (the plugin builds its sparse graphs itself, from checked edge lists).
* torch >= 2.6 loads with ``weights_only=True``; RecBole's checkpoints hold the pickled
  ``Config``, so its reload paths fail. The plugin's trainers write and read checkpoints of
  :mod:`recbole_mmssl.trainer.checkpoint`'s format instead, which open under ``weights_only=True``.
"""

import numpy as np
import torch

_NUMPY_ALIASES = {
    "bool": np.bool_,
    "int": np.int_,
    "float": np.float64,
    "complex": np.complex128,
    "object": np.object_,
    "str": np.str_,
    "long": np.int_,
    "unicode": np.str_,
    "float_": np.float64,
    "complex_": np.complex128,
    "unicode_": np.str_,
}


def install_warning_filters():
    """Silence the warnings of RecBole's own code described above (and only those)."""
    import warnings

    import torch

    for category, message, module in (
            (FutureWarning, "A value is trying to be set on a copy of a DataFrame", r"recbole\.data\.dataset"),
            (FutureWarning, r"`torch\.cuda\.amp\.GradScaler\(args\.\.\.\)` is deprecated", r"recbole\.trainer"),
            (UserWarning, r"torch\.sparse\.SparseTensor\(indices, values, shape", r"recbole\.model")):
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
    torch.sparse.check_sparse_tensor_invariants.disable()


def install_numpy_aliases():
    """Define the numpy names RecBole reads, on numpy 1 and 2 alike (only where absent)."""
    for name, value in _NUMPY_ALIASES.items():
        if name not in np.__dict__:
            setattr(np, name, value)


def install_scipy_dok_update():
    """Give scipy's dok_matrix back the ``_update`` RecBole's graph models call (only where absent)."""
    import scipy.sparse as sp

    if not hasattr(sp.dok_matrix, "_update"):
        def _update(self, data):
            self._dict.update(data)

        sp.dok_matrix._update = _update


def install_collector_fix():
    """Let RecBole's evaluation collector hand over non-tensor data (only where not yet done).

    ``Collector.get_data_struct`` calls ``.cpu()`` on everything it collected, but
    ``data.num_items`` is an int and ``data.count_items`` a Counter, so every evaluation with
    ItemCoverage, AveragePopularity, GiniIndex or TailPercentage fails in RecBole 1.2.1.
    """
    from recbole.evaluator.collector import Collector

    if getattr(Collector.get_data_struct, "_moves_tensors_only", False):
        return
    original = Collector.get_data_struct

    def get_data_struct(self):
        data = self.data_struct._data_dict
        kept = {key: value for key, value in data.items() if not isinstance(value, torch.Tensor)}
        for key in kept:
            del data[key]
        try:
            struct = original(self)
        finally:
            data.update(kept)
        for key, value in kept.items():
            struct.set(key, value)
        return struct

    get_data_struct._moves_tensors_only = True
    Collector.get_data_struct = get_data_struct
