"""The attack interface: a seeded trigger on image tensors plus a poisoning plan over a training set."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from dift_plugin.errors import DiftUserError
from dift_plugin.images import ImageSet, to_float


@dataclass
class PoisonedSet:
    """What SSL training sees (``train``) and the ground truth that defenses never see (``poisoned_indexes``)."""

    train: ImageSet
    poisoned_indexes: np.ndarray  # sorted positions in ``train`` of the modified samples


class Attack:
    """Base class: subclasses implement :meth:`trigger` on float images (N, 3, H, W) in [0, 1].

    Poisoning modifies ``int(rate * N)`` images of the target class in place (the attacker collects target-class
    samples only, as in the paper's threat model); the test-time trigger can be applied to any image.
    """

    name = "attack"

    def __init__(self, selection: str = "random", round_to_uint8: bool = False) -> None:
        if selection not in ("first", "random"):
            raise DiftUserError(f"attack selection must be 'first' or 'random', got '{selection}'")
        self.selection = selection
        self.round_to_uint8 = round_to_uint8

    def trigger(self, images: torch.Tensor, seed: int = 0) -> torch.Tensor:
        """Triggered copy of ``images`` (float in [0, 1]); ``seed`` fixes any random placement."""
        raise NotImplementedError

    def poison_images(self, train: ImageSet, index: np.ndarray, seed: int) -> torch.Tensor:
        """The poisoned versions of ``train.images[index]``; by default the trigger on those images."""
        return self.trigger(to_float(train.images[index]), seed=seed)

    def choose(self, labels: np.ndarray, target_class: int, rate: float, seed: int) -> np.ndarray:
        """Sorted indexes of the ``int(rate * N)`` target-class samples to poison."""
        if not 0 <= rate < 1:
            raise DiftUserError(f"attack.rate must be in [0, 1), got {rate}")
        pool = np.flatnonzero(labels == target_class)
        count = int(rate * len(labels))
        if count > len(pool):
            raise DiftUserError(
                f"attack.rate={rate} asks for {count} poisoned samples but the target class {target_class} has "
                f"only {len(pool)}: lower the rate or use more data"
            )
        if self.selection == "random":
            pool = np.random.default_rng(seed).permutation(pool)
        return np.sort(pool[:count])

    def poison(self, train: ImageSet, target_class: int, rate: float, seed: int = 0) -> PoisonedSet:
        """Poison ``int(rate * N)`` target-class samples; the rest of the set is left untouched (and not copied)."""
        if not 0 <= target_class < len(train.classes):
            raise DiftUserError(f"attack.target_class={target_class} is not a class index (0-{len(train.classes) - 1})")
        index = self.choose(train.labels.numpy(), target_class, rate, seed)
        if len(index) == 0:
            return PoisonedSet(train, index)
        poisoned = self.poison_images(train, index, seed).clamp(0, 1)
        if self.round_to_uint8:
            images = train.images.clone()
            images[index] = (poisoned * 255).round().to(torch.uint8)
        else:  # keep poisoned pixels un-rounded: the whole set becomes float
            images = to_float(train.images.clone())
            images[index] = poisoned
        out = ImageSet(images, train.labels, train.classes, train.source_index, train.paths)
        return PoisonedSet(out, index)
