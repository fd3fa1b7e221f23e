"""Data-poisoning backdoor attacks on contrastive learning (CTRL, SSL-Backdoor, CorruptEncoder).

``build(name, **params)`` returns an :class:`Attack`: ``trigger(images, seed)`` on float (N, 3, H, W) images in
[0, 1], and ``poison(train, target_class, rate, seed)`` -> :class:`PoisonedSet` (the poisoned training set and
the ground-truth indexes of the poisoned samples).
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from attacks.base import Attack, PoisonedSet
from attacks.corruptencoder import CorruptEncoder
from attacks.ctrl import CTRL
from attacks.sslbackdoor import SSLBackdoor
from dift_plugin.errors import DiftUserError

ATTACKS: dict[str, type[Attack]] = {"ctrl": CTRL, "sslbackdoor": SSLBackdoor, "corruptencoder": CorruptEncoder}


def build(name: str, **params) -> Attack:
    """The attack ``name`` with its parameters (see each class for the accepted keys)."""
    if name not in ATTACKS:
        raise DiftUserError(f"unknown attack '{name}': choose one of {', '.join(sorted(ATTACKS))}")
    try:
        return ATTACKS[name](**params)
    except TypeError as e:
        raise DiftUserError(f"bad parameters for attack '{name}': {e}") from None


def from_config(cfg: DictConfig) -> Attack | None:
    """The attack of an ``attack`` config group entry (``None`` for ``name: none``)."""
    if cfg.name == "none":
        return None
    params = OmegaConf.to_container(cfg.get("params") or {}, resolve=True)
    return build(cfg.name, selection=cfg.get("selection", "random"),
                 round_to_uint8=bool(cfg.get("round_to_uint8", False)), **params)


__all__ = ["ATTACKS", "Attack", "PoisonedSet", "build", "from_config", "CTRL", "SSLBackdoor", "CorruptEncoder"]
