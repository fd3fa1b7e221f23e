import torch

from dift_plugin.images import to_float
from harness.augment import Normalize, TwoViews, batch_seed, build_view_augmentation
from tests.conftest import make_cfg


def views_of(images, seed):
    cfg = make_cfg()
    aug = TwoViews(build_view_augmentation(cfg.augment, 32), Normalize([0.5] * 3, [0.25] * 3))
    return aug(images, seed)


def test_views_are_seeded_distinct_and_normalised():
    images = (torch.rand(16, 3, 32, 32) * 255).to(torch.uint8)
    v1, v2 = views_of(images, seed=7)
    assert v1.shape == images.shape and v1.dtype == torch.float32
    assert not torch.allclose(v1, v2)  # two independent augmentations
    again = views_of(images, seed=7)
    assert torch.equal(again[0], v1) and torch.equal(again[1], v2)
    assert not torch.equal(views_of(images, seed=8)[0], v1)
    # Normalised from [0, 1]: values lie in [(0 - .5) / .25, (1 - .5) / .25].
    assert v1.min() >= -2.0 - 1e-5 and v1.max() <= 2.0 + 1e-5


def test_augmentation_does_not_touch_the_global_rng():
    images = torch.rand(4, 3, 32, 32)
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    views_of(images, seed=1)
    assert torch.equal(torch.rand(3), expected)


def test_batch_seeds_differ_across_epoch_batch_and_rank():
    seeds = {batch_seed(0, e, b, r) for e in range(3) for b in range(50) for r in range(2)}
    assert len(seeds) == 300


def test_to_float_scales_uint8_only():
    assert torch.equal(to_float(torch.full((1,), 255, dtype=torch.uint8)), torch.ones(1))
    assert torch.equal(to_float(torch.full((1,), 0.5)), torch.full((1,), 0.5))
