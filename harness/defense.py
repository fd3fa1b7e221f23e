"""The defense of a ``dift-pretrain`` run: DIFT's data (what it embeds, its anchors) from the run's data."""

from __future__ import annotations

import numpy as np
from omegaconf import DictConfig

from dift_plugin import draw_anchors
from dift_plugin.anchors import read_anchors
from dift_plugin.config import DIFTConfig, DIFTConfigError
from dift_plugin.embedding import DIFTData
from dift_plugin.errors import DiftUserError
from harness.augment import Normalize
from harness.data import Images, keep_batch
from harness.experiment import RunData


def dift_data(cfg: DictConfig, dift: DIFTConfig, data: RunData) -> DIFTData:
    """The SSL training set (poisoned as configured), its anchors and, for logging only, the ground truth.

    Anchors: ``dift.anchors`` (CSV index,label) or ``dift.anchors_per_class`` drawn from the samples the harness
    knows to be clean — the paper's assumption of a small trusted clean subset."""
    n = len(data.ssl_train)
    if dift.anchors is not None:
        try:
            index, labels = read_anchors(dift.anchors)
        except ValueError as e:
            raise DiftUserError(str(e)) from e
    else:
        pool = np.setdiff1d(np.arange(n), data.poisoned_indexes)
        try:
            index, labels = draw_anchors(data.train.labels.numpy(), dift.anchors_per_class, pool=pool,
                                         random_state=dift.seed)
        except ValueError as e:
            raise DiftUserError(f"dift.anchors_per_class: {e}") from e
    normalize = Normalize(list(cfg.data.mean), list(cfg.data.std))
    try:
        return DIFTData(Images(data.ssl_train), index, labels, prepare=lambda x: normalize.to(x.device)(x),
                        poisoned_indexes=data.poisoned_indexes if data.attack is not None else None,
                        collate_fn=keep_batch)
    except DIFTConfigError as e:
        raise DiftUserError(f"{dift.anchors}: {e}") from e
