"""Run bookkeeping: per-epoch loss and wall time (kept in checkpoints), and crash-safe checkpoint writes."""

from __future__ import annotations

import os
import time
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.plugins.io import TorchCheckpointIO


class EpochStats(pl.Callback):
    """Records ``{epoch, loss, time_s}`` per finished training epoch; the history survives resume."""

    def __init__(self) -> None:
        self.history: list[dict[str, float]] = []
        self._start = 0.0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        loss = trainer.callback_metrics.get("train_loss_epoch")
        self.history.append({"epoch": trainer.current_epoch, "loss": float(loss) if loss is not None else float("nan"),
                             "time_s": round(time.perf_counter() - self._start, 3)})

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict["history"])


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file and renames it, so a kill mid-write never leaves a broken one."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str, storage_options: Any = None) -> None:
        tmp = f"{path}.tmp"
        super().save_checkpoint(checkpoint, tmp, storage_options)
        os.replace(tmp, path)
