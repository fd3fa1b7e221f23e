"""DIFT: density-based identification and fine-tuning against data-poisoning backdoors (the defense and its mixin).

The detection core is framework-free (numpy/torch in, sample indexes out): :class:`DIFTDetector`.
"""

from dift_plugin.anchors import draw_anchors
from dift_plugin.detector import DIFTDetector

__all__ = ["DIFTDetector", "draw_anchors"]
