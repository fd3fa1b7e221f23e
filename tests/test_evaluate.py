import pytest
import torch
from torch import nn

from harness.augment import Normalize
from harness.evaluate import attack_success_rate, evaluate_encoder, extract_features, knn_predict


def blobs(n_per_class, num_classes=3, dim=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.eye(dim)[:num_classes] * 5
    y = torch.arange(num_classes).repeat_interleave(n_per_class)
    return centers[y] + 0.3 * torch.randn(len(y), dim, generator=g), y


def test_knn_classifies_separable_clusters():
    x, y = blobs(50)
    q, qy = blobs(20, seed=1)
    assert (knn_predict(x, y, q, num_classes=3, k=10) == qy).all()


def test_asr_counts_non_target_images_only_unless_asked():
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    pred = torch.tensor([0, 0, 0, 1, 0, 2])  # target 0: 2 of the 4 non-target images flip to 0
    assert attack_success_rate(pred, labels, target=0) == 50.0
    assert attack_success_rate(pred, labels, target=0, include_target=True) == pytest.approx(400 / 6)


class Flatten(nn.Module):
    def forward(self, x):
        return x.flatten(1)


def test_evaluate_encoder_reports_acc_and_asr():
    # Images whose mean colour encodes the class; the "trigger" paints everything like class 0.
    g = torch.Generator().manual_seed(0)
    y = torch.arange(3).repeat_interleave(40)
    imgs = torch.rand(120, 3, 4, 4, generator=g) * 0.2
    imgs[torch.arange(120), y] += 0.7
    trig = imgs.clone()
    trig[:, 0] = 0.9
    trig[:, 1:] = 0.05
    m = evaluate_encoder(Flatten(), Normalize([0.0] * 3, [1.0] * 3), imgs, y, imgs, y, 3,
                         triggered_test=trig, target_class=0, knn_k=10)
    assert m["acc_linear"] == 100.0 and m["acc_knn"] == 100.0
    assert m["asr_linear"] == 100.0 and m["asr_knn"] == 100.0
    assert m["asr_knn_all"] == 100.0


def test_an_l2_linear_probe_reads_the_direction_of_a_feature_and_a_raw_one_its_norm_too():
    # Class 0 at 30 degrees (norm 1), class 1 at 60 degrees (norm 2); the "trigger" only scales a feature 3x, as a
    # high-contrast patch inflates the norm of a clean encoder's features (1.2-2.8x on the cpu grid's runs). On raw
    # features the probe's boundary misses the origin, so the scaled class-0 points cross it; L2-normalised, not.
    g = torch.Generator().manual_seed(0)
    y = torch.arange(2).repeat_interleave(100)
    angle = torch.deg2rad(torch.tensor([30.0, 60.0]))[y] + 0.03 * torch.randn(200, generator=g)
    radius = torch.tensor([1.0, 2.0])[y] * (1 + 0.03 * torch.randn(200, generator=g))
    feats = torch.stack([radius * angle.cos(), radius * angle.sin(), torch.zeros(200)], dim=1).view(200, 3, 1, 1)
    m = {kind: evaluate_encoder(Flatten(), Normalize([0.0] * 3, [1.0] * 3), feats, y, feats, y, 2, knn_k=10,
                                triggered_test=3 * feats, target_class=1, linear_features=kind)
         for kind in ("raw", "l2")}
    assert m["raw"]["acc_linear"] == m["l2"]["acc_linear"] == 100.0
    assert m["raw"]["asr_linear"] > 90 and m["l2"]["asr_linear"] == 0.0
    assert m["raw"]["asr_knn"] == m["l2"]["asr_knn"] == 0.0  # the cosine kNN never read the norm
    with pytest.raises(ValueError, match="features must be one of raw, l2"):
        evaluate_encoder(Flatten(), Normalize([0.0] * 3, [1.0] * 3), feats, y, feats, y, 2, linear_features="l1")


def test_embedding_progress_bars_stay_out_of_log_files(capfd):
    # a run's stdout / stderr redirected to a file (benchmarks, dift-bench cells) is not a terminal: no bars
    imgs = torch.rand(8, 3, 4, 4)
    feats = extract_features(Flatten(), imgs, Normalize([0.0] * 3, [1.0] * 3), batch_size=2, desc="embed train")
    assert feats.shape == (8, 48)
    out, err = capfd.readouterr()
    assert "embed train" not in out + err
