"""``dift-gallery``: a PNG of clean vs poisoned training samples and their difference, for every attack.

    DIFT_DATA_ROOT=../shared/datasets dift-gallery --out docs/gallery.png
    dift-gallery --preset cpu attack.target_class=3     # any further hydra overrides of the pretrain config
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

import attacks  # noqa: E402
from dift_plugin.images import to_float  # noqa: E402
from harness.config import pretrain_config  # noqa: E402
from harness.data import load_split  # noqa: E402


def attack_config(name: str, preset: str, overrides: list[str]) -> DictConfig:
    """The pretrain config of ``preset`` with attack ``name`` and further hydra ``overrides``."""
    return pretrain_config([f"preset={preset}", f"attack={name}", *overrides])


def poisoned_examples(cfg: DictConfig, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` clean target-class training images and their poisoned versions under ``cfg``'s attack."""
    train = load_split(cfg.data, "train", seed=int(cfg.seed))
    attack = attacks.from_config(cfg.attack)
    result = attack.poison(train, int(cfg.attack.target_class), float(cfg.attack.rate), seed=int(cfg.seed))
    index = result.poisoned_indexes[:n]
    return to_float(train.images[index]), to_float(result.train.images[index])


def caption(cfg: DictConfig, preset: str) -> str:
    """The attack's settings in one line: "ctrl (cpu): rate 0.1, magnitude=100, ..."."""
    params = ", ".join(f"{k}={v}" for k, v in cfg.attack.params.items() if v is not None)
    return f"{cfg.attack.name} ({preset}): rate {cfg.attack.rate}, {params}"


def draw(rows: list[tuple[torch.Tensor, torch.Tensor, str]], out: Path) -> None:
    """One block per attack: clean row, poisoned row, |difference| row (scaled to its own maximum)."""
    n = rows[0][0].shape[0]
    fig, axes = plt.subplots(3 * len(rows), n, figsize=(1.3 * n, 1.45 * 3 * len(rows)), squeeze=False)
    for b, (clean, poisoned, title) in enumerate(rows):
        diff = (poisoned - clean).abs()
        diff = diff / diff.amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-8)
        for r, (label, imgs) in enumerate((("clean", clean), ("poisoned", poisoned), ("|diff| (scaled)", diff))):
            for c in range(n):
                ax = axes[3 * b + r, c]
                ax.imshow(imgs[c].permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                if c == 0:
                    ax.set_ylabel(label, fontsize=7)
        axes[3 * b, 0].set_title(title, fontsize=7, loc="left")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=150)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("gallery.png"))
    parser.add_argument("--n", type=int, default=6, help="samples per attack")
    parser.add_argument("--preset", default="paper", help="preset whose attack settings to show (paper or cpu)")
    parser.add_argument("--attacks", nargs="+", default=sorted(attacks.ATTACKS))
    parser.add_argument("overrides", nargs="*", help="hydra overrides of the pretrain config, e.g. data.root=...")
    args = parser.parse_args(argv)
    cfgs = [attack_config(name, args.preset, args.overrides) for name in args.attacks]
    rows = [(*poisoned_examples(cfg, args.n), caption(cfg, args.preset)) for cfg in cfgs]
    draw(rows, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
