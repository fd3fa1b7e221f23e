"""How much of CTRL's trigger reaches the training views: its DCT coefficients after each augmentation of a preset.

    DIFT_DATA_ROOT=../shared/datasets python benchmarks/ctrl_augmentation.py --into docs/attacks.md
    python benchmarks/ctrl_augmentation.py --preset paper -n 512

CTRL adds ``magnitude`` to chosen DCT coefficients of the U and V channels; a triggered test image carries exactly
that. A training view is an augmented poisoned image: each augmentation of the preset's pipeline is applied with
the same random parameters to the clean and the poisoned copy of ``n`` target-class training images, and the
table reports, over images and trigger coefficients, the median share of the trigger's magnitude left at its
positions (a flip keeps it, negating odd frequencies), how much of the U/V difference between the two views lies
there, and how large that difference is against the trigger itself (whether it moved or vanished).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import kornia.augmentation as K
import torch
from omegaconf import DictConfig

from attacks.ctrl import CHANNELS, block_dct, rgb_to_yuv
from harness.augment import build_view_augmentation
from harness.gallery import attack_config, caption, poisoned_examples
from harness.report import fill_blocks


def chroma_dct(images: torch.Tensor, attack: DictConfig) -> torch.Tensor:
    """(n, len(channels), H, W): the 0-255 scale block DCT of the trigger's channels (YUV and DCT are linear, so the
    DCT of two views' difference is the difference of their DCTs)."""
    coeffs = block_dct(rgb_to_yuv(images.double() * 255), int(attack.params.window_size))
    return coeffs[:, [CHANNELS[c] for c in attack.params.channels]]


def survival(clean: torch.Tensor, poisoned: torch.Tensor, augmentation: torch.nn.Module, attack: DictConfig,
             seed: int = 0) -> tuple[float, float, float]:
    """Medians over the images of: the share of the trigger's magnitude kept at its positions, the share of the
    views' U/V difference energy there, and that energy relative to the trigger's."""
    torch.manual_seed(seed)
    a = augmentation(clean)
    torch.manual_seed(seed)
    b = augmentation(poisoned)
    diff = chroma_dct(b - a, attack)  # one window: the trigger sits at (p, p) of each channel
    at_positions = torch.stack([diff[:, c, p, p] for c in range(diff.shape[1]) for p in attack.params.positions], 1)
    magnitude = float(attack.params.magnitude)
    energy = (diff ** 2).sum((1, 2, 3))
    share = (at_positions ** 2).sum(1) / energy.clamp_min(1e-12)
    kept = (at_positions / magnitude).abs()
    return (float(kept.median()), float(share.median()),
            float((energy / (at_positions.shape[1] * magnitude ** 2)).median()))


def augmentations(cfg: DictConfig, size: int) -> dict[str, torch.nn.Module]:
    """The preset's pipeline, and each of its steps alone (always applied)."""
    aug, cj = cfg.augment, cfg.augment.color_jitter
    lo = float(aug.crop_scale[0])
    return {
        "none (a triggered test image)": torch.nn.Identity(),
        f"random resized crop, scale {lo:g}-1": K.RandomResizedCrop((size, size), scale=tuple(aug.crop_scale)),
        "random resized crop, scale 0.9-1": K.RandomResizedCrop((size, size), scale=(0.9, 1.0)),
        "horizontal flip": K.RandomHorizontalFlip(p=1.0),
        "colour jitter": K.ColorJitter(cj.brightness, cj.contrast, cj.saturation, cj.hue, p=1.0),
        "grayscale": K.RandomGrayscale(p=1.0),
        "the preset's whole pipeline (with its probabilities)": build_view_augmentation(aug, size),
    }


def table(preset: str, n: int, overrides: list[str]) -> str:
    cfg = attack_config("ctrl", preset, overrides)
    clean, poisoned = poisoned_examples(cfg, n)
    lines = [f"CTRL's trigger in the training views ({caption(cfg, preset)}; {len(clean)} target-class training "
             f"images; `python benchmarks/ctrl_augmentation.py --preset {preset}`):", "",
             "| augmentation | trigger magnitude kept at its DCT positions (median share) | share of the views' U/V difference "
             "at those positions (median) | the views' U/V difference energy / the trigger's (median) |",
             "|---|---|---|---|"]
    for name, augmentation in augmentations(cfg, clean.shape[-1]).items():
        kept, share, energy = survival(clean, poisoned, augmentation, cfg.attack)
        lines.append(f"| {name} | {kept:.3f} | {share:.3f} | {energy:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("-n", type=int, default=256, help="target-class training images (default 256)")
    parser.add_argument("--into", type=Path, nargs="*", default=[],
                        help="Markdown files whose <!-- ctrl_augmentation --> block gets the table")
    parser.add_argument("overrides", nargs="*", help="hydra overrides of the pretrain config")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    text = table(args.preset, args.n, args.overrides)
    for doc in args.into:
        print(f"{doc}: {fill_blocks(doc, {'ctrl_augmentation': text})} block(s) filled")
    print(text)


if __name__ == "__main__":
    main()
