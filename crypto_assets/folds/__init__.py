"""Walk-forward folds: the monthly fold calendar, labels, purged train / test splits and train-only scaling.

No Dagster here: `crypto_assets.orchestration` maps these onto partitions (DESIGN.md §1).
"""

from crypto_assets.folds.scaling import ColumnStats, RobustZScore
from crypto_assets.folds.split import (
    LABEL_PREFIX,
    add_labels,
    check_complete,
    label_columns,
    missing_months,
    split_fold,
)
from crypto_assets.folds.windows import (
    FoldSpec,
    FoldWindow,
    add_months,
    first_fold_month,
    fold_keys,
    fold_window_for_key,
    fold_windows,
    is_fold_key,
    month_start,
    stitch_months,
)

__all__ = [
    "LABEL_PREFIX",
    "ColumnStats",
    "FoldSpec",
    "FoldWindow",
    "RobustZScore",
    "add_labels",
    "add_months",
    "check_complete",
    "first_fold_month",
    "fold_keys",
    "fold_window_for_key",
    "fold_windows",
    "is_fold_key",
    "label_columns",
    "missing_months",
    "month_start",
    "split_fold",
    "stitch_months",
]
