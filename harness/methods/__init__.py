"""Built-in SSL methods that follow solo-learn's method contract, and their registry."""

from __future__ import annotations

from omegaconf import DictConfig

from harness.errors import DiftUserError
from harness.methods.base import BaseMethod, BaseMomentumMethod
from harness.methods.byol import BYOL
from harness.methods.moco import MoCoV2
from harness.methods.simclr import SimCLR

METHODS: dict[str, type[BaseMethod]] = {"simclr": SimCLR, "moco": MoCoV2, "byol": BYOL}


def build_method(cfg: DictConfig) -> BaseMethod:
    """Instantiate ``METHODS[cfg.method.name]`` with the whole run config."""
    name = cfg.method.name
    if name not in METHODS:
        raise DiftUserError(f"unknown method '{name}': choose one of {', '.join(sorted(METHODS))}")
    return METHODS[name](cfg)


__all__ = ["METHODS", "BaseMethod", "BaseMomentumMethod", "build_method", "SimCLR", "MoCoV2", "BYOL"]
