"""What DIFT's detector is given each epoch, and what the anchor filter makes of it (docs/dift_in_training.md,
"When the anchor filter abstains").

    python benchmarks/dift_inputs.py record DIR -- preset=cpu method=simclr attack=sslbackdoor seed=0
    python benchmarks/dift_inputs.py report DIR [DIR ...] [--into docs/dift_in_training.md]

``record`` trains ``dift-pretrain defense=dift`` with the given overrides (run directory ``DIR/run``) and saves
each input of ``DIFTDetector.partial_fit`` (the embedded training set, float32) as ``DIR/epoch_NN.npy``, with
the anchors and the ground truth; it stops after ``--epochs`` detection rounds (default 20: DIFT's window in a
40-epoch run), since nothing after DIFT's decision reaches the detector (the detector's patience is set past the
window, so that it does not decide earlier). ``report`` scores, per recorded epoch, the 5 % densest candidates
(their poisoned share), what our gated anchor rule keeps (the GMM's far side behind two gates: Ashman's D >= 2
and the far mode beyond the population's median MinDist), what the 2-component GMM's far side alone keeps (the
paper's rule, the default since 2026-12-03), and each candidate's MinDist excess over the median MinDist of the
samples nearest the same class's anchors ("excess": benign dense points lie nearer their class's anchors than
its typical member; does the poison?).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.mixture import GaussianMixture

from dift_plugin.anchors import _boundary_between_means, filter_by_anchors
from dift_plugin.density import as_tensor, knn_distance, knn_search, local_density, select_candidates
from dift_plugin.detector import DIFTDetector
from results import add_into, write_results

OUT = Path(__file__).with_name("dift_inputs_results")


class Recorded(Exception):
    """Raised from the detector once the epochs asked for are saved: the training stops there."""


def record(out: Path, overrides: list[str], epochs: int) -> None:
    from harness.config import pretrain_config
    from harness.pretrain import run

    out.mkdir(parents=True, exist_ok=True)
    fit = DIFTDetector.partial_fit
    saved: list[int] = []

    def saving(self: DIFTDetector, X, anchor_indexes, anchor_labels):  # noqa: ANN001, N803
        np.save(out / f"epoch_{len(saved):02d}.npy", as_tensor(X).cpu().numpy().astype(np.float32))
        np.savez(out / "anchors.npz", index=np.asarray(anchor_indexes), labels=np.asarray(anchor_labels))
        saved.append(len(saved))
        result = fit(self, X, anchor_indexes, anchor_labels)
        if len(saved) >= epochs:
            raise Recorded
        return result

    # patience past the window: DIFT never decides early, so every epoch up to its stop epoch is recorded
    # whatever rule is replayed on them later (benchmarks/anchor_rules.py); detection does not change the
    # training before DIFT decides, so the embeddings are those of a run with any patience
    cfg = pretrain_config([*overrides, "defense=dift", f"dift.detector.patience={epochs + 1}"])
    DIFTDetector.partial_fit = saving
    try:
        run(cfg, out / "run")
    except Recorded:
        pass
    finally:
        DIFTDetector.partial_fit = fit
    truth = out / "run" / "poisoned_indexes.npy"
    np.save(out / "truth.npy", np.load(truth) if truth.exists() else np.zeros(0, np.int64))
    (out / "overrides.json").write_text(json.dumps(overrides) + "\n")
    print(f"{len(saved)} epochs recorded in {out}")


def nearest_class(x: torch.Tensor, anchors: torch.Tensor, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(MinDist, the class that attains it) for every row of ``x`` (Eq. 6)."""
    per_class = torch.stack([torch.cdist(x, anchors[torch.as_tensor(labels == c)]).mean(1)
                             for c in np.unique(labels)], 1)
    return per_class.min(1).values.numpy(), per_class.argmin(1).numpy()


def epoch_row(x: torch.Tensor, anchors: np.ndarray, labels: np.ndarray, truth: np.ndarray) -> dict:
    density = local_density(knn_distance(knn_search(x, 10, backend="exact")))
    cand = select_candidates(density, int(round(0.05 * len(x))))
    min_dist, near = nearest_class(x, x[torch.as_tensor(anchors)], labels)
    typical = {c: np.median(min_dist[near == c]) for c in np.unique(near)}
    excess = (min_dist - np.array([typical[c] for c in near]))[cand]
    poisoned = np.isin(cand, truth)
    gated = filter_by_anchors(min_dist[cand], float(np.median(min_dist)), rule="gated").kept
    d = min_dist[cand].astype(np.float64)[:, None]
    gmm = GaussianMixture(2, random_state=0).fit(d)
    far = int(np.argmax(gmm.means_.ravel()))
    far_side = np.flatnonzero(d[:, 0] >= _boundary_between_means(gmm, far))
    mu, var = gmm.means_.ravel(), gmm.covariances_.ravel()

    def kept(index: np.ndarray) -> dict:
        return {"n": int(len(index)), "precision": round(float(poisoned[index].mean()), 3) if len(index) else None}

    def median(mask: np.ndarray) -> float | None:
        return round(float(np.median(excess[mask])), 3) if mask.any() else None

    return {"candidates_poisoned": int(poisoned.sum()), "gated": kept(gated), "far_side": kept(far_side),
            "separation": round(float(abs(mu[0] - mu[1]) * np.sqrt(2 / var.sum())), 2),
            "far_mean_vs_median": round(float(mu[far] - np.median(min_dist)), 3),
            "excess_poisoned": median(poisoned), "excess_benign": median(~poisoned)}


def fmt_kept(k: dict) -> str:
    return f"{k['n']}" + (f" ({k['precision']:.2f})" if k["precision"] is not None else "")


def report(dirs: list[Path]) -> tuple[str, list[dict]]:
    rows = []
    for d in dirs:
        a = np.load(d / "anchors.npz")
        truth = np.load(d / "truth.npy")
        for path in sorted(d.glob("epoch_*.npy")):
            row = epoch_row(torch.from_numpy(np.load(path)), a["index"], a["labels"], truth)
            rows.append({"run": d.name, "epoch": int(path.stem.split("_")[1]), **row})
            print(rows[-1], flush=True)
    lines = ["| run | epoch | poisoned of the candidates (the 5 % densest) | gated rule keeps (precision) | GMM far side "
             "keeps (precision) | D | far mean - population median MinDist | MinDist excess: poisoned / "
             "benign candidates |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ex = " / ".join("–" if v is None else f"{v:+.3f}" for v in (r["excess_poisoned"], r["excess_benign"]))
        lines.append(f"| {r['run']} | {r['epoch']} | {r['candidates_poisoned']} | {fmt_kept(r['gated'])} | "
                     f"{fmt_kept(r['far_side'])} | {r['separation']:.2f} | {r['far_mean_vs_median']:+.3f} | {ex} |")
    return "\n".join(lines), rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("record", help="train with DIFT, saving what its detector is given (overrides after --)")
    r.add_argument("dir", type=Path)
    r.add_argument("--epochs", type=int, default=20)
    s = add_into(sub.add_parser("report", help="score the anchor filter on recorded epochs"))
    s.add_argument("dirs", nargs="+", type=Path)
    s.add_argument("--out", type=Path, default=OUT)
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)  # what follows -- goes to dift-pretrain
    args = p.parse_args(argv[:cut])
    if args.command == "record":
        record(args.dir, argv[cut + 1:], args.epochs)
        return
    missing = [d for d in args.dirs if not (d / "anchors.npz").exists()]
    if missing:
        sys.exit(f"not recorded: {', '.join(map(str, missing))} (run `record` first)")
    table, rows = report(args.dirs)
    print(write_results(args.out, table, rows, into=args.into,
                        note="Each row: one recorded epoch's embeddings, scored against the ground truth."))


if __name__ == "__main__":
    main()
