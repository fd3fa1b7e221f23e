"""Method classes shaped like solo-learn 1.0.6's (without solo-learn): a ``METHODS`` registry, ``BaseMethod(cfg)``
with the static ``add_and_assert_specific_cfg`` chained through ``super(Cls, Cls)``, ``training_step`` on
``[indexes, [crops], targets]`` returning a scalar loss, ``momentum_pairs`` with EMA in ``on_train_batch_end``
(``on_train_start`` not calling super, as solo-learn's), a per-step scheduler, BYOL's ``predictor`` and MoCo's
``queue``/``queue_ptr`` buffers of shape (2, dim, size) with solo-learn's divisibility assert."""

from __future__ import annotations

import copy

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn


def _mlp(i: int, h: int, o: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(i, h), nn.BatchNorm1d(h), nn.ReLU(), nn.Linear(h, o))


class BaseMethod(pl.LightningModule):
    def __init__(self, cfg: DictConfig) -> None:
        super().__init__()
        self.cfg = self.add_and_assert_specific_cfg(cfg)
        self.backbone = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2), nn.BatchNorm2d(16), nn.ReLU(),
                                      nn.Conv2d(16, 32, 3, stride=2), nn.BatchNorm2d(32), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.projector = _mlp(32, 64, 32)

    @staticmethod
    def add_and_assert_specific_cfg(cfg: DictConfig) -> DictConfig:
        assert cfg.optimizer.lr > 0
        return cfg

    def configure_optimizers(self):  # noqa: ANN201
        opt = torch.optim.SGD(self.parameters(), lr=self.cfg.optimizer.lr, momentum=0.9)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=int(self.trainer.estimated_stepping_batches))
        return [opt], [{"scheduler": sched, "interval": "step", "frequency": 1}]


class BaseMomentumMethod(BaseMethod):
    def __init__(self, cfg: DictConfig) -> None:
        super().__init__(cfg)
        self.momentum_backbone = copy.deepcopy(self.backbone).requires_grad_(False)
        self.momentum_projector = copy.deepcopy(self.projector).requires_grad_(False)

    @property
    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.backbone, self.momentum_backbone), (self.projector, self.momentum_projector)]

    def on_train_start(self) -> None:  # solo-learn's does not call super either
        self.last_step = 0

    @torch.no_grad()
    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:  # noqa: ANN001
        if self.trainer.global_step > self.last_step:
            for online, target in self.momentum_pairs:
                for po, pt in zip(online.parameters(), target.parameters()):
                    pt.mul_(0.99).add_(po.detach(), alpha=0.01)
        self.last_step = self.trainer.global_step


class BYOL(BaseMomentumMethod):
    def __init__(self, cfg: DictConfig) -> None:
        super().__init__(cfg)
        self.predictor = _mlp(32, 64, 32)

    @staticmethod
    def add_and_assert_specific_cfg(cfg: DictConfig) -> DictConfig:
        return super(BYOL, BYOL).add_and_assert_specific_cfg(cfg)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:  # noqa: ANN001
        _, crops, _ = batch
        p = [F.normalize(self.predictor(self.projector(self.backbone(x))), dim=1) for x in crops]
        with torch.no_grad():
            z = [F.normalize(self.momentum_projector(self.momentum_backbone(x)), dim=1) for x in crops]
        return 2 - (p[0] * z[1]).sum(1).mean() - (p[1] * z[0]).sum(1).mean()


class MoCoV2Plus(BaseMomentumMethod):
    def __init__(self, cfg: DictConfig) -> None:
        super().__init__(cfg)
        self.queue_size = int(cfg.method_kwargs.queue_size)
        self.register_buffer("queue", F.normalize(torch.randn(2, 32, self.queue_size), dim=1))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))

    @staticmethod
    def add_and_assert_specific_cfg(cfg: DictConfig) -> DictConfig:
        cfg = super(MoCoV2Plus, MoCoV2Plus).add_and_assert_specific_cfg(cfg)
        assert cfg.method_kwargs.queue_size > 0
        return cfg

    @torch.no_grad()
    def _dequeue_and_enqueue(self, keys: torch.Tensor) -> None:
        batch_size = keys.shape[1]
        ptr = int(self.queue_ptr)
        assert self.queue_size % batch_size == 0
        self.queue[:, :, ptr:ptr + batch_size] = keys.permute(0, 2, 1)
        self.queue_ptr[0] = (ptr + batch_size) % self.queue_size

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:  # noqa: ANN001
        _, crops, _ = batch
        q = [F.normalize(self.projector(self.backbone(x)), dim=1) for x in crops]
        with torch.no_grad():
            k = [F.normalize(self.momentum_projector(self.momentum_backbone(x)), dim=1) for x in crops]
        queue = self.queue.clone().detach()
        loss = 0.0
        for a, b, negatives in ((q[0], k[1], queue[1]), (q[1], k[0], queue[0])):
            logits = torch.cat([(a * b).sum(1, keepdim=True), a @ negatives], dim=1) / 0.2
            loss = loss + F.cross_entropy(logits, torch.zeros(len(a), dtype=torch.long)) / 2
        self._dequeue_and_enqueue(torch.stack(k))
        return loss


METHODS: dict[str, type[pl.LightningModule]] = {"byol": BYOL, "mocov2plus": MoCoV2Plus}
