"""DIFT's detector with other settings, replayed on recordings: what each would detect, and when it would decide.

    python benchmarks/detector_variants.py DIR [DIR ...] [--variants NAME:KEY=VALUE,... ...]
                                           [--into docs/dift_in_training.md]

Each DIR is a recording of ``benchmarks/dift_inputs.py record`` (the embedded training set after every epoch of
DIFT's window, the anchors, the ground truth). The detector is replayed over it as ``benchmarks/anchor_rules.py``
does, deciding as DIFT in training does, once per variant: the shipped settings with the variant's
``DIFTDetector`` keys changed (``gated:anchor_rule=gated``; ``shipped:`` changes nothing). Reported per recording
and variant: when it decides, the stable and the detected set (precision / recall; on a no-poison recording, the
share of the training set removed), and spreading's ranking of the set it had.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from anchor_rules import replay, table, variants_args
from dift_plugin.config import DetectorConfig
from results import write_results

OUT = Path(__file__).with_name("detector_variants_results")
VARIANTS = ["shipped:", "no cohesion check:min_cohesion=0", "gated:anchor_rule=gated", "patience 3:patience=3",
            "tolerance 0.1:tolerance=0.1"]
FIELDS = {name: type(getattr(DetectorConfig, name)) for name in DetectorConfig.__dataclass_fields__}


def variant(text: str) -> tuple[str, dict[str, object]]:
    """``NAME:KEY=VALUE,...`` -> (NAME, {KEY: VALUE}) with each value of its ``DetectorConfig`` field's type."""
    name, sep, pairs = text.partition(":")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME:KEY=VALUE,...")
    settings: dict[str, object] = {}
    for pair in filter(None, pairs.split(",")):
        key, _, value = pair.partition("=")
        if key not in FIELDS:
            raise argparse.ArgumentTypeError(f"{key!r} is not a detector setting; one of {', '.join(FIELDS)}")
        settings[key] = FIELDS[key](value)
    return name, settings


def main() -> None:
    args = variants_args(__doc__, OUT, variant, VARIANTS)
    rows = []
    for d in args.dirs:
        for name, settings in args.variants:
            others = {k: v for k, v in settings.items() if k != "anchor_rule"}
            rule = str(settings.get("anchor_rule", DetectorConfig.anchor_rule))
            row, _ = replay(d, rule, **others)
            rows.append(dict(row, rule=name, settings={"anchor_rule": rule, **others}))
            print({k: v for k, v in rows[-1].items() if "recall_at" not in k}, flush=True)
    print(write_results(args.out, table(rows).replace("| anchor rule |", "| variant |", 1), rows, into=args.into,
                        note="Each row: one recording replayed with one variant of the detector's settings (the "
                             "shipped ones otherwise); no-poison recordings: the share of the training set "
                             "removed."))


if __name__ == "__main__":
    main()
