"""Seconds per SSL training epoch on this machine, per method and backbone (extrapolated from a few timed steps).

    python benchmarks/epoch_speed.py --n 10000 --steps 10
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from harness.augment import Normalize, TwoViews, build_view_augmentation
from harness.methods import build_method
from harness.optim import build_optimizer

CONF = str(Path(__file__).resolve().parents[1] / "conf")
BACKBONES = {"small_cnn": [], "resnet18_cifar-w16": ["backbone.width=16"], "resnet18_cifar": []}


def seconds_per_step(overrides: list[str], steps: int, batch: int) -> float:
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name="pretrain", overrides=overrides)
    model = build_method(cfg)
    opt = build_optimizer(cfg.optimizer, model.learnable_modules)
    views = TwoViews(build_view_augmentation(cfg.augment, 32), Normalize(list(cfg.data.mean), list(cfg.data.std)))
    images = (torch.rand(batch, 3, 32, 32) * 255).to(torch.uint8)
    times = []
    for step in range(steps + 1):
        start = time.perf_counter()
        loss = model.ssl_loss(views(images, seed=step))
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - start)
    return sum(times[1:]) / steps  # the first step warms up


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
