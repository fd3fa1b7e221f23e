"""``DIFTMixin`` / ``with_dift``: DIFT inside the training of a solo-learn-style Lightning method.

Thin glue over the parts: after each epoch it embeds the training set (:mod:`dift_plugin.embedding`, every rank its
shard, rank 0 detecting for all), feeds :class:`DIFTDetector` and records the epoch (:mod:`dift_plugin.history`);
once the detected set is final, :mod:`dift_plugin.mitigation` fine-tunes, syncs, restarts and filters. Its state
(:class:`DIFTState`) travels in Lightning checkpoints.

The method class is used unchanged; it must have ``cfg`` (with a ``dift`` entry), ``backbone`` and ``projector``,
optionally ``momentum_pairs`` and a MoCo queue. The data DIFT embeds is given as :class:`DIFTData`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from dift_plugin.config import DIFTConfig, DIFTConfigError, parse_dift_config, select
from dift_plugin.detector import DIFTDetector
from dift_plugin.embedding import DIFTData, embed_training_set
from dift_plugin.finetune import eval_mode
from dift_plugin.history import epoch_row, scored, summary
from dift_plugin.mitigation import exclude_detected, mitigate
from dift_plugin.spreading import check_dense_size
from dift_plugin.state import DIFTState
from dift_plugin.surgery import check_ranks_agree, install_restarted_schedule


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
            exclude_detected(self, np.asarray(self.dift_state.detected, dtype=np.int64))
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
            row.update(self._dift_decide(epoch))
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
        with self.dift_state.timed("embedding"), eval_mode([self.backbone, self.projector]):
            x = embed_training_set(lambda b: self.dift_features(b, self.dift_cfg.space), data,
                                   self.dift_cfg.embed_batch_size, self.device, self.trainer.world_size,
                                   self.trainer.global_rank, self.all_gather)
        result = None
        if self.trainer.global_rank == 0:
            det.partial_fit(x, data.anchor_indexes, data.anchor_labels)
            self.dift_state.add_time("detection", sum(det.timings_.values()))
            result = (det.get_state(), epoch_row(det, epoch, data.poisoned_indexes, len(data.dataset)))
        state, row = self.trainer.strategy.broadcast(result, src=0)
        if self.trainer.global_rank != 0:
            det.set_state(state)
        return row

    def _dift_decide(self, epoch: int) -> dict[str, Any]:
        """The detected set is final: the spreading (on rank 0, once) of the stable set of the last epoch whose
        filter did not abstain — empty when that set never became stable and ``unstable_at_stop`` is ``skip`` —
        shared with every rank, then :func:`mitigate` unless it is empty (phase ``clean``)."""
        out: dict[str, Any] = {"decided": 1}
        found = None
        if self.trainer.global_rank == 0:
            det = self.dift_detector
            found = det.decided_indexes(self.dift_cfg.unstable_at_stop)
            if not det.is_stable_ and self.dift_cfg.unstable_at_stop == "skip":
                self.print(f"DIFT: the intersected set ({len(det.stable_set_)} samples, its largest group "
                           f"{det.cohesion_:.0%} of it) never became stable as one group by the stop epoch: nothing "
                           "detected (dift.unstable_at_stop=act would remove its spreading)")
            self.dift_state.add_time("spreading", det.timings_.get("spreading", 0.0))
            out.update(scored("detected", found, self.dift_data.poisoned_indexes, len(self.dift_data.dataset)))
        detected = np.asarray(self.trainer.strategy.broadcast(found, src=0), dtype=np.int64)
        check_ranks_agree(detected, self.trainer.world_size, self.device, self.all_gather)
        self.dift_state.detected, self.dift_state.decided_epoch = detected.tolist(), epoch
        out["detected"] = len(detected)
        if len(detected) == 0:
            self.dift_state.phase = "clean"
            return out
        mitigate(self, detected, epoch, self.dift_cfg, self.dift_state)
        if self.dift_state.finetune:
            out.update({f"finetune_{k}": v for k, v in self.dift_state.finetune.items()})
        return out

    def dift_summary(self) -> dict[str, Any]:
        """For results files: phase, detected count, decision epoch, time per phase, fine-tuning and history."""
        data = self.dift_data
        return summary(self.dift_state, data.poisoned_indexes if data is not None else None,
                       len(data.dataset) if data is not None else 0)


def dift_config_of(cfg: Any) -> DIFTConfig | None:
    """The parsed ``cfg.dift`` (``None`` when absent or off); raises :class:`DIFTConfigError` when invalid."""
    return parse_dift_config(select(cfg, "dift"))


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
