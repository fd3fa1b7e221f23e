"""Seconds per SSL training epoch on this machine, per method and backbone (extrapolated from a few timed steps).

    python benchmarks/epoch_speed.py --n 10000 --steps 10
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from hydra import compose, initialize_config_dir

from dift_plugin.images import ImageSet
from harness.datamodule import ContrastiveDataModule
from harness.methods import build_method

CONF = str(Path(__file__).resolve().parents[1] / "conf")
BACKBONES = {"small_cnn": [], "resnet18_cifar-w16": ["backbone.width=16"], "resnet18_cifar": []}


class StepTimer(pl.Callback):
    """Wall time of each training step (augmentation, forward, backward, optimizer, EMA)."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):  # noqa: ANN001, ANN201
        self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):  # noqa: ANN001, ANN201
        self.times.append(time.perf_counter() - self.start)


def seconds_per_step(overrides: list[str], steps: int, batch: int) -> float:
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name="pretrain", overrides=overrides)
    n = batch * (steps + 1)
    images = (torch.rand(n, 3, 32, 32) * 255).to(torch.uint8)
    data = ImageSet(images, torch.arange(n) % 10, [str(c) for c in range(10)], np.arange(n))
    timer = StepTimer()
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[timer])
    trainer.fit(build_method(cfg), datamodule=ContrastiveDataModule(data, cfg.data, cfg.augment, batch, seed=0))
    return sum(timer.times[1:]) / steps  # the first step warms up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10000, help="training-set size an epoch covers")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--methods", nargs="+", default=["simclr", "moco", "byol"])
    parser.add_argument("--backbones", nargs="+", default=list(BACKBONES))
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, epoch of {args.n} images")
    print("| method | backbone | s/step | s/epoch |\n|---|---|---|---|")
    for method in args.methods:
        for name in args.backbones:
            overrides = ["preset=cpu", f"method={method}", f"backbone={name.split('-')[0]}", *BACKBONES[name],
                         f"optimizer.batch_size={args.batch}"]
            s = seconds_per_step(overrides, args.steps, args.batch)
            print(f"| {method} | {name} | {s:.3f} | {s * args.n / args.batch:.1f} |", flush=True)


if __name__ == "__main__":
    main()
