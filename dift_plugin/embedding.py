"""What DIFT embeds (:class:`DIFTData`) and how: model-ready batches of training samples, and the whole training
set embedded once per epoch (un-augmented, eval mode, sharded over ranks and gathered)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from dift_plugin.config import DIFTConfigError


@dataclass
class DIFTData:
    """What DIFT embeds: ``dataset[i]`` is training sample i (its image, or a tuple whose first item is the image),
    un-augmented; ``prepare`` turns a batch on the model's device into model input (e.g. uint8 -> normalised).
    ``anchor_*``: the trusted clean samples (positions and labels). ``poisoned_indexes``: ground truth, only for
    logging precision/recall in experiments — never used to decide anything."""

    dataset: Dataset
    anchor_indexes: np.ndarray
    anchor_labels: np.ndarray
    prepare: Callable[[torch.Tensor], torch.Tensor] | None = None
    poisoned_indexes: np.ndarray | None = None
    collate_fn: Callable | None = None
    num_workers: int = 0

    def __post_init__(self) -> None:
        n, anchors = len(self.dataset), np.asarray(self.anchor_indexes)
        if len(anchors) == 0 or anchors.min() < 0 or anchors.max() >= n:
            raise DIFTConfigError(f"DIFT anchors must be positions in [0, {n}) of the training set")

    def batches(self, indexes: np.ndarray, batch_size: int, device: torch.device,
                shuffle: torch.Generator | None = None) -> Iterator[torch.Tensor]:
        """Model-ready batches of the given training samples on ``device``; shuffled by ``shuffle`` if given."""
        loader = DataLoader(Subset(self.dataset, indexes.tolist()), batch_size=batch_size, shuffle=shuffle is not None,
                            generator=shuffle, num_workers=self.num_workers, collate_fn=self.collate_fn)
        for batch in loader:
            images = batch if isinstance(batch, torch.Tensor) else batch[0]
            images = images.to(device, non_blocking=True)
            yield self.prepare(images) if self.prepare is not None else images


@torch.no_grad()
def embed_training_set(features: Callable[[torch.Tensor], torch.Tensor], data: DIFTData, batch_size: int,
                       device: torch.device, world: int = 1, rank: int = 0,
                       all_gather: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """(N, d) embeddings ``features(x)`` of the whole training set on CPU, identical on every rank: each rank embeds
    every world-th sample and the shards are all-gathered (``all_gather``: (per_rank, d) -> (world, per_rank, d)).
    Images go in channels-last: the same numbers, faster convolutions. The caller sets eval mode."""
    n = len(data.dataset)
    mine = np.arange(rank, n, world)
    x = torch.cat([features(b.contiguous(memory_format=torch.channels_last) if b.ndim == 4 else b).float()
                   for b in data.batches(mine, batch_size, device)])
    if world == 1:
        return x.cpu()
    per_rank = -(-n // world)
    padded = torch.cat([x, x[-1:].expand(per_rank - len(x), -1)]) if len(x) < per_rank else x
    gathered = all_gather(padded)
    out = torch.empty(n, x.shape[1], dtype=x.dtype)
    for r in range(world):
        idx = np.arange(r, n, world)
        out[idx] = gathered[r, : len(idx)].cpu()
    return out
