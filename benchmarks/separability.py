"""How far DIFT's embedding separates the poison, epoch by epoch: the recall any detector could reach there.

    python benchmarks/separability.py DIR [DIR ...] [--figure docs/separability.png]
                                      [--into docs/dift_in_training.md]

Each DIR is a poisoned recording of ``benchmarks/dift_inputs.py record`` (the embedded training set after every
epoch of DIFT's window, the anchors, the ground truth). For every recorded epoch: the best recall at precision
>= 0.8 of an oracle that knows the truth and scores each sample by the share of poisoned samples among its 10
nearest neighbours in that epoch's embedding (as ``benchmarks/anchor_rules.py``'s last column, there at the
decision epoch only). A detector that works in this embedding (density ranks, label spreading on a kNN graph)
cannot be expected to do better: where the oracle stays below 0.9, #11's recall bar of 0.9 is out of reach
for any rule applied to that epoch. Beside it, DIFT's decision replayed with the shipped settings (the epoch and
what it detects), and at that epoch, from the same stable set, what the spreading settings ``SETTINGS`` detect
(graph k, alpha, threshold of the self-consistent rule: is a setting of today's rule what stands between the
detected set and the oracle?). The figure draws the oracle's recall per epoch, one line per recording, DIFT's
decision marked.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from anchor_rules import check_recorded, oracle_recall, recordings_parser, replay  # noqa: E402
from dift_plugin.config import DetectorConfig  # noqa: E402
from dift_plugin.density import Neighbours, knn_search  # noqa: E402
from dift_plugin.detector import DIFTDetector  # noqa: E402
from dift_plugin.spreading import normalized_graph, rbf_knn_graph, self_consistent_prior, spread  # noqa: E402
from results import write_results  # noqa: E402

OUT = Path(__file__).with_name("separability_results")
BAR = 0.9  # #11's recall bar
# (graph_k, alpha) x thresholds of the self-consistent rule; the shipped (20, 0.5, 0.6) among them
SETTINGS = [(k, alpha, threshold) for k, alpha in [(20, 0.5), (20, 0.8), (20, 0.9), (10, 0.9)]
            for threshold in (0.5, 0.6, 0.7)]


def row_of(recording: Path) -> dict:
    """The oracle's recall per recorded epoch, and DIFT's decision replayed with the shipped settings."""
    truth = np.load(recording / "truth.npy")
    if not len(truth):
        raise SystemExit(f"{recording}: a no-poison recording has no poison to separate")
    epochs = sorted(recording.glob("epoch_*.npy"))
    poisoned = np.zeros(len(np.load(epochs[0], mmap_mode="r")), dtype=bool)
    poisoned[truth] = True
    per_epoch = [oracle_recall(np.load(p), poisoned) for p in epochs]
    last: list[DIFTDetector] = []
    decided, _ = replay(recording, DetectorConfig.anchor_rule, on_epoch=last.append)
    best = int(np.argmax(per_epoch))
    anchors = np.load(recording / "anchors.npz")["index"]
    settings = spreading_settings(np.load(epochs[decided["decided_epoch"]]), np.setdiff1d(last[-1].recent_set_, anchors),
                                  anchors, poisoned)
    return {"run": recording.name, "oracle_recall_at_p80": per_epoch, "decided_epoch": decided["decided_epoch"],
            "stable_by_intersection": decided["stable_by_intersection"], "detected": decided["detected"],
            "detected_precision": decided["detected_precision"], "detected_recall": decided["detected_recall"],
            "oracle_at_decision": per_epoch[decided["decided_epoch"]], "oracle_best": per_epoch[best],
            "oracle_best_epoch": best, "first_epoch_at_bar": next((e for e, r in enumerate(per_epoch) if r >= BAR),
                                                                 None),
            "settings": settings}


def spreading_settings(x: np.ndarray, seeds: np.ndarray, anchors: np.ndarray, poisoned: np.ndarray) -> list[dict]:
    """What label spreading from ``seeds`` detects in ``x`` under each of ``SETTINGS``: count, precision, recall."""
    full = knn_search(x, max(k for k, _, _ in SETTINGS), random_state=0)
    rows = []
    for k, alpha, threshold in SETTINGS:
        graph = normalized_graph(rbf_knn_graph(Neighbours(full.index[:, :k], full.distance[:, :k])))
        scores = spread(graph, seeds, anchors, alpha=alpha, max_iter=DetectorConfig.spread_max_iter).scores
        detected, _ = self_consistent_prior(scores, seeds, anchors, threshold)
        hits = int(poisoned[detected].sum())
        rows.append({"graph_k": k, "alpha": alpha, "threshold": threshold, "detected": int(len(detected)),
                     "precision": round(hits / max(len(detected), 1), 3), "recall": round(hits / int(poisoned.sum()), 3)})
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| recording | DIFT decides after epoch | detected (precision / recall) | oracle's recall at that epoch "
             f"| oracle's best recall (epoch) | first epoch the oracle reaches {BAR} |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        when = f"{r['decided_epoch']}" + ("" if r["stable_by_intersection"] else " (stop epoch)")
        found = (f"{r['detected']} ({r['detected_precision']:.2f} / {r['detected_recall']:.2f})"
                 if r["detected"] else "0")
        first = "never" if r["first_epoch_at_bar"] is None else str(r["first_epoch_at_bar"])
        lines.append(f"| {r['run']} | {when} | {found} | {r['oracle_at_decision']:.2f} "
                     f"| {r['oracle_best']:.2f} ({r['oracle_best_epoch']}) | {first} |")
    return "\n".join(lines)


def settings_table(rows: list[dict]) -> str:
    """One line per spreading setting, one column per recording: recall (precision) at DIFT's decision epoch."""
    lines = ["| graph k, alpha, threshold | " + " | ".join(r["run"] for r in rows) + " |",
             "|---|" + "---|" * len(rows)]
    for i, (k, alpha, threshold) in enumerate(SETTINGS):
        shipped = " (shipped)" if (k, alpha, threshold) == (DetectorConfig.graph_k, DetectorConfig.alpha,
                                                           DetectorConfig.spread_threshold) else ""
        cells = [f"{r['settings'][i]['recall']:.2f} ({r['settings'][i]['precision']:.2f})" for r in rows]
        lines.append(f"| {k}, {alpha}, {threshold}{shipped} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def figure(rows: list[dict], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    for r in rows:
        recall = r["oracle_recall_at_p80"]
        (line,) = ax.plot(range(len(recall)), recall, label=r["run"], linewidth=1.2)
        ax.plot(r["decided_epoch"], recall[r["decided_epoch"]], "o", color=line.get_color())
        ax.plot(r["decided_epoch"], r["detected_recall"], "x", color=line.get_color())
    ax.axhline(BAR, color="grey", linestyle="--", linewidth=0.8)
    ax.set(xlabel="epoch (0-based; DIFT's window)", ylabel="recall at precision >= 0.8", ylim=(0, 1.02),
           title="Oracle (10-NN poisoned share) per epoch; o: DIFT's decision, x: what DIFT detected")
    ax.title.set_fontsize(9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"{path} written")


def main() -> None:
    p = recordings_parser(__doc__, OUT)
    p.add_argument("--figure", type=Path, default=OUT.with_suffix(".png"), help="the per-epoch plot (PNG)")
    args = p.parse_args()
    check_recorded(args.dirs)
    rows = []
    for d in args.dirs:
        rows.append(row_of(d))
        print({k: v for k, v in rows[-1].items() if k != "oracle_recall_at_p80"}, flush=True)
    figure(rows, args.figure)
    tables = table(rows) + "\n\nAt DIFT's decision epoch, from the same stable set: recall (precision) of each " \
        "spreading setting\n\n" + settings_table(rows)
    print(write_results(args.out, tables, rows, into=args.into,
                        note="Each row: one poisoned recording; the oracle scores every sample by the share of "
                             "poisoned samples among its 10 nearest neighbours in that epoch's recorded embedding "
                             f"(DIFT's space); its curve per epoch: {args.figure.name}."))


if __name__ == "__main__":
    main()
