"""``DIFTMixin`` / ``with_dift``: DIFT inside the training of a solo-learn-style Lightning method.

Thin glue over the parts: after each epoch it embeds the training set (:mod:`dift_plugin.embedding`), feeds
:class:`DIFTDetector`; once the detected set is final it fine-tunes the online encoder (:func:`finetune`, Eq. 7),
syncs the momentum branch, restarts the LR schedule over the remaining epochs and makes the trainer skip the
detected samples from then on (:mod:`dift_plugin.surgery`). Its state travels in Lightning checkpoints.

The method class is used unchanged; it must have ``cfg`` (with a ``dift`` entry), ``backbone`` and ``projector``,
optionally ``momentum_pairs`` and a MoCo queue. The data DIFT embeds is given as :class:`DIFTData`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from dift_plugin.branches import sync_momentum_branches
from dift_plugin.config import DIFTConfig, DIFTConfigError, parse_dift_config
from dift_plugin.detector import DIFTDetector
from dift_plugin.embedding import DIFTData, embed_training_set
from dift_plugin.finetune import eval_mode, finetune
from dift_plugin.schedule import reset_optimizer_state
from dift_plugin.spreading import check_dense_size
from dift_plugin.scores import density_rank_stats, detection_scores
from dift_plugin.surgery import (
    broadcast_weights,
    check_ranks_agree,
    exclude_from_loader,
    install_restarted_schedule,
    steps_per_epoch,
)

PHASES = ("detecting", "filtered", "clean")  # filtered: fine-tuned and training without the detected set


@dataclass
class DIFTState:
    """Everything DIFT carries across epochs (saved under ``checkpoint["dift"]``)."""

    phase: str = "detecting"
    detected: list[int] = dataclasses.field(default_factory=list)
    decided_epoch: int = -1
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    timings: dict[str, float] = dataclasses.field(default_factory=dict)
    restart: dict[str, int] | None = None  # {"step", "warmup", "total"}: the restarted schedule, for resuming
    finetune: dict[str, float] | None = None


class DIFTMixin:
    """Mix in before a method class (``class M(DIFTMixin, SimCLR)``), or use :func:`with_dift`."""

    dift_data_factory: Callable[[Any], DIFTData] | None = None

    def __init__(self, cfg: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(cfg, *args, **kwargs)
        self.dift_cfg: DIFTConfig | None = dift_config_of(cfg)
        self.dift_data: DIFTData | None = None
        self.dift_state = DIFTState()
        self.dift_detector = DIFTDetector(**dataclasses.asdict(self.dift_cfg.detector),
                                          random_state=self.dift_cfg.seed) if self.dift_cfg else None

    # -- Lightning hooks --------------------------------------------------------------------------------------

    def on_train_start(self) -> None:
        super().on_train_start()
        if self.dift_cfg is None:
            return
        if self.trainer.max_epochs is not None and self.trainer.max_epochs > 0:
            self.dift_cfg.check_run_length(int(self.trainer.max_epochs))
        if self.dift_data is None and self.dift_data_factory is not None:
            self.dift_data = type(self).dift_data_factory(self)  # after the trainer has set up its data
        if self.dift_data is None:
            raise DIFTConfigError("DIFT is on but has no data to embed: set model.dift_data = DIFTData(...) "
                                  "before trainer.fit, or create the class with with_dift(cls, data_factory)")
        if self.dift_cfg.detector.spreading == "sklearn":
            try:
                check_dense_size(len(self.dift_data.dataset))
            except ValueError as e:
                raise DIFTConfigError(f"dift.detector.{e}") from e
        if self.dift_state.phase == "filtered":  # resumed after filtering: filter again, continue the restart
            self._dift_exclude(np.asarray(self.dift_state.detected, dtype=np.int64))
            if self.dift_state.restart is not None:
                r = self.dift_state.restart
                install_restarted_schedule(self.trainer, r["warmup"], r["total"], self.trainer.global_step - r["step"])

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        cfg, epoch = self.dift_cfg, self.trainer.current_epoch
        if cfg is None or self.dift_state.phase != "detecting":
            return
        if not cfg.detects_after(epoch, int(self.trainer.max_epochs)):
            return
        row = self._dift_detect(epoch)
        last_chance = epoch >= cfg.last_detection_epoch(int(self.trainer.max_epochs))
        if self.dift_detector.is_stable_ or last_chance:
            row.update(self._dift_mitigate(epoch))
        row["phase"] = self.dift_state.phase
        self.dift_state.history.append(row)
        spread = f" -> {row['detected']} after spreading" if "detected" in row else ""
        self.print(f"DIFT epoch {epoch}: {row['candidates']} candidates -> {row['kept']} kept -> "
                   f"{row['stable']} stable{spread}; phase {row['phase']}")
        self.log_dict({f"dift/{k}": float(v) for k, v in row.items() if isinstance(v, (int, float))},
                      on_step=False, on_epoch=True)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        if self.dift_cfg is not None:
            detector = {k: np.asarray(v).tolist() for k, v in self.dift_detector.get_state().items()}
            checkpoint["dift"] = {**dataclasses.asdict(self.dift_state), "detector": detector}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        if self.dift_cfg is not None and "dift" in checkpoint:
            state = dict(checkpoint["dift"])
            detector = state.pop("detector")
            self.dift_state = DIFTState(**state)
            if detector.get("sizes"):
                self.dift_detector.set_state(detector)

    # -- stages -----------------------------------------------------------------------------------------------

    def dift_features(self, x: torch.Tensor, space: str) -> torch.Tensor:
        """Backbone features, or the L2-normalised projector output."""
        feats = self.backbone(x)
        return feats if space == "backbone" else F.normalize(self.projector(feats), dim=1)

    def _dift_detect(self, epoch: int) -> dict[str, Any]:
        """Embed the training set and run one ``partial_fit`` on rank 0; every rank gets rank 0's result."""
        data, det = self.dift_data, self.dift_detector
        with self._dift_timed("embedding"), eval_mode([self.backbone, self.projector]):
            x = embed_training_set(lambda b: self.dift_features(b, self.dift_cfg.space), data,
                                   self.dift_cfg.embed_batch_size, self.device, self.trainer.world_size,
                                   self.trainer.global_rank, self.all_gather)
        result = None
        if self.trainer.global_rank == 0:
            det.partial_fit(x, data.anchor_indexes, data.anchor_labels)
            self._dift_add_time("detection", sum(det.timings_.values()))
            result = (det.get_state(), self._dift_row(epoch))
        state, row = self.trainer.strategy.broadcast(result, src=0)
        if self.trainer.global_rank != 0:
            det.set_state(state)
        return row

    def _dift_mitigate(self, epoch: int) -> dict[str, Any]:
        """The detected set is final: fine-tune (Eq. 7), sync branches, restart the LR, filter the training set.
        It is the spreading (on rank 0, once) of the stable set of the last epoch whose filter did not abstain."""
        out: dict[str, Any] = {"decided": 1}
        found = None
        if self.trainer.global_rank == 0:
            det = self.dift_detector
            found = det.recent_indexes_
            self._dift_add_time("spreading", det.timings_.get("spreading", 0.0))
            out.update(self._dift_scores("detected", found))
        detected = np.asarray(self.trainer.strategy.broadcast(found, src=0), dtype=np.int64)
        check_ranks_agree(detected, self.trainer.world_size, self.device, self.all_gather)
        self.dift_state.detected, self.dift_state.decided_epoch = detected.tolist(), epoch
        out["detected"] = len(detected)
        if len(detected) == 0:
            self.dift_state.phase = "clean"
            return out
        ft = self.dift_cfg.finetune
        with self._dift_timed("finetuning"):
            if ft.epochs > 0 and len(detected) >= 2:
                modules = [self.backbone] + ([self.projector] if ft.space == "projector" else [])
                order = torch.Generator().manual_seed(self.dift_cfg.seed)  # advances: new batches every epoch
                result = finetune(lambda x: self.dift_features(x, ft.space), modules,
                                  lambda: self.dift_data.batches(detected, ft.batch_size, self.device, order), ft)
                self.dift_state.finetune = dataclasses.asdict(result)
            broadcast_weights(self)
            sync_momentum_branches(self, seed=self.dift_cfg.seed)
        with self._dift_timed("restart"):
            self._dift_exclude(detected)
            remaining = int(self.trainer.max_epochs) - epoch - 1
            if self.dift_cfg.reset_optimizer_state:
                for optimizer in self.trainer.optimizers:
                    reset_optimizer_state(optimizer)
            if self.dift_cfg.restart_lr and remaining > 0 and self.trainer.lr_scheduler_configs:
                per_epoch = steps_per_epoch(self.trainer)
                warmup = int(round(self._dift_warmup_epochs() * per_epoch))
                self.dift_state.restart = {"step": int(self.trainer.global_step), "warmup": warmup,
                                           "total": remaining * per_epoch}
                install_restarted_schedule(self.trainer, warmup, remaining * per_epoch, 0)
        self.dift_state.phase = "filtered"
        if self.dift_state.finetune:
            out.update({f"finetune_{k}": v for k, v in self.dift_state.finetune.items()})
        return out

    # -- helpers ----------------------------------------------------------------------------------------------

    def _dift_row(self, epoch: int) -> dict[str, Any]:
        """One epoch of the history, before label spreading (the paper's Figure 3); the decision epoch's row gets
        the detected set from ``_dift_mitigate``."""
        det, truth = self.dift_detector, self.dift_data.poisoned_indexes
        row: dict[str, Any] = {"epoch": epoch, "candidates": len(det.candidates_), "kept": len(det.kept_),
                               "stable": len(det.stable_set_), "recent_stable": len(det.recent_set_),
                               "is_stable": int(det.is_stable_), "filter": det.filter_reason_,
                               **{f"time_{k}": v for k, v in det.timings_.items()}}
        row.update(self._dift_scores("kept", det.kept_))
        row.update(self._dift_scores("stable", det.stable_set_))
        if truth is not None and len(truth):
            row.update({f"poisoned_{k}": v for k, v in density_rank_stats(det.density_, truth).items()})
        return row

    def _dift_scores(self, stage: str, found: np.ndarray) -> dict[str, Any]:
        """``{stage}_precision`` etc. of ``found`` against the known poisoned samples (none when unknown)."""
        truth = self.dift_data.poisoned_indexes
        if truth is None or not len(truth):
            return {}
        return {f"{stage}_{k}": v for k, v in detection_scores(found, truth, len(self.dift_data.dataset)).items()}

    def _dift_exclude(self, detected: np.ndarray) -> None:
        """From now on the training loader never yields ``detected``; MoCo (a ``queue``) keeps full batches."""
        exclude_from_loader(self.trainer.train_dataloader, detected, len(self.dift_data.dataset),
                            full_batches=hasattr(self, "queue"))

    def _dift_warmup_epochs(self) -> float:
        if self.dift_cfg.restart_warmup_epochs is not None:
            return self.dift_cfg.restart_warmup_epochs
        for path in ("optimizer.warmup_epochs", "scheduler.warmup_epochs"):  # ours, solo-learn's
            value = _select(self.cfg, path)
            if value is not None:
                return float(value)
        return 0.0

    @contextmanager
    def _dift_timed(self, phase: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self._dift_add_time(phase, time.perf_counter() - start)

    def _dift_add_time(self, phase: str, seconds: float) -> None:
        self.dift_state.timings[phase] = round(self.dift_state.timings.get(phase, 0.0) + seconds, 3)

    def dift_summary(self) -> dict[str, Any]:
        """For results files: phase, detected count, decision epoch, time per phase, fine-tuning and history."""
        s = self.dift_state
        out: dict[str, Any] = {"phase": s.phase, "decided_epoch": s.decided_epoch, "detected": len(s.detected),
                               "time_s": dict(s.timings), "finetune": s.finetune, "history": s.history}
        truth = self.dift_data.poisoned_indexes if self.dift_data is not None else None
        if truth is not None and len(truth):
            out.update(detection_scores(np.asarray(s.detected, dtype=np.int64), truth, len(self.dift_data.dataset)))
        return out


def dift_config_of(cfg: Any) -> DIFTConfig | None:
    """The parsed ``cfg.dift`` (``None`` when absent or off); raises :class:`DIFTConfigError` when invalid."""
    return parse_dift_config(_select(cfg, "dift"))


def _select(cfg: Any, path: str) -> Any:
    node = cfg
    for key in path.split("."):
        try:
            node = node[key] if hasattr(node, "keys") and key in node else None
        except Exception:  # noqa: BLE001 - OmegaConf raises on missing keys in struct mode
            node = None
        if node is None:
            return None
    return node


def with_dift(cls: type, data_factory: Callable[[Any], DIFTData] | None = None) -> type:
    """``cls`` with DIFT mixed in (``DIFT<cls>``), unchanged otherwise. ``data_factory(model) -> DIFTData`` builds
    the data to embed at fit start when ``model.dift_data`` was not set. The solo-learn static hook
    ``add_and_assert_specific_cfg`` additionally validates ``cfg.dift``."""

    def add_and_assert_specific_cfg(cfg: Any) -> Any:
        parent = getattr(cls, "add_and_assert_specific_cfg", None)
        cfg = parent(cfg) if parent is not None else cfg
        dift_config_of(cfg)
        return cfg

    attrs: dict[str, Any] = {"__module__": cls.__module__, "__doc__": cls.__doc__,
                             "add_and_assert_specific_cfg": staticmethod(add_and_assert_specific_cfg)}
    if data_factory is not None:
        attrs["dift_data_factory"] = staticmethod(data_factory)
    return type(f"DIFT{cls.__name__}", (DIFTMixin, cls), attrs)
