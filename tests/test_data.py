import os

import numpy as np
import pytest
import torch
from PIL import Image

from dift_plugin.errors import DiftUserError
from harness.data import IndexedDataset, load_split, pin_data_root, stratified_subset
from harness.errors import DataNotFoundError
from tests.conftest import make_cfg


def test_dataset_index_is_the_samples_true_index(data_root):
    cfg = make_cfg()
    train = load_split(cfg.data, "train", seed=3)
    ds = IndexedDataset(train)
    for i in (0, 17, len(ds) - 1):
        index, image, label = ds[i]
        assert index == i
        # The image at that index is exactly the file recorded for it, and the label its class folder.
        expected = torch.from_numpy(np.asarray(Image.open(train.paths[i]).convert("RGB")).copy()).permute(2, 0, 1)
        assert torch.equal(image, expected)
        assert train.classes[label] == train.paths[i].split("/")[-2]
    # source_index points into the full, alphabetically ordered split (5,000 files per class).
    assert train.source_index[0] // 5000 == train.labels[0]


def test_stratified_subset_is_balanced_seeded_and_sorted(data_root):
    cfg = make_cfg()
    a = load_split(cfg.data, "train", seed=1)
    b = load_split(cfg.data, "train", seed=1)
    c = load_split(cfg.data, "train", seed=2)
    assert len(a) == 512 and a.images.shape == (512, 3, 32, 32) and a.images.dtype == torch.uint8
    counts = np.bincount(a.labels.numpy(), minlength=10)
    assert counts.min() >= 51 and counts.max() <= 52
    assert np.array_equal(a.source_index, b.source_index)
    assert not np.array_equal(a.source_index, c.source_index)
    assert np.all(np.diff(a.source_index) > 0)


def test_class_selection_relabels_and_stays_stratified(data_root):
    first3 = load_split(make_cfg("data.classes=3", "data.max_train=300").data, "train", seed=0)
    assert first3.classes == ["airplane", "automobile", "bird"] and len(first3) == 300
    assert np.bincount(first3.labels.numpy()).tolist() == [100, 100, 100]
    named = load_split(make_cfg("data.classes=[cat,airplane]", "data.max_train=100").data, "train", seed=0)
    assert named.classes == ["cat", "airplane"]
    assert all(named.paths[i].split("/")[-2] == named.classes[label] for i, label in enumerate(named.labels))
    for bad in ("data.classes=[cat,dragon]", "data.classes=1", "data.classes=[cat,cat]"):
        with pytest.raises(DiftUserError, match="data.classes"):
            load_split(make_cfg(bad).data, "train")


def test_train_fraction_and_conflicting_subset_options():
    labels = np.repeat(np.arange(4), 25)
    assert len(stratified_subset(labels, 40, seed=0)) == 40
    cfg = make_cfg("data.max_train=null", "data.train_fraction=0.01")
    assert len(load_split(cfg.data, "train", seed=0)) == 500
    assert len(load_split(cfg.data, "test", seed=0)) == 200  # the fraction applies to train only
    with pytest.raises(DiftUserError, match="not both"):
        load_split(make_cfg("data.train_fraction=0.5").data, "train")


def test_missing_data_root_names_the_path(tmp_path):
    cfg = make_cfg(f"data.root={tmp_path}/nowhere")
    with pytest.raises(DataNotFoundError) as err:
        load_split(cfg.data, "train")
    msg = str(err.value)
    assert f"{tmp_path}/nowhere" in msg and "DIFT_DATA_ROOT" in msg and "download" in msg


def test_malformed_image_folder_is_reported(tmp_path):
    (tmp_path / "cifar10" / "train" / "cat").mkdir(parents=True)
    (tmp_path / "cifar10" / "train" / "cat" / "0.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataNotFoundError, match="cannot decode image .*0.jpg"):
        load_split(make_cfg(f"data.root={tmp_path}", "data.max_train=null").data, "train")
    (tmp_path / "cifar10" / "train" / "cat" / "0.jpg").unlink()
    with pytest.raises(DataNotFoundError, match="no class folders with images"):
        load_split(make_cfg(f"data.root={tmp_path}").data, "train")


def test_batched_fetch_matches_single_items(data_root):
    ds = IndexedDataset(load_split(make_cfg().data, "train", seed=0))
    idx, images, labels = ds.__getitems__([5, 3, 400])
    assert idx.tolist() == [5, 3, 400]
    for j, i in enumerate([5, 3, 400]):
        assert torch.equal(images[j], ds[i][1]) and labels[j] == ds[i][2]


def test_imagefolder_without_a_folder_asks_for_one():
    with pytest.raises(DiftUserError, match="needs data.folder"):
        load_split(make_cfg("data=imagefolder").data, "train")


def test_a_relative_data_root_means_relative_to_where_the_command_started(tmp_path, data_root, monkeypatch):
    start = tmp_path / "start"
    start.mkdir()
    monkeypatch.chdir(start)
    relative = os.path.relpath(data_root, start)
    monkeypatch.setenv("DIFT_DATA_ROOT", relative)
    cfg = make_cfg(f"data.root={relative}")
    pin_data_root(cfg)
    assert os.environ["DIFT_DATA_ROOT"] == cfg.data.root == str(data_root.resolve())
    monkeypatch.chdir(tmp_path)  # where a spawned process may run: the relative path no longer points at the data
    assert len(load_split(make_cfg().data, "test")) == 200
    assert len(load_split(cfg.data, "test")) == 200
