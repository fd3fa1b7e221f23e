"""Fine-tuning for density reduction (paper Eq. 7) on the detected samples, with its own optimizer."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from dift_plugin.config import FinetuneConfig

log = logging.getLogger(__name__)


def density_reduction_loss(x: torch.Tensor, lam: float, epsilon: float) -> torch.Tensor:
    """Eq. 7: L_ft = -1/(n(n-1)) sum_{i!=j} sqrt(||x_i - x_j||^2 + eps) + lam * 1/n sum_i ||x_i||^2.

    The first term spreads the detected embeddings x_1..x_n apart (reduces their density), the second keeps
    their magnitudes bounded. Distances come from the differences x_i - x_j themselves, not from
    ||x_i||^2 + ||x_j||^2 - 2 x_i.x_j: for the near-duplicates Eq. 7 is meant for (poisoned samples), that form
    cancels to 0 in float32 and gives them no gradient."""
    n = len(x)
    if n < 2:
        raise ValueError(f"Eq. 7 needs at least 2 embeddings, got {n}")
    dist = torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist")
    off_diagonal = ~torch.eye(n, dtype=torch.bool, device=x.device)
    return -torch.sqrt(dist[off_diagonal].pow(2) + epsilon).mean() + lam * x.pow(2).sum(dim=1).mean()


@torch.no_grad()
def mean_pairwise_distance(x: torch.Tensor) -> float:
    """(1/(n(n-1))) sum_{i!=j} ||x_i - x_j||: the density-reduction term of Eq. 7 without epsilon."""
    n = len(x)
    return float(torch.cdist(x, x).sum() / max(1, n * (n - 1)))


@contextmanager
def eval_mode(modules: list[nn.Module]) -> Iterator[None]:
    """Put ``modules`` in eval mode for the block and give each back the mode it had."""
    modes = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        yield
    finally:
        for m, mode in zip(modules, modes):
            m.train(mode)


@dataclass
class FinetuneResult:
    steps: int
    loss_first: float
    loss_last: float
    distance_before: float  # mean pairwise distance of the detected embeddings before any step (raw units)
    distance_after: float  # the same after fine-tuning
    seconds: float
    diverged: bool = False  # a step gave a non-finite loss: the encoder went back to its weights before fine-tuning


def finetune(embed: Callable[[torch.Tensor], torch.Tensor], modules: list[nn.Module],
             batches: Callable[[], Iterable[torch.Tensor]], cfg: FinetuneConfig) -> FinetuneResult:
    """Minimise Eq. 7 over the detected samples with SGD on the parameters of ``modules`` only.

    ``embed`` maps a batch of model inputs to the x_i of Eq. 7 (with gradients); ``batches()`` yields one pass over
    the detected samples, reshuffled on every call: Eq. 7's mean over all pairs is estimated per mini-batch, and
    new batches each epoch let every pair of detected samples meet. The modules run in eval mode: batch-norm
    statistics stay those of the whole training set (a batch of near-identical poisoned images would otherwise
    normalise their common component away) and are not updated from the poisoned samples alone. The modes and
    ``requires_grad`` flags are restored afterwards.

    Eq. 7 is evaluated on x_i / r_0, r_0 the RMS norm of the detected embeddings before fine-tuning (a constant):
    the same loss in units of the features' own scale, so ``lam`` and ``lr`` mean the same for any backbone
    (on raw features, lambda * ||x||^2 of a wide backbone dominates and SGD diverges).

    If a step's loss is not finite (SGD blew the weights up), fine-tuning stops and the modules get back their
    weights from before fine-tuning, ``diverged`` says so and a warning is logged: the run goes on, without the
    detected samples, from the encoder training made instead of NaN weights (the last finite steps are no
    refuge: in the run that showed it their loss had reached 1e22)."""
    start = time.perf_counter()
    params = [p for m in modules for p in m.parameters()]
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(True)
    try:
        with eval_mode(modules):
            x0 = _embed_all(embed, batches)
            distance_before = round(mean_pairwise_distance(x0), 6)
            scale = float(x0.pow(2).sum(dim=1).mean().sqrt().clamp_min(1e-12))
            with torch.enable_grad():
                losses, diverged = _descend(embed, params, batches, cfg, scale)
            distance_after = round(mean_pairwise_distance(_embed_all(embed, batches)), 6)
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)
            p.grad = None
    return FinetuneResult(len(losses), losses[0] if losses else float("nan"), losses[-1] if losses else float("nan"),
                          distance_before, distance_after, round(time.perf_counter() - start, 3), diverged)


def _descend(embed: Callable[[torch.Tensor], torch.Tensor], params: list[nn.Parameter],
             batches: Callable[[], Iterable[torch.Tensor]], cfg: FinetuneConfig,
             scale: float) -> tuple[list[float], bool]:
    """SGD on Eq. 7 for ``cfg.epochs`` passes: each step's loss, and whether a loss was not finite (then the weights
    are put back to those before fine-tuning)."""
    optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum)
    losses: list[float] = []
    before = [p.detach().clone() for p in params]
    for _ in range(cfg.epochs):
        for x in batches():
            if len(x) < 2:
                continue
            loss = density_reduction_loss(embed(x) / scale, cfg.lam, cfg.epsilon)
            if not torch.isfinite(loss):
                with torch.no_grad():
                    for p, good in zip(params, before):
                        p.copy_(good)
                log.warning("DIFT fine-tuning diverged at step %d (loss %s, %s at the first step): the encoder "
                            "goes back to its weights before fine-tuning; lower dift.finetune.lr (now %s)",
                            len(losses) + 1, loss.item(), losses[0] if losses else None, cfg.lr)
                return losses, True
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    return losses, False


@torch.no_grad()
def _embed_all(embed: Callable[[torch.Tensor], torch.Tensor], batches: Callable[[], Iterable[torch.Tensor]]) -> torch.Tensor:
    return torch.cat([embed(b).float() for b in batches()])
