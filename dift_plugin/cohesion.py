"""Cohesion of the intersected set: is S_t one group in the embedding, or several?

A patch backdoor's poisoned samples share one trigger; in the embedding they form one dense group, every member
among the k nearest neighbours of another. A persistent dense group of benign samples (images alike in content:
sky, water, uniform backgrounds) need not be one group: on the no-poison CPU runs the sets that survive the anchor
filter and the intersection split into several small groups (docs/dift_in_training.md, "One group or several").
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components


def largest_group_share(neighbours: np.ndarray, members: np.ndarray) -> float:
    """The share of S_t (``members``) in its largest group: the largest connected component of the kNN graph
    restricted to S_t (an edge i - j where j is among i's k nearest neighbours, ``neighbours`` (N, k), and both
    lie in S_t; direction ignored). 1.0 for a set that is one group, 0.0 for an empty set."""
    members = np.unique(np.asarray(members, dtype=np.int64))
    if len(members) == 0:
        return 0.0
    position = np.full(len(neighbours), -1, dtype=np.int64)
    position[members] = np.arange(len(members))
    target = position[neighbours[members]]
    source = np.broadcast_to(np.arange(len(members))[:, None], target.shape)
    inside = target >= 0
    graph = sp.csr_matrix((np.ones(int(inside.sum())), (source[inside], target[inside])),
                          shape=(len(members), len(members)))
    _, group = connected_components(graph, directed=True, connection="weak")
    return float(np.bincount(group).max() / len(members))
