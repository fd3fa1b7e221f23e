"""DIFT on method classes shaped like solo-learn's, fed like solo-learn feeds them (an ImageFolder with indexes and
two crops per image, a shuffling DataLoader), wrapped the way ``dift-solo`` wraps solo-learn's registry."""

import csv

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from sklearn.model_selection import train_test_split
from torch.utils.data import DataLoader
from torchvision import datasets
from torchvision import transforms as T

from dift_plugin import DIFTConfigError, DIFTMixin
from dift_plugin.anchors import read_anchors
from dift_plugin.branches import sync_momentum_branches
from dift_plugin.make_anchors import main as make_anchors_main
from dift_plugin.solo import _mean_std, wrap_registry
from harness.experiment import prepare_data
from tests import solo_like
from tests.conftest import make_cfg
from tests.recorder import Recorder

MEAN, STD = [0.4914, 0.4822, 0.4465], [0.247, 0.243, 0.261]


class IndexedImageFolder(datasets.ImageFolder):  # solo-learn's dataset_with_index(ImageFolder)
    def __getitem__(self, index):
        return (index, *super().__getitem__(index))


class TwoCrops:
    def __init__(self) -> None:
        self.t = T.Compose([T.RandomResizedCrop(32, scale=(0.2, 1.0)), T.RandomHorizontalFlip(), T.ToTensor(),
                            T.Normalize(MEAN, STD)])

    def __call__(self, img):
        return [self.t(img), self.t(img)]


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory, data_root):
    """512 real CIFAR-10 images, 5 % with a 24x24 trigger, written as an ImageFolder; poisoned and clean anchors as
    ImageFolder indexes."""
    data = prepare_data(make_cfg("attack=sslbackdoor", "attack.rate=0.05", "attack.params.patch_size=24"))
    root = tmp_path_factory.mktemp("folder")
    for i, (img, label) in enumerate(zip(data.ssl_train.images, data.ssl_train.labels)):
        folder = root / data.train.classes[int(label)]
        folder.mkdir(exist_ok=True)
        img = img if img.dtype == torch.uint8 else (img * 255).round().clamp(0, 255).to(torch.uint8)
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(folder / f"{i:05d}.png")
    order = [int(p.split("/")[-1][:5]) for p, _ in datasets.ImageFolder(root).samples]
    poisoned = np.flatnonzero(np.isin(order, data.poisoned_indexes))
    labels = np.array([t for _, t in datasets.ImageFolder(root).samples])
    anchors = np.concatenate([np.setdiff1d(np.flatnonzero(labels == c), poisoned)[:10] for c in range(10)])
    with (root.parent / "anchors.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["index", "label"])
        w.writerows([[i, labels[i]] for i in anchors])
    return root, poisoned, root.parent / "anchors.csv"


def solo_cfg(anchors, **dift):
    return OmegaConf.create({
        "optimizer": {"lr": 0.05}, "method_kwargs": {"queue_size": 192}, "scheduler": {"warmup_epochs": 0},
        "augmentations": [{"crop_size": 32, "mean": MEAN, "std": STD}], "data": {"dataset": "custom", "num_workers": 0},
        "dift": {"stop_epoch": 2, "unstable_at_stop": "act", "anchors": str(anchors), **dift}})  # decides at 2


def fit(name, folder, anchors, epochs=4, **dift):
    registry = wrap_registry(dict(solo_like.METHODS))
    assert issubclass(registry[name], DIFTMixin) and issubclass(registry[name], solo_like.METHODS[name])
    pl.seed_everything(0, verbose=False)
    model = registry[name](solo_cfg(anchors, **dift))
    loader = DataLoader(IndexedImageFolder(folder, transform=TwoCrops()), batch_size=64, shuffle=True,
                        drop_last=True)
    watch = Recorder()
    trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[watch])
    trainer.fit(model, loader)
    assert all(n == 2 for crops in watch.crops.values() for n in crops)  # [indexes, [two crops], targets] throughout
    return model, watch


def test_mocov2plus_solo_like_with_dift(image_folder):
    folder, poisoned, anchors = image_folder
    model, watch = fit("mocov2plus", folder, anchors)
    state = model.dift_state
    assert state.phase == "filtered" and state.decided_epoch == 2
    detected = set(state.detected)
    assert len(detected & set(poisoned.tolist())) > 0.3 * len(detected)  # mostly the planted trigger (chance: 5 %)
    assert not detected & set(watch.indexes[3]) and set(watch.sizes[3]) == {64}  # full batches: queue assert
    after = watch.epoch_start[3]
    assert after["queue_ptr"] == 0 and watch.epoch_start[2]["queue_ptr"] != 0 and after["synced"]
    assert after["lr"] == pytest.approx(0.05)  # the restart replaced the CosineAnnealingLR at its initial LR
    assert watch.epoch_start[2]["lr"] < 0.05


def test_byol_solo_like_trains_with_dift_and_its_sync_leaves_the_predictor(image_folder):
    folder, _, anchors = image_folder
    model, watch = fit("byol", folder, anchors, epochs=2, stop_epoch=1)  # decides after its last epoch
    assert [r["epoch"] for r in model.dift_state.history] == [0, 1] and len(watch.sizes[1]) == 512 // 64
    predictor = {k: v.clone() for k, v in model.predictor.state_dict().items()}
    assert not watch.epoch_start[1]["synced"]
    sync_momentum_branches(model)
    assert all(torch.equal(a, b) for a, b in zip(model.backbone.state_dict().values(),
                                                 model.momentum_backbone.state_dict().values()))
    assert all(torch.equal(v, model.predictor.state_dict()[k]) for k, v in predictor.items())


def test_solo_like_bad_dift_block_fails_at_construction(image_folder):
    _, _, anchors = image_folder
    registry = wrap_registry(dict(solo_like.METHODS))
    with pytest.raises(DIFTConfigError, match="unknown key"):
        registry["byol"](solo_cfg(anchors, finetune={"step": 3}))
    with pytest.raises(DIFTConfigError, match="unknown key"):
        registry["byol"].add_and_assert_specific_cfg(solo_cfg(anchors, finetune={"step": 3}))


def test_dift_normalises_like_solo_learn_crops():
    def cfg(dataset, **aug):
        return OmegaConf.create({"data": {"dataset": dataset}, "augmentations": [{"crop_size": 32, **aug}]})

    cifar = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
    assert _mean_std(cfg("cifar10")) == cifar  # solo-learn's table (a local of its pipeline builder), not ImageNet's
    assert _mean_std(cfg("cifar10", mean=[0.5] * 3, std=[0.5] * 3)) == cifar  # its table wins, as in solo-learn
    assert _mean_std(cfg("custom", mean=[0.1, 0.2, 0.3], std=[1, 2, 3])) == ((0.1, 0.2, 0.3), (1, 2, 3))
    assert _mean_std(cfg("custom")) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def test_dift_anchors_indexes_the_trainers_order_also_after_solo_learns_fraction(image_folder, tmp_path):
    folder, _, _ = image_folder
    samples = datasets.ImageFolder(folder).samples
    out = tmp_path / "anchors.csv"
    make_anchors_main([str(folder), "--out", str(out), "--per-class", "3"])
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 30 and {int(r["label"]) for r in rows} == set(range(10))
    assert all(samples[int(r["index"])] == (r["path"], int(r["label"])) for r in rows)
    index, labels = read_anchors(out)  # what dift.anchors reads
    assert len(index) == 30 and np.array_equal(labels, [int(r["label"]) for r in rows])

    # solo-learn's data.fraction keeps a stratified, shuffled subset: indexes are positions in that subset
    files, _, targets, _ = train_test_split([p for p, _ in samples], [t for _, t in samples], train_size=0.5,
                                            stratify=[t for _, t in samples], random_state=42)
    trusted = tmp_path / "trusted.txt"
    trusted.write_text("\n".join(files[:200]))
    make_anchors_main([str(folder), "--out", str(out), "--per-class", "2", "--fraction", "0.5",
                       "--trusted", str(trusted)])
    rows = list(csv.DictReader(out.open()))
    assert all(files[int(r["index"])] == r["path"] and targets[int(r["index"])] == int(r["label"]) for r in rows)
    assert all(int(r["index"]) < 200 for r in rows)  # only trusted files
    with pytest.raises(SystemExit) as stop:
        make_anchors_main([str(tmp_path / "missing"), "--out", str(out)])
    assert stop.value.code == 2
