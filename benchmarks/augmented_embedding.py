"""Could DIFT take its embeddings from the training step (no extra pass)? Detection on the un-augmented, eval-mode
embedding DIFT uses against one augmented view embedded in train mode (what a training step computes).

    python benchmarks/augmented_embedding.py RUN_DIR [RUN_DIR ...]

Per run: its final encoder; the training set embedded (L2-normalised projector output) un-augmented in eval mode,
and as the first of two augmented views (the run's augmentation, batches of 256 in a fixed random order) in train
mode (batch-norm batch statistics); one ``DIFTDetector.fit`` on each with its defaults and DIFT's anchors.
Reports the poisoned samples' median density rank, the candidates' precision and the detected set's precision /
recall. Writes ``--out`` .md and .json.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from dift_plugin import DIFTDetector, draw_anchors
from dift_plugin.scores import density_rank_stats, detection_scores
from harness.augment import Normalize, TwoViews, build_view_augmentation
from harness.data import pin_data_root
from harness.experiment import load_run, prepare_data
from results import runs_parser, write_results

OUT = Path(__file__).with_name("augmented_embedding_results")


@torch.no_grad()
def embed(model, images: torch.Tensor, prepare, train_mode: bool) -> torch.Tensor:  # noqa: ANN001
    model.train(train_mode)
    out = torch.empty(len(images), model.projector[-1].out_features)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    for start in range(0, len(images), 256):
        idx = order[start:start + 256]
        out[idx] = F.normalize(model.projector(model.backbone(prepare(images[idx], start))), dim=1)
    return out


def measure(run_dir: Path) -> list[dict]:
    cfg, model = load_run(run_dir)
    pin_data_root(cfg)
    data = prepare_data(cfg)
    images, truth = data.ssl_train.images, data.poisoned_indexes
    normalize = Normalize(list(cfg.data.mean), list(cfg.data.std))
    views = TwoViews(build_view_augmentation(cfg.augment, images.shape[-1]), normalize)
    anchors = draw_anchors(data.train.labels.numpy(), 10, pool=np.setdiff1d(np.arange(len(images)), truth),
                           random_state=0)
    rows = []
    for name, train_mode, prepare in (("un-augmented, eval mode (DIFT)", False, lambda x, s: normalize(x)),
                                      ("one augmented view, train mode", True, lambda x, s: views(x, seed=s)[0])):
        x = embed(model, images, prepare, train_mode).numpy()
        det = DIFTDetector().fit(x, *anchors)
        rows.append({"run": run_dir.name, "embedding": name, **density_rank_stats(det.density_, truth),
                     "candidate_precision": detection_scores(det.candidates_, truth, len(x))["precision"],
                     "detected": len(det.poisoned_indexes_), **detection_scores(det.poisoned_indexes_, truth, len(x))})
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    p = runs_parser(__doc__, OUT)
    args = p.parse_args()
    rows = [r for run in args.runs for r in measure(run)]
    lines = ["| run | embedding | poisoned median density rank % | candidates' precision | detected | precision / "
             "recall |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['run']} | {r['embedding']} | {r['median_rank_pct']:.1f} | {r['candidate_precision']:.2f} | "
              f"{r['detected']} | {r['precision']:.2f} / {r['recall']:.2f} |" for r in rows]
    print(write_results(args.out, "\n".join(lines), rows, into=args.into))


if __name__ == "__main__":
    main()
