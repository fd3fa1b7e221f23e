"""Detection alone (the paper's TPR / FPR comparison): DBSCAN, OPTICS (B1's filters, their defaults) and DIFT's
detector (one round, its defaults) on the same embeddings of the same finished runs.

    python benchmarks/detection_compare.py RUN_DIR [RUN_DIR ...] [--space projector|backbone]

Per run: the training set embedded by the run's final encoder in ``--space`` (default the L2-normalised projector
output, DIFT's and B1's default), DIFT's anchors drawn as in training (10 per class from the clean pool, seed 0).
Each cell: TPR (recall) / FPR, flagged count, seconds. Writes ``--out`` .md and .json.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from baselines.density_filter import density_filter
from dift_plugin import DIFTDetector
from dift_plugin.scores import detection_scores
from harness.detect import from_run
from results import runs_parser, write_results

OUT = Path(__file__).with_name("detection_compare_results")


def measure(run_dir: Path, space: str) -> dict:
    x, _, (anchors, labels), truth = from_run(run_dir, space, 10, 0)
    truth = truth if truth is not None else np.zeros(0, np.int64)
    row: dict = {"run": run_dir.name, "space": space, "samples": len(x), "poisoned": len(truth)}
    for name in ("dbscan", "optics", "dift"):
        start = time.perf_counter()
        if name == "dift":
            flagged = DIFTDetector().fit(x, anchors, labels).poisoned_indexes_
        else:
            flagged = density_filter(x, name).flagged
        seconds = time.perf_counter() - start
        row[name] = {**detection_scores(flagged, truth, len(x)), "flagged": len(flagged), "seconds": round(seconds, 2)}
    print(row, flush=True)
    return row


def table(rows: list[dict]) -> str:
    lines = ["| run (poisoned of N) | space | DBSCAN TPR / FPR, flagged, s | OPTICS TPR / FPR, flagged, s | "
             "DIFT TPR / FPR, flagged, s |", "|---|---|---|---|---|"]
    for r in rows:
        cells = [f"{r[m]['recall']:.3f} / {r[m]['fpr']:.4f}, {r[m]['flagged']}, {r[m]['seconds']:.1f}"
                 for m in ("dbscan", "optics", "dift")]
        lines.append(f"| {r['run']} ({r['poisoned']} of {r['samples']}) | {r['space']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    p = runs_parser(__doc__, OUT)
    p.add_argument("--space", choices=["projector", "backbone"], action="append")
    args = p.parse_args()
    rows = [measure(run, space) for run in args.runs for space in (args.space or ["projector"])]
    print(write_results(args.out, table(rows), rows, into=args.into))


if __name__ == "__main__":
    main()
