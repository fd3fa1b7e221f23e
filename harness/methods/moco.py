"""MoCo v2 (Chen et al. 2020) with a symmetric loss, as solo-learn's MoCoV2Plus: key encoder + one queue per view."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from harness.methods.base import BaseMomentumMethod


def moco_loss(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE with the key ``k`` as positive and the queue (dim, K) as negatives; q, k L2-normalised."""
    pos = (q * k).sum(dim=1, keepdim=True)
    neg = q @ queue
    logits = torch.cat([pos, neg], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long, device=q.device))


class MoCoV2(BaseMomentumMethod):
    def __init__(self, cfg: DictConfig) -> None:
        super().__init__(cfg)
        dim, size = int(cfg.method.proj_output_dim), int(cfg.method.queue_size)
        self.register_buffer("queue", F.normalize(torch.randn(2, dim, size), dim=1))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))

    def on_fit_start(self) -> None:
        global_batch = int(self.cfg.optimizer.batch_size) * self.trainer.world_size
        if self.queue.shape[-1] % global_batch:
            raise ValueError(
                f"MoCo needs method.queue_size ({self.queue.shape[-1]}) to be a multiple of the global batch size "
                f"({global_batch} = optimizer.batch_size x devices)"
            )

    def reset_queue(self) -> None:
        """Fill the queue with fresh random unit keys (used after the key encoder is replaced)."""
        self.queue.copy_(F.normalize(torch.randn_like(self.queue), dim=1))
        self.queue_ptr.zero_()

    @torch.no_grad()
    def _dequeue_and_enqueue(self, keys: torch.Tensor) -> None:
        """keys: (2, B, dim), one row per view."""
        b, ptr = keys.shape[1], int(self.queue_ptr)
        self.queue[:, :, ptr:ptr + b] = keys.permute(0, 2, 1)
        self.queue_ptr[0] = (ptr + b) % self.queue.shape[-1]

    def ssl_loss(self, views: list[torch.Tensor]) -> torch.Tensor:
        q1, q2 = (F.normalize(out["z"], dim=1) for out in self.forward_views(views))
        k1, k2 = (F.normalize(out["z"], dim=1) for out in self.forward_views(views, self.momentum_forward))
        t = float(self.cfg.method.temperature)
        queue = self.queue.clone().detach()
        loss = (moco_loss(q1, k2, queue[1], t) + moco_loss(q2, k1, queue[0], t)) / 2
        keys = torch.stack([self.all_gather(k).flatten(0, -2) for k in (k1, k2)])
        self._dequeue_and_enqueue(keys)
        return loss
