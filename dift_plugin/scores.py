"""Detection quality against known poisoned indexes (experiments only: a defense never sees the truth)."""

from __future__ import annotations

import numpy as np


def detection_scores(found: np.ndarray, truth: np.ndarray, n: int) -> dict[str, float]:
    """Precision, recall (= TPR) and FPR of ``found`` against the true poisoned positions among ``n`` samples."""
    tp = len(np.intersect1d(found, truth))
    fp = len(found) - tp
    return {"precision": round(tp / len(found), 4) if len(found) else 0.0,
            "recall": round(tp / len(truth), 4) if len(truth) else 0.0,
            "fpr": round(fp / max(1, n - len(truth)), 6)}


def density_rank_stats(density: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Where the true poisoned samples rank by ``density`` (larger = denser; rank 0 = densest).

    ``median_rank_pct``: their median rank as a percent of N (50 = average); ``top_share``: share of them among the
    |P| densest points (chance = |P| / N).
    """
    order = np.argsort(-np.asarray(density), kind="stable")
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return {"median_rank_pct": round(100.0 * float(np.median(rank[truth])) / len(order), 2),
            "top_share": round(float(np.isin(order[:len(truth)], truth).mean()), 4)}
