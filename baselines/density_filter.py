"""Density-clustering filters (Li et al., USENIX Security 2024, B1's detection): DBSCAN or OPTICS on the trained
encoder's embeddings; the samples of the largest dense cluster are flagged as poisoned.

Li et al. do not publish code or, in what we could read, their parameters; ours are label-free rules (docs/baselines.md):
``min_samples`` = 10 (DIFT's k); ``eps`` = the ``eps_quantile`` quantile of the distances to the
``min_samples``-th neighbour (0.05: the same 5 % densest share DIFT takes as candidates). The knee of the sorted
k-distance curve, the textbook rule, put eps above the median k-distance on our runs and DBSCAN found one cluster
holding 99.7 % of the samples. Flagged: the largest cluster found at that density, if it holds more than
``dominance`` (half) of all clustered samples — poisoned samples, near copies of each other under one trigger,
form one dominant dense region, where a clean training set's dense points spread over several (a share of 39 %
on our clean SimCLR run against 71–80 % with the poison); otherwise nothing. Neighbourhoods are a sparse radius graph
(scikit-learn's ``radius_neighbors_graph``), never a dense N x N matrix; OPTICS is bounded by ``max_eps`` = eps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.cluster import DBSCAN, OPTICS
from sklearn.neighbors import NearestNeighbors

ALGORITHMS = ("dbscan", "optics")
MAX_MEAN_NEIGHBOURS = 2000  # radius-graph edges per sample beyond which eps is too large to hold the graph


@dataclass
class DensityFilterResult:
    flagged: np.ndarray  # sample positions, sorted
    labels: np.ndarray  # cluster of every sample (-1: noise)
    eps: float
    reason: str


def k_distance(x: np.ndarray, k: int) -> np.ndarray:
    """Distance from every sample to its k-th nearest other sample."""
    distances, _ = NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x)
    return distances[:, k]


def dominant_cluster(labels: np.ndarray, dominance: float = 0.5) -> tuple[np.ndarray, str]:
    """The members of the largest cluster if it holds more than ``dominance`` of the clustered samples (noise,
    -1, is no cluster), else none; and a sentence saying what was found."""
    ids, counts = np.unique(labels[labels >= 0], return_counts=True)
    if len(ids) == 0:
        return np.zeros(0, dtype=np.int64), "no cluster found: nothing flagged"
    sizes = sorted(counts.tolist(), reverse=True)
    share = sizes[0] / counts.sum()
    found = f"{len(ids)} cluster(s) of sizes {sizes[:5]}{' ...' if len(sizes) > 5 else ''}"
    if share <= dominance:
        return np.zeros(0, dtype=np.int64), f"{found}: none dominant ({share:.0%} <= {dominance:.0%}), nothing flagged"
    return np.flatnonzero(labels == ids[np.argmax(counts)]), f"{found}: the largest ({share:.0%}) flagged"


def density_filter(x: np.ndarray, algorithm: str = "dbscan", min_samples: int = 10, eps_quantile: float = 0.05,
                   dominance: float = 0.5, xi: float = 0.05) -> DensityFilterResult:
    """Flag the dominant dense cluster of the embeddings ``x`` (N, d) found by DBSCAN or OPTICS (``xi`` method,
    bounded by ``max_eps`` = eps)."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {', '.join(ALGORITHMS)}, got {algorithm!r}")
    if not 0 < eps_quantile < 1:
        raise ValueError(f"eps_quantile must be in (0, 1), got {eps_quantile}")
    x = np.asarray(x, dtype=np.float32)
    if len(x) <= min_samples:
        raise ValueError(f"{len(x)} samples: need more than min_samples={min_samples}")
    eps = float(np.quantile(k_distance(x, min_samples), eps_quantile))
    if algorithm == "dbscan":
        graph = NearestNeighbors(radius=eps).fit(x).radius_neighbors_graph(x, mode="distance")
        if graph.nnz > MAX_MEAN_NEIGHBOURS * len(x):
            raise ValueError(f"eps={eps:.3g} gives {graph.nnz / len(x):.0f} neighbours per sample: lower eps_quantile")
        labels = DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed").fit_predict(graph)
    else:
        labels = OPTICS(min_samples=min_samples, max_eps=eps, xi=xi).fit(x).labels_
    flagged, reason = dominant_cluster(labels, dominance)
    return DensityFilterResult(flagged, labels, eps, f"{algorithm} (eps {eps:.3g}): {reason}")
