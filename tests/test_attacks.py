import numpy as np
import pytest
import torch

import attacks
from attacks.ctrl import block_dct, rgb_to_yuv, yuv_to_rgb
from attacks.patch import random_positions
from dift_plugin.errors import DiftUserError
from dift_plugin.images import ImageSet


def image_set(n=200, classes=4, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    # Mid-range pixels, so a magnitude-100 CTRL trigger is not clipped.
    images = (64 + torch.rand(n, 3, size, size, generator=g) * 128).to(torch.uint8)
    labels = torch.arange(classes).repeat_interleave(n // classes)
    return ImageSet(images, labels, [str(c) for c in range(classes)], np.arange(n))


def test_yuv_round_trip_within_1e3():
    x = torch.rand(8, 3, 32, 32)
    assert (yuv_to_rgb(rgb_to_yuv(x)) - x).abs().max() < 1e-3
    # Analog YUV: Y is the BT.601 luma, U and V have no offset (a grey pixel has U = V = 0).
    grey = torch.full((1, 3, 1, 1), 0.5)
    torch.testing.assert_close(rgb_to_yuv(grey).flatten(), torch.tensor([0.5, 0.0, 0.0]), atol=1e-4, rtol=0)


def test_ctrl_moves_exactly_the_trigger_coefficients():
    x = torch.rand(4, 3, 32, 32, dtype=torch.float64) * 0.5 + 0.25
    ctrl = attacks.build("ctrl", magnitude=100, positions=[15, 31], window_size=32)
    t = ctrl.trigger(x)
    d = block_dct(rgb_to_yuv(t * 255), 32) - block_dct(rgb_to_yuv(x * 255), 32)
    expected = torch.zeros_like(d)
    for c in (1, 2):
        for p in (15, 31):
            expected[:, c, p, p] = 100
    torch.testing.assert_close(d, expected, atol=1e-6, rtol=0)


def test_ctrl_windows_tile_the_image():
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64) * 0.5 + 0.25
    t = attacks.build("ctrl", magnitude=30, positions=[7], window_size=16).trigger(x)
    d = block_dct(rgb_to_yuv(t * 255), 16) - block_dct(rgb_to_yuv(x * 255), 16)
    for r in (7, 23):
        for c in (7, 23):  # coefficient (7, 7) of each of the four 16x16 blocks
            torch.testing.assert_close(d[:, 1:, r, c], torch.full((2, 2), 30.0, dtype=torch.float64))
    assert d.abs().sum() == pytest.approx(2 * 2 * 4 * 30)
    with pytest.raises(DiftUserError, match="inside the window"):
        attacks.build("ctrl", positions=[31], window_size=16)


def test_ctrl_poisoned_images_stay_float_unless_rounding_is_asked():
    data = image_set()
    plain = attacks.build("ctrl").poison(data, target_class=1, rate=0.05, seed=0)
    assert plain.train.images.dtype == torch.float32
    assert not torch.equal(plain.train.images * 255, (plain.train.images * 255).round())
    rounded = attacks.build("ctrl", round_to_uint8=True).poison(data, target_class=1, rate=0.05, seed=0)
    assert rounded.train.images.dtype == torch.uint8


@pytest.mark.parametrize("name", sorted(attacks.ATTACKS))
def test_poisoned_indexes_are_exactly_the_modified_samples(name):
    data = image_set()
    result = attacks.build(name).poison(data, target_class=2, rate=0.1, seed=3)
    idx = result.poisoned_indexes
    assert len(idx) == 20 and np.all(np.diff(idx) > 0)
    assert (data.labels[idx] == 2).all()  # only target-class images are poisoned
    before = data.images.float() / 255
    changed = (result.train.images.float() - before).abs().flatten(1).amax(dim=1) > 1e-6
    assert np.array_equal(np.flatnonzero(changed.numpy()), idx)
    assert torch.equal(result.train.labels, data.labels)
    assert data.images.dtype == torch.uint8  # the clean set is left untouched


@pytest.mark.parametrize("name", sorted(attacks.ATTACKS))
def test_poisoning_is_reproducible_from_its_seed(name):
    data = image_set()
    a = attacks.build(name).poison(data, 0, 0.1, seed=1)
    b = attacks.build(name).poison(data, 0, 0.1, seed=1)
    c = attacks.build(name).poison(data, 0, 0.1, seed=2)
    assert np.array_equal(a.poisoned_indexes, b.poisoned_indexes) and torch.equal(a.train.images, b.train.images)
    assert not np.array_equal(a.poisoned_indexes, c.poisoned_indexes)


def test_first_selection_takes_the_first_target_images():
    data = image_set()
    result = attacks.build("ctrl", selection="first").poison(data, target_class=1, rate=0.05, seed=0)
    assert result.poisoned_indexes.tolist() == list(range(50, 60))


def test_patches_land_where_configured():
    x = torch.full((64, 3, 32, 32), 0.5)
    atk = attacks.build("sslbackdoor", patch_size=5, pattern_seed=4)
    pattern = atk.pattern
    assert set(pattern.unique().tolist()) == {0.0, 1.0}  # high-contrast binary pattern
    data = ImageSet((x * 255).to(torch.uint8), torch.zeros(64, dtype=torch.long), ["a", "b"], np.arange(64))
    poisoned = atk.poison(data, 0, 0.5, seed=0).train.images
    test = atk.trigger(x, seed=0)
    for imgs, lo, hi in ((poisoned[poisoned.flatten(1).std(1) > 0], 8, 24), (test, 0, 32)):
        for img in imgs:
            rows, cols = torch.nonzero((img - 0.5).abs().sum(0) > 0.1, as_tuple=True)
            r, c = rows.min().item(), cols.min().item()
            assert lo <= r and r + 5 <= hi and lo <= c and c + 5 <= hi
            torch.testing.assert_close(img[:, r:r + 5, c:c + 5], pattern)
    # Test positions spread over the whole image, not only the centre.
    pos = random_positions(500, 32, 32, 5, "any", seed=0)
    assert pos.min() == 0 and pos.max() == 27


def test_cell_pattern_is_smooth_binary_at_the_cell_centres_and_seeded():
    pattern = attacks.build("sslbackdoor", patch_size=7, pattern_cells=4, pattern_seed=3).pattern
    corners = pattern[:, ::2, ::2]  # 7 px, 4 cells, corners aligned: cell colours at pixels 0, 2, 4, 6
    assert set(corners.unique().tolist()) <= {0.0, 1.0} and len(corners.unique()) == 2
    between = pattern[:, 1::2, ::2]
    assert ((between > 0) & (between < 1)).any()  # blended between cells, unlike the per-pixel pattern
    torch.testing.assert_close(pattern, attacks.build("sslbackdoor", patch_size=7, pattern_cells=4,
                                                      pattern_seed=3).pattern)
    with pytest.raises(DiftUserError, match="pattern_cells"):
        attacks.build("sslbackdoor", patch_size=5, pattern_cells=6)


def test_opacity_blends_the_patch_into_the_image_on_training_and_test_images():
    data = image_set(n=40, classes=2, size=32)
    opaque = attacks.build("sslbackdoor", patch_size=6, train_region="any")
    half = attacks.build("sslbackdoor", patch_size=6, train_region="any", opacity=0.5)
    a, b = (atk.poison(data, target_class=0, rate=0.25, seed=0) for atk in (opaque, half))
    clean = data.images[a.poisoned_indexes].float() / 255
    moved = a.train.images[a.poisoned_indexes] - clean
    assert (moved != 0).any()
    torch.testing.assert_close(b.train.images[b.poisoned_indexes] - clean, moved / 2)  # half-way to the pattern
    x = torch.rand(4, 3, 32, 32)
    torch.testing.assert_close(half.trigger(x, seed=1) - x, (opaque.trigger(x, seed=1) - x) / 2)
    for bad in (0, 1.5):
        with pytest.raises(DiftUserError, match="opacity must be in"):
            attacks.build("sslbackdoor", opacity=bad)


def test_corruptencoder_composes_object_background_and_trigger():
    data = image_set(n=40, classes=2, size=32)
    atk = attacks.build("corruptencoder", patch_size=4)
    res = atk.poison(data, target_class=0, rate=0.25, seed=0)
    for i in res.poisoned_indexes:
        img, obj = res.train.images[i], data.images[i].float() / 255
        left = torch.allclose(img[:, :, :16], obj[:, :, 8:24])
        right = torch.allclose(img[:, :, 16:], obj[:, :, 8:24])
        assert left != right  # the object strip sits at exactly one edge
        trig_col = 16 + 6 if left else 6
        torch.testing.assert_close(img[:, 14:18, trig_col:trig_col + 4], atk.pattern)


def test_corruptencoder_puts_the_trigger_anywhere_in_the_free_half_when_asked():
    data = image_set(n=40, classes=2, size=32)
    atk = attacks.build("corruptencoder", patch_size=4, trigger_position="random")
    res = atk.poison(data, target_class=0, rate=0.25, seed=0)
    corners = set()
    for i in res.poisoned_indexes:
        img, obj = res.train.images[i], data.images[i].float() / 255
        left = torch.allclose(img[:, :, :16], obj[:, :, 8:24])  # the object strip is untouched by the trigger
        assert left or torch.allclose(img[:, :, 16:], obj[:, :, 8:24])
        free = img[:, :, 16:] if left else img[:, :, :16]
        found = [(r, c) for r in range(29) for c in range(13) if torch.equal(free[:, r:r + 4, c:c + 4], atk.pattern)]
        assert len(found) == 1
        corners.add(found[0])
    assert len(corners) > 5  # not one fixed spot: the centre (14, 6) is what trigger_position=center gives
    with pytest.raises(DiftUserError, match="trigger_position must be one of center, random"):
        attacks.build("corruptencoder", trigger_position="edge")
    with pytest.raises(DiftUserError, match="does not fit the 32x16 half"):
        attacks.build("corruptencoder", patch_size=20).poison(data, target_class=0, rate=0.25, seed=0)


def test_bad_attack_settings_fail_clearly():
    data = image_set()
    with pytest.raises(DiftUserError, match="unknown attack 'badnets'"):
        attacks.build("badnets")
    with pytest.raises(DiftUserError, match="bad parameters for attack 'ctrl'"):
        attacks.build("ctrl", size=3)
    with pytest.raises(DiftUserError, match="only 50"):
        attacks.build("ctrl").poison(data, 0, rate=0.3)
    with pytest.raises(DiftUserError, match="not a class index"):
        attacks.build("ctrl").poison(data, 7, rate=0.01)
