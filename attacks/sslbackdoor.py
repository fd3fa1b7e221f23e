"""SSL-Backdoor (Saha et al., CVPR 2022): an opaque patch pasted on target-class training images.

Training images get the patch at a random position inside the central region, test images at a random position
anywhere (both seeded). The original HTBA trigger images are not available offline: the default trigger is a
fixed, seeded, high-contrast random binary colour pattern; ``trigger_image`` takes any image file instead.
"""

from __future__ import annotations

import numpy as np
import torch

from attacks.base import Attack
from attacks.patch import make_pattern, paste, random_positions
from harness.augment import to_float
from harness.data import ImageSet


class SSLBackdoor(Attack):
    name = "sslbackdoor"

    def __init__(self, patch_size: int = 5, pattern_seed: int = 0, trigger_image: str | None = None,
                 train_region: str = "center", test_region: str = "any", **kwargs) -> None:
        super().__init__(**kwargs)
        self.patch_size = int(patch_size)
        self.pattern = make_pattern(self.patch_size, pattern_seed, trigger_image)
        self.train_region, self.test_region = train_region, test_region

    def _paste(self, images: torch.Tensor, region: str, seed: int) -> torch.Tensor:
        pos = random_positions(len(images), images.shape[-2], images.shape[-1], self.patch_size, region, seed)
        return paste(images, self.pattern.to(images), pos)

    def trigger(self, images: torch.Tensor, seed: int = 0) -> torch.Tensor:
        """Test-time trigger: the patch at a seeded random position anywhere in the image."""
        return self._paste(images, self.test_region, seed)

    def poison_images(self, train: ImageSet, index: np.ndarray, seed: int) -> torch.Tensor:
        return self._paste(to_float(train.images[index]), self.train_region, seed)
