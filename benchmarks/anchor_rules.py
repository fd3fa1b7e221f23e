"""DIFT's anchor rules compared on recorded detector inputs: what DIFT would detect, and when it would decide.

    python benchmarks/anchor_rules.py DIR [DIR ...] [--rules gated paper] [--into docs/dift_in_training.md]

Each DIR is a recording of ``benchmarks/dift_inputs.py record`` (the embedded training set after every epoch of
DIFT's window, the anchors, the ground truth). For each anchor rule the detector is replayed over the recorded
epochs with the shipped defaults otherwise, and decides as DIFT in training does (``DIFTMixin``): at the first
epoch whose intersected set is stable, or at the last recorded epoch (DIFT's stop epoch) with the set of the last
epoch whose filter kept something, once it has ``min_rounds`` such epochs behind it. Reported: the decision
epoch, the stable set and the detected set (precision / recall against the poisoned samples; on a no-poison
recording, the share of the training set that would be removed), and how well label spreading from that stable
set ranks the poisoned samples: the ROC AUC of its poisoned score and the highest recall any threshold on the
score reaches at precision >= 0.8 (what a better decision rule for the scores could detect at most); and that best
recall for an oracle that knows the truth and scores each sample by the share of poisoned samples among its 10
nearest neighbours in the decision epoch's embedding (how far the embedding itself separates the poison: what a
better ranking than spreading's could reach). Detection does not change the training before DIFT decides, so the
replay gives what a run with that rule would detect (the fine-tuning and the rest of the run are not replayed: ACC
and ASR need the run itself).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from sklearn.metrics import precision_recall_curve, roc_auc_score

from dift_plugin.config import ANCHOR_RULES, DIFTConfig
from dift_plugin.density import knn_search
from dift_plugin.detector import DIFTDetector
from dift_plugin.scores import detection_scores
from results import add_into, write_results

OUT = Path(__file__).with_name("anchor_rules_results")
# The detector's rules when this comparison was made (2026-12-03), the anchor rule aside: its table stays reproducible
OF_THE_TIME = {"intersection": "cumulative", "tolerance": 0.0, "stability": "size", "unstable_at_stop": "act"}


def replay(recording: Path, rule: str, anchors: tuple[np.ndarray, np.ndarray] | None = None,
           unstable_at_stop: str = DIFTConfig.unstable_at_stop, on_epoch: Callable[[DIFTDetector], None] | None = None,
           **params: object) -> tuple[dict, np.ndarray]:
    """The detector over the recorded epochs with ``anchor_rule=rule`` (and ``params``, other ``DIFTDetector``
    settings), deciding as DIFT in training does (``unstable_at_stop``: what it does with a set that is not stable
    at the stop epoch); with the recorded anchors, or ``anchors`` (indexes, labels) instead; ``on_epoch(detector)``
    after each epoch up to the decision. Returns its row and the detected indexes."""
    if anchors is None:
        recorded = np.load(recording / "anchors.npz")
        anchors = recorded["index"], recorded["labels"]
    truth = np.load(recording / "truth.npy")
    epochs = sorted(recording.glob("epoch_*.npy"))
    det = DIFTDetector(anchor_rule=rule, random_state=0, **params)
    for epoch, path in enumerate(epochs):
        x = np.load(path)
        det.partial_fit(x, *anchors)
        if on_epoch is not None:
            on_epoch(det)
        if det.is_stable_ or epoch == len(epochs) - 1:
            break
    detected, stable = det.decided_indexes(unstable_at_stop), det.recent_set_
    row = {"run": recording.name, "rule": rule, "decided_epoch": epoch, "stable_by_intersection": bool(det.is_stable_),
           "stable": int(len(stable)), "n_samples": int(det.n_samples_), "n_poisoned": int(len(truth))}
    row.update(detected_row(detected, truth, det.n_samples_))
    if len(truth):
        row.update(scored("stable", stable, truth, det.n_samples_))
        poisoned = np.zeros(len(x), dtype=bool)
        poisoned[truth] = True
        if len(det.recent_indexes_):
            row.update({"auc": round(float(roc_auc_score(poisoned, det.spread_score_)), 3),
                        "recall_at_p80": best_recall(det.spread_score_, poisoned)})
        else:
            row.update({"auc": None, "recall_at_p80": None})
        row["oracle_recall_at_p80"] = oracle_recall(x, poisoned)
    return row, detected


def scored(name: str, found: np.ndarray, truth: np.ndarray, n: int) -> dict:
    """``{name}_precision`` (None for an empty set) and ``{name}_recall`` of ``found`` against ``truth``."""
    scores = detection_scores(found, truth, n)
    return {f"{name}_precision": scores["precision"] if len(found) else None, f"{name}_recall": scores["recall"]}


def detected_row(detected: np.ndarray, truth: np.ndarray, n: int) -> dict:
    """A replay row's ``detected`` count, with its precision / recall where the recording is poisoned."""
    return {"detected": int(len(detected)), **(scored("detected", detected, truth, n) if len(truth) else {})}


def best_recall(score: np.ndarray, poisoned: np.ndarray, precision_at_least: float = 0.8) -> float:
    """The highest recall of the poisoned samples that a threshold on ``score`` reaches at the given precision."""
    precision, recall, _ = precision_recall_curve(poisoned, score)
    return round(float(recall[precision >= precision_at_least].max()), 3)


def oracle_recall(x: np.ndarray, poisoned: np.ndarray, k: int = 10) -> float:
    """Best recall at precision >= 0.8 of an oracle scoring each sample by the poisoned share of its ``k`` nearest
    neighbours in ``x`` (how far the embedding itself separates the poison)."""
    return best_recall(poisoned[knn_search(x, k, random_state=0).index].mean(1), poisoned)


def fmt(row: dict, name: str) -> str:
    n = row[name]
    if not row["n_poisoned"]:
        return f"{n} ({100 * n / row['n_samples']:.2f} % of the training set)"
    precision = row[f"{name}_precision"]
    return f"{n} ({precision:.2f} / {row[f'{name}_recall']:.2f})" if precision is not None else f"{n}"


def table(rows: list[dict]) -> str:
    lines = ["| recording | anchor rule | decided after epoch | stable set (precision / recall) | detected "
             "(precision / recall) | spreading's score: AUC, best recall at precision >= 0.8 | oracle's best recall "
             "at precision >= 0.8 |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        when = f"{r['decided_epoch']}" + (" (stable)" if r["stable_by_intersection"] else " (stop epoch)")
        rank = f"{r['auc']:.3f}, {r['recall_at_p80']:.2f}" if r.get("auc") is not None else "–"
        oracle = f"{r['oracle_recall_at_p80']:.2f}" if r.get("oracle_recall_at_p80") is not None else "–"
        lines.append(f"| {r['run']} | {r['rule']} | {when} | {fmt(r, 'stable')} | {fmt(r, 'detected')} | {rank} "
                     f"| {oracle} |")
    return "\n".join(lines)


def recordings_parser(doc: str, out: Path) -> argparse.ArgumentParser:
    """The command line of a replay over recordings: ``DIR ... [--out PATH] [--into DOC ...]``."""
    p = add_into(argparse.ArgumentParser(description=doc.split("\n")[0]))
    p.add_argument("dirs", nargs="+", type=Path, help="recordings of benchmarks/dift_inputs.py record")
    p.add_argument("--out", type=Path, default=out)
    return p


def variants_args(doc: str, out: Path, variant: Callable[[str], object], defaults: list[str]) -> argparse.Namespace:
    """The command line of a replay of variants: ``DIR ... [--variants V ...] [--out PATH] [--into DOC ...]``,
    each V parsed by ``variant`` (``defaults`` when none is given); the directories checked as recordings."""
    p = recordings_parser(doc, out)
    p.add_argument("--variants", nargs="+", type=variant, default=[variant(v) for v in defaults])
    args = p.parse_args()
    check_recorded(args.dirs)
    return args


def check_recorded(dirs: list[Path]) -> None:
    """Exit with what to run when a directory is not a finished recording."""
    missing = [d for d in dirs if not ((d / "truth.npy").exists() and (d / "overrides.json").exists())]
    if missing:
        sys.exit(f"not recorded (or not to the end): {', '.join(map(str, missing))} "
                 "(run `python benchmarks/dift_inputs.py record DIR -- OVERRIDES` first)")


def main() -> None:
    p = recordings_parser(__doc__, OUT)
    p.add_argument("--rules", nargs="+", choices=ANCHOR_RULES, default=list(ANCHOR_RULES))
    args = p.parse_args()
    check_recorded(args.dirs)
    rows = []
    for d in args.dirs:
        for rule in args.rules:
            rows.append(replay(d, rule, **OF_THE_TIME)[0])
            print(rows[-1], flush=True)
    print(write_results(args.out, table(rows), rows, into=args.into,
                        note="Each row: one recording replayed with one anchor rule, the detector's other settings "
                             "at their defaults of 2026-12-03 (the cumulative intersection, stable when its size "
                             "repeats, acting at the stop epoch on an unstable set); no-poison recordings: the share "
                             "of the training set removed."))


if __name__ == "__main__":
    main()
