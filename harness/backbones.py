"""Encoders f(x) -> feats: a small CNN for CPU presets and ResNet-18 (CIFAR or ImageNet stem, width multiplier)."""

from __future__ import annotations

from omegaconf import DictConfig
from torch import nn
from torchvision.models.resnet import BasicBlock, conv1x1

from dift_plugin.errors import DiftUserError


class SmallCNN(nn.Module):
    """Stages of conv3x3-BN-ReLU (``convs_per_stage`` each) with 2x max-pool between stages, then global pooling
    (``final_max_pool``: one more 2x max-pool before it).

    Widths 16-32-64-128 with one conv per stage cost ~4 MMAC per 32-px image: the CPU preset's encoder.
    """

    def __init__(self, widths: list[int], convs_per_stage: int = 1, final_max_pool: bool = False) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for i, w in enumerate(widths):
            if i > 0:
                layers.append(nn.MaxPool2d(2))
            for _ in range(convs_per_stage):
                layers += [nn.Conv2d(c_in, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
                c_in = w
        if final_max_pool:
            layers.append(nn.MaxPool2d(2))
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.net = nn.Sequential(*layers)
        self.num_features = c_in

    def forward(self, x):  # noqa: ANN001, ANN201
        return self.net(x)


class ResNet18(nn.Module):
    """ResNet-18 with a width multiplier; ``cifar_stem`` uses a 3x3 stride-1 stem without max-pool (solo-learn's CIFAR variant).

    ``width=64`` gives the standard 512-d feature ResNet-18.
    """

    def __init__(self, width: int = 64, cifar_stem: bool = True) -> None:
        super().__init__()
        if cifar_stem:
            stem = [nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        else:
            stem = [nn.Conv2d(3, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                    nn.MaxPool2d(3, 2, 1)]
        layers, c_in = [], width
        for i, mult in enumerate((1, 2, 4, 8)):
            c_out, stride = width * mult, 1 if i == 0 else 2
            down = None if stride == 1 and c_in == c_out else nn.Sequential(conv1x1(c_in, c_out, stride), nn.BatchNorm2d(c_out))
            layers += [BasicBlock(c_in, c_out, stride, down), BasicBlock(c_out, c_out)]
            c_in = c_out
        self.net = nn.Sequential(*stem, *layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.num_features = c_in
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):  # noqa: ANN001, ANN201
        return self.net(x)


def build_backbone(cfg: DictConfig) -> nn.Module:
    """Backbone from a ``backbone`` config (``name``: small_cnn | resnet18_cifar | resnet18)."""
    if cfg.name == "small_cnn":
        return SmallCNN(list(cfg.widths), int(cfg.get("convs_per_stage", 1)), bool(cfg.get("final_max_pool", False)))
    if cfg.name in ("resnet18_cifar", "resnet18"):
        return ResNet18(int(cfg.get("width", 64)), cifar_stem=cfg.name == "resnet18_cifar")
    raise DiftUserError(f"unknown backbone '{cfg.name}': choose small_cnn, resnet18_cifar or resnet18")
