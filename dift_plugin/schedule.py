"""Warm-up + cosine learning-rate factor, and the restart DIFT applies after fine-tuning."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch


def warmup_cosine(warmup_steps: int, total_steps: int, min_factor: float = 0.0) -> Callable[[int], float]:
    """LR factor: linear warm-up from ~0 to 1 over ``warmup_steps``, then cosine decay to ``min_factor``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def restarted_schedule(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int,
                       steps_done: int = 0) -> torch.optim.lr_scheduler.LambdaLR:
    """A fresh warm-up + cosine schedule from each group's initial LR (``initial_lr``, set by the run's first
    scheduler) over ``total_steps`` — the remaining epochs — positioned after ``steps_done`` of its steps."""
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(warmup_steps, total_steps))
    if steps_done:
        schedule.last_epoch = steps_done - 1
        schedule.step()
    return schedule
