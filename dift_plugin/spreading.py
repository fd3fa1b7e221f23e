"""Label spreading (Zhou et al. 2004) on the sparse kNN graph: grows the stable set to the whole poisoned cluster.

Labels as the paper assigns them: the stable set "1" (poisoned), the anchors "-1" (clean), every other sample
"0" (unlabelled — scikit-learn would write -1 for unlabelled). The graph is the RBF-weighted kNN graph,
symmetrised and normalised S = D^-1/2 W D^-1/2; no N x N matrix is ever formed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

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
