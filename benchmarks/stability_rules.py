"""When DIFT's intersected set counts as stable, and what DIFT does with one that never is, replayed on recordings.

    python benchmarks/stability_rules.py DIR [DIR ...] [--variants size:act members:skip ...]
                                         [--into docs/dift_in_training.md]

Each DIR is a recording of ``benchmarks/dift_inputs.py record`` (the embedded training set after every epoch of
DIFT's window, the anchors, the ground truth). The detector is replayed over it as ``benchmarks/anchor_rules.py``
does (the shipped settings otherwise: the consecutive intersection, stable after 2 epochs within 20 %), once per
variant ``STABILITY:AT_STOP``: ``size`` (an epoch settles the set when |S_t| changed by at most the tolerance) or
``members`` (and S_t kept at least 1 - tolerance of S_{t-1}'s samples), and at the stop epoch, with a set that never
became stable, ``act`` (spread and remove it) or ``skip`` (nothing detected). Reported: when it decides, the
stable and the detected set (precision / recall; on a no-poison recording, the share of the training set removed),
and spreading's ranking of the set it had. Above that table, for each recording, which epochs settled the set
under the members rule, up to its decision.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from anchor_rules import detected_row, replay, table, variants_args
from dift_plugin.config import AT_STOP, STABILITIES, DetectorConfig
from dift_plugin.detector import DIFTDetector
from results import write_results

OUT = Path(__file__).with_name("stability_rules_results")
VARIANTS = ["size:act", "members:act", "members:skip"]  # the rule until 2026-12-04 first, the default last


def variant(text: str) -> tuple[str, str]:
    """``STABILITY:AT_STOP`` -> its two values (argparse type)."""
    parts = text.split(":")
    if len(parts) != 2 or parts[0] not in STABILITIES or parts[1] not in AT_STOP:
        raise argparse.ArgumentTypeError(f"{text!r} is not STABILITY:AT_STOP with STABILITY one of "
                                         f"{', '.join(STABILITIES)} and AT_STOP one of {', '.join(AT_STOP)}")
    return parts[0], parts[1]


def settled(det: DIFTDetector, flags: list[tuple[str, int]]) -> None:
    """``on_epoch`` of a replay, appending (flag, streak): ``x`` the epoch settled the set (its streak towards
    stability grew), ``.`` it did not, ``-`` the anchor filter kept nothing, a blank for the first epoch."""
    streak = det.tracker_.streak
    grew = streak > (flags[-1][1] if flags else 0)
    flags.append(("-" if not len(det.kept_) else " " if not flags else "x" if grew else ".", streak))


def rows_of(recording: Path, variants: list[tuple[str, str]]) -> tuple[list[dict], str]:
    """One replay per stability rule (acting at the stop epoch; ``skip`` is derived: the same decision, nothing
    detected when the set was not stable), the rows of ``variants``, and the members rule's settled epochs."""
    flags: list[tuple[str, int]] = []
    truth = np.load(recording / "truth.npy")
    rows = []
    by_rule = {rule: replay(recording, DetectorConfig.anchor_rule, stability=rule, unstable_at_stop="act",
                            on_epoch=(lambda det: settled(det, flags)) if rule == "members" else None)[0]
               for rule in dict.fromkeys(stability for stability, _ in variants)}
    for stability, at_stop in variants:
        row = dict(by_rule[stability], rule=f"{stability}; unstable at the stop epoch: {at_stop}", stability=stability,
                   unstable_at_stop=at_stop)
        if at_stop == "skip" and not row["stable_by_intersection"]:
            row.update(detected_row(np.zeros(0, dtype=np.int64), truth, row["n_samples"]))
        rows.append(row)
    return rows, "".join(f for f, _ in flags)


def main() -> None:
    args = variants_args(__doc__, OUT, variant, VARIANTS)
    rows, flags = [], ["| recording | epochs 0, 1, ... up to the decision: settled (x) or not (.) |", "|---|---|"]
    for d in args.dirs:
        mine, settled_epochs = rows_of(d, args.variants)
        rows += mine
        flags.append(f"| {d.name} | `{settled_epochs}` |")
        print(flags[-1], *mine, sep="\n", flush=True)
    text = "\n".join(flags) + "\n\n" + table(rows).replace(
        "| anchor rule |", "| stable when; a set not stable at the stop epoch |", 1)
    print(write_results(args.out, text, rows, into=args.into,
                        note="Each row: one recording replayed with one stability rule (`size`: |S_t| within 20 % "
                             "of |S_{t-1}|, 2 epochs in a row; `members`: and S_t holds >= 80 % of S_{t-1}'s "
                             "samples) and one choice at the stop epoch for a set never stable (`act`: spread and "
                             "remove it; `skip`: nothing detected), the detector's other settings at their "
                             "defaults; no-poison recordings: the share of the training set removed."))


if __name__ == "__main__":
    main()
