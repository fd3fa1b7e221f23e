"""Eq. 7's learning rate: DIFT's fine-tuning replayed from one encoder at several lrs and batch orders.

    python benchmarks/finetune_lr.py --root runs/finetune_lr                       # SimCLR seed 1, BYOL seed 0
    python benchmarks/finetune_lr.py --root runs/finetune_lr --runs byol:2 --lrs 0.05 0.01 --orders 10

Per METHOD:SEED, trains ``preset=cpu attack=sslbackdoor defense=dift`` until DIFT has decided its
detected set and keeps what fine-tuning starts from: the online backbone's weights and the detected images. Then
fine-tunes copies of that backbone with ``dift_plugin.finetune.finetune`` (the run's ``dift.finetune`` settings,
only the lr changed), the detected set shuffled into batches in ``--orders`` seeded orders, and reports Eq. 7's
last loss, the detected samples' mean pairwise distance (backbone features) before and after, and how many orders
diverged (a non-finite loss: fine-tuning is undone). One encoder per method, so read the spread over orders: a
stable lr ends every order at about the same loss.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
from pathlib import Path

import torch
from omegaconf import DictConfig

import dift_plugin.mixin as mixin
from dift_plugin.config import FinetuneConfig
from dift_plugin.finetune import finetune
from harness.backbones import build_backbone
from harness.config import pretrain_config
from harness.pretrain import run
from results import add_into, write_results

OUT = Path(__file__).with_name("finetune_lr_results")
CAPTURE = "capture.pt"


class Captured(Exception):
    """Raised where DIFT would fine-tune, once its starting point is saved: the training stops there."""


def capture(cfg: DictConfig, run_dir: Path) -> None:
    """Train as ``cfg`` says until DIFT fine-tunes; save the backbone's weights and the detected images."""

    def keep(embed, modules, batches, ft):  # noqa: ANN001
        torch.save({"backbone": modules[0].state_dict(), "images": torch.cat([b.cpu() for b in batches()]),
                    "finetune": dataclasses.asdict(ft)}, run_dir / CAPTURE)
        raise Captured

    run_dir.mkdir(parents=True, exist_ok=True)
    mixin.finetune = keep
    try:
        run(cfg, run_dir)
    except Captured:
        return
    finally:
        mixin.finetune = finetune
    raise SystemExit(f"{run_dir}: the run ended without DIFT fine-tuning (nothing detected?)")


def replay(cfg: DictConfig, saved: dict, lr: float, order: int) -> dict:
    """Fine-tune a copy of the captured backbone at ``lr``, batches shuffled by a generator seeded ``order``."""
    backbone = build_backbone(cfg.backbone)
    backbone.load_state_dict(copy.deepcopy(saved["backbone"]))
    images, ft = saved["images"], FinetuneConfig(**{**saved["finetune"], "lr": lr})
    shuffle = torch.Generator().manual_seed(order)

    def batches() -> list[torch.Tensor]:
        perm = torch.randperm(len(images), generator=shuffle)
        return [images[perm[i:i + ft.batch_size]] for i in range(0, len(images), ft.batch_size)]

    result = finetune(backbone, [backbone], batches, ft)
    return {"detected": len(images), **dataclasses.asdict(result)}


def method_seed(text: str) -> tuple[str, int]:
    method, _, seed = text.partition(":")
    if method not in ("simclr", "moco", "byol") or not seed.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: expected METHOD:SEED, METHOD one of simclr, moco, byol")
    return method, int(seed)


def span(values: list[float]) -> str:
    return f"{min(values):.2f} to {max(values):.2f}" if values else "–"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", type=Path, required=True, help="where the runs that are captured go")
    p.add_argument("--runs", nargs="+", type=method_seed, default=[("simclr", 1), ("byol", 0)], metavar="METHOD:SEED",
                   help="the runs to capture (SimCLR seed 0 detects 3 samples on some CPUs: nothing to fine-tune)")
    p.add_argument("--lrs", nargs="+", type=float, default=[0.05, 0.02, 0.01, 0.005])
    p.add_argument("--orders", type=int, default=5, help="batch orders per lr")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("overrides", nargs="*", help="further dift-pretrain overrides (after --)")
    args = add_into(p).parse_args()
    rows, lines = [], ["| method | seed | detected | lr | diverged orders | last loss | mean pairwise distance: before | "
                       "after |", "|---" * 8 + "|"]
    for method, seed in args.runs:
        run_dir = args.root / f"{method}_s{seed}"
        cfg = pretrain_config(["preset=cpu", "data=cifar10", f"method={method}", "attack=sslbackdoor",
                               f"seed={seed}", "defense=dift", *args.overrides])
        if not (run_dir / CAPTURE).exists():
            print(f"{method}: training until DIFT decides (run directory {run_dir})", flush=True)
            capture(cfg, run_dir)
        saved = torch.load(run_dir / CAPTURE, weights_only=False)
        for lr in args.lrs:
            runs = [replay(cfg, saved, lr, order) for order in range(args.orders)]
            rows += [{"method": method, "seed": seed, "lr": lr, "order": o, **r} for o, r in enumerate(runs)]
            finite = [r for r in runs if not r["diverged"]]
            lines.append(f"| {method} | {seed} | {runs[0]['detected']} | {lr:g} | "
                         f"{len(runs) - len(finite)} of {len(runs)} | "
                         f"{span([r['loss_last'] for r in finite])} | {runs[0]['distance_before']:.2f} | "
                         f"{span([r['distance_after'] for r in finite])} |")
            print(lines[-1], flush=True)
    note = ("`preset=cpu attack=sslbackdoor defense=dift`: each run's encoder when DIFT "
            f"decided, fine-tuned from there at each lr in {args.orders} batch orders (diverged: a non-finite loss, "
            "after which fine-tuning gives the weights back, so the distance stays the one before).")
    print(write_results(args.out, "\n".join(lines), rows, note, args.into))


if __name__ == "__main__":
    main()
