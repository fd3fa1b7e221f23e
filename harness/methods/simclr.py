"""SimCLR (Chen et al. 2020): NT-Xent over the two views of each batch."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from harness.methods.base import BaseMethod


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """Normalised-temperature cross entropy: each view's positive is the other view of the same image."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n = z1.shape[0]
    sim = (z @ z.T / temperature).masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, targets)


class SimCLR(BaseMethod):
    def ssl_loss(self, views: list[torch.Tensor]) -> torch.Tensor:
        z1, z2 = (out["z"] for out in self.forward_views(views))
        # Gather the projections of all ranks (with gradients) so negatives span the global batch.
        z1, z2 = (self.all_gather(z, sync_grads=True).flatten(0, -2) for z in (z1, z2))
        return nt_xent(z1, z2, float(self.cfg.method.temperature))
