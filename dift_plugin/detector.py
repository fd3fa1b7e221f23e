"""``DIFTDetector``: the paper's poisoned-sample identification as a scikit-learn-style estimator.

Per epoch (``partial_fit``): kNN density (Eqs. 4-5) -> densest candidates -> anchor filtering by MinDist (Eq. 6)
and a 2-component GMM -> intersection with the previous epoch's set until it stabilises as one group (ours: its
largest kNN-connected group holds ``min_cohesion`` of it, ``dift_plugin.cohesion``); then label spreading
on the sparse kNN graph grows the stable set into the detected set ``poisoned_indexes_``. An epoch whose filter
keeps nothing (abstains) brings no evidence: the set and its stability stay as they were. A kept set disjoint from
the set so far restarts it (the earlier group was transient). ``recent_indexes_`` spreads the set once it has
been intersected over at least ``min_rounds`` epochs whose filter kept something (empty before) — what a caller
that must decide now (DIFT at its ``stop_epoch``) uses, so that one epoch's transient dense group is never acted on.
Spreading runs when one of these is first read after an epoch, not in ``partial_fit``: DIFT in training reads them
once, at its decision (the per-epoch loop is the paper's Figure 3, "before label spreading").
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from dift_plugin.anchors import filter_by_anchors, min_dist
from dift_plugin.cohesion import largest_group_share
from dift_plugin.config import ANCHOR_RULES, AT_STOP, INTERSECTIONS, SPREADINGS, STABILITIES
from dift_plugin.config import DetectorConfig as _D  # the defaults live there, once
from dift_plugin.density import Neighbours, as_tensor, knn_distance, knn_search, local_density, select_candidates
from dift_plugin.intersection import StabilityTracker, intersect
from dift_plugin.spreading import (
    check_dense_size,
    normalized_graph,
    rbf_knn_graph,
    self_consistent_prior,
    sklearn_spreading,
    spread,
)

STATE_KEYS = ("stable_set_", "sizes", "streak", "n_samples")  # required; "rounds", "last_kept", "cohesion" optional
# (added later; a state saved before the cohesion check counts as one group, as the run that saved it did)


class DIFTDetector:
    """Density-based identification of poisoned samples from one epoch's embeddings X (N, d).

    Parameters (defaults chosen and measured as documented in docs/detection.md):
        k: neighbours for the density rho = 1 / d_k (Eq. 5).
        candidate_fraction: share of N kept as the densest candidates.
        min_separation: Ashman's D below which the GMM's two MinDist modes count as one.
        anchor_rule: "paper" (the GMM's far side, as the paper has it) or "gated" (ours: the far side only behind
            two gates, ``min_separation`` and the far mode beyond the population's median MinDist), see
            ``filter_by_anchors``.
        intersection: "cumulative" (S_t = S_{t-1} ∩ K_t) or "consecutive" (S_t = K_{t-1} ∩ K_t, K_{t-1} the last
            kept set), see ``dift_plugin.intersection``.
        patience, tolerance, stability: stable once, for ``patience`` epochs whose filter kept something, |S_t|
            changed by at most ``tolerance`` (relative) and (``stability="members"``) S_t kept at least
            1 - ``tolerance`` of S_{t-1}'s samples; ``"group"``: at least 1 - ``tolerance`` of S_t lies in S_{t-1}
            or among its members' ``k`` nearest neighbours; ``"size"``: the size alone (see ``StabilityTracker``).
        min_cohesion: ... and S_t is one group: its largest group of members connected in the ``k``-NN graph holds
            at least this share of it (``cohesion_``; ``cohesion.largest_group_share``). 0 turns the check off (the
            paper has none: ours since 2026-12-04, docs/dift_in_training.md).
        min_rounds: epochs whose filter kept something that the set must have been intersected over before
            ``recent_indexes_`` acts on it (1: one epoch's finding is enough).
        spreading: "graph" (ours), "sklearn" (the paper's: scikit-learn's dense RBF defaults, argmax) or "none"
            (no spreading: the detected set is the stable set; the paper's "w/o label spreading" ablation).
        graph_k, alpha, spread_threshold: label spreading on the ``graph_k``-NN RBF graph with clamping ``alpha``;
            a sample is detected when its class-mass-normalised poisoned probability exceeds ``spread_threshold``
            at the poisoned share it implies (``spreading.self_consistent_prior``); at most ``spread_max_iter``
            spreading iterations.
        backend: kNN search, "auto" | "exact" | "hnsw".
        random_state: seeds the GMM and HNSW.
    """

    def __init__(self, k: int = _D.k, candidate_fraction: float = _D.candidate_fraction,
                 min_separation: float = _D.min_separation, anchor_rule: str = _D.anchor_rule,
                 intersection: str = _D.intersection, patience: int = _D.patience,
                 tolerance: float = _D.tolerance, stability: str = _D.stability, min_rounds: int = _D.min_rounds,
                 min_cohesion: float = _D.min_cohesion, spreading: str = _D.spreading,
                 graph_k: int = _D.graph_k,
                 alpha: float = _D.alpha, spread_threshold: float = _D.spread_threshold,
                 spread_max_iter: int = _D.spread_max_iter,
                 backend: str = _D.backend, random_state: int | None = 0) -> None:
        self.k = k
        self.candidate_fraction = candidate_fraction
        self.min_separation = min_separation
        self.anchor_rule = anchor_rule
        self.intersection = intersection
        self.patience = patience
        self.tolerance = tolerance
        self.stability = stability
        self.min_rounds = min_rounds
        self.min_cohesion = min_cohesion
        self.spreading = spreading
        self.graph_k = graph_k
        self.alpha = alpha
        self.spread_threshold = spread_threshold
        self.spread_max_iter = spread_max_iter
        self.backend = backend
        self.random_state = random_state

    # -- public API -------------------------------------------------------------------------------------------

    def fit(self, X: Any, anchor_indexes: Any, anchor_labels: Any) -> "DIFTDetector":
        """Run every stage on one epoch's embeddings (forgetting earlier epochs)."""
        self._reset()
        return self.partial_fit(X, anchor_indexes, anchor_labels)

    def partial_fit(self, X: Any, anchor_indexes: Any, anchor_labels: Any) -> "DIFTDetector":
        """One epoch: carries the intersection (S_t = S_{t-1} ∩ K_t, or K_{t-1} ∩ K_t) across calls."""
        x, anchors, labels = self._validate(X, anchor_indexes, anchor_labels)
        if not hasattr(self, "tracker_"):
            self._reset()
        self.timings_ = {}
        with self._timed("density"):
            neighbours = knn_search(x, max(self.k, self.graph_k), backend=self.backend,
                                    random_state=self.random_state or 0)
            self.density_ = local_density(knn_distance(_first(neighbours, self.k)))
            self.candidates_ = select_candidates(self.density_, int(round(self.candidate_fraction * len(x))))
        with self._timed("anchor_filter"):
            self.min_dist_ = min_dist(x, x[torch.as_tensor(anchors)], labels)
            result = filter_by_anchors(self.min_dist_[self.candidates_], float(np.median(self.min_dist_)),
                                       self.min_separation, self.random_state, rule=self.anchor_rule)
            self.kept_ = self.candidates_[result.kept]
            self.filter_reason_ = result.reason
        with self._timed("intersection"):
            if len(self.kept_):  # S_t = S_{t-1} (or K_{t-1}) ∩ K_t; an abstaining filter leaves S as it was
                before = self.stable_set_
                previous = before if self.intersection == "cumulative" else self.last_kept_
                self.stable_set_ = intersect(previous if self.rounds_ else None, self.kept_)
                self.last_kept_ = np.unique(self.kept_)
                self.rounds_ += 1
                if len(self.stable_set_) == 0:  # disjoint from the set so far: restart from this epoch's
                    self.stable_set_, self.rounds_ = self.last_kept_, 1
                shared = len(np.intersect1d(self._neighbourhood(before, neighbours), self.stable_set_,
                                            assume_unique=True))
                self.cohesion_ = largest_group_share(neighbours.index[:, :self.k], self.stable_set_)
                self.is_stable_ = self._stable(self.tracker_.update(len(self.stable_set_), shared))
            self.recent_set_ = self.stable_set_ if self.rounds_ >= self.min_rounds else np.zeros(0, dtype=np.int64)
        self._spread_inputs = (x, neighbours, anchors, self.stable_set_)  # spread on demand: see poisoned_indexes_
        self._spread_result: tuple[np.ndarray, np.ndarray] | None = None
        self.n_epochs_ = len(self.tracker_.sizes)
        return self

    @property
    def poisoned_indexes_(self) -> np.ndarray:
        """The detected set: label spreading of this epoch's stable set (sorted indexes). Computed when first read
        after a ``partial_fit`` (its time in ``timings_["spreading"]``): the per-epoch loop needs only the
        intersection, and DIFT in training spreads once, at its decision."""
        return self._spread_once()[0]

    @property
    def spread_score_(self) -> np.ndarray:
        """Each sample's poisoned score from label spreading (N,), computed with ``poisoned_indexes_``."""
        return self._spread_once()[1]

    @property
    def recent_indexes_(self) -> np.ndarray:
        """``poisoned_indexes_`` once the stable set has ``min_rounds`` epochs behind it, empty before."""
        return self.poisoned_indexes_ if len(self.recent_set_) else np.zeros(0, dtype=np.int64)

    def decided_indexes(self, unstable_at_stop: str = "skip") -> np.ndarray:
        """What a caller that must decide now acts on: ``recent_indexes_`` once the set is stable; before that (DIFT
        at its stop epoch) the same with ``unstable_at_stop="act"``, nothing with ``"skip"``."""
        if unstable_at_stop not in AT_STOP:
            raise ValueError(f"unstable_at_stop must be one of {', '.join(AT_STOP)}, got {unstable_at_stop!r}")
        if self.is_stable_ or unstable_at_stop == "act":
            return self.recent_indexes_
        return np.zeros(0, dtype=np.int64)

    def get_state(self) -> dict[str, np.ndarray]:
        """The state that ``partial_fit`` carries across epochs, as a plain dict of arrays (for checkpoints)."""
        return {"stable_set_": np.asarray(getattr(self, "stable_set_", np.zeros(0, np.int64))),
                "rounds": np.asarray(getattr(self, "rounds_", 0)),
                "last_kept": np.asarray(getattr(self, "last_kept_", np.zeros(0, np.int64))),
                "sizes": np.asarray(self.tracker_.sizes if hasattr(self, "tracker_") else [], dtype=np.int64),
                "streak": np.asarray(self.tracker_.streak if hasattr(self, "tracker_") else 0),
                "cohesion": np.asarray(getattr(self, "cohesion_", 0.0)),
                "n_samples": np.asarray(getattr(self, "n_samples_", -1))}

    def set_state(self, state: dict[str, np.ndarray]) -> "DIFTDetector":
        """Restore what :meth:`get_state` returned; the next ``partial_fit`` continues the intersection."""
        missing = [k for k in STATE_KEYS if k not in state]
        if missing:
            raise ValueError(f"detector state lacks {missing}: pass the dict returned by get_state()")
        self._reset()
        self.stable_set_ = np.asarray(state["stable_set_"], dtype=np.int64)
        self.tracker_.sizes = [int(s) for s in np.asarray(state["sizes"]).ravel()]
        self.rounds_ = int(state.get("rounds", len(self.tracker_.sizes)))
        self.last_kept_ = np.asarray(state.get("last_kept", self.stable_set_), dtype=np.int64)
        self.recent_set_ = self.stable_set_ if self.rounds_ >= self.min_rounds else np.zeros(0, dtype=np.int64)
        self.tracker_.streak = int(state["streak"])
        self.n_samples_ = int(state["n_samples"])
        self.cohesion_ = float(state.get("cohesion", 1.0))
        self.is_stable_ = self._stable(self.tracker_.is_stable)
        return self

    # -- stages -----------------------------------------------------------------------------------------------

    def _spread_once(self) -> tuple[np.ndarray, np.ndarray]:
        if getattr(self, "_spread_inputs", None) is None:
            raise AttributeError("no epoch to spread: call fit or partial_fit first (a detector restored with "
                                 "set_state has its stable set, not the embeddings to spread it on)")
        if self._spread_result is None:
            with self._timed("spreading"):
                self._spread_result = self._spread(*self._spread_inputs)
        return self._spread_result

    def _spread(self, x: torch.Tensor, neighbours: Neighbours, anchors: np.ndarray,
                stable: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Label spreading from ``stable`` (poisoned) and the anchors (clean) -> (detected, poisoned score)."""
        seeds = np.setdiff1d(stable, anchors)
        if len(seeds) == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(len(x))
        if self.spreading == "none":  # the ablation: the stable set itself
            score = np.zeros(len(x))
            score[seeds] = 1.0
            return seeds, score
        if self.spreading == "sklearn":
            detected, score = sklearn_spreading(x.cpu().numpy(), seeds, anchors)
            return np.setdiff1d(detected, anchors), score
        graph = normalized_graph(rbf_knn_graph(_first(neighbours, self.graph_k)))
        result = spread(graph, seeds, anchors, alpha=self.alpha, max_iter=self.spread_max_iter)
        return self_consistent_prior(result.scores, seeds, anchors, self.spread_threshold)

    # -- helpers ----------------------------------------------------------------------------------------------

    def _neighbourhood(self, members: np.ndarray, neighbours: Neighbours) -> np.ndarray:
        """What S_t is compared with for stability: S_{t-1} itself, or (``stability="group"``) S_{t-1} with its
        members' ``k`` nearest neighbours in this epoch's embedding."""
        if self.stability != "group" or len(members) == 0:
            return members
        return np.union1d(members, neighbours.index[members, :self.k].ravel())

    def _stable(self, settled: bool) -> bool:
        """Stable: the set has settled (``StabilityTracker``) and is one group (``cohesion_ >= min_cohesion``)."""
        return settled and self.cohesion_ >= self.min_cohesion

    def _reset(self) -> None:
        self.tracker_ = StabilityTracker(patience=self.patience, tolerance=self.tolerance, rule=self.stability)
        self.stable_set_ = np.zeros(0, dtype=np.int64)
        self.last_kept_ = np.zeros(0, dtype=np.int64)
        self.recent_set_ = np.zeros(0, dtype=np.int64)
        self.rounds_ = 0
        self.cohesion_ = 0.0
        self.is_stable_ = False
        self._spread_inputs = None

    @contextmanager
    def _timed(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.timings_[stage] = round(time.perf_counter() - start, 4)

    def _validate(self, X: Any, anchor_indexes: Any, anchor_labels: Any) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
        x = as_tensor(X)
        if x.ndim != 2:
            raise ValueError(f"X must be a 2-D (N, d) array of embeddings, got shape {tuple(x.shape)}")
        if not torch.isfinite(x).all():
            raise ValueError("X contains NaN or inf: check the encoder's output (e.g. a diverged training step)")
        n = len(x)
        if n <= max(self.k, self.graph_k):
            raise ValueError(f"X has {n} samples; need more than k={self.k} and graph_k={self.graph_k}")
        anchors = np.asarray(anchor_indexes).ravel()
        labels = np.asarray(anchor_labels).ravel()
        if anchors.dtype.kind not in "iu":
            raise ValueError(f"anchor_indexes must be integers, got dtype {anchors.dtype}")
        if len(anchors) != len(labels):
            raise ValueError(f"{len(anchors)} anchor indexes but {len(labels)} anchor labels")
        if len(anchors) and (anchors.min() < 0 or anchors.max() >= n):
            raise ValueError(f"anchor indexes must lie in [0, {n}); got range [{anchors.min()}, {anchors.max()}]")
        if len(np.unique(anchors)) != len(anchors):
            raise ValueError("anchor indexes contain duplicates")
        if self.anchor_rule not in ANCHOR_RULES:
            raise ValueError(f"anchor_rule must be one of {', '.join(ANCHOR_RULES)}, got {self.anchor_rule!r}")
        if self.intersection not in INTERSECTIONS:
            raise ValueError(f"intersection must be one of {', '.join(INTERSECTIONS)}, got {self.intersection!r}")
        if self.stability not in STABILITIES:
            raise ValueError(f"stability must be one of {', '.join(STABILITIES)}, got {self.stability!r}")
        if not 0 <= self.min_cohesion <= 1:
            raise ValueError(f"min_cohesion must be in [0, 1] (0: no cohesion check), got {self.min_cohesion!r}")
        if self.spreading not in SPREADINGS:
            raise ValueError(f"spreading must be one of {', '.join(SPREADINGS)}, got {self.spreading!r}")
        if self.spreading == "sklearn":
            check_dense_size(n)  # before the epoch's work, not when the set is first read
        if len(np.unique(labels)) < 2:
            raise ValueError(f"need anchors of at least 2 classes, got {len(np.unique(labels))}")
        if getattr(self, "n_samples_", -1) not in (-1, n) and self.tracker_.sizes:
            raise ValueError(f"X has {n} samples but earlier epochs had {self.n_samples_}: use fit() to start over")
        self.n_samples_ = n
        return x, anchors.astype(np.int64), labels


def _first(neighbours: Neighbours, k: int) -> Neighbours:
    """The first ``k`` neighbours of each point."""
    return Neighbours(neighbours.index[:, :k], neighbours.distance[:, :k])
