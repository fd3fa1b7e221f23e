"""What DIFT records: one row per detection epoch (the paper's Figure 3, before label spreading) and the run's
summary, scored against the known poisoned samples where an experiment has them (a defense never sees them)."""

from __future__ import annotations

from typing import Any

import numpy as np

from dift_plugin.detector import DIFTDetector
from dift_plugin.scores import density_rank_stats, detection_scores
from dift_plugin.state import DIFTState


def scored(stage: str, found: np.ndarray, truth: np.ndarray | None, n: int) -> dict[str, Any]:
    """``{stage}_precision``, ``_recall``, ``_fpr`` of ``found`` among ``n`` samples (nothing without a truth)."""
    if truth is None or not len(truth):
        return {}
    return {f"{stage}_{k}": v for k, v in detection_scores(found, truth, n).items()}


def epoch_row(det: DIFTDetector, epoch: int, truth: np.ndarray | None, n: int) -> dict[str, Any]:
    """The detector's epoch: set sizes, the filter's reason, stage times, and scores of the kept and stable sets."""
    row: dict[str, Any] = {"epoch": epoch, "candidates": len(det.candidates_), "kept": len(det.kept_),
                           "stable": len(det.stable_set_), "recent_stable": len(det.recent_set_),
                           "cohesion": round(det.cohesion_, 3), "is_stable": int(det.is_stable_),
                           "filter": det.filter_reason_,
                           **{f"time_{k}": v for k, v in det.timings_.items()}}
    row.update(scored("kept", det.kept_, truth, n))
    row.update(scored("stable", det.stable_set_, truth, n))
    if truth is not None and len(truth):
        row.update({f"poisoned_{k}": v for k, v in density_rank_stats(det.density_, truth).items()})
    return row


def summary(state: DIFTState, truth: np.ndarray | None, n: int) -> dict[str, Any]:
    """For results files: phase, detected count, decision epoch, time per phase, fine-tuning, history, scores."""
    out: dict[str, Any] = {"phase": state.phase, "decided_epoch": state.decided_epoch,
                           "detected": len(state.detected), "time_s": dict(state.timings),
                           "finetune": state.finetune, "history": state.history}
    if truth is not None and len(truth):
        out.update(detection_scores(np.asarray(state.detected, dtype=np.int64), truth, n))
    return out
