"""BYOL (Grill et al. 2020): online backbone + projector + predictor regress the target branch's projection."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from dift_plugin.errors import DiftUserError
from harness.methods.base import BaseMomentumMethod, mlp


def byol_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """2 - 2 cos(p, z), averaged over the batch."""
    return (2 - 2 * F.cosine_similarity(p, z.detach(), dim=-1)).mean()


def build_predictor(m: DictConfig) -> nn.Module:
    """``method.predictor``: ``mlp`` (Linear-BN-ReLU-Linear, BYOL's) or ``linear`` (one linear layer, as
    DirectPred's linear predictor)."""
    kind, dim = m.get("predictor", "mlp"), int(m.proj_output_dim)
    if kind == "mlp":
        return mlp(dim, int(m.pred_hidden_dim), dim, batch_norm=True)
    if kind == "linear":
        return nn.Linear(dim, dim)
    raise DiftUserError(f"method.predictor must be 'mlp' or 'linear', got '{kind}'")


class BYOL(BaseMomentumMethod):
    def __init__(self, cfg: DictConfig) -> None:
        super().__init__(cfg)
        self.predictor = build_predictor(cfg.method)

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
