"""Image sets decoded once into uint8 tensors, from torchvision's layouts or an ImageFolder tree.

Every training item carries its index in the training set (what DIFT needs to map an embedding
back to its sample) and its label (used for anchors and evaluation only, never by SSL training).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from sklearn.model_selection import train_test_split
from torch.utils.data import Dataset

from dift_plugin.errors import DiftUserError
from dift_plugin.images import ImageSet
from harness.errors import DataNotFoundError

TORCHVISION_SETS = {"cifar10": ("CIFAR10", "cifar-10-batches-py"), "cifar100": ("CIFAR100", "cifar-100-python")}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class IndexedDataset(Dataset):
    """Yields ``(index, image, label)``: the index is the sample's position in the training set."""

    def __init__(self, data: ImageSet) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor, int]:
        return i, self.data.images[i], int(self.data.labels[i])

    def __getitems__(self, index: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A whole batch by one tensor index (the DataLoader's fast path); pair with ``collate_fn=keep_batch``."""
        idx = torch.as_tensor(index, dtype=torch.long)
        return idx, self.data.images[idx], self.data.labels[idx]


class Images(Dataset):
    """The images of an :class:`ImageSet` alone (what DIFT embeds); batched fetch, pair with ``keep_batch``."""

    def __init__(self, data: ImageSet) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.data.images[i]

    def __getitems__(self, index: list[int]) -> torch.Tensor:
        return self.data.images[torch.as_tensor(index, dtype=torch.long)]


def keep_batch(batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """Collate function for :meth:`IndexedDataset.__getitems__`: the batch is already assembled."""
    return batch


def default_data_root() -> str:
    """``$DIFT_DATA_ROOT`` if set, else ``~/.cache/dift/data``."""
    return os.environ.get("DIFT_DATA_ROOT") or str(Path.home() / ".cache" / "dift" / "data")


def resolve_root(root: str | None) -> Path:
    return Path(os.path.expanduser(root or default_data_root())).resolve()


def pin_data_root(cfg: DictConfig | None = None) -> None:
    """Make a relative ``DIFT_DATA_ROOT`` (and ``cfg.data.root``) absolute, relative to the current directory — where
    the command was started — so that processes spawned in other directories (DDP ranks, launchers, a test's
    subprocess) and later readers of the saved config find the same data."""
    env = os.environ.get("DIFT_DATA_ROOT")
    if env:
        os.environ["DIFT_DATA_ROOT"] = str(resolve_root(env))
    if cfg is not None and cfg.data.get("root"):
        cfg.data.root = str(resolve_root(cfg.data.root))


def _missing(name: str, root: Path, detail: str) -> DataNotFoundError:
    return DataNotFoundError(
        f"dataset '{name}' not found under {root}: {detail}. Point DIFT_DATA_ROOT (or data.root=...) at the folder "
        f"that holds it; e.g. DIFT_DATA_ROOT=../shared/datasets for the offline CIFAR-10 copy."
    )


def _load_torchvision(name: str, root: Path, train: bool, download: bool) -> ImageSet:
    import torchvision

    cls_name, _ = TORCHVISION_SETS[name]
    try:
        ds = getattr(torchvision.datasets, cls_name)(str(root), train=train, download=download)
    except (RuntimeError, OSError) as e:  # "Dataset not found or corrupted.", or no network for download
        raise _missing(name, root, f"torchvision could not read it ({e})") from None
    images = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()
    labels = torch.as_tensor(ds.targets, dtype=torch.long)
    return ImageSet(images, labels, list(ds.classes), np.arange(len(labels)))


def _list_image_folder(split_dir: Path) -> tuple[list[str], np.ndarray, list[str]]:
    classes = sorted(d.name for d in split_dir.iterdir() if d.is_dir())
    paths, labels = [], []
    for c, cls in enumerate(classes):
        files = sorted(f for f in (split_dir / cls).iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        paths += [str(f) for f in files]
        labels += [c] * len(files)
    return paths, np.asarray(labels, dtype=np.int64), classes


def _decode(paths: list[str], size: int) -> torch.Tensor:
    out = torch.empty((len(paths), 3, size, size), dtype=torch.uint8)
    for i, p in enumerate(paths):
        try:
            img = Image.open(p).convert("RGB")
        except OSError as e:
            raise DataNotFoundError(f"cannot decode image {p}: {e}. Remove or replace the file.") from None
        if img.size != (size, size):
            img = img.resize((size, size), Image.BICUBIC)
        out[i] = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)
    return out


def _load_image_folder(name: str, folder: Path, split: str, size: int,
                       keep: Callable[[np.ndarray, list[str]], np.ndarray]) -> ImageSet:
    split_dir = folder / split
    if not split_dir.is_dir():
        raise _missing(name, folder.parent, f"expected an ImageFolder at {split_dir} (<class>/<image> files)")
    paths, labels, classes = _list_image_folder(split_dir)
    if not paths:
        raise _missing(name, folder.parent, f"{split_dir} has no class folders with images ({', '.join(IMAGE_SUFFIXES)})")
    index = keep(labels, classes)
    chosen = [paths[i] for i in index]
    return ImageSet(_decode(chosen, size), torch.as_tensor(labels[index]), classes, index, chosen)


def stratified_subset(labels: np.ndarray, size: int | None, seed: int) -> np.ndarray:
    """Sorted indexes of a class-stratified random subset of ``size`` samples (all when ``size`` is None)."""
    n = len(labels)
    if size is None or size >= n:
        return np.arange(n)
    if size < len(np.unique(labels)):
        raise DiftUserError(f"a stratified subset of {size} samples cannot hold all {len(np.unique(labels))} classes")
    index, _ = train_test_split(np.arange(n), train_size=size, stratify=labels, random_state=seed)
    return np.sort(index)


def _subset_size(cfg: DictConfig, split: str, n_total: int) -> int | None:
    if split == "train":
        if cfg.get("max_train") is not None and cfg.get("train_fraction") is not None:
            raise DiftUserError("set data.max_train or data.train_fraction, not both")
        if cfg.get("train_fraction") is not None:
            frac = float(cfg.train_fraction)
            if not 0 < frac <= 1:
                raise DiftUserError(f"data.train_fraction must be in (0, 1], got {frac}")
            return max(1, int(round(frac * n_total)))
        return cfg.get("max_train")
    return cfg.get("max_test")


def selected_classes(cfg: DictConfig, classes: list[str]) -> np.ndarray | None:
    """Positions in ``classes`` of the classes ``data.classes`` keeps: null = all, an int k = the first k, or a
    list of class names (in the order that becomes the new labels 0..k-1)."""
    chosen = cfg.get("classes")
    if chosen is None:
        return None
    if isinstance(chosen, int) and not isinstance(chosen, bool):
        if not 2 <= chosen <= len(classes):
            raise DiftUserError(f"data.classes={chosen}: keep between 2 and {len(classes)} classes")
        return np.arange(chosen)
    names = [str(c) for c in chosen]
    unknown = [c for c in names if c not in classes]
    if unknown or len(set(names)) != len(names) or len(names) < 2:
        raise DiftUserError(f"data.classes={names}: give an int or at least two distinct class names out of "
                            f"{classes}" + (f" (unknown: {unknown})" if unknown else ""))
    return np.array([classes.index(c) for c in names])


def load_split(cfg: DictConfig, split: str, seed: int = 0) -> ImageSet:
    """Load ``split`` ('train' or 'test') of the dataset described by a ``data`` config.

    Looks for torchvision's layout for CIFAR-10/100 (or downloads it with ``data.download=true``), else for an
    ImageFolder ``<root>/<folder>/{train,test}/<class>/*``; takes a stratified subset when configured.
    """
    if split not in ("train", "test"):
        raise DiftUserError(f"unknown split '{split}': use 'train' or 'test'")
    name = cfg.name
    root = resolve_root(cfg.get("root"))
    size = int(cfg.image_size)

    def keep(labels: np.ndarray, classes: list[str]) -> np.ndarray:
        ids = selected_classes(cfg, classes)
        pool = np.arange(len(labels)) if ids is None else np.flatnonzero(np.isin(labels, ids))
        return pool[stratified_subset(labels[pool], _subset_size(cfg, split, len(pool)), seed)]

    if OmegaConf.is_missing(cfg, "folder"):
        raise DiftUserError(f"data={name} needs data.folder=<folder under {root} holding train/ and test/>")
    folder = root / cfg.get("folder", name)
    tv = TORCHVISION_SETS.get(name)
    if tv is not None and ((root / tv[1]).is_dir() or (cfg.get("download", False) and not folder.is_dir())):
        full = _load_torchvision(name, root, split == "train", bool(cfg.get("download", False)))
        data = full.subset(keep(full.labels.numpy(), full.classes))
    elif folder.is_dir():
        data = _load_image_folder(name, folder, split, size, keep)
    else:
        expected = f"{root / tv[1]} (torchvision layout; data.download=true fetches it) or " if tv else ""
        raise _missing(name, root, f"expected {expected}an ImageFolder {folder}/{{train,test}}/<class>/<image>")
    if data.images.shape[-1] != size:
        data.images = torch.nn.functional.interpolate(
            data.images.float(), size=(size, size), mode="bilinear", antialias=True
        ).round().clamp(0, 255).to(torch.uint8)
    if cfg.get("num_classes") is not None and len(data.classes) != int(cfg.num_classes):
        raise DiftUserError(
            f"data.num_classes={cfg.num_classes} but {name} under {root} has {len(data.classes)} classes"
        )
    ids = selected_classes(cfg, data.classes)
    if ids is not None:  # new labels 0..k-1 in the order of data.classes
        relabel = np.full(len(data.classes), -1, dtype=np.int64)
        relabel[ids] = np.arange(len(ids))
        data.labels = torch.as_tensor(relabel[data.labels.numpy()])
        data.classes = [data.classes[i] for i in ids]
    return data
