"""DIFT: density-based identification and fine-tuning against data-poisoning backdoors (the defense and its mixin).

The detection core is framework-free (numpy/torch in, sample indexes out): :class:`DIFTDetector`. In training,
:func:`with_dift` / :class:`DIFTMixin` wrap a solo-learn-style Lightning method; ``dift-solo`` runs solo-learn's own.
"""

from dift_plugin.anchors import draw_anchors
from dift_plugin.config import DIFTConfig, DIFTConfigError, parse_dift_config
from dift_plugin.detector import DIFTDetector
from dift_plugin.embedding import DIFTData
from dift_plugin.mixin import DIFTMixin, with_dift

__all__ = ["DIFTConfig", "DIFTConfigError", "DIFTData", "DIFTDetector", "DIFTMixin", "draw_anchors",
           "parse_dift_config", "with_dift"]
