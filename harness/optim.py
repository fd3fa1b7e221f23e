"""Optimizers (SGD, LARS) and the linear-warmup-cosine schedule stepped per optimizer step."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from omegaconf import DictConfig
from torch import nn

from harness.errors import DiftUserError


class LARS(torch.optim.Optimizer):
    """SGD with momentum and layer-wise adaptive rate scaling (You et al. 2017), as used by SimCLR/BYOL.

    Parameters of groups with ``lars_exclude=True`` (biases, norms) get neither adaptation nor weight decay.
    """

    def __init__(self, params: Iterable, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                 eta: float = 0.02, clip_lr: bool = True, eps: float = 1e-8) -> None:
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta, clip_lr=clip_lr, eps=eps,
                        lars_exclude=False)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001, ANN201
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for g in self.param_groups:
            for p in g["params"]:
                if p.grad is None:
                    continue
                d_p = p.grad
                if not g["lars_exclude"]:
                    p_norm, g_norm = p.norm(), d_p.norm()
                    if p_norm > 0 and g_norm > 0:
                        trust = g["eta"] * p_norm / (g_norm + g["weight_decay"] * p_norm + g["eps"])
                        if g["clip_lr"]:
                            trust = torch.clamp(trust / g["lr"], max=1.0)
                        d_p = (d_p + g["weight_decay"] * p) * trust
                state = self.state[p]
                buf = state.get("momentum_buffer")
                if buf is None:
                    buf = state["momentum_buffer"] = d_p.clone()
                else:
                    buf.mul_(g["momentum"]).add_(d_p)
                p.add_(buf, alpha=-g["lr"])
        return loss


def param_groups(modules: list[nn.Module], weight_decay: float) -> list[dict]:
    """Weights get weight decay; biases and norm parameters (1-D) get none and are excluded from LARS."""
    decay, no_decay = [], []
    for m in modules:
        for p in m.parameters():
            if p.requires_grad:
                (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0, "lars_exclude": True}]


def build_optimizer(cfg: DictConfig, modules: list[nn.Module]) -> torch.optim.Optimizer:
    """``optimizer.name`` sgd | lars; ``lr`` is given for batch 256 and scaled linearly with the batch size."""
    lr = float(cfg.lr) * int(cfg.batch_size) / 256
    groups = param_groups(modules, float(cfg.weight_decay))
    if cfg.name == "sgd":
        for g in groups:
            g.pop("lars_exclude", None)
        return torch.optim.SGD(groups, lr=lr, momentum=float(cfg.get("momentum", 0.9)))
    if cfg.name == "lars":
        return LARS(groups, lr=lr, momentum=float(cfg.get("momentum", 0.9)), eta=float(cfg.get("eta", 0.02)))
    raise DiftUserError(f"unknown optimizer '{cfg.name}': choose sgd or lars")
