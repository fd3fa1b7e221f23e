"""Built-in SSL methods that follow solo-learn's method contract, and their registry."""

from __future__ import annotations

from omegaconf import DictConfig

from dift_plugin.errors import DiftUserError
from dift_plugin.mixin import dift_config_of, with_dift
from harness.methods.base import BaseMethod, BaseMomentumMethod
from harness.methods.byol import BYOL
from harness.methods.moco import MoCoV2
from harness.methods.simclr import SimCLR

METHODS: dict[str, type[BaseMethod]] = {"simclr": SimCLR, "moco": MoCoV2, "byol": BYOL}


def build_method(cfg: DictConfig) -> BaseMethod:
    """Instantiate ``METHODS[cfg.method.name]`` with the whole run config; with DIFT mixed in when ``cfg.dift``
    turns it on."""
    name = cfg.method.name
    if name not in METHODS:
        raise DiftUserError(f"unknown method '{name}': choose one of {', '.join(sorted(METHODS))}")
    cls = METHODS[name]
    return (with_dift(cls) if dift_config_of(cfg) is not None else cls)(cfg)


__all__ = ["METHODS", "BaseMethod", "BaseMomentumMethod", "build_method", "SimCLR", "MoCoV2", "BYOL"]
