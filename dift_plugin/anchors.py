"""Anchor filtering (paper Eq. 6): drop dense candidates that lie close to some class's clean anchors."""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.mixture import GaussianMixture

from dift_plugin.config import DetectorConfig
from dift_plugin.density import as_tensor

log = logging.getLogger(__name__)


def draw_anchors(labels: np.ndarray, per_class: int = 10, pool: np.ndarray | None = None,
                 random_state: int | None = 0) -> tuple[np.ndarray, np.ndarray]:
    """(indexes, labels) of ``per_class`` samples per class, drawn (seeded) from ``pool``, the positions the user
    trusts to be clean (default: all). These are the defender's only labelled data."""
    labels = np.asarray(labels)
    pool = np.arange(len(labels)) if pool is None else np.asarray(pool)
    rng = np.random.default_rng(random_state)
    chosen = []
    for c in np.unique(labels[pool]):
        members = pool[labels[pool] == c]
        if len(members) < per_class:
            raise ValueError(f"class {c} has only {len(members)} trusted samples, fewer than {per_class} anchors")
        chosen.append(rng.choice(members, size=per_class, replace=False))
    index = np.sort(np.concatenate(chosen))
    return index, labels[index]


def read_anchors(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(indexes, labels) from a CSV with a header and columns ``index,label``: the trusted clean samples."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"anchors file {path} not found (CSV with columns index,label)")
    with path.open() as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"index", "label"} <= set(rows[0]):
        raise ValueError(f"{path} must be a CSV with a header and columns index,label")
    return np.array([int(r["index"]) for r in rows]), np.array([int(r["label"]) for r in rows])


def min_dist(x: np.ndarray | torch.Tensor, anchors: np.ndarray | torch.Tensor, anchor_labels: np.ndarray,
             chunk: int = 8192) -> np.ndarray:
    """Eq. 6: MinDist(x) = min over classes i of (1/n) sum_j ||x - a_{i,j}||, for every row x of ``x``."""
    x, a = as_tensor(x), as_tensor(anchors).to(as_tensor(x).device)
    classes = np.unique(anchor_labels)
    onehot = torch.zeros(len(a), len(classes), dtype=x.dtype, device=x.device)
    onehot[torch.arange(len(a)), torch.as_tensor(np.searchsorted(classes, anchor_labels))] = 1
    mean_per_class = onehot / onehot.sum(dim=0, keepdim=True)
    out = [(torch.cdist(x[s:s + chunk], a) @ mean_per_class).min(dim=1).values for s in range(0, len(x), chunk)]
    return torch.cat(out).cpu().numpy()


@dataclass
class AnchorFilterResult:
    kept: np.ndarray  # positions (into the candidate array) judged far from every class's anchors
    reason: str


def filter_by_anchors(candidate_min_dist: np.ndarray, population_min_dist: float, min_separation: float = 2.0,
                      random_state: int | None = 0, rule: str = DetectorConfig.anchor_rule) -> AnchorFilterResult:
    """Keep the candidates on the far side of a 2-component GMM fitted to their MinDist — beyond the point between
    the two means where the far component (the larger mean) becomes the more probable: benign dense points sit
    near some class's anchors, poisoned ones do not (the paper's Sec. "Anchor filtering"; ``rule="paper"``, the
    default).

    ``rule="gated"`` (ours until 2026-12-03, see docs/dift_in_training.md) keeps the far side only behind two
    gates: the far component must lie beyond ``population_min_dist`` (the median MinDist of all samples), and the
    two components must be separated (Ashman's D = |mu1 - mu2| sqrt(2 / (s1^2 + s2^2)) at least
    ``min_separation``); otherwise the candidates count as one mode, all kept if their median MinDist exceeds
    ``population_min_dist``, none otherwise.

    Under either rule fewer than 2 candidates, or candidates without spread, are one mode too. Each outcome is
    logged with its reason.
    """
    d = np.asarray(candidate_min_dist, dtype=np.float64)
    if len(d) >= 2 and np.ptp(d) > 0:
        gmm = GaussianMixture(2, random_state=random_state).fit(d[:, None])
        mu, var = gmm.means_.ravel(), gmm.covariances_.ravel()
        separation = abs(mu[0] - mu[1]) * np.sqrt(2 / (var[0] + var[1]))
        far = int(np.argmax(mu))
        if rule == "paper" or (separation >= min_separation and mu[far] > population_min_dist):
            boundary = _boundary_between_means(gmm, far)
            kept = np.flatnonzero(d >= boundary)
            return _result(kept, f"GMM{' (paper rule)' if rule == 'paper' else ''}: {len(kept)} of {len(d)} "
                                 f"candidates far from the anchors (MinDist >= "
                                 f"{boundary:.3g}; means {mu[far]:.3g} vs {mu[1 - far]:.3g}, separation "
                                 f"D={separation:.2f})")
        if separation >= min_separation:  # two modes, but even the far one is nearer than a typical sample
            return _result(np.zeros(0, dtype=np.int64),
                           f"no far mode: both GMM means ({mu[far]:.3g}, {mu[1 - far]:.3g}) at or below the "
                           f"population's median MinDist {population_min_dist:.3g}")
        why = f"one mode (separation D={separation:.2f} < {min_separation})"
    else:
        why = f"{len(d)} candidate(s) without spread"
    keep_all = len(d) > 0 and float(np.median(d)) > population_min_dist
    kept = np.arange(len(d)) if keep_all else np.zeros(0, dtype=np.int64)
    return _result(kept, f"{why}: median MinDist {np.median(d) if len(d) else float('nan'):.3g} "
                         f"{'above' if keep_all else 'not above'} the population's {population_min_dist:.3g}, "
                         f"{'all' if keep_all else 'none'} kept")


def _boundary_between_means(gmm: GaussianMixture, far: int, resolution: int = 1001) -> float:
    """The MinDist between the two component means where the far component becomes the more probable one.

    Only this crossing separates "near" from "far": with unequal variances the broader component also wins a
    tail on the other side (the broad far mode would claim candidates nearer the anchors than the near mode's
    mean; a broad near mode, the farthest candidates), so ``gmm.predict`` alone is not the membership rule."""
    lo, hi = sorted(gmm.means_.ravel())
    grid = np.linspace(lo, hi, resolution)
    far_wins = gmm.predict_proba(grid[:, None])[:, far] >= 0.5
    return float(grid[np.argmax(far_wins)]) if far_wins.any() else float(hi)


def _result(kept: np.ndarray, reason: str) -> AnchorFilterResult:
    log.info("anchor filter: %s", reason)
    return AnchorFilterResult(kept, reason)
