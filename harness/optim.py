"""Optimizers (SGD, LARS, Adam, AdamW) and their learning-rate schedules (linear warm-up + cosine, or one-cycle),
stepped per optimizer step."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from omegaconf import DictConfig
from torch import nn

from dift_plugin.errors import DiftUserError
from dift_plugin.schedule import warmup_cosine_schedule


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


OPTIMIZERS = ("sgd", "lars", "adam", "adamw")
SCHEDULES = ("warmup_cosine", "one_cycle")


def build_optimizer(cfg: DictConfig, modules: list[nn.Module]) -> torch.optim.Optimizer:
    """``optimizer.name`` sgd | lars | adam | adamw; ``lr`` is given for batch 256 and scaled linearly with the
    batch size; weight decay (``weight_decay``) on weights only, never on biases and norm parameters."""
    lr = float(cfg.lr) * int(cfg.batch_size) / 256
    groups = param_groups(modules, float(cfg.weight_decay))
    if cfg.name == "lars":
        return LARS(groups, lr=lr, momentum=float(cfg.get("momentum", 0.9)), eta=float(cfg.get("eta", 0.02)))
    for g in groups:
        g.pop("lars_exclude", None)
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=float(cfg.get("momentum", 0.9)))
    if cfg.name in ("adam", "adamw"):
        return (torch.optim.Adam if cfg.name == "adam" else torch.optim.AdamW)(groups, lr=lr)
    raise DiftUserError(f"unknown optimizer '{cfg.name}': choose one of {', '.join(OPTIMIZERS)}")


def build_schedule(cfg: DictConfig, optimizer: torch.optim.Optimizer, warmup_steps: int,
                   total_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    """``optimizer.schedule``: ``warmup_cosine`` (linear warm-up from ~0, cosine to 0; solo-learn's shape) or
    ``one_cycle`` (torch's ``OneCycleLR``: cosine warm-up from lr/25 over ``warmup_steps`` (at least 2), cosine down
    to lr/25e4; with Adam it also cycles beta1 between 0.85 and 0.95, with SGD the momentum)."""
    name = cfg.get("schedule", "warmup_cosine")
    if name == "warmup_cosine":
        return warmup_cosine_schedule(optimizer, warmup_steps, total_steps)
    if name == "one_cycle":  # each of its two phases needs 2 steps or more (torch divides by the phase length)
        total_steps = max(4, total_steps)
        warmup_steps = min(max(2, warmup_steps), total_steps - 2)
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=[g.get("max_lr", g["lr"]) for g in optimizer.param_groups],  # a restart: the same peak
            total_steps=total_steps, pct_start=warmup_steps / total_steps)
    raise DiftUserError(f"unknown optimizer.schedule '{name}': choose one of {', '.join(SCHEDULES)}")
