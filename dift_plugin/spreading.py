"""Label spreading (Zhou et al. 2004): grows the stable set to the whole poisoned cluster.

Labels as the paper assigns them: the stable set "1" (poisoned), the anchors "-1" (clean), every other sample
"0" (unlabelled — scikit-learn would write -1 for unlabelled).

Two settings. Ours (default): the RBF-weighted kNN graph, symmetrised and normalised S = D^-1/2 W D^-1/2 (no
N x N matrix is ever formed), and a sample is detected when its class-mass-normalised poisoned probability
exceeds a threshold at a self-consistent class prior (``self_consistent_prior``). The paper's (Figure 5 caption:
scikit-learn's defaults, RBF kernel): dense RBF with gamma 20, alpha 0.2, argmax (``sklearn_spreading``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from sklearn.semi_supervised import LabelSpreading

from dift_plugin.density import Neighbours


def rbf_knn_graph(neighbours: Neighbours, gamma: float | None = None) -> sp.csr_matrix:
    """W_ij = exp(-gamma ||x_i - x_j||^2) for j among i's k nearest neighbours, symmetrised by max(W, W^T).

    ``gamma`` defaults to 1 / median(squared neighbour distance), which makes the weights scale-free.
    """
    n, k = neighbours.index.shape
    d2 = neighbours.distance.astype(np.float64) ** 2
    if gamma is None:
        med = float(np.median(d2))
        gamma = 1.0 / med if med > 0 else 1.0
    w = sp.csr_matrix((np.exp(-gamma * d2).ravel(), neighbours.index.ravel(), np.arange(0, n * k + 1, k)),
                      shape=(n, n))
    return w.maximum(w.T).tocsr()


def normalized_graph(w: sp.csr_matrix) -> sp.csr_matrix:
    """S = D^-1/2 W D^-1/2 with the diagonal of W set to zero (Zhou et al. 2004)."""
    w = w.tolil()
    w.setdiag(0)
    w = w.tocsr()
    deg = np.asarray(w.sum(axis=1)).ravel()
    inv = np.zeros_like(deg)
    inv[deg > 0] = deg[deg > 0] ** -0.5
    d = sp.diags(inv)
    return (d @ w @ d).tocsr()


@dataclass
class SpreadResult:
    scores: np.ndarray  # (N, 2) label distributions F: column 0 clean, column 1 poisoned
    iterations: int


def spread(s: sp.csr_matrix, poisoned: np.ndarray, clean: np.ndarray, alpha: float = 0.2, max_iter: int = 30,
           tol: float = 1e-3) -> SpreadResult:
    """Iterate F <- alpha S F + (1 - alpha) Y (scikit-learn's LabelSpreading update) until F moves < ``tol``."""
    n = s.shape[0]
    y = np.zeros((n, 2))
    y[clean, 0] = 1.0
    y[poisoned, 1] = 1.0
    f = y.copy()
    for it in range(1, max_iter + 1):
        new = alpha * (s @ f) + (1 - alpha) * y
        moved = np.abs(new - f).sum()
        f = new
        if moved < tol:
            break
    return SpreadResult(f, it)


def mass_normalized(scores: np.ndarray, prior_poisoned: float) -> np.ndarray:
    """Class-mass normalisation (Zhu, Ghahramani & Lafferty 2003): rescale each column of F to the class prior,
    so that a class labelled with many seeds does not flood the other; returns the poisoned probability."""
    mass = scores.sum(axis=0)
    mass[mass == 0] = 1.0
    q = np.array([1.0 - prior_poisoned, prior_poisoned])
    f = scores * (q / mass)
    total = f.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, f[:, 1] / total, 0.0)


def self_consistent_prior(scores: np.ndarray, seeds: np.ndarray, exclude: np.ndarray, threshold: float,
                          max_rounds: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """The detected set D = S ∪ {i : P(poisoned | F, q) > threshold} \\ anchors at the poisoned prior q = |D| / N
    that it implies itself.

    Class-mass normalisation needs the poisoned share q, which is what detection is after: starting from the seeds'
    share |S| / N (which would cap recall near the seed), q is raised to the share of the set it detects until the
    set stops growing (it only grows, so this ends). Returns (detected indexes, poisoned probability at the final
    q). A small seed in a large poisoned cluster grows to the cluster; a seed of benign points in no cluster stays
    about its own size, because the scores of points outside it stay below the threshold at any nearby q."""
    n = len(scores)
    size = len(seeds)
    for _ in range(max_rounds):
        score = mass_normalized(scores, size / n)
        detected = np.setdiff1d(np.union1d(seeds, np.flatnonzero(score > threshold)), exclude)
        if len(detected) == size:
            break
        size = len(detected)
    return detected, score


SKLEARN_MAX_SAMPLES = 20_000  # a dense N x N float64 kernel (and scikit-learn's copies of it) beyond this is > 9 GB


def check_dense_size(n: int) -> None:
    """Refuse the paper's dense setting for ``n`` samples above ``SKLEARN_MAX_SAMPLES`` (ValueError)."""
    if n > SKLEARN_MAX_SAMPLES:
        raise ValueError(f"spreading=sklearn holds a dense {n} x {n} kernel: it is limited to {SKLEARN_MAX_SAMPLES} "
                         "samples: use spreading='graph' (the sparse kNN graph)")


def sklearn_spreading(x: np.ndarray, poisoned: np.ndarray, clean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The paper's setting: scikit-learn's ``LabelSpreading`` with its defaults (RBF kernel, gamma 20, alpha 0.2,
    30 iterations) on the embeddings X (N, d), labelled 1 (poisoned) and 0 (anchors); detected = argmax.
    Returns (detected indexes, poisoned probability). Dense: refuses more than ``SKLEARN_MAX_SAMPLES`` samples."""
    n = len(x)
    check_dense_size(n)
    labels = np.full(n, -1)
    labels[clean] = 0
    labels[poisoned] = 1
    model = LabelSpreading(kernel="rbf").fit(np.asarray(x, dtype=np.float64), labels)
    return np.flatnonzero(model.transduction_ == 1), model.label_distributions_[:, 1]
