"""Analysis tools: effective receptive fields (:func:`erf`) and cost profiles (:func:`profile`).

Plotting needs matplotlib and progress bars need tqdm; both are imported only when used
(``pip install 'recconv[examples]'``).
"""

from .costs import Costs, costs_table, model_costs
from .erf import (
    THRESHOLDS,
    AreaRatio,
    ERFResult,
    checkpoint_erf,
    erf,
    model_erf,
    ratio_table,
    recconv_erfs,
)
from .plot import check_figure_path, plot_erfs
from .profile import FORMATS, ProfileRow, count_costs, format_rows, profile, saved_bytes

__all__ = [
    "FORMATS",
    "THRESHOLDS",
    "AreaRatio",
    "Costs",
    "ERFResult",
    "ProfileRow",
    "check_figure_path",
    "checkpoint_erf",
    "costs_table",
    "count_costs",
    "erf",
    "format_rows",
    "model_costs",
    "model_erf",
    "plot_erfs",
    "profile",
    "ratio_table",
    "recconv_erfs",
    "saved_bytes",
]
