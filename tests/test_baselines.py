"""The baselines: CLP pruning (data-free) and density-clustering filters."""

import numpy as np
import pytest
import torch
from torch import nn

from baselines.clp import channel_lipschitz_bounds, clp_prune, conv_bn_pairs
from baselines.density_filter import density_filter
from harness.backbones import ResNet18, SmallCNN
from tests.test_detector import classes_with_cluster


def conv_bn(out_channels=16, in_channels=4, seed=0):
    torch.manual_seed(seed)
    conv, bn = nn.Conv2d(in_channels, out_channels, 3, bias=False), nn.BatchNorm2d(out_channels)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.1, 0.1)
        bn.running_var.uniform_(0.5, 2.0)
    return nn.Sequential(conv, bn, nn.ReLU())


def test_uclc_is_the_kernels_spectral_norm_times_the_batch_norm_scale():
    net = conv_bn()
    conv, bn = net[0], net[1]
    bounds = channel_lipschitz_bounds(conv, bn)
    for k in (0, 7):
        w = conv.weight[k].reshape(conv.in_channels, -1).detach().numpy()
        scale = abs(bn.weight[k].item()) / np.sqrt(bn.running_var[k].item() + bn.eps)
        assert bounds[k].item() == pytest.approx(np.linalg.svd(w, compute_uv=False)[0] * scale, rel=1e-5)


def test_clp_prunes_exactly_the_channels_with_outlying_bounds():
    net = conv_bn(out_channels=64)
    with torch.no_grad():
        net[0].weight[[3, 11]] *= 20  # two channels with a far larger Lipschitz bound: a trigger's channels
    before = net[1].weight.clone()
    pruned = clp_prune(net, u=3.0)
    assert pruned == {"1": [3, 11]}
    assert torch.all(net[1].weight[[3, 11]] == 0) and torch.all(net[1].bias[[3, 11]] == 0)
    keep = [k for k in range(64) if k not in (3, 11)]
    assert torch.equal(net[1].weight[keep], before[keep])
    assert clp_prune(conv_bn(out_channels=64), u=3.0) == {"1": []}  # no outlier, nothing pruned


def test_clp_finds_every_conv_bn_pair_of_our_backbones():
    assert len(conv_bn_pairs(SmallCNN([8, 16, 32, 64]))) == 4
    assert len(conv_bn_pairs(ResNet18(width=8))) == 1 + 8 * 2 + 3  # stem, two per block, three downsamples
    pruned = clp_prune(ResNet18(width=8), u=3.0)
    assert "net.5.downsample.1" in pruned and all(isinstance(v, list) for v in pruned.values())


def test_clp_leaves_a_network_without_conv_bn_pairs_untouched():
    net = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Conv2d(3, 3, 1), nn.ReLU())
    before = [p.clone() for p in net.parameters()]
    with pytest.warns(UserWarning, match="no Conv2d -> BatchNorm2d pair"):
        assert clp_prune(net) == {}
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))


@pytest.mark.parametrize("algorithm", ["dbscan", "optics"])
def test_density_filter_flags_a_planted_cluster_and_nothing_on_clean_classes(algorithm):
    for seed in (0, 1):
        x, _, poisoned = classes_with_cluster(n=4000, poison_share=0.05, seed=seed)
        found = density_filter(x, algorithm)
        tp = len(np.intersect1d(found.flagged, poisoned))
        assert tp / len(found.flagged) >= 0.95 and tp / len(poisoned) >= 0.95, found.reason
        clean = density_filter(classes_with_cluster(n=4000, poison_share=0.0, seed=seed)[0], algorithm)
        assert len(clean.flagged) == 0, clean.reason
