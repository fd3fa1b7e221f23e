"""Batched SimCLR-style augmentation with kornia (per-sample parameters, on whatever device the batch is).

Augmenting whole batches with tensor ops keeps augmentation off the CPU critical path; each batch is augmented
under its own seed derived from (run seed, epoch, batch number), so a resumed run sees the same views.
"""

from __future__ import annotations

import kornia.augmentation as K
import torch
from omegaconf import DictConfig
from torch import nn

from dift_plugin.images import to_float


class Normalize(nn.Module):
    """Per-channel standardisation shared by training views and evaluation."""

    def __init__(self, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (to_float(x) - self.mean) / self.std


def build_view_augmentation(cfg: DictConfig, image_size: int) -> nn.Sequential:
    """Random resized crop, flip, colour jitter (p), grayscale (p), as configured in ``augment``."""
    cj = cfg.color_jitter
    return nn.Sequential(
        K.RandomResizedCrop((image_size, image_size), scale=tuple(cfg.crop_scale)),
        K.RandomHorizontalFlip(p=cfg.flip_p),
        K.ColorJitter(cj.brightness, cj.contrast, cj.saturation, cj.hue, p=cfg.color_jitter_p),
        K.RandomGrayscale(p=cfg.grayscale_p),
    )


def batch_seed(seed: int, epoch: int, batch: int, rank: int = 0) -> int:
    """A distinct, reproducible seed for one batch of one epoch on one rank."""
    return (seed * 1_000_003 + epoch * 10_007 + batch * 101 + rank) % (2**63 - 1)


class TwoViews(nn.Module):
    """uint8/float batch -> two independently augmented, normalised views."""

    def __init__(self, augmentation: nn.Module, normalize: Normalize, num_views: int = 2) -> None:
        super().__init__()
        self.augmentation = augmentation
        self.normalize = normalize
        self.num_views = num_views

    @torch.no_grad()
    def forward(self, images: torch.Tensor, seed: int) -> list[torch.Tensor]:
        x = to_float(images)
        devices = [x.device] if x.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            return [self.normalize(self.augmentation(x)) for _ in range(self.num_views)]
