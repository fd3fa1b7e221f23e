"""The project's hydra configs: where they live, and ``dift-pretrain``'s config composed outside a hydra app."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf, open_dict

from dift_plugin.errors import DiftUserError

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
# Keys added after runs were made, at the value that trains what those runs trained before the key existed: a config
# holding one at that value means the same run as a config without it (grid cell keys, resuming a run dir).
ADDED_AT_DEFAULT = {"attack.params.opacity": 1.0, "method.predictor": "mlp", "eval.linear_features": "raw",
                    "attack.params.trigger_position": "center"}


def pretrain_config(overrides: Sequence[str] = ()) -> DictConfig:
    """The composed ``dift-pretrain`` config with hydra ``overrides`` (e.g. ``["preset=cpu", "attack=ctrl"]``)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="pretrain", overrides=list(overrides))


def without_added_defaults(cfg: DictConfig, also: Iterable[str] = ()) -> DictConfig:
    """A copy of ``cfg`` less the ``ADDED_AT_DEFAULT`` keys that hold their default, and less the keys ``also``."""
    cfg = cfg.copy()
    also = tuple(also)
    with open_dict(cfg):
        for path in (*also, *ADDED_AT_DEFAULT):
            parent, leaf = path.rsplit(".", 1)
            node = OmegaConf.select(cfg, parent)
            if node is not None and leaf in node and (path in also or node[leaf] == ADDED_AT_DEFAULT[path]):
                node.pop(leaf)
    return cfg


def check_choice(key: str, value: object, allowed: Sequence[str]) -> None:
    """Refuse a config value outside ``allowed``, naming the key and the choices."""
    if value not in allowed:
        raise DiftUserError(f"{key}={value} is not known: choose one of {', '.join(allowed)}")
