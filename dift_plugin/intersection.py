"""Intersection across epochs: the kept set is intersected with the previous one until it stabilises.

Two readings of the paper's "each new result is intersected with the previous one": ``cumulative``
(S_t = S_{t-1} ∩ K_t, the running intersection of every kept set) and ``consecutive`` (S_t = K_{t-1} ∩ K_t, this
epoch's kept set with the last one). They agree while every kept set holds the whole persistent poisoned group
(the candidates outnumber the poison); when the poison outnumbers the candidates each epoch keeps another part
of it, and the running intersection of those parts shrinks to nothing (docs/dift_in_training.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def intersect(previous: np.ndarray | None, kept: np.ndarray) -> np.ndarray:
    """S_t = S_{t-1} ∩ K_t (sorted); the first epoch, or an empty S_{t-1}, starts from K_t."""
    kept = np.unique(np.asarray(kept, dtype=np.int64))
    if previous is None or len(previous) == 0:
        return kept
    return np.intersect1d(previous, kept)


@dataclass
class StabilityTracker:
    """Stable once the set has settled for ``patience`` consecutive epochs, with at least ``min_size`` samples.

    An epoch settles the set when |S_t| changed by at most ``tolerance`` (relative; 0 = unchanged) and, under the
    ``members`` rule, S_t also holds at least (1 - ``tolerance``) of S_{t-1}'s samples: the same group, not another
    one of about the same size (``size``: the size alone, the rule until 2026-12-04). Under ``group`` at least
    (1 - ``tolerance``) of S_t lies in S_{t-1}'s neighbourhood (``shared`` counts S_t's members that are in S_{t-1}
    or among its members' k nearest neighbours): the same group, whose members may change from epoch to epoch.
    Under the cumulative intersection S_t is a subset of S_{t-1}, so the rules agree there."""

    patience: int = 2
    tolerance: float = 0.0
    min_size: int = 1
    rule: str = "members"
    streak: int = 0
    sizes: list[int] = field(default_factory=list)

    def update(self, size: int, shared: int) -> bool:
        """One epoch's |S_t| and |S_t ∩ S_{t-1}| (``group``: S_t's members in S_{t-1}'s neighbourhood); returns
        whether the set is now stable."""
        if self.sizes:
            prev = self.sizes[-1]
            change = abs(size - prev) / max(prev, 1)
            of = size if self.rule == "group" else prev  # group: a share of S_t; members: of S_{t-1}
            same_group = self.rule == "size" or shared >= (1 - self.tolerance) * of
            self.streak = self.streak + 1 if change <= self.tolerance and same_group and size >= self.min_size else 0
        self.sizes.append(int(size))
        return self.is_stable

    @property
    def is_stable(self) -> bool:
        return self.streak >= self.patience
