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
