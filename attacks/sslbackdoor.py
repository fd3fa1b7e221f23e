"""SSL-Backdoor (Saha et al., CVPR 2022): an opaque patch pasted on target-class training images.

Training images get the patch at a random position inside the central region, test images at a random position
anywhere (both seeded). The original HTBA trigger images are not available offline: the default trigger is a
fixed, seeded, high-contrast random binary colour pattern; ``trigger_image`` takes any image file instead.
"""

from __future__ import annotations

import numpy as np
import torch

from attacks.patch import PatchAttack
from dift_plugin.images import ImageSet, to_float


class SSLBackdoor(PatchAttack):
    name = "sslbackdoor"

    def __init__(self, train_region: str = "center", **kwargs) -> None:
        super().__init__(**kwargs)
        self.train_region = train_region

    def poison_images(self, train: ImageSet, index: np.ndarray, seed: int) -> torch.Tensor:
        return self._paste(to_float(train.images[index]), self.train_region, seed)
