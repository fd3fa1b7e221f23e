"""Shared fixtures: tiny configs on the real CIFAR-10 copy reached through DIFT_DATA_ROOT."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from omegaconf import DictConfig

from harness.config import pretrain_config
from harness.data import pin_data_root

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("DIFT_DATA_ROOT", str(REPO.parent / "shared" / "datasets"))
pin_data_root()  # a relative root means: relative to where pytest was started, also in the tests' subprocesses

# A run small enough for a test: 512 real images, a narrow CNN, small heads, two epochs, solo-learn's recipe (the
# DIFT tests' planted trigger is calibrated on it; the CPU recipe has tests of its own).
TINY = [
    "preset=cpu", "recipe=solo", "data.max_train=512", "data.max_test=200", "optimizer.batch_size=64", "trainer.max_epochs=2",
    "trainer.enable_progress_bar=false", "backbone.widths=[8,16,32,64]", "method.proj_hidden_dim=64",
    "method.proj_output_dim=32", "trainer.log_every_n_steps=1",
]


def make_cfg(*overrides: str) -> DictConfig:
    """The composed ``dift-pretrain`` config with the tiny settings plus ``overrides``."""
    return pretrain_config([*TINY, *overrides])


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = Path(os.environ["DIFT_DATA_ROOT"])
    if not (root / "cifar10" / "train").is_dir():
        pytest.fail(f"real test data missing: {root}/cifar10/train; set DIFT_DATA_ROOT to the folder holding cifar10/")
    return root
