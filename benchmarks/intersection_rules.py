"""DIFT's intersection across epochs, cumulative vs consecutive, replayed on recorded detector inputs.

    python benchmarks/intersection_rules.py DIR [DIR ...] [--variants cumulative:2:0 consecutive:3:0.2 ...]
                                            [--into docs/dift_in_training.md]

Each DIR is a recording of ``benchmarks/dift_inputs.py record`` (the embedded training set after every epoch of
DIFT's window, the anchors, the ground truth). The detector is replayed over it as ``benchmarks/anchor_rules.py``
does (the shipped settings otherwise, deciding as DIFT in training does: at the first stable epoch, or at the stop
epoch), once per variant ``INTERSECTION:PATIENCE:TOLERANCE``: the intersection rule, ``cumulative``
(S_t = S_{t-1} ∩ K_t) or ``consecutive`` (S_t = K_{t-1} ∩ K_t), and when the set counts as stable (|S_t|
changed by at most TOLERANCE, relative, for PATIENCE epochs: the size alone, and DIFT acting at the stop epoch
on a set that never became stable, as when this comparison was made; ``benchmarks/stability_rules.py`` compares
those two). Reported: when it decides, the stable and the detected set (precision / recall; on a no-poison
recording, the share of the training set removed), and spreading's ranking.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from anchor_rules import replay, table, variants_args
from dift_plugin.config import INTERSECTIONS, DetectorConfig
from results import write_results

OUT = Path(__file__).with_name("intersection_rules_results")
VARIANTS = ["cumulative:2:0", "consecutive:2:0", "consecutive:2:0.2", "consecutive:3:0.2"]


def variant(text: str) -> tuple[str, int, float]:
    """``INTERSECTION:PATIENCE:TOLERANCE`` -> its three values (argparse type)."""
    try:
        intersection, patience, tolerance = text.split(":")
        parsed = intersection, int(patience), float(tolerance)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not INTERSECTION:PATIENCE:TOLERANCE, e.g. consecutive:3:0.2")
    if intersection not in INTERSECTIONS:
        raise argparse.ArgumentTypeError(f"{intersection!r} is not one of {', '.join(INTERSECTIONS)}")
    return parsed


def main() -> None:
    args = variants_args(__doc__, OUT, variant, VARIANTS)
    rows = []
    for d in args.dirs:
        for intersection, patience, tolerance in args.variants:
            row = replay(d, DetectorConfig.anchor_rule, intersection=intersection, patience=patience,
                         tolerance=tolerance, stability="size", unstable_at_stop="act")[0]
            row.update(rule=f"{intersection}, stable after {patience} x {tolerance:g}", intersection=intersection,
                       patience=patience, tolerance=tolerance)
            rows.append(row)
            print(row, flush=True)
    text = table(rows).replace("| anchor rule |", "| intersection, stable after patience x tolerance |", 1)
    print(write_results(args.out, text, rows, into=args.into,
                        note="Each row: one recording replayed with one intersection rule and stability rule (|S_t| "
                             "changed by at most the tolerance, relative, for `patience` epochs in a row), the "
                             "detector's other settings at their defaults; no-poison recordings: the share of the "
                             "training set removed."))


if __name__ == "__main__":
    main()
