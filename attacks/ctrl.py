"""CTRL (Li et al., ICCV 2023): a frequency-domain trigger in the chrominance channels.

As the authors implemented it: pixels on the 0-255 scale; RGB -> analog YUV (Y = .299R + .587G + .114B, U and V
without offset); an orthonormal 2-D DCT-II over non-overlapping ``window_size`` blocks of the U and V channels;
``magnitude`` added at the diagonal coefficients (p, p) for each p in ``positions`` in every block; inverse DCT;
back to RGB; clipped to [0, 255]. Poisoned images stay float (no rounding) unless configured.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.fft import dct

from attacks.base import Attack
from dift_plugin.errors import DiftUserError

# Analog YUV (BT.601 primaries), no offsets; the inverse is the exact matrix inverse.
RGB_TO_YUV = torch.tensor([[0.299, 0.587, 0.114],
                           [-0.14713, -0.28886, 0.436],
                           [0.615, -0.51499, -0.10001]], dtype=torch.float64)
YUV_TO_RGB = torch.linalg.inv(RGB_TO_YUV)
CHANNELS = {"Y": 0, "U": 1, "V": 2}


def rgb_to_yuv(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) RGB -> YUV on the same scale."""
    return torch.einsum("ij,njhw->nihw", RGB_TO_YUV.to(x), x)


def yuv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,njhw->nihw", YUV_TO_RGB.to(x), x)


def dct_matrix(n: int) -> torch.Tensor:
    """Orthonormal DCT-II matrix D (n x n): the DCT of a block B is D B D^T, its inverse D^T C D."""
    return torch.from_numpy(dct(np.eye(n), type=2, norm="ortho", axis=0))


def _blocks(x: torch.Tensor, w: int) -> torch.Tensor:
    n, c, h, wd = x.shape
    return x.reshape(n, c, h // w, w, wd // w, w).permute(0, 1, 2, 4, 3, 5)  # (n, c, bh, bw, w, w)


def _unblocks(b: torch.Tensor) -> torch.Tensor:
    n, c, bh, bw, w, _ = b.shape
    return b.permute(0, 1, 2, 4, 3, 5).reshape(n, c, bh * w, bw * w)


def block_dct(x: torch.Tensor, window: int) -> torch.Tensor:
    """Orthonormal 2-D DCT-II of every non-overlapping ``window`` x ``window`` block, laid out like ``x``."""
    d = dct_matrix(window).to(x)
    return _unblocks(d @ _blocks(x, window) @ d.T)


def block_idct(x: torch.Tensor, window: int) -> torch.Tensor:
    d = dct_matrix(window).to(x)
    return _unblocks(d.T @ _blocks(x, window) @ d)


class CTRL(Attack):
    name = "ctrl"

    def __init__(self, magnitude: float = 100.0, positions: tuple[int, ...] = (15, 31), window_size: int = 32,
                 channels: tuple[str, ...] = ("U", "V"), **kwargs) -> None:
        super().__init__(**kwargs)
        if any(c not in CHANNELS for c in channels):
            raise DiftUserError(f"CTRL channels must be among Y, U, V; got {list(channels)}")
        if any(not 0 <= p < window_size for p in positions):
            raise DiftUserError(f"CTRL positions {list(positions)} must lie inside the window (0-{window_size - 1})")
        self.magnitude = float(magnitude)
        self.positions = tuple(int(p) for p in positions)
        self.window = int(window_size)
        self.channels = [CHANNELS[c] for c in channels]

    def trigger(self, images: torch.Tensor, seed: int = 0) -> torch.Tensor:
        """Deterministic: ``seed`` is unused (the trigger has no random placement)."""
        h, w = images.shape[-2:]
        if h % self.window or w % self.window:
            raise DiftUserError(f"CTRL window_size {self.window} must divide the image size {h}x{w}")
        coeffs = block_dct(rgb_to_yuv(images.double() * 255), self.window)
        blocks = _blocks(coeffs, self.window)
        for c in self.channels:
            for p in self.positions:
                blocks[:, c, :, :, p, p] += self.magnitude
        rgb = yuv_to_rgb(block_idct(_unblocks(blocks), self.window))
        return (rgb.clamp(0, 255) / 255).to(images.dtype)
