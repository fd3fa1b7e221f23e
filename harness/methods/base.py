"""The method contract shared with solo-learn: cfg in, ``backbone``/``projector``, ``forward`` -> dict,
``training_step`` on ``(indexes, [view1, view2], targets)``, ``momentum_pairs`` for EMA branches."""

from __future__ import annotations

import copy
import math

import lightning.pytorch as pl
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from harness.backbones import build_backbone
from harness.optim import build_optimizer, build_schedule


def mlp(in_dim: int, hidden_dim: int, out_dim: int, batch_norm: bool = False) -> nn.Sequential:
    """Linear -> [BN] -> ReLU -> Linear: the projector/predictor head of SimCLR, MoCo v2 and BYOL."""
    mid: list[nn.Module] = [nn.BatchNorm1d(hidden_dim)] if batch_norm else []
    return nn.Sequential(nn.Linear(in_dim, hidden_dim), *mid, nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim))


class BaseMethod(pl.LightningModule):
    """Backbone + projector trained by a self-supervised loss on two views; labels are never used for training."""

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.save_hyperparameters({"cfg": OmegaConf.to_container(cfg, resolve=True)})
        self.backbone = build_backbone(cfg.backbone)
        self.features_dim = self.backbone.num_features
        self.projector = self.build_projector(cfg.method)

    def build_projector(self, mcfg: DictConfig) -> nn.Module:
        """Linear-[BN]-ReLU-Linear; batch norm after the hidden layer when ``method.projector_bn``."""
        return mlp(self.features_dim, int(mcfg.proj_hidden_dim), int(mcfg.proj_output_dim),
                   batch_norm=bool(mcfg.get("projector_bn", False)))

    @property
    def learnable_modules(self) -> list[nn.Module]:
        return [self.backbone, self.projector]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = self.backbone(x)
        return {"feats": feats, "z": self.projector(feats)}

    def forward_views(self, views: list[torch.Tensor], forward=None) -> list[dict[str, torch.Tensor]]:  # noqa: ANN001
        """``forward`` (default :meth:`forward`) on each view; with ``method.joint_views`` on all views
        concatenated in one pass, so batch norm normalises over every view of the batch at once."""
        forward = forward or self.forward
        if not self.cfg.method.get("joint_views", False):
            return [forward(v) for v in views]
        out = forward(torch.cat(views))
        parts = {k: v.chunk(len(views)) for k, v in out.items()}
        return [{k: parts[k][i] for k in parts} for i in range(len(views))]

    def ssl_loss(self, views: list[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def training_step(self, batch, batch_idx: int) -> dict[str, torch.Tensor]:  # noqa: ANN001
        _, views, _ = batch
        loss = self.ssl_loss(views)
        self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True, sync_dist=True)
        return {"loss": loss}

    def configure_optimizers(self):  # noqa: ANN201
        opt = build_optimizer(self.cfg.optimizer, self.learnable_modules)
        total = int(self.trainer.estimated_stepping_batches)
        warmup = int(round(float(self.cfg.optimizer.warmup_epochs) * total / max(1, self.trainer.max_epochs)))
        sched = self.build_lr_schedule(opt, warmup, total)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def build_lr_schedule(self, optimizer: torch.optim.Optimizer, warmup_steps: int,
                          total_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
        """The run's schedule shape (``optimizer.schedule``) over ``total_steps``; DIFT restarts it with this too."""
        return build_schedule(self.cfg.optimizer, optimizer, warmup_steps, total_steps)


class BaseMomentumMethod(BaseMethod):
    """Adds a target branch (``momentum_backbone``, ``momentum_projector``) updated by EMA after each step,
    with BYOL's cosine-increasing momentum tau from ``base_tau`` to ``final_tau``."""

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__(cfg)
        self.momentum_backbone = copy.deepcopy(self.backbone)
        self.momentum_projector = copy.deepcopy(self.projector)
        for m in (self.momentum_backbone, self.momentum_projector):
            m.requires_grad_(False)

    @property
    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.backbone, self.momentum_backbone), (self.projector, self.momentum_projector)]

    def tau(self, progress: float) -> float:
        """tau = final - (final - base) * (cos(pi p) + 1) / 2 at training progress p in [0, 1]."""
        base, final = float(self.cfg.method.base_tau), float(self.cfg.method.final_tau)
        p = min(max(progress, 0.0), 1.0)
        return final - (final - base) * (math.cos(math.pi * p) + 1) / 2

    def training_progress(self, batch_idx: int) -> float:
        """The share of training done before step ``batch_idx`` of this epoch, counted in epochs: when epochs get
        shorter mid-run (DIFT filtering samples out), tau still reaches its final value at the last epoch."""
        batches = max(1, len(self.trainer.train_dataloader))
        return (self.trainer.current_epoch + batch_idx / batches) / max(1, int(self.trainer.max_epochs))

    @torch.no_grad()
    def momentum_forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = self.momentum_backbone(x)
        return {"feats": feats, "z": self.momentum_projector(feats)}

    @torch.no_grad()
    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:  # noqa: ANN001
        tau = self.tau(self.training_progress(batch_idx))
        for online, target in self.momentum_pairs:
            for po, pt in zip(online.parameters(), target.parameters()):
                pt.mul_(tau).add_(po.detach(), alpha=1 - tau)
        self.log("tau", tau)
