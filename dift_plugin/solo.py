"""DIFT for solo-learn (1.0.6, from its repository): ``dift-solo`` runs solo-learn's own pretraining script with
every class of its ``METHODS`` registry wrapped by :func:`with_dift`.

    dift-solo path/to/solo-learn/main_pretrain.py --config-path <abs dir> --config-name simclr.yaml +dift=true

A ``dift:`` block in the solo-learn config (or ``+dift.finetune.epochs=5`` style overrides) sets DIFT's parameters;
without one the methods train exactly as solo-learn's. solo-learn is imported only here, and only when used.
"""

from __future__ import annotations

import copy
import runpy
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from dift_plugin.anchors import draw_anchors, read_anchors
from dift_plugin.embedding import DIFTData
from dift_plugin.mixin import DIFTMixin, with_dift

INSTALL = ("solo-learn is not installed. DIFT works with solo-learn 1.0.6 from its repository "
           "(https://github.com/vturrisi/solo-learn; PyPI has only 1.0.2): clone it, then "
           "`pip install --no-deps -e <clone>` next to lightning==2.1.2, 'torchmetrics<0.12', timm, einops, wandb")
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
SOLO_MEANS_N_STD = {  # solo-learn 1.0.6, solo/data/pretrain_dataloader.py, build_transform_pipeline
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "stl10": ((0.4914, 0.4823, 0.4466), (0.247, 0.243, 0.261)),
    "imagenet100": IMAGENET,
    "imagenet": IMAGENET,
}


def wrap_registry(methods: dict[str, type]) -> dict[str, type]:
    """Replace (in place, so scripts that imported the dict see it) every class by its DIFT version."""
    for name, cls in list(methods.items()):
        if not issubclass(cls, DIFTMixin):
            methods[name] = with_dift(cls, data_factory=solo_dift_data)
    return methods


class _Unaugmented(Dataset):
    """Item i of a solo-learn training dataset (``(index, image, target)`` once its transform is replaced)."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> Any:
        return self.dataset[i][1]


def solo_dift_data(model: Any) -> DIFTData:
    """The training set the trainer uses (same order, so the same indexes), with an eval transform instead of the
    crops: resize + centre crop to the first crop size, ToTensor, the crops' normalisation. Anchors: ``dift.anchors``
    (CSV index,label), else ``dift.anchors_per_class`` drawn from the dataset's labels, which are then trusted."""
    from torchvision import transforms as T

    cfg, dift = model.cfg, model.dift_cfg
    train = copy.copy(model.trainer.train_dataloader.dataset)
    aug = cfg.augmentations[0]
    mean, std = _mean_std(cfg)
    size = int(aug.crop_size)
    train.transform = T.Compose([T.Resize(size), T.CenterCrop(size), T.ToTensor(), T.Normalize(mean, std)])
    if dift.anchors is not None:
        index, labels = read_anchors(dift.anchors)
    else:
        targets = np.asarray([t for _, t in train.samples] if hasattr(train, "samples") else train.targets)
        index, labels = draw_anchors(targets, dift.anchors_per_class, random_state=dift.seed)
        warnings.warn(f"DIFT draws {dift.anchors_per_class} anchors per class from the training labels and trusts "
                      f"them to be clean; give dift.anchors (CSV index,label) to choose them", stacklevel=1)
    workers = int(cfg.data.num_workers) if "num_workers" in cfg.data else 0
    return DIFTData(_Unaugmented(train), index, labels, num_workers=workers)


def _mean_std(cfg: Any) -> tuple[Any, Any]:
    """The normalisation solo-learn 1.0.6 gives the crops (``build_transform_pipeline``): its per-dataset table
    (a local there, not importable), else the augmentation's ``mean``/``std``, else ImageNet's."""
    aug = cfg.augmentations[0]
    own = (tuple(aug.get("mean", IMAGENET[0])), tuple(aug.get("std", IMAGENET[1])))
    return SOLO_MEANS_N_STD.get(cfg.data.dataset, own)


def main(argv: list[str] | None = None) -> None:
    """``dift-solo SCRIPT [hydra args...]``: SCRIPT is solo-learn's main_pretrain.py (or a launcher calling it)."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or not argv[0].endswith(".py") or not Path(argv[0]).is_file():
        print("usage: dift-solo path/to/solo-learn/main_pretrain.py --config-path DIR --config-name NAME "
              "[+dift=true | +dift.KEY=VALUE ...]", file=sys.stderr)
        sys.exit(2)
    try:
        import solo.methods
    except ImportError:
        print(f"error: {INSTALL}", file=sys.stderr)
        sys.exit(2)
    wrap_registry(solo.methods.METHODS)
    script = Path(argv[0]).resolve()
    sys.argv = [str(script), *argv[1:]]
    sys.path.insert(0, str(script.parent))
    runpy.run_path(str(script), run_name="__main__")

