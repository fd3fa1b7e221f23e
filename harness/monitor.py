"""ASR and ACC during training, and where the (known) poisoned samples rank in kNN density — the premise DIFT
relies on.

Harness-only: it reads the ground-truth poisoned indexes, which no defense ever sees.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F

from dift_plugin.density import knn_distance, knn_search, local_density
from dift_plugin.scores import density_rank_stats
from harness.augment import Normalize
from harness.evaluate import extract_features


@torch.no_grad()
def embedding_spaces(model: pl.LightningModule, images: torch.Tensor, normalize: Normalize) -> dict[str, torch.Tensor]:
    """The two spaces DIFT may rank in: backbone features and the L2-normalised projector output."""
    device = model.device
    feats = extract_features(model.backbone, images, normalize, device=device)
    was_training = model.projector.training
    model.projector.eval()
    z = torch.cat([model.projector(f.to(device)).cpu() for f in feats.split(1024)])
    model.projector.train(was_training)
    return {"backbone": feats, "projector": F.normalize(z, dim=1)}


class AttackMonitor(pl.Callback):
    """Every ``every_n_epochs`` (and at the last epoch) records ACC and ASR (``evaluate``: a callable taking the
    backbone and returning evaluate_encoder's metrics) and, when samples are poisoned, their density rank in both
    spaces: the ASR-vs-epoch curve. The history is kept in checkpoints and written to ``metrics.json``."""

    def __init__(self, evaluate: Callable[[torch.nn.Module], dict[str, float]], images: torch.Tensor,
                 poisoned: np.ndarray, normalize: Normalize, k: int = 10, every_n_epochs: int = 5) -> None:
        self.evaluate = evaluate
        self.images, self.poisoned, self.normalize = images, poisoned, normalize
        self.k, self.every = k, every_n_epochs
        self.history: list[dict[str, Any]] = []

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch
        last = epoch + 1 == trainer.max_epochs
        if trainer.global_rank != 0 or not (last or (self.every > 0 and (epoch + 1) % self.every == 0)):
            return
        row: dict[str, Any] = {"epoch": epoch, **self.evaluate(pl_module.backbone)}
        if len(self.poisoned):
            for space, x in embedding_spaces(pl_module, self.images, self.normalize).items():
                rho = local_density(knn_distance(knn_search(x, self.k, backend="exact")))
                row.update({f"{space}_{key}": v for key, v in density_rank_stats(rho, self.poisoned).items()})
        self.history.append(row)
        asr = f", ASR lin {row['asr_linear']:.1f} / kNN {row['asr_knn']:.1f} %" if "asr_linear" in row else ""
        rank = (f", poisoned median density rank projector {row['projector_median_rank_pct']:.1f} / backbone "
                f"{row['backbone_median_rank_pct']:.1f} %" if "projector_median_rank_pct" in row else "")
        pl_module.print(f"monitor epoch {epoch}: ACC lin {row['acc_linear']:.1f} / kNN {row['acc_knn']:.1f} %{asr}{rank}")

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict["history"])
