"""``dift-detect``: audit a training set with the DIFT detector and list the flagged samples.

    dift-detect runs/<run>                        # a dift-pretrain run: its encoder, data and (if any) attack
    dift-detect --embeddings X.npy --anchors anchors.csv [--truth poisoned.npy]   # embeddings from anywhere

Writes ``flagged.csv`` (index, path or array position, density, MinDist, stage) and ``summary.json`` /
``summary.md`` (counts per stage; precision and recall when the true poisoned indexes are known).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

from dift_plugin import DIFTDetector, draw_anchors
from dift_plugin.anchors import read_anchors
from dift_plugin.config import ANCHOR_RULES
from dift_plugin.errors import DiftUserError
from dift_plugin.scores import detection_scores


def from_run(run_dir: Path, space: str, per_class: int, seed: int):  # noqa: ANN201
    """Embeddings, sample names, anchors and ground truth of a dift-pretrain run."""
    from harness.augment import Normalize
    from harness.experiment import load_run, prepare_data
    from harness.monitor import embedding_spaces

    cfg, model = load_run(run_dir)
    data = prepare_data(cfg)
    x = embedding_spaces(model, data.ssl_train.images, Normalize(list(cfg.data.mean), list(cfg.data.std)))[space]
    names = data.ssl_train.paths or [str(i) for i in data.ssl_train.source_index]
    # The defender's trusted labelled pool: the clean samples (harness runs know which ones were poisoned).
    pool = np.setdiff1d(np.arange(len(x)), data.poisoned_indexes)
    anchors = draw_anchors(data.train.labels.numpy(), per_class, pool=pool, random_state=seed)
    truth = data.poisoned_indexes if data.attack is not None else None
    return x.numpy(), names, anchors, truth


def write_report(out: Path, det: DIFTDetector, names: list[str], truth: np.ndarray | None, source: str) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    stable = set(det.stable_set_.tolist())
    with (out / "flagged.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["index", "sample", "density", "min_dist", "stage"])
        for i in det.poisoned_indexes_:
            w.writerow([i, names[i], f"{det.density_[i]:.6g}", f"{det.min_dist_[i]:.6g}",
                        "anchor_filter" if i in stable else "label_spreading"])
    summary = {"source": source, "samples": len(det.density_), "candidates": len(det.candidates_),
               "kept_after_anchor_filter": len(det.kept_), "stable_set": len(det.stable_set_),
               "detected_after_spreading": len(det.poisoned_indexes_), "anchor_rule": det.anchor_rule,
               "anchor_filter": det.filter_reason_,
               "timings_s": det.timings_}
    if truth is not None:
        summary["true_poisoned"] = len(truth)
        summary["before_spreading"] = detection_scores(det.stable_set_, truth, len(det.density_))
        summary["after_spreading"] = detection_scores(det.poisoned_indexes_, truth, len(det.density_))
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    lines = [f"# DIFT detection: {source}", "", "| stage | samples |", "|---|---|",
             f"| all | {summary['samples']} |", f"| densest candidates | {summary['candidates']} |",
             f"| kept by the anchor filter | {summary['kept_after_anchor_filter']} |",
             f"| after label spreading | {summary['detected_after_spreading']} |", "",
             f"Anchor filter ({det.anchor_rule} rule): {det.filter_reason_}"]
    if truth is not None:
        b, a = summary["before_spreading"], summary["after_spreading"]
        lines += ["", f"Against the {len(truth)} truly poisoned samples: before spreading precision "
                      f"{b['precision']:.3f} / recall {b['recall']:.3f}; after spreading precision "
                      f"{a['precision']:.3f} / recall {a['recall']:.3f}."]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", nargs="?", type=Path, help="a dift-pretrain run directory")
    parser.add_argument("--embeddings", type=Path, help=".npy of (N, d) embeddings, instead of a run")
    parser.add_argument("--anchors", type=Path, help="with --embeddings: CSV index,label of trusted clean samples")
    parser.add_argument("--truth", type=Path, help="optional .npy of the true poisoned indexes (for precision/recall)")
    parser.add_argument("--space", choices=["projector", "backbone"], default="projector",
                        help="run mode: embedding space to rank in (default: the L2-normalised projector output)")
    parser.add_argument("--anchors-per-class", type=int, default=10)
    parser.add_argument("--anchor-rule", choices=ANCHOR_RULES, default="gated",
                        help="gated (default here): one embedding has no later epochs to intersect with, and the "
                             "paper's rule keeps the far side of any dense candidates, poisoned or not (2-3 %% of "
                             "clean data); paper: DIFT in training's default (docs/detection.md)")
    parser.add_argument("--seed", type=int, default=0, help="anchor draw and detector random_state")
    parser.add_argument("--out", type=Path, help="output folder (default: <run>/detect or next to the embeddings)")
    args = parser.parse_args(argv)
    try:
        if (args.run_dir is None) == (args.embeddings is None):
            raise DiftUserError("give either a run directory or --embeddings (with --anchors)")
        if args.run_dir is not None:
            x, names, (aidx, alab), truth = from_run(args.run_dir, args.space, args.anchors_per_class, args.seed)
            out, source = args.out or args.run_dir / "detect", f"{args.run_dir} ({args.space})"
        else:
            if args.anchors is None or not args.embeddings.is_file():
                raise DiftUserError("--embeddings needs an existing .npy file and --anchors index,label CSV")
            x = np.load(args.embeddings)
            names = [str(i) for i in range(len(x))]
            aidx, alab = read_anchors(args.anchors)
            truth = np.load(args.truth) if args.truth else None
            out = args.out or args.embeddings.parent / f"{args.embeddings.stem}_detect"
            source = str(args.embeddings)
        det = DIFTDetector(anchor_rule=args.anchor_rule, random_state=args.seed).fit(x, aidx, alab)
        write_report(out, det, names, truth, source)
    except (DiftUserError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print((out / "summary.md").read_text())
    print(f"flagged samples: {out / 'flagged.csv'}")


if __name__ == "__main__":
    main()
