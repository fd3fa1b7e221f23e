"""Images held in memory: the type the attacks poison and the harness trains on."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] or float [0, 1] images -> float32 [0, 1]."""
    return images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()


@dataclass
class ImageSet:
    """A split held in memory: images (N, 3, H, W) uint8 (or float in [0, 1] once poisoned)."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    source_index: np.ndarray  # position of each sample in the full, unsubsampled split
    paths: list[str] | None = field(default=None)  # file of each sample, when read from files

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: np.ndarray) -> "ImageSet":
        """The samples at ``index`` (positions in this set), keeping their source indexes and paths."""
        index = np.asarray(index, dtype=np.int64)
        paths = [self.paths[i] for i in index] if self.paths is not None else None
        return ImageSet(self.images[index], self.labels[index], self.classes, self.source_index[index], paths)
