"""What DIFT carries across epochs of a run: its phase, the detected set, its history and its time per phase."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any


@dataclass
class DIFTState:
    """Everything DIFT carries across epochs (saved under ``checkpoint["dift"]``)."""

    phase: str = "detecting"  # then "filtered" (fine-tuned, training without the detected set) or "clean"
    detected: list[int] = dataclasses.field(default_factory=list)
    decided_epoch: int = -1
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    timings: dict[str, float] = dataclasses.field(default_factory=dict)
    restart: dict[str, int] | None = None  # {"step", "warmup", "total"}: the restarted schedule, for resuming
    finetune: dict[str, float] | None = None

    def add_time(self, phase: str, seconds: float) -> None:
        self.timings[phase] = round(self.timings.get(phase, 0.0) + seconds, 3)

    @contextmanager
    def timed(self, phase: str) -> Iterator[None]:
        """Adds the wall time of the ``with`` block to ``phase``."""
        start = time.perf_counter()
        yield
        self.add_time(phase, time.perf_counter() - start)
