"""Augmentation: exact answers for maps with known results, reproducibility, ranges and bad input."""
import numpy as np
import pytest

from convnet.augment import RandomAffine, affine


@pytest.fixture
def images():
    return np.random.default_rng(0).random((3, 7, 7, 2)).astype(np.float32)


def test_identity_is_exact(images):
    out = affine(images)
    assert out.dtype == np.float32 and out.shape == images.shape
    np.testing.assert_array_equal(out, images)


@pytest.mark.parametrize("dy, dx", [(1, 2), (-3, -1), (0, 4), (-2, 0)])
def test_whole_pixel_shift_moves_the_image_and_fills_zeros(images, dy, dx):
    expected = np.zeros_like(images)
    src = images[:, max(-dy, 0):7 - max(dy, 0), max(-dx, 0):7 - max(dx, 0)]
    expected[:, max(dy, 0):7 - max(-dy, 0), max(dx, 0):7 - max(-dx, 0)] = src
    np.testing.assert_array_equal(affine(images, shift=(dy, dx)), expected)


def test_half_pixel_shift_is_the_mean_of_neighbours(images):
    out = affine(images, shift=(0, 0.5)).astype(np.float64)
    x = images.astype(np.float64)
    np.testing.assert_allclose(out[:, :, 1:], (x[:, :, 1:] + x[:, :, :-1]) / 2, atol=1e-6)
    np.testing.assert_allclose(out[:, :, 0], x[:, :, 0] / 2, atol=1e-6)     # half of it came from outside


@pytest.mark.parametrize("k", [1, 2, 3])
def test_quarter_turns_are_counter_clockwise_as_displayed(images, k):
    np.testing.assert_allclose(affine(images, angle=90 * k), np.rot90(images, k, axes=(1, 2)), atol=1e-6)


def test_zoom_enlarges_about_the_centre(images):
    out = affine(images, zoom=2.0)
    for k in (-1, 0, 1):
        for j in (-1, 0, 1):
            np.testing.assert_allclose(out[:, 3 + 2 * k, 3 + 2 * j], images[:, 3 + k, 3 + j], atol=1e-6)


def test_per_image_parameters_apply_to_their_own_image(images):
    out = affine(images, angle=[0, 90, 180], zoom=1, shift=[[0, 0], [0, 0], [0, 0]])
    np.testing.assert_array_equal(out[0], images[0])
    np.testing.assert_allclose(out[1], np.rot90(images[1], 1), atol=1e-6)
    np.testing.assert_allclose(out[2], np.rot90(images[2], 2), atol=1e-6)


def test_float64_stays_float64(images):
    assert affine(images.astype(np.float64), angle=10).dtype == np.float64


def test_random_affine_is_reproducible_and_draws_within_its_ranges(images):
    aug = RandomAffine(rotation_range=15, zoom_range=0.2, shift_range=3)
    a = aug(images, np.random.default_rng(5))
    np.testing.assert_array_equal(a, aug(images, np.random.default_rng(5)))
    assert not np.array_equal(a, aug(images, np.random.default_rng(6)))
    u = np.random.default_rng(5).random((3, 4))          # what it draws: one row of four per image
    expected = affine(images, (2 * u[:, 0] - 1) * 15, 1 + (2 * u[:, 1] - 1) * 0.2, (2 * u[:, 2:] - 1) * 3)
    np.testing.assert_array_equal(a, expected)


def test_random_affine_with_zero_ranges_changes_nothing(images):
    np.testing.assert_array_equal(RandomAffine(0, 0, 0)(images, np.random.default_rng(0)), images)


@pytest.mark.parametrize("ranges", [(15, 0, 0), (0, 0.2, 0), (0, 0, 3)])
def test_random_affine_with_one_range_is_no_identity(images, ranges):
    """Each part on its own moves the pixels: none of them is taken for the identity."""
    aug = RandomAffine(*ranges)
    assert not aug.identity
    assert not np.array_equal(aug(images, np.random.default_rng(1)), images)


def test_random_affine_config_rebuilds_the_same_augmentation(images):
    aug = RandomAffine(rotation_range=15, zoom_range=0.2, shift_range=3)
    assert aug.get_config() == {"rotation_range": 15.0, "zoom_range": 0.2, "shift_range": 3.0}
    again = RandomAffine(**aug.get_config())
    np.testing.assert_array_equal(again(images, np.random.default_rng(2)), aug(images, np.random.default_rng(2)))


def test_random_affine_keeps_a_centred_digit_on_the_canvas():
    x = np.zeros((64, 28, 28, 1), np.float32)
    x[:, 8:20, 10:18] = 1.0                               # a 12x8 block in the middle, like a digit's box
    out = RandomAffine(10, 0.1, 2)(x, np.random.default_rng(1))
    np.testing.assert_allclose(out.sum(axis=(1, 2, 3)) / x[0].sum(), 1.0, atol=0.25)   # zoom^2 at most 1.21
    assert out.min() >= 0 and out.max() <= 1 + 1e-6


@pytest.mark.parametrize("kwargs, message", [
    ({"rotation_range": -1}, r"rotation_range must be a number in \[0, 180\)"),
    ({"zoom_range": 1.0}, r"zoom_range must be a number in \[0, 1\)"),
    ({"shift_range": "2"}, "shift_range must be a number"),
])
def test_bad_ranges_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RandomAffine(**kwargs)


def test_bad_images_are_named():
    with pytest.raises(ValueError, match=r"shape \(N, H, W, C\)"):
        affine(np.zeros((28, 28)))
    with pytest.raises(ValueError, match="floating point"):
        affine(np.zeros((1, 28, 28, 1), np.uint8))
    with pytest.raises(ValueError, match="zoom must be positive"):
        affine(np.zeros((1, 4, 4, 1)), zoom=0)
