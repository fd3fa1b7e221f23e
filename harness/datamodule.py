"""Lightning data module: in-memory training set, seeded per-epoch shuffling, on-device two-view augmentation.

Batches reach ``training_step`` in solo-learn's format ``(indexes, [view1, view2], targets)``.
"""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader, DistributedSampler

from dift_plugin.images import ImageSet
from dift_plugin.sampling import ExcludingSampler
from harness.augment import Normalize, TwoViews, batch_seed, build_view_augmentation
from harness.data import IndexedDataset, keep_batch


class ContrastiveDataModule(pl.LightningDataModule):
    """Serves ``train`` (an :class:`ImageSet`) for SSL pretraining; labels ride along but are not used for training."""

    def __init__(self, train: ImageSet, data_cfg: DictConfig, augment_cfg: DictConfig, batch_size: int, seed: int,
                 data_on_device: bool = False, channels_last: bool = False, exclude: np.ndarray | None = None) -> None:
        super().__init__()
        self.train = train
        self.exclude = np.zeros(0, dtype=np.int64) if exclude is None else np.asarray(exclude, dtype=np.int64)
        self.data_on_device = data_on_device
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.batch_size = batch_size
        self.seed = seed
        self.normalize = Normalize(list(data_cfg.mean), list(data_cfg.std))
        self.views = TwoViews(build_view_augmentation(augment_cfg, int(data_cfg.image_size)), self.normalize)
        self._epoch = -1
        self._batch = 0

    def setup(self, stage: str) -> None:
        if self.data_on_device and self.trainer is not None:
            self.train.images = self.train.images.to(self.trainer.strategy.root_device)

    def train_dataloader(self) -> DataLoader:
        world, rank = (self.trainer.world_size, self.trainer.global_rank) if self.trainer else (1, 0)
        dataset = IndexedDataset(self.train)
        if len(dataset) - len(self.exclude) < self.batch_size * world:
            raise ValueError(
                f"the training set has {len(dataset) - len(self.exclude)} samples to train on, fewer than one batch "
                f"({self.batch_size} x {world} devices): lower optimizer.batch_size or use more data"
            )
        # The sampler's permutation depends only on (seed, epoch): a resumed run shuffles like an uninterrupted one.
        sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=self.seed)
        if len(self.exclude):  # positions stay those of the whole set (the monitor, DIFT and the CSVs use them)
            sampler = ExcludingSampler(sampler, self.exclude, len(dataset))
        return DataLoader(dataset, batch_size=self.batch_size, sampler=sampler, drop_last=True, num_workers=0,
                          collate_fn=keep_batch)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):  # noqa: ANN001, ANN201 (Lightning hook)
        if self.trainer is None or not self.trainer.training:
            return batch
        indexes, images, targets = batch
        epoch = self.trainer.current_epoch
        if epoch != self._epoch:
            self._epoch, self._batch = epoch, 0
        seed = batch_seed(self.seed, epoch, self._batch, self.trainer.global_rank)
        self._batch += 1
        views = [v.contiguous(memory_format=self.memory_format) for v in self.views.to(images.device)(images, seed)]
        return indexes, views, targets
