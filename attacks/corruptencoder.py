"""CorruptEncoder (Zhang et al., CVPR 2024): poisoned images composed of a reference object, a background and a
patch trigger, so that random crops pair "object" views with "trigger" views.

Per poisoned sample (a target-class image): the canvas is a background image of another class (seeded choice)
at the output size; the reference object is the target-class image's central vertical strip (half the width, the
full height: the paper's optimal geometry, canvas width = 2 x object width, height = object height) pasted at the
left or right edge (seeded); the trigger goes to the centre of the remaining half, away from the object
(``trigger_position: center``, the paper's), or to a seeded random position inside that half (``random``).
At test time the trigger is pasted at a seeded random position, as for SSL-Backdoor.

Differences from the original, for lack of the material offline: no segmentation masks (the object is the
image's central strip, background pixels included), backgrounds are other-class images of the same data set
rather than Places365 scenes, and images are 32 px rather than ImageNet's 224 px.
"""

from __future__ import annotations

import numpy as np
import torch

from attacks.patch import PatchAttack, paste
from dift_plugin.errors import DiftUserError
from dift_plugin.images import ImageSet, to_float


TRIGGER_POSITIONS = ("center", "random")


class CorruptEncoder(PatchAttack):
    name = "corruptencoder"

    def __init__(self, trigger_position: str = "center", **kwargs) -> None:
        super().__init__(**kwargs)
        if trigger_position not in TRIGGER_POSITIONS:
            raise DiftUserError(f"trigger_position must be one of {', '.join(TRIGGER_POSITIONS)}, "
                                f"got {trigger_position!r}")
        self.trigger_position = trigger_position

    def poison_images(self, train: ImageSet, index: np.ndarray, seed: int) -> torch.Tensor:
        rng = np.random.default_rng(seed)
        labels = train.labels.numpy()
        h, w = train.images.shape[-2:]
        half = w // 2
        objects = to_float(train.images[index])[..., (w - half) // 2:(w - half) // 2 + half]
        others = np.flatnonzero(labels != labels[index[0]])
        canvas = to_float(train.images[rng.choice(others, size=len(index))])
        on_left = rng.random(len(index)) < 0.5
        s = self.patch_size
        if s > min(h, half):
            raise DiftUserError(f"a {s} px trigger does not fit the {h}x{half} half beside the object")
        if self.trigger_position == "center":
            offsets = np.tile([(h - s) // 2, (half - s) // 2], (len(index), 1))
        else:  # anywhere inside the free half, as the test trigger goes anywhere
            offsets = np.stack([rng.integers(0, h - s + 1, len(index)), rng.integers(0, half - s + 1, len(index))], 1)
        positions = []
        for img, obj, left, (row, col) in zip(canvas, objects, on_left, offsets.tolist()):
            obj_col, trig_half = (0, w - half) if left else (w - half, 0)
            img[:, :, obj_col:obj_col + half] = obj
            positions.append((row, trig_half + col))
        return paste(canvas, self.pattern, torch.tensor(positions), self.opacity)
