"""Measures of a model's per-bar output against what the market did (``EVALUATION.md``).

The measures themselves live in ``models.metrics`` (one definition, numpy and scipy only, so a
serving host has them), and are re-exported here for the trading code:

* ``tradeable_returns``: ``open[t+1+h] / open[t+1] - 1``, the return a trade decided at the close
  of bar ``t`` could earn (NaN where the data ends first);
* ``spearman`` and ``block_bootstrap_ic``: the IC and its moving-block bootstrap CI;
* ``log_loss``, ``brier_score``, ``ece``: against realized classes.

``precision_recall`` (per class, None where undefined) is trading's own.
"""

from __future__ import annotations

import numpy as np

from models.metrics import (
    ECE_BINS,
    LOG_EPS,
    block_bootstrap_ic,
    brier_score,
    ece,
    log_loss,
    spearman,
    tradeable_returns,
)

__all__ = [
    "CLASS_NAMES",
    "ECE_BINS",
    "LOG_EPS",
    "block_bootstrap_ic",
    "brier_score",
    "ece",
    "log_loss",
    "precision_recall",
    "spearman",
    "tradeable_returns",
]

CLASS_NAMES = ("buy", "hold", "sell")


def precision_recall(labels: np.ndarray, predicted: np.ndarray) -> dict[str, float | None]:
    """``precision_<class>`` and ``recall_<class>`` for buy/hold/sell (None where undefined:
    a class never predicted has no precision, one never realized no recall)."""
    y = np.asarray(labels, dtype=np.int64)
    q = np.asarray(predicted, dtype=np.int64)
    cm = np.zeros((3, 3), dtype=np.int64)
    np.add.at(cm, (y, q), 1)
    out: dict[str, float | None] = {}
    for k, name in enumerate(CLASS_NAMES):
        pred_k, true_k = int(cm[:, k].sum()), int(cm[k, :].sum())
        out[f"precision_{name}"] = float(cm[k, k] / pred_k) if pred_k else None
        out[f"recall_{name}"] = float(cm[k, k] / true_k) if true_k else None
    return out
