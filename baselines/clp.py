"""CLP: Channel Lipschitzness-based Pruning (Zheng et al., ECCV 2022), data-free.

For each convolution followed by batch norm and each output channel k, the upper bound of the channel's
Lipschitz constant UCLC_k = sigma_max(W_k) * |gamma_k / sigma_k|: W_k is the channel's kernel reshaped to
(C_in, kh * kw), sigma_max its largest singular value, gamma_k the batch norm's weight and
sigma_k = sqrt(running_var_k + eps). Channels whose UCLC exceeds mean + u * std of their layer are pruned by
zeroing the batch norm's weight and bias: a trigger drives a few channels very hard, and those have outlying
bounds.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn


def conv_bn_pairs(module: nn.Module) -> list[tuple[str, nn.Conv2d, nn.BatchNorm2d]]:
    """(batch-norm name, convolution, batch norm) for every BatchNorm2d that directly follows a Conv2d in the
    module's registration order with as many output channels (the conv -> BN of a CNN, ResNet blocks included)."""
    pairs, conv = [], None
    for name, m in module.named_modules():
        if isinstance(m, nn.Conv2d):
            conv = m
        elif isinstance(m, nn.BatchNorm2d):
            if conv is not None and conv.out_channels == m.num_features and m.affine and m.track_running_stats:
                pairs.append((name, conv, m))
            conv = None
    return pairs


@torch.no_grad()
def channel_lipschitz_bounds(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> torch.Tensor:
    """UCLC_k for every output channel k of ``conv`` -> ``bn`` (shape (C_out,))."""
    w = conv.weight.detach().float()
    kernels = w.reshape(w.shape[0], w.shape[1], -1)  # (C_out, C_in, kh * kw)
    sigma_max = torch.linalg.matrix_norm(kernels, ord=2)
    scale = (bn.weight.detach().float() / torch.sqrt(bn.running_var.float() + bn.eps)).abs()
    return sigma_max * scale


@torch.no_grad()
def clp_prune(module: nn.Module, u: float = 3.0) -> dict[str, list[int]]:
    """Prune ``module`` in place: in every conv -> BN pair, the channels with UCLC > mean + u * std of the layer
    get batch-norm weight and bias 0. Returns ``{batch-norm name: [pruned channel indexes]}`` (every pair listed,
    possibly with an empty list). A module without conv -> BN pairs is left untouched, with a warning."""
    if u < 0:
        raise ValueError(f"u must be >= 0 (the threshold is mean + u * std of a layer's bounds), got {u}")
    pairs = conv_bn_pairs(module)
    if not pairs:
        warnings.warn(f"CLP found no Conv2d -> BatchNorm2d pair in {type(module).__name__}: nothing pruned",
                      stacklevel=2)
        return {}
    pruned: dict[str, list[int]] = {}
    for name, conv, bn in pairs:
        bounds = channel_lipschitz_bounds(conv, bn)
        outlying = torch.nonzero(bounds > bounds.mean() + u * bounds.std()).ravel()
        bn.weight[outlying] = 0.0
        bn.bias[outlying] = 0.0
        pruned[name] = outlying.tolist()
    return pruned
