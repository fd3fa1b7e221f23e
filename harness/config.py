"""The project's hydra configs: where they live, and ``dift-pretrain``'s config composed outside a hydra app."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def pretrain_config(overrides: Sequence[str] = ()) -> DictConfig:
    """The composed ``dift-pretrain`` config with hydra ``overrides`` (e.g. ``["preset=cpu", "attack=ctrl"]``)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="pretrain", overrides=list(overrides))
