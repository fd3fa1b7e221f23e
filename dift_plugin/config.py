"""DIFT's configuration: ``dift: true`` (documented defaults) or a ``dift:`` mapping, validated before training.

Framework-free: accepts plain dicts and OmegaConf containers alike (anything with ``keys()``/``__getitem__``).
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dift_plugin.errors import DiftUserError


class DIFTConfigError(DiftUserError):
    """A ``dift:`` block that cannot be used; the message says which key and what is allowed."""


@dataclass(frozen=True)
class DetectorConfig:
    """Keyword arguments of :class:`dift_plugin.DIFTDetector` (see its docstring)."""

    k: int = 10
    candidate_fraction: float = 0.05
    min_separation: float = 2.0
    anchor_rule: str = "paper"
    intersection: str = "consecutive"
    patience: int = 2
    tolerance: float = 0.2
    stability: str = "members"
    min_rounds: int = 2
    min_cohesion: float = 0.9
    spreading: str = "graph"
    graph_k: int = 20
    alpha: float = 0.5
    spread_threshold: float = 0.6
    spread_max_iter: int = 100
    backend: str = "auto"


@dataclass(frozen=True)
class FinetuneConfig:
    """Density-reduction fine-tuning (Eq. 7) of the online encoder on the detected samples.

    ``space``: where x_i of Eq. 7 live, ``backbone`` features (the encoder kept after training) or the
    L2-normalised ``projector`` output. ``lam``/``epsilon``: lambda and epsilon of Eq. 7, in units of the detected
    features' initial RMS norm. A separate SGD optimizer (``lr``, ``momentum``) runs ``epochs`` passes over the
    detected set in batches of ``batch_size``; ``epochs: 0`` skips fine-tuning (the paper's ablation)."""

    epochs: int = 10
    batch_size: int = 256
    lr: float = 0.01
    momentum: float = 0.9
    lam: float = 0.5
    epsilon: float = 1e-6
    space: str = "backbone"


@dataclass(frozen=True)
class DIFTConfig:
    """Everything DIFT needs besides the data.

    ``space``: embeddings ranked by density, ``projector`` (L2-normalised projector output) or ``backbone``.
    Detection runs after epochs ``start_epoch`` .. ``stop_epoch`` (0-based; ``null`` = half of the run), every
    ``detect_every``-th of them (and always after ``stop_epoch``; patience counts detection rounds), until the
    intersected set is stable. ``unstable_at_stop``: what DIFT does at ``stop_epoch`` with a set that never became
    stable, ``skip`` (nothing detected: no persistent group, the run goes on undefended) or ``act`` (spread and
    remove it anyway, the rule until 2026-12-04). ``anchors``: CSV (``index,label``)
    of trusted clean training samples; ``null`` lets the entry point draw ``anchors_per_class`` per class.
    ``restart_lr``: restart the LR schedule (warmup ``restart_warmup_epochs``, ``null`` = the run's own) over the
    remaining epochs after fine-tuning. ``reset_optimizer_state``: the training optimizer forgets its per-parameter
    state there (momentum buffers; Adam's moment estimates, gathered while the poison was still trained on)."""

    enabled: bool = True
    space: str = "projector"
    start_epoch: int = 0
    stop_epoch: int | None = None
    detect_every: int = 1
    unstable_at_stop: str = "skip"
    anchors: str | None = None
    anchors_per_class: int = 10
    embed_batch_size: int = 512
    restart_lr: bool = True
    restart_warmup_epochs: float | None = None
    reset_optimizer_state: bool = True
    seed: int = 0
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)

    def detects_after(self, epoch: int, max_epochs: int) -> bool:
        """Whether DIFT embeds and ranks after ``epoch`` (0-based) while it is still detecting."""
        last = self.last_detection_epoch(max_epochs)
        return self.start_epoch <= epoch and ((epoch - self.start_epoch) % self.detect_every == 0 or epoch >= last)

    def last_detection_epoch(self, max_epochs: int) -> int:
        return self.stop_epoch if self.stop_epoch is not None else max(self.start_epoch, max_epochs // 2 - 1)

    def check_run_length(self, max_epochs: int) -> None:
        """Refuse a run that would end with DIFT undecided: it decides after epoch ``stop_epoch`` (0-based) at the
        latest, which must be one of the run's ``max_epochs`` epochs."""
        last = self.last_detection_epoch(max_epochs)
        if last >= max_epochs:
            key = "stop_epoch" if self.stop_epoch is not None else "start_epoch"
            raise DIFTConfigError(
                f"dift.{key}={getattr(self, key)} is not an epoch of this run (0-based, trainer.max_epochs="
                f"{max_epochs}): DIFT would never decide; use a value below {max_epochs}")
        rounds = sum(self.detects_after(e, max_epochs) for e in range(self.start_epoch, last + 1))
        if rounds < self.detector.min_rounds:
            raise DIFTConfigError(
                f"dift.detector.min_rounds={self.detector.min_rounds} needs that many detection epochs, but this run "
                f"has {rounds} (epochs {self.start_epoch}..{last}, every {self.detect_every}): DIFT could never act; "
                f"set a later dift.stop_epoch or dift.detector.min_rounds={rounds}")


SPREADINGS = ("graph", "sklearn", "none")  # ours (sparse kNN graph), the paper's (scikit-learn's dense RBF), none
ANCHOR_RULES = ("gated", "paper")  # the GMM's far side behind our two gates, or alone (anchors.filter_by_anchors)
INTERSECTIONS = ("cumulative", "consecutive")  # S_{t-1} ∩ K_t or K_{t-1} ∩ K_t (dift_plugin.intersection)
STABILITIES = ("members", "group", "size")  # its samples / its neighbourhood / its size alone settle (StabilityTracker)
AT_STOP = ("skip", "act")  # an intersection never stable by the stop epoch: left alone, or acted on
CHOICES = {"space": ("projector", "backbone"), "backend": ("auto", "exact", "hnsw"), "spreading": SPREADINGS,
           "anchor_rule": ANCHOR_RULES, "intersection": INTERSECTIONS, "stability": STABILITIES,
           "unstable_at_stop": AT_STOP}


def parse_dift_config(value: Any) -> DIFTConfig | None:
    """``None``/``False`` -> None (DIFT off); ``True`` -> defaults; a mapping -> its values over the defaults.

    Raises :class:`DIFTConfigError` on unknown keys, wrong types or out-of-range values."""
    if value is None or value is False:
        return None
    if value is True:
        return DIFTConfig()
    if not isinstance(value, Mapping) and not hasattr(value, "keys"):
        raise DIFTConfigError(f"dift must be true, false or a mapping of parameters, got {value!r}")
    cfg = _build(DIFTConfig, value, "dift")
    return cfg if cfg.enabled else None


def select(cfg: Any, path: str) -> Any:
    """``cfg``'s value at the dotted ``path`` (``None`` where any key is missing), for dicts and OmegaConf alike."""
    node = cfg
    for key in path.split("."):
        try:
            node = node[key] if hasattr(node, "keys") and key in node else None
        except Exception:  # noqa: BLE001 - OmegaConf raises on missing keys in struct mode
            node = None
        if node is None:
            return None
    return node


def _build(cls: type, values: Any, where: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values.keys()) - fields)
    if unknown:
        raise DIFTConfigError(f"unknown key(s) {', '.join(f'{where}.{k}' for k in unknown)}; "
                              f"allowed: {', '.join(sorted(fields))}")
    kwargs = {}
    for name in values.keys():
        hint, v, key = hints[name], values[name], f"{where}.{name}"
        if dataclasses.is_dataclass(hint):
            if v is True or v is None:
                v = {}
            if not hasattr(v, "keys"):
                raise DIFTConfigError(f"{key} must be a mapping, got {v!r}")
            kwargs[name] = _build(hint, v, key)
        else:
            kwargs[name] = _check(key, hint, v)
    cfg = cls(**kwargs)
    _check_ranges(cfg, where)
    return cfg


def _check(key: str, hint: Any, v: Any) -> Any:
    allowed = typing.get_args(hint) or (hint,)
    if v is None:
        if type(None) in allowed:
            return None
        raise DIFTConfigError(f"{key} must not be null")
    for t in allowed:
        if t is bool and isinstance(v, bool):
            return v
        if t is int and isinstance(v, int) and not isinstance(v, bool):
            return v
        if t is float and isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
        if t is str and isinstance(v, str):
            return v
    names = " or ".join("null" if t is type(None) else t.__name__ for t in allowed)
    raise DIFTConfigError(f"{key} must be {names}, got {type(v).__name__} {v!r}")


def _check_ranges(cfg: Any, where: str) -> None:
    def need(ok: bool, key: str, what: str) -> None:
        if not ok:
            raise DIFTConfigError(f"{where}.{key} must be {what}, got {getattr(cfg, key)!r}")

    for key, choices in CHOICES.items():
        if hasattr(cfg, key):
            need(getattr(cfg, key) in choices, key, f"one of {', '.join(choices)}")
    positive = {"k", "patience", "graph_k", "spread_max_iter", "batch_size", "anchors_per_class", "embed_batch_size",
                "detect_every", "min_rounds"}
    for key in positive & {f.name for f in dataclasses.fields(cfg)}:
        need(getattr(cfg, key) >= 1, key, "a positive integer")
    if isinstance(cfg, DIFTConfig):
        need(cfg.start_epoch >= 0, "start_epoch", ">= 0")
        need(cfg.stop_epoch is None or cfg.stop_epoch >= cfg.start_epoch, "stop_epoch", ">= start_epoch")
    if isinstance(cfg, DetectorConfig):
        need(0 < cfg.candidate_fraction < 1, "candidate_fraction", "in (0, 1)")
        need(0 < cfg.alpha < 1, "alpha", "in (0, 1)")
        need(0 < cfg.spread_threshold < 1, "spread_threshold", "in (0, 1)")
        need(0 <= cfg.min_cohesion <= 1, "min_cohesion", "in [0, 1] (0: no cohesion check, the paper's rule)")
    if isinstance(cfg, FinetuneConfig):
        need(cfg.epochs >= 0, "epochs", ">= 0 (0 skips fine-tuning: the paper's ablation)")
        need(cfg.lr > 0, "lr", "> 0")
        need(cfg.lam >= 0, "lam", ">= 0")
        need(cfg.epsilon > 0, "epsilon", "> 0")
