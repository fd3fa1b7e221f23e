"""What DIFT does once its detected set is final (the paper's "fine-tuning" and the rest of the run): fine-tune the
online encoder on the detected samples (Eq. 7), sync the momentum branch, forget the optimizer's state, restart the
LR schedule over the remaining epochs, and train without the detected samples from then on."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from dift_plugin.branches import sync_momentum_branches
from dift_plugin.config import DIFTConfig, select
from dift_plugin.finetune import finetune
from dift_plugin.schedule import reset_optimizer_state
from dift_plugin.state import DIFTState
from dift_plugin.surgery import broadcast_weights, exclude_from_loader, install_restarted_schedule, steps_per_epoch


def mitigate(module: Any, detected: np.ndarray, epoch: int, cfg: DIFTConfig, state: DIFTState) -> None:
    """After ``epoch`` (0-based) with the non-empty ``detected`` set: every step above, timed into ``state``
    (``finetuning``, ``restart``), which ends in phase ``filtered``. ``module`` is the training LightningModule with
    ``dift_features`` and ``dift_data``."""
    ft = cfg.finetune
    with state.timed("finetuning"):
        if ft.epochs > 0 and len(detected) >= 2:
            modules = [module.backbone] + ([module.projector] if ft.space == "projector" else [])
            order = torch.Generator().manual_seed(cfg.seed)  # advances: new batches every epoch
            result = finetune(lambda x: module.dift_features(x, ft.space), modules,
                              lambda: module.dift_data.batches(detected, ft.batch_size, module.device, order), ft)
            state.finetune = dataclasses.asdict(result)
        broadcast_weights(module)
        sync_momentum_branches(module, seed=cfg.seed)
    with state.timed("restart"):
        exclude_detected(module, detected)
        trainer = module.trainer
        remaining = int(trainer.max_epochs) - epoch - 1
        if cfg.reset_optimizer_state:
            for optimizer in trainer.optimizers:
                reset_optimizer_state(optimizer)
        if cfg.restart_lr and remaining > 0 and trainer.lr_scheduler_configs:
            per_epoch = steps_per_epoch(trainer)
            warmup = int(round(restart_warmup_epochs(cfg, module.cfg) * per_epoch))
            state.restart = {"step": int(trainer.global_step), "warmup": warmup, "total": remaining * per_epoch}
            install_restarted_schedule(trainer, warmup, remaining * per_epoch, 0)
    state.phase = "filtered"


def exclude_detected(module: Any, detected: np.ndarray) -> None:
    """From now on the training loader never yields ``detected``; MoCo (a ``queue``) keeps full batches."""
    exclude_from_loader(module.trainer.train_dataloader, detected, len(module.dift_data.dataset),
                        full_batches=hasattr(module, "queue"))


def restart_warmup_epochs(cfg: DIFTConfig, run_cfg: Any) -> float:
    """``dift.restart_warmup_epochs``, else the run's own warm-up (ours, then solo-learn's key), else 0."""
    if cfg.restart_warmup_epochs is not None:
        return cfg.restart_warmup_epochs
    for path in ("optimizer.warmup_epochs", "scheduler.warmup_epochs"):
        value = select(run_cfg, path)
        if value is not None:
            return float(value)
    return 0.0
