"""k-nearest-neighbour search and local density (paper Eqs. 4-5), exact (torch) or HNSW (hnswlib).

One search per epoch serves both the density ranking and the label-spreading graph.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

EXACT_MAX_N = 20_000  # "auto" uses HNSW above this size on CPU (measured: as fast at 10k, faster at 50k; docs/detection.md)


def as_tensor(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """float32 torch view of a numpy array or tensor (no copy when already float32)."""
    return torch.as_tensor(x).float() if not isinstance(x, torch.Tensor) else x.detach().float()


@dataclass
class Neighbours:
    """The k nearest other points of every point: ``index`` (N, k) and Euclidean ``distance`` (N, k), ascending."""

    index: np.ndarray
    distance: np.ndarray


def knn_exact(x: torch.Tensor, k: int, chunk: int = 2048) -> Neighbours:
    """Exact search by chunked matmul + top-k: never holds more than ``chunk`` x N distances."""
    sq = (x * x).sum(dim=1)
    index = torch.empty(len(x), k, dtype=torch.long)
    dist = torch.empty(len(x), k)
    for start in range(0, len(x), chunk):
        rows = torch.arange(start, min(start + chunk, len(x)), device=x.device)
        d2 = (sq[rows, None] + sq[None, :] - 2 * x[rows] @ x.T).clamp_min_(0)
        d2[torch.arange(len(rows), device=x.device), rows] = float("inf")  # exclude the point itself
        vals, idx = d2.topk(k, dim=1, largest=False)
        index[rows.cpu()], dist[rows.cpu()] = idx.cpu(), vals.sqrt().cpu()
    return Neighbours(index.numpy(), dist.numpy())


def knn_hnsw(x: np.ndarray, k: int, ef: int = 100, m: int = 16, num_threads: int = -1, build_threads: int = 1,
             random_state: int = 0) -> Neighbours:
    """Approximate search on an HNSW graph (Malkov & Yashunin 2018), the paper's choice; self-matches removed.

    The graph is built with ``build_threads`` (1 by default: hnswlib builds the same graph for the same
    ``random_state`` only single-threaded; with more threads the insertion order, and so the neighbours found,
    varies between runs) and queried with ``num_threads`` (queries are deterministic)."""
    import hnswlib

    n, dim = x.shape
    index = hnswlib.Index(space="l2", dim=dim)
    index.init_index(max_elements=n, ef_construction=max(ef, k + 1), M=m, random_seed=random_state)
    index.add_items(x, np.arange(n), num_threads=build_threads)
    index.set_ef(max(ef, k + 1))
    labels, d2 = index.knn_query(x, k=k + 1, num_threads=num_threads)
    d2 = np.where(labels == np.arange(n)[:, None], np.inf, d2)  # drop the point itself where it was returned
    order = np.argsort(d2, axis=1, kind="stable")[:, :k]
    return Neighbours(np.take_along_axis(labels, order, 1).astype(np.int64),
                      np.sqrt(np.take_along_axis(d2, order, 1)).astype(np.float32))


def knn_search(x: np.ndarray | torch.Tensor, k: int, backend: str = "auto", random_state: int = 0,
               **hnsw_kwargs) -> Neighbours:
    """The k nearest neighbours of every row of X in X \\ {x_i}.

    ``backend``: "exact" (torch, on x's device), "hnsw" (hnswlib, CPU), or "auto" (exact on CUDA or up to
    ``EXACT_MAX_N`` points, HNSW beyond).
    """
    t = as_tensor(x)
    if t.ndim != 2 or not 1 <= k < len(t):
        raise ValueError(f"need an (N, d) array with N > k >= 1; got shape {tuple(t.shape)} and k={k}")
    if backend == "auto":
        backend = "exact" if t.is_cuda or len(t) <= EXACT_MAX_N else "hnsw"
    if backend == "exact":
        return knn_exact(t, k)
    if backend == "hnsw":
        return knn_hnsw(np.ascontiguousarray(t.cpu().numpy()), k, random_state=random_state, **hnsw_kwargs)
    raise ValueError(f"unknown kNN backend '{backend}': use auto, exact or hnsw")


def knn_distance(neighbours: Neighbours) -> np.ndarray:
    """Eq. 4: d_k(x_i) = min{r : |{x_j in X \\ {x_i} : ||x_i - x_j|| <= r}| >= k}, the k-th neighbour's distance."""
    return neighbours.distance[:, -1]


def local_density(d_k: np.ndarray) -> np.ndarray:
    """Eq. 5: rho_i = 1 / d_k(x_i) (infinite for points with k exact duplicates)."""
    with np.errstate(divide="ignore"):
        return 1.0 / d_k


def select_candidates(rho: np.ndarray, count: int) -> np.ndarray:
    """The ``count`` highest-density points (sorted indexes): the poisoned candidates."""
    count = min(max(int(count), 0), len(rho))
    return np.sort(np.argsort(-rho, kind="stable")[:count])
