"""Is the intersected set one group? Its cohesion per epoch, on poisoned and no-poison recordings.

    python benchmarks/cohesion.py DIR [DIR ...] [--figure docs/cohesion.png] [--into docs/dift_in_training.md]

Each DIR is a recording of ``benchmarks/dift_inputs.py record`` (the embedded training set after every epoch of
DIFT's window, the anchors, the ground truth). The detector is replayed with the shipped settings over every
recorded epoch, without stopping at its decision, and each epoch's intersected set S_t is described: its size, its
poisoned share, whether it had settled (``StabilityTracker``: the stability rule without the cohesion check) and
its cohesion, the share of S_t in its largest group of members connected in the k-NN graph
(``dift_plugin.cohesion``). A set is stable when it has settled and its cohesion is at least
``DetectorConfig.min_cohesion``: reported per recording, when DIFT decides with that check and without it, the
cohesion at those epochs, and the range of cohesion over the epochs where the set had settled. The figure draws
the cohesion per epoch, one line per recording (no-poison recordings dashed), settled epochs marked.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from anchor_rules import check_recorded, recordings_parser  # noqa: E402
from dift_plugin.config import DetectorConfig  # noqa: E402
from dift_plugin.detector import DIFTDetector  # noqa: E402
from results import write_results  # noqa: E402

OUT = Path(__file__).with_name("cohesion_results")
THRESHOLD = DetectorConfig.min_cohesion


def row_of(recording: Path) -> dict:
    """Per recorded epoch: |S_t|, its poisoned share, settled or not, cohesion; and the decisions with / without."""
    recorded = np.load(recording / "anchors.npz")
    truth = np.load(recording / "truth.npy")
    det = DIFTDetector(min_cohesion=0.0, random_state=0)  # settled == stable: the check is applied below
    epochs = []
    for path in sorted(recording.glob("epoch_*.npy")):
        det.partial_fit(np.load(path), recorded["index"], recorded["labels"])
        s = det.stable_set_
        epochs.append({"size": int(len(s)), "settled": bool(det.is_stable_), "cohesion": round(det.cohesion_, 3),
                       "poisoned_share": round(float(np.isin(s, truth).mean()), 3) if len(s) and len(truth) else None})

    def first(ok: bool) -> int | None:
        return next((e for e, r in enumerate(epochs) if r["settled"] and (r["cohesion"] >= THRESHOLD or not ok)),
                    None)

    settled = [r["cohesion"] for r in epochs if r["settled"]]
    return {"run": recording.name, "poisoned": int(len(truth)), "epochs": epochs,
            "decided_without_check": first(False), "decided_with_check": first(True),
            "settled_cohesion": [min(settled), max(settled)] if settled else None}


def decision(r: dict, key: str) -> str:
    epoch = r[key]
    if epoch is None:
        return "never stable: nothing detected"
    e = r["epochs"][epoch]
    share = "" if e["poisoned_share"] is None else f", {e['poisoned_share']:.2f} poisoned"
    return f"{epoch}: {e['size']} samples{share}, cohesion {e['cohesion']:.2f}"


def table(rows: list[dict]) -> str:
    lines = ["| recording | poisoned samples | DIFT decides without the check (epoch: S_t) | with it "
             f"(cohesion >= {THRESHOLD}) | cohesion over the epochs S_t had settled (min - max) |",
             "|---|---|---|---|---|"]
    for r in rows:
        rng = "never settled" if r["settled_cohesion"] is None else "{:.2f} - {:.2f}".format(*r["settled_cohesion"])
        lines.append(f"| {r['run']} | {r['poisoned']} | {decision(r, 'decided_without_check')} "
                     f"| {decision(r, 'decided_with_check')} | {rng} |")
    return "\n".join(lines)


def figure(rows: list[dict], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.set_prop_cycle(color=plt.get_cmap("tab20").colors)
    for r in rows:
        cohesion = [e["cohesion"] for e in r["epochs"]]
        (line,) = ax.plot(range(len(cohesion)), cohesion, label=r["run"], linewidth=1.2,
                          linestyle="-" if r["poisoned"] else "--")
        settled = [e for e, row in enumerate(r["epochs"]) if row["settled"]]
        ax.plot(settled, [cohesion[e] for e in settled], "o", markersize=3.5, color=line.get_color())
    ax.axhline(THRESHOLD, color="grey", linestyle=":", linewidth=0.8)
    ax.set(xlabel="epoch (0-based; DIFT's window)", ylabel="share of S_t in its largest kNN-connected group",
           ylim=(0, 1.03), title="Cohesion of the intersected set per epoch (dashed: no poison; o: settled)")
    ax.title.set_fontsize(9)
    ax.legend(fontsize=6, loc="lower right", ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    p = recordings_parser(__doc__, OUT)
    p.add_argument("--figure", type=Path, help="PNG of the cohesion per epoch")
    args: argparse.Namespace = p.parse_args()
    check_recorded(args.dirs)
    rows = []
    for d in args.dirs:
        rows.append(row_of(d))
        print({k: v for k, v in rows[-1].items() if k != "epochs"}, flush=True)
    if args.figure:
        figure(rows, args.figure)
    print(write_results(args.out, table(rows), rows, into=args.into,
                        note="Replayed with the shipped settings over every recorded epoch; settled: the stability "
                             "rule without the cohesion check. Poisoned share of S_t on poisoned recordings."))


if __name__ == "__main__":
    main()
