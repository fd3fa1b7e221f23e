"""BYOL (Grill et al. 2020): online backbone + projector + predictor regress the target branch's projection."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from harness.methods.base import BaseMomentumMethod, mlp


def byol_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """2 - 2 cos(p, z), averaged over the batch."""
    return (2 - 2 * F.cosine_similarity(p, z.detach(), dim=-1)).mean()


class BYOL(BaseMomentumMethod):
    def __init__(self, cfg: DictConfig) -> None:
        super().__init__(cfg)
        m = cfg.method
        self.predictor = mlp(int(m.proj_output_dim), int(m.pred_hidden_dim), int(m.proj_output_dim), batch_norm=True)

    @property
    def learnable_modules(self) -> list[nn.Module]:
        return [self.backbone, self.projector, self.predictor]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = super().forward(x)
        out["p"] = self.predictor(out["z"])
        return out

    def ssl_loss(self, views: list[torch.Tensor]) -> torch.Tensor:
        p1, p2 = (out["p"] for out in self.forward_views(views))
        z1, z2 = (out["z"] for out in self.forward_views(views, self.momentum_forward))
        return byol_loss(p1, z2) + byol_loss(p2, z1)
