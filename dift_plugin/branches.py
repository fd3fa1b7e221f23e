"""After fine-tuning: make the other branch match the fine-tuned online encoder."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


@torch.no_grad()
def sync_momentum_branches(model: nn.Module, seed: int = 0) -> list[str]:
    """theta' <- theta_ft: copy every online module of ``model.momentum_pairs`` (parameters and buffers) onto its
    momentum twin — BYOL's target network, MoCo's key encoder; modules outside the pairs (BYOL's predictor) are
    left as they are. Then reset MoCo's queue, whose keys came from the old key encoder, from ``seed`` (so that a
    resumed run gets the same queue). Returns what was done."""
    done = []
    for online, target in getattr(model, "momentum_pairs", None) or []:
        target.load_state_dict(online.state_dict())
        done.append(f"{type(online).__name__} -> momentum")
    queue = getattr(model, "queue", None)
    devices = [queue.device] if isinstance(queue, torch.Tensor) and queue.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        if reset_queue(model):
            done.append("queue reset")
    return done


@torch.no_grad()
def reset_queue(model: nn.Module) -> bool:
    """Refill a MoCo queue with random unit keys and rewind its pointer: the method's own ``reset_queue()`` if it
    has one, else solo-learn's layout (buffers ``queue`` of shape (views, dim, size) and ``queue_ptr``)."""
    if callable(getattr(model, "reset_queue", None)):
        model.reset_queue()
        return True
    queue, ptr = getattr(model, "queue", None), getattr(model, "queue_ptr", None)
    if not isinstance(queue, torch.Tensor):
        return False
    queue.copy_(F.normalize(torch.randn_like(queue), dim=-2))
    if isinstance(ptr, torch.Tensor):
        ptr.zero_()
    return True
