"""A callback that records what training sees, for the DIFT-in-training tests (own methods and solo-learn-shaped)."""

from __future__ import annotations

import lightning.pytorch as pl
import torch


class Recorder(pl.Callback):
    """Per epoch: the sample indexes and batch sizes drawn, the number of crops per batch (solo-learn's
    ``[indexes, [crops], targets]``; None for a batch of images), the LR at each step and, at the epoch's start,
    the LR, MoCo's queue and pointer and whether the momentum backbone equals the online one (when the method
    has them)."""

    def __init__(self) -> None:
        self.indexes: dict[int, list[int]] = {}
        self.sizes: dict[int, list[int]] = {}
        self.crops: dict[int, list[int | None]] = {}
        self.lrs: dict[int, list[float]] = {}
        self.epoch_start: dict[int, dict] = {}
        self.schedulers: dict[int, int] = {}  # id of the LR scheduler object at each epoch's start

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        start = {"lr": trainer.optimizers[0].param_groups[0]["lr"]}
        if trainer.lr_scheduler_configs:
            self.schedulers[trainer.current_epoch] = id(trainer.lr_scheduler_configs[0].scheduler)
        if hasattr(pl_module, "momentum_backbone"):
            start["synced"] = all(torch.equal(a, b) for a, b in zip(pl_module.backbone.state_dict().values(),
                                                                   pl_module.momentum_backbone.state_dict().values()))
        if hasattr(pl_module, "queue_ptr"):
            start.update(queue_ptr=int(pl_module.queue_ptr), queue=pl_module.queue.clone())
        self.epoch_start[trainer.current_epoch] = start

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx: int) -> None:
        e = trainer.current_epoch
        self.indexes.setdefault(e, []).extend(batch[0].tolist())
        self.sizes.setdefault(e, []).append(len(batch[0]))
        self.crops.setdefault(e, []).append(len(batch[1]) if isinstance(batch[1], list) else None)
        self.lrs.setdefault(e, []).append(trainer.optimizers[0].param_groups[0]["lr"])
