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


ScheduleBuilder = Callable[[torch.optim.Optimizer, int, int], torch.optim.lr_scheduler.LRScheduler]


def warmup_cosine_schedule(optimizer: torch.optim.Optimizer, warmup_steps: int,
                           total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """:func:`warmup_cosine` as a scheduler over each group's initial LR."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(warmup_steps, total_steps))


def restarted_schedule(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int,
                       steps_done: int = 0, build: ScheduleBuilder | None = None) -> torch.optim.lr_scheduler.LRScheduler:
    """A fresh schedule from each group's initial LR over ``total_steps`` — the remaining epochs — positioned after
    ``steps_done`` of its steps. ``build(optimizer, warmup_steps, total_steps)`` makes it in the run's own shape
    (e.g. one-cycle); by default warm-up + cosine (:func:`warmup_cosine_schedule`)."""
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])
    schedule = (build or warmup_cosine_schedule)(optimizer, warmup_steps, total_steps)
    if steps_done:
        schedule.last_epoch = steps_done - 1
        schedule.step()
    return schedule


def reset_optimizer_state(optimizer: torch.optim.Optimizer) -> None:
    """Forget the per-parameter state (momentum buffers, Adam's moment estimates and step counts), as in a fresh
    optimizer; the parameter groups (LRs, weight decay) stay."""
    optimizer.state.clear()
