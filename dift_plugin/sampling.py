"""Training on the filtered data: a sampler wrapper that never yields the detected indexes."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DistributedSampler, Sampler


class ExcludingSampler(Sampler[int]):
    """Yields what ``inner`` would, minus ``excluded`` (training-set positions).

    A :class:`DistributedSampler` is re-sharded over the kept positions (same seed/epoch/shuffle rules), so every
    rank still gets the same number of samples; any other sampler is filtered as it iterates. Batches stay full
    (with ``drop_last``), which keeps MoCo's ``queue_size % batch_size == 0`` satisfied."""

    def __init__(self, inner: Sampler[int], excluded: np.ndarray, n_samples: int) -> None:
        self.inner = inner
        self.excluded = np.unique(np.asarray(excluded, dtype=np.int64))
        self.kept = np.setdiff1d(np.arange(n_samples), self.excluded)
        self._excluded_set = set(self.excluded.tolist())

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.inner, "set_epoch"):
            self.inner.set_epoch(epoch)

    def _per_rank(self) -> int:
        s: DistributedSampler = self.inner  # type: ignore[assignment]
        return len(self.kept) // s.num_replicas if s.drop_last else math.ceil(len(self.kept) / s.num_replicas)

    def _shard(self) -> np.ndarray:
        s: DistributedSampler = self.inner  # type: ignore[assignment]
        order = self.kept
        if s.shuffle:
            g = torch.Generator().manual_seed(s.seed + s.epoch)
            order = order[torch.randperm(len(order), generator=g).numpy()]
        total = self._per_rank() * s.num_replicas
        if total > len(order):  # pad by repeating, as DistributedSampler does
            order = np.concatenate([order, order[: total - len(order)]])
        return order[:total][s.rank:total:s.num_replicas]

    def __iter__(self) -> Iterator[int]:
        if isinstance(self.inner, DistributedSampler):
            yield from (int(i) for i in self._shard())
        else:
            yield from (int(i) for i in self.inner if int(i) not in self._excluded_set)

    def __len__(self) -> int:
        if isinstance(self.inner, DistributedSampler):
            return self._per_rank()
        return max(0, len(self.inner) - len(self.excluded))  # type: ignore[arg-type]
