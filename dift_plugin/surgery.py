"""What DIFT changes in a running Lightning training once it has decided: the loader stops yielding the detected
samples, the LR schedule restarts over the remaining epochs; and, under DDP, the checks that keep ranks in step."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from dift_plugin.config import DIFTConfigError
from dift_plugin.sampling import ExcludingSampler
from dift_plugin.schedule import restarted_schedule


def exclude_from_loader(loader: Any, detected: np.ndarray, n_samples: int, full_batches: bool) -> None:
    """From now on ``loader`` never yields ``detected`` (its batch sampler's sampler is wrapped); ``full_batches``
    drops the last partial batch (MoCo: the queue needs queue_size % batch_size == 0)."""
    batch_sampler = getattr(loader, "batch_sampler", None)
    if batch_sampler is None or not hasattr(batch_sampler, "sampler"):
        raise DIFTConfigError("DIFT filters the training set through the DataLoader's batch sampler; "
                              "use a DataLoader with batch_size (not a custom batch_sampler)")
    inner = batch_sampler.sampler
    if isinstance(inner, ExcludingSampler):
        inner = inner.inner
    batch_sampler.sampler = ExcludingSampler(inner, detected, n_samples)
    if full_batches:
        batch_sampler.drop_last = True


def steps_per_epoch(trainer: Any) -> int:
    """Scheduler steps in one (now filtered) epoch: 1 for an epoch-wise scheduler."""
    if trainer.lr_scheduler_configs[0].interval == "epoch":
        return 1
    accumulate = max(1, int(trainer.accumulate_grad_batches))
    return max(1, len(trainer.train_dataloader) // accumulate)


def install_restarted_schedule(trainer: Any, warmup: int, total: int, steps_done: int) -> None:
    """The run's schedule restarted: in its own shape when the trained method has ``build_lr_schedule(optimizer,
    warmup_steps, total_steps)``, else warm-up + cosine."""
    config = trainer.lr_scheduler_configs[0]
    config.scheduler = restarted_schedule(config.scheduler.optimizer, warmup, total, steps_done,
                                          build=getattr(trainer.lightning_module, "build_lr_schedule", None))


def check_ranks_agree(detected: np.ndarray, world: int, device: torch.device,
                      all_gather: Callable[[torch.Tensor], torch.Tensor]) -> None:
    """Under DDP every rank must filter the same samples, or their epochs would differ in length."""
    if world == 1:
        return
    mine = torch.tensor([len(detected), int(np.sum(detected * 2654435761 % 1000003))], device=device)
    everyone = all_gather(mine).reshape(-1, 2)
    if not bool((everyone == everyone[0]).all()):
        raise RuntimeError(f"DIFT's detected sets differ across ranks ({everyone.tolist()}); please report this")


def broadcast_weights(module: torch.nn.Module) -> None:
    """Under DDP every rank fine-tunes identically; rank 0's weights are broadcast to rule out drift."""
    if dist.is_available() and dist.is_initialized():
        for t in [*module.parameters(), *module.buffers()]:
            dist.broadcast(t.data, src=0)
