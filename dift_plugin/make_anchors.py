"""``dift-anchors``: write the anchors CSV (``index,label,path``) that ``dift.anchors`` reads, for an ImageFolder.

    dift-anchors path/to/train --out anchors.csv [--per-class 10] [--fraction 0.1] [--trusted trusted.txt]

``index`` is the sample's position in the training set exactly as the trainer sees it: torchvision's
``ImageFolder`` order (classes sorted, files sorted within each class) — what solo-learn's ``custom`` and
``imagenet`` data sets use — after solo-learn's ``data.fraction`` subset when ``--fraction`` is given (its
stratified ``train_test_split`` with ``random_state=42``). The anchors are drawn (seeded) per class from the
samples you trust to be clean: all of them, or the files listed in ``--trusted`` (one path per line, as in the
``path`` column). Check the chosen images before training: DIFT treats them as clean.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

from dift_plugin.anchors import draw_anchors


def training_order(folder: str | Path, fraction: float | None = None) -> tuple[list[str], np.ndarray]:
    """(paths, labels) of an ImageFolder in the trainer's order, optionally solo-learn's ``data.fraction`` subset."""
    from torchvision.datasets import ImageFolder

    samples = ImageFolder(str(folder)).samples
    paths, labels = [p for p, _ in samples], [t for _, t in samples]
    if fraction is not None:
        if not 0 < fraction < 1:
            raise ValueError(f"--fraction must be in (0, 1) like solo-learn's data.fraction, got {fraction}")
        from sklearn.model_selection import train_test_split

        paths, _, labels, _ = train_test_split(paths, labels, train_size=fraction, stratify=labels, random_state=42)
    return list(paths), np.asarray(labels)


def write_anchors(out: str | Path, folder: str | Path, per_class: int = 10, fraction: float | None = None,
                  trusted: list[str] | None = None, seed: int = 0) -> int:
    """Draw ``per_class`` anchors per class and write them as ``index,label,path``; returns how many."""
    paths, labels = training_order(folder, fraction)
    pool = None
    if trusted is not None:
        wanted = {str(Path(p).resolve()) for p in trusted}
        pool = np.flatnonzero([str(Path(p).resolve()) in wanted for p in paths])
        if len(pool) == 0:
            raise ValueError("none of the --trusted files is in the training set (after --fraction)")
    index, anchor_labels = draw_anchors(labels, per_class, pool=pool, random_state=seed)
    with Path(out).open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["index", "label", "path"])
        w.writerows([[int(i), int(c), paths[i]] for i, c in zip(index, anchor_labels)])
    return len(index)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="the training ImageFolder (<class>/<image> files)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--per-class", type=int, default=10)
    parser.add_argument("--fraction", type=float, default=None, help="solo-learn's data.fraction, if set")
    parser.add_argument("--trusted", type=Path, default=None, help="file listing the trusted images, one per line")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not args.folder.is_dir():
        print(f"error: {args.folder} is not a directory (an ImageFolder: <class>/<image> files)", file=sys.stderr)
        sys.exit(2)
    trusted = None
    if args.trusted is not None:
        if not args.trusted.is_file():
            print(f"error: --trusted {args.trusted} not found", file=sys.stderr)
            sys.exit(2)
        trusted = [line.strip() for line in args.trusted.read_text().splitlines() if line.strip()]
    try:
        n = write_anchors(args.out, args.folder, args.per_class, args.fraction, trusted, args.seed)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"wrote {n} anchors to {args.out}; use them with +dift.anchors={args.out.resolve()}")


if __name__ == "__main__":
    main()
