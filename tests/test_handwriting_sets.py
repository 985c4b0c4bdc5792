"""The user-like image sets: deterministic from a seed, labelled, and looking like photos of ink on paper."""
import numpy as np
import pytest

from experiments import handwriting_sets as hs


@pytest.fixture(scope="module")
def digits():
    """Synthetic stand-ins for MNIST digits: a bright vertical bar (a "1") and a ring (a "0")."""
    yy, xx = np.mgrid[0:28, 0:28]
    one = np.zeros((28, 28), np.uint8)
    one[4:24, 12:16] = 255
    ring = (np.abs(np.hypot(yy - 14, (xx - 14) * 1.4) - 8) < 2) * np.uint8(255)
    return np.stack([one, ring]), np.array([1, 0])


def needs_digits(name):
    return name in ("photo", "restroke", "scan")


def make(name, seed, n, digits):
    if name == "fonts" and not hs.available_fonts():
        pytest.skip("no handwriting font installed")
    return hs.make_set(name, seed, n, *digits) if needs_digits(name) else hs.make_set(name, seed, n)


@pytest.mark.parametrize("name", hs.SETS)
def test_same_seed_same_images_other_seed_other_images(name, digits):
    a, la = make(name, 3, 4, digits)
    b, lb = make(name, 3, 4, digits)
    c, _ = make(name, 4, 4, digits)
    assert len(a) == 4 and la.shape == (4,) and la.dtype == np.int64
    np.testing.assert_array_equal(la, lb)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert any(x.shape != y.shape or not np.array_equal(x, y) for x, y in zip(a, c))


@pytest.mark.parametrize("name", hs.SETS)
def test_images_are_greyscale_uint8_with_ink_and_paper(name, digits):
    images, labels = make(name, 0, 6, digits)
    assert set(labels) <= set(range(10))
    for img in images:
        assert img.dtype == np.uint8 and img.ndim == 2 and min(img.shape) >= 20
        assert np.ptp(img.astype(int)) > 60                      # visible ink against the paper


def test_mnist_based_sets_keep_the_digits_labels(digits):
    for name in ("photo", "restroke", "scan"):
        _, labels = hs.make_set(name, 0, 20, *digits)
        assert set(labels) <= {0, 1} and len(set(labels)) == 2


def test_drawn_digits_cover_every_class_and_vary_the_pen():
    labels = hs.make_set("drawn", 0, 60)[1]
    assert set(labels) == set(range(10))
    rng = np.random.default_rng(0)
    ink = [hs.draw_digit(8, rng, height=200).mean() for _ in range(30)]
    assert max(ink) > 2.5 * min(ink)            # thin pens and markers


def test_restroke_changes_the_stroke_width(digits):
    widths = [hs.restroke(digits[0][0], np.random.default_rng(s), height=200).sum(axis=1)[100]
              for s in range(20)]                # ink across the middle row of the bar
    assert max(widths) > 1.5 * min(widths)


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown set"):
        hs.make_set("nope", 0, 1)
    with pytest.raises(ValueError, match="MNIST digits"):
        hs.make_set("photo", 0, 1)
    with pytest.raises(ValueError, match="no handwriting font"):
        hs.make_set("fonts", 0, 1, fonts=[])


def test_splits_do_not_share_mnist_digits():
    (_, dev), (_, held) = hs.SPLITS["dev"], hs.SPLITS["heldout"]
    assert dev.stop <= held.start
    assert hs.SPLITS["dev"][0] != hs.SPLITS["heldout"][0]
