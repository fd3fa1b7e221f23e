"""How much DIFT's detection depends on which clean anchors were drawn: recorded runs replayed with other draws.

    python benchmarks/anchor_draws.py DIR [DIR ...] [--draws 5] [--per-class 10 20] [--into docs/dift_in_training.md]
    python benchmarks/anchor_draws.py DIR --subsets --draws 4 --per-class 5 8   # subsets of the run's own anchors

Each DIR is a recording of ``benchmarks/dift_inputs.py record``. The detector is replayed over its recorded epochs
(``anchor_rules.replay``: the shipped defaults, deciding as DIFT in training does) with the anchors the run drew,
then with ``--draws`` other seeded draws of ``--per-class`` anchors per class from the clean training samples (the
pool the harness draws from). The anchors are the defender's only labelled data (the paper: ten per class), so a
benign dense group that no anchor reaches passes the anchor filter: this measures how often that happens. Reported
per recording and anchor count: what each draw detects (precision / recall; on a no-poison recording the share of
the training set removed), over the draws the median recall or the number of draws that remove more than 0.5 %
of a clean training set (#11's bar), and the classes of what the run's own draw detects. With ``--subsets`` the
draws are subsets of the run's own anchors instead, to measure whether a decision that must hold under several
subsets of the defender's one draw escapes what that draw lacks.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import numpy as np
from anchor_rules import check_recorded, recordings_parser, replay
from results import write_results

from dift_plugin.anchors import draw_anchors
from dift_plugin.config import ANCHOR_RULES

OUT = Path(__file__).with_name("anchor_draws_results")
FLOOD = 0.005  # a no-poison run that removes more than this share of its training set fails #11's bar


def training_labels(recording: Path) -> tuple[np.ndarray, list[str]]:
    """The class of every training sample of the recorded run (its data config and seed), and the class names."""
    from harness.config import pretrain_config
    from harness.data import load_split

    cfg = pretrain_config(json.loads((recording / "overrides.json").read_text()))
    train = load_split(cfg.data, "train", seed=int(cfg.seed))
    return train.labels.numpy(), list(train.classes)


def classes_of(index: np.ndarray, labels: np.ndarray, names: list[str], top: int = 3) -> str:
    """The ``top`` most frequent classes among ``index``, with counts: "airplane 117, bird 26, ship 17"."""
    counts = np.bincount(labels[index], minlength=len(names))
    return ", ".join(f"{names[c]} {counts[c]}" for c in np.argsort(-counts, kind="stable")[:top] if counts[c]) or "–"


def draws(recording: Path, rule: str, per_class: list[int], n_draws: int, subsets: bool = False) -> list[dict]:
    """One row per anchor count: the recorded draw first (its own row), then ``n_draws`` seeded draws each, from
    the clean training samples or (``subsets``) from the run's own anchors."""
    truth = np.load(recording / "truth.npy")
    labels, names = training_labels(recording)
    own = np.load(recording / "anchors.npz")["index"]
    pool = own if subsets else np.setdiff1d(np.arange(len(labels)), truth)
    recorded, detected = replay(recording, rule)
    rows = [{"run": recording.name, "anchors": f"the run's ({len(own)})", "replays": [recorded],
             "classes": classes_of(detected, labels, names)}]
    for k in per_class:
        replays = []
        for r in range(n_draws):
            anchors = draw_anchors(labels, k, pool=pool, random_state=1000 + r)
            replays.append(replay(recording, rule, anchors=anchors)[0])
            print(recording.name, k, r, replays[-1]["detected"], flush=True)
        kind = "subsets of the run's" if subsets else "other draws"
        rows.append({"run": recording.name, "anchors": f"{k} per class, {n_draws} {kind}", "replays": replays})
    return rows


def cell(r: dict) -> str:
    if not r["n_poisoned"]:
        return f"{100 * r['detected'] / r['n_samples']:.2f} %"
    return f"{r['detected']} ({r['detected_precision'] or 0:.2f} / {r['detected_recall']:.2f})"


def summary(replays: list[dict]) -> str:
    if not replays[0]["n_poisoned"]:
        over = sum(r["detected"] / r["n_samples"] > FLOOD for r in replays)
        return f"{over} of {len(replays)} over {100 * FLOOD:g} %"
    return f"median recall {statistics.median(r['detected_recall'] for r in replays):.2f}"


def table(rows: list[dict]) -> str:
    lines = ["| recording | anchors | detected, each draw (precision / recall, or share of a clean training set) | "
             "over the draws | the run's detected set: top classes |", "|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['run']} | {row['anchors']} | {', '.join(cell(r) for r in row['replays'])} | "
                     f"{summary(row['replays'])} | {row.get('classes', '')} |")
    return "\n".join(lines)


def main() -> None:
    p = recordings_parser(__doc__, OUT)
    p.add_argument("--draws", type=int, default=5, help="other anchor draws per anchor count (default 5)")
    p.add_argument("--per-class", type=int, nargs="+", default=[10, 20], help="anchors per class (default 10 20)")
    p.add_argument("--subsets", action="store_true", help="draw from the run's own anchors, not the clean pool")
    p.add_argument("--rule", choices=ANCHOR_RULES, default="paper",
                   help="the anchor rule replayed (default: the shipped one, paper)")
    args = p.parse_args()
    check_recorded(args.dirs)
    rows = [row for d in args.dirs for row in draws(d, args.rule, args.per_class, args.draws, args.subsets)]
    print(write_results(args.out, table(rows), rows, into=args.into,
                        note="Each row: one recording, its detector replayed with the shipped defaults and other "
                             "anchor draws (seeded 1000, 1001, ...; with --subsets, drawn from the run's own anchors)."))


if __name__ == "__main__":
    main()
