"""Local density of embeddings by k-nearest-neighbour distance (paper Eqs. 4-5), exact (torch) or HNSW (hnswlib)."""

from __future__ import annotations

import numpy as np
import torch

EXACT_MAX_N = 200_000  # "auto" switches to HNSW above this size on CPU


def as_tensor(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """float32 torch view of a numpy array or tensor (no copy when already float32)."""
    return torch.as_tensor(x).float() if not isinstance(x, torch.Tensor) else x.detach().float()


def knn_distance_exact(x: torch.Tensor, k: int, chunk: int = 2048) -> torch.Tensor:
    """d_k(x_i) by chunked matmul + top-k: never holds more than ``chunk`` x N distances."""
    sq = (x * x).sum(dim=1)
    out = torch.empty(len(x), dtype=x.dtype, device=x.device)
    for start in range(0, len(x), chunk):
        block = x[start:start + chunk]
        d2 = (sq[start:start + chunk, None] + sq[None, :] - 2 * block @ x.T).clamp_min_(0)
        # The k+1 smallest include the point itself (distance 0): the (k+1)-th is the k-th neighbour's.
        out[start:start + chunk] = d2.topk(k + 1, dim=1, largest=False).values[:, k]
    return out.sqrt()


def knn_distance_hnsw(x: np.ndarray, k: int, ef: int = 100, m: int = 16, num_threads: int = -1,
                      random_state: int = 0) -> np.ndarray:
    """d_k(x_i) from an HNSW graph (Malkov & Yashunin 2018); approximate, self-matches removed by label."""
    import hnswlib

    n, dim = x.shape
    index = hnswlib.Index(space="l2", dim=dim)
    index.init_index(max_elements=n, ef_construction=max(ef, k + 1), M=m, random_seed=random_state)
    index.add_items(x, np.arange(n), num_threads=num_threads)
    index.set_ef(max(ef, k + 1))
    labels, d2 = index.knn_query(x, k=k + 1, num_threads=num_threads)
    d2 = np.where(labels == np.arange(n)[:, None], np.inf, d2)  # drop the point itself where it was returned
    return np.sqrt(np.sort(d2, axis=1)[:, k - 1])


def knn_distance(x: np.ndarray | torch.Tensor, k: int, backend: str = "auto", **hnsw_kwargs) -> np.ndarray:
    """Eq. 4: d_k(x_i) = min{r : |{x_j in X \\ {x_i} : ||x_i - x_j|| <= r}| >= k}, for every row x_i of X.

    ``backend``: "exact" (torch, on x's device), "hnsw" (hnswlib, CPU), or "auto" (exact on CUDA or up to
    ``EXACT_MAX_N`` points, HNSW beyond).
    """
    t = as_tensor(x)
    if t.ndim != 2 or not 1 <= k < len(t):
        raise ValueError(f"need an (N, d) array with N > k >= 1; got shape {tuple(t.shape)} and k={k}")
    if backend == "auto":
        backend = "exact" if t.is_cuda or len(t) <= EXACT_MAX_N else "hnsw"
    if backend == "exact":
        return knn_distance_exact(t, k).cpu().numpy()
    if backend == "hnsw":
        return knn_distance_hnsw(np.ascontiguousarray(t.cpu().numpy()), k, **hnsw_kwargs)
    raise ValueError(f"unknown kNN backend '{backend}': use auto, exact or hnsw")


def local_density(d_k: np.ndarray) -> np.ndarray:
    """Eq. 5: rho_i = 1 / d_k(x_i) (infinite for points with k exact duplicates)."""
    with np.errstate(divide="ignore"):
        return 1.0 / d_k
