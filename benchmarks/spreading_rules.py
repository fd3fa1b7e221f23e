"""Label spreading's decision rule on real runs (docs/detection.md, label spreading): from the same
seeds, which samples does each rule flag?

    python benchmarks/spreading_rules.py RUN_DIR [RUN_DIR ...]    # e.g. runs/cpu_threat/simclr_ssl_s0

Per run: the training set embedded by the run's final encoder (L2-normalised projector output, DIFT's default
space), anchors drawn as DIFT draws them (10 per class, clean pool, seed 0). Seeds: the set one detection round
keeps after the anchor filter, the 5 % densest candidates (what an epoch would pass on if the filter let all
through: the stress test on a clean run), and random 10 / 20 / 30 % of the true poisoned samples (how far a
small seed grows). Rules, all on the same spread scores F (sparse 20-NN RBF graph, alpha 0.5) except the
paper's:

- ``prior |S|/N, 0.5``: class-mass normalisation at the seeds' share, threshold 0.5 (our rule until Dec 2026);
- ``self-consistent prior, 0.6``: the share the detected set implies (``spreading.self_consistent_prior``; ours);
- ``paper: scikit-learn``: ``LabelSpreading`` defaults on the dense RBF kernel (gamma 20, alpha 0.2), argmax.

Each cell: precision / recall / flagged count. Writes ``--out`` .md and .json.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dift_plugin import DIFTDetector
from dift_plugin.density import knn_search
from dift_plugin.scores import detection_scores
from dift_plugin.spreading import (mass_normalized, normalized_graph, rbf_knn_graph, self_consistent_prior,
                                   sklearn_spreading, spread)
from harness.detect import from_run
from results import runs_parser, write_results

OUT = Path(__file__).with_name("spreading_rules_results")
SEED_SHARES = (0.1, 0.2, 0.3)


def rules(x: np.ndarray, seeds: np.ndarray, anchors: np.ndarray, graph) -> dict[str, np.ndarray]:  # noqa: ANN001
    seeds = np.setdiff1d(seeds, anchors)
    f = spread(graph, seeds, anchors, alpha=0.5, max_iter=100).scores
    before = np.union1d(seeds, np.flatnonzero(mass_normalized(f, len(seeds) / len(x)) > 0.5))
    return {"prior |S|/N, 0.5": np.setdiff1d(before, anchors),
            "self-consistent prior, 0.6": self_consistent_prior(f, seeds, anchors, 0.6)[0],
            "paper: scikit-learn": np.setdiff1d(sklearn_spreading(x, seeds, anchors)[0], anchors)}


def measure(run_dir: Path) -> list[dict]:
    x, _, (anchors, labels), truth = from_run(run_dir, "projector", 10, 0)
    truth = truth if truth is not None else np.zeros(0, np.int64)
    det = DIFTDetector().fit(x, anchors, labels)
    seedsets = {"kept by one round": det.kept_, "5 % densest candidates": det.candidates_}
    rng = np.random.default_rng(0)
    if len(truth):
        seedsets |= {f"random {s:.0%} of the poisoned": rng.choice(truth, int(s * len(truth)), replace=False)
                     for s in SEED_SHARES}
    graph = normalized_graph(rbf_knn_graph(knn_search(x, 20, backend="exact")))

    def scored(found: np.ndarray) -> dict:
        return detection_scores(found, truth, len(x)) | {"flagged": len(found)}

    rows = []
    for name, seeds in seedsets.items():
        row = {"run": run_dir.name, "seeds": name, "poisoned": len(truth), "seed_set": scored(seeds)}
        if len(np.setdiff1d(seeds, anchors)):
            row |= {rule: scored(found) for rule, found in rules(x, seeds, anchors, graph).items()}
        rows.append(row)
        print(row, flush=True)
    return rows


def cell(s: dict | None) -> str:
    if s is None:
        return "–"
    if s["recall"] == 0 and s["precision"] == 0:  # a clean run: nothing to find, each flag a false positive
        return f"{s['flagged']} flagged (FPR {100 * s['fpr']:.1f} %)"
    return f"{s['precision']:.2f} / {s['recall']:.2f} / {s['flagged']}"


def table(rows: list[dict]) -> str:
    names = ["prior |S|/N, 0.5", "self-consistent prior, 0.6", "paper: scikit-learn"]
    lines = ["| run (poisoned) | seeds | seed set | " + " | ".join(names) + " |", "|---" * (3 + len(names)) + "|"]
    for r in rows:
        lines.append(f"| {r['run']} ({r['poisoned']}) | {r['seeds']} | {cell(r['seed_set'])} | "
                     + " | ".join(cell(r.get(n)) for n in names) + " |")
    return "\n".join(lines)


def main() -> None:
    p = runs_parser(__doc__, OUT)
    args = p.parse_args()
    rows = [r for run in args.runs for r in measure(run)]
    print(write_results(args.out, table(rows), rows, "Cells: precision / recall / flagged.", args.into))


if __name__ == "__main__":
    main()
