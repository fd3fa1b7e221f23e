"""The data of a run, rebuilt from its config alone: clean splits, the (poisoned) SSL training set and the
ground-truth poisoned indexes; and the trained method of a finished or interrupted run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

import attacks
from attacks.base import Attack
from dift_plugin.errors import DiftUserError
from dift_plugin.images import ImageSet, to_float
from harness.augment import Normalize
from harness.config import check_choice
from harness.data import load_split
from harness.evaluate import LINEAR_FEATURES, embed_splits, score_features
from harness.methods import BaseMethod, build_method


@dataclass
class RunData:
    train: ImageSet  # clean training split (labels for the probe and anchors)
    test: ImageSet
    ssl_train: ImageSet  # what SSL training sees: ``train`` with the poisoned samples replaced
    poisoned_indexes: np.ndarray  # ground truth; never shown to a defense
    attack: Attack | None


def prepare_data(cfg: DictConfig, attack: Attack | None = None) -> RunData:
    """Load the configured splits and apply the configured attack (seeded by ``cfg.seed``: the same set each time)."""
    attack = attack if attack is not None else attacks.from_config(cfg.attack)
    seed = int(cfg.seed)
    train = load_split(cfg.data, "train", seed=seed)
    test = load_split(cfg.data, "test", seed=seed)
    ssl_train, poisoned = train, np.zeros(0, dtype=np.int64)
    if attack is not None:
        result = attack.poison(train, int(cfg.attack.target_class), float(cfg.attack.rate), seed=seed)
        ssl_train, poisoned = result.train, result.poisoned_indexes
    return RunData(train, test, ssl_train, poisoned, attack)


def evaluate_backbone(backbone: torch.nn.Module, cfg: DictConfig, data: RunData) -> dict[str, float]:
    """ACC of ``backbone`` (linear probe on the clean labelled training images, weighted kNN) and, with an attack,
    its ASR on the triggered test images (trigger placement seeded by ``attack.test_seed``)."""
    return score_backbone(evaluation_features(backbone, cfg, data), cfg, data)


def evaluation_features(backbone: torch.nn.Module, cfg: DictConfig, data: RunData) -> dict[str, torch.Tensor]:
    """``backbone``'s features of the clean training and test images and, with an attack, the triggered test images."""
    attack = data.attack
    triggered = attack.trigger(to_float(data.test.images), seed=int(cfg.attack.test_seed)) if attack else None
    return embed_splits(backbone, Normalize(list(cfg.data.mean), list(cfg.data.std)),
                        {"train": data.train.images, "test": data.test.images, "triggered": triggered},
                        next(backbone.parameters()).device)


def score_backbone(feats: dict[str, torch.Tensor], cfg: DictConfig, data: RunData,
                   linear_features: str | None = None) -> dict[str, float]:
    """``evaluate_backbone``'s metrics from ``evaluation_features``; ``linear_features`` (default: the config's,
    ``raw`` for a run saved before the key existed) says what the linear probe reads."""
    linear_features = linear_features or str(cfg.eval.get("linear_features", "raw"))
    check_choice("eval.linear_features", linear_features, LINEAR_FEATURES)
    return score_features(feats, data.train.labels, data.test.labels, len(data.train.classes),
                          int(cfg.attack.target_class) if data.attack else None, int(cfg.eval.knn_k),
                          float(cfg.eval.knn_temperature), int(cfg.seed), linear_features)


def load_run(run_dir: str | Path) -> tuple[DictConfig, BaseMethod]:
    """The saved config and the method with the weights of ``checkpoints/last.ckpt`` of a ``dift-pretrain`` run."""
    run_dir = Path(run_dir)
    cfg_path, ckpt = run_dir / "config.yaml", run_dir / "checkpoints" / "last.ckpt"
    for path in (cfg_path, ckpt):
        if not path.exists():
            raise DiftUserError(f"{path} not found: pass the run directory of a dift-pretrain run")
    cfg = OmegaConf.load(cfg_path)
    model = build_method(cfg)
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    model.load_state_dict(state)
    return cfg, model.eval()
