"""Patch triggers: the pattern (seeded or from an image file) and pasting it at seeded random positions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from attacks.base import Attack
from dift_plugin.errors import DiftUserError


def make_pattern(size: int, seed: int = 0, image_path: str | None = None, cells: int | None = None) -> torch.Tensor:
    """(3, size, size) float trigger in [0, 1]: a user image resized, else a seeded random binary colour pattern —
    one colour per pixel, or (``cells``) a cells x cells grid of binary colours blended smoothly by bilinear
    interpolation, the look of the original HTBA triggers (about 4x4 saturated colour cells)."""
    if image_path:
        path = Path(image_path).expanduser()
        if not path.is_file():
            raise DiftUserError(f"trigger image {path} not found")
        img = Image.open(path).convert("RGB").resize((size, size), Image.NEAREST)
        return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float() / 255
    if cells is not None and not 1 <= int(cells) <= size:
        raise DiftUserError(f"pattern_cells must be between 1 and the patch size {size}, got {cells}")
    g = torch.Generator().manual_seed(seed)
    if cells is None or int(cells) == size:
        return torch.randint(0, 2, (3, size, size), generator=g).float()
    grid = torch.randint(0, 2, (1, 3, int(cells), int(cells)), generator=g).float()
    return F.interpolate(grid, size=(size, size), mode="bilinear", align_corners=True)[0]


def random_positions(n: int, height: int, width: int, size: int, region: str, seed: int) -> torch.Tensor:
    """(n, 2) top-left corners (row, col) so the patch lies inside ``region``: 'any' (whole image) or 'center'
    (the central half of each side: rows/cols from H/4 to 3H/4)."""
    if size > min(height, width):
        raise DiftUserError(f"patch of {size} px does not fit a {height}x{width} image")
    if region == "any":
        lo_r, hi_r, lo_c, hi_c = 0, height - size, 0, width - size
    elif region == "center":
        lo_r, lo_c = height // 4, width // 4
        hi_r, hi_c = max(lo_r, 3 * height // 4 - size), max(lo_c, 3 * width // 4 - size)
    else:
        raise DiftUserError(f"patch region must be 'any' or 'center', got '{region}'")
    g = torch.Generator().manual_seed(seed)
    rows = torch.randint(lo_r, hi_r + 1, (n,), generator=g)
    cols = torch.randint(lo_c, hi_c + 1, (n,), generator=g)
    return torch.stack([rows, cols], dim=1)


def paste(images: torch.Tensor, pattern: torch.Tensor, positions: torch.Tensor, opacity: float = 1.0) -> torch.Tensor:
    """Copy of ``images`` with ``pattern`` pasted at each image's (row, col): opaque at ``opacity`` 1, else
    alpha-blended, ``opacity * pattern + (1 - opacity) * image``."""
    out = images.clone()
    s = pattern.shape[-1]
    for img, (r, c) in zip(out, positions.tolist()):
        region = img[:, r:r + s, c:c + s]
        region.copy_(pattern if opacity == 1.0 else torch.lerp(region, pattern, opacity))
    return out


class PatchAttack(Attack):
    """An attack whose trigger is a patch (opaque, or blended at ``opacity``, on training and test images alike);
    at test time it is pasted at a seeded random position in ``test_region``. Subclasses decide how training
    images are poisoned."""

    def __init__(self, patch_size: int = 5, pattern_seed: int = 0, trigger_image: str | None = None,
                 pattern_cells: int | None = None, test_region: str = "any", opacity: float = 1.0,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        if not 0 < float(opacity) <= 1:
            raise DiftUserError(f"patch opacity must be in (0, 1] (1: opaque), got {opacity}")
        self.patch_size = int(patch_size)
        self.pattern = make_pattern(self.patch_size, pattern_seed, trigger_image, pattern_cells)
        self.test_region = test_region
        self.opacity = float(opacity)

    def _paste(self, images: torch.Tensor, region: str, seed: int) -> torch.Tensor:
        pos = random_positions(len(images), images.shape[-2], images.shape[-1], self.patch_size, region, seed)
        return paste(images, self.pattern.to(images), pos, self.opacity)

    def trigger(self, images: torch.Tensor, seed: int = 0) -> torch.Tensor:
        """Test-time trigger: the patch at a seeded random position in ``test_region``."""
        return self._paste(images, self.test_region, seed)
