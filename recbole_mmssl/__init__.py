"""recbole-mmssl: MMSSL (Wei et al., WWW 2023) as a RecBole plugin."""

from recbole_mmssl.common.compat import (install_collector_fix, install_numpy_aliases, install_scipy_dok_update,
                                        install_warning_filters)

install_warning_filters()
install_numpy_aliases()
install_scipy_dok_update()
install_collector_fix()

from recbole_mmssl.evaluation import register_metrics  # noqa: E402

register_metrics()

from recbole_mmssl.config import Config  # noqa: E402
from recbole_mmssl.data import InteractionDataset, MultiModalDataset  # noqa: E402
from recbole_mmssl.quick_start import load_data_and_model, run_recbole_mmssl  # noqa: E402

__version__ = "0.1.0"
__all__ = ["Config", "InteractionDataset", "MultiModalDataset", "run_recbole_mmssl", "load_data_and_model"]
