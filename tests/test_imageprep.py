"""convnet.imageprep: loading users' image files (bounded memory, one clear error per bad file), then each
preparation step on images whose right answer is known by construction."""
import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageDraw

from convnet import imageprep
from convnet.imageprep import (ImagePrepError, center_by_mass, estimate_background, evenly_lit, fit_into_box,
                               ink_bounding_box, ink_polarity, keep_digit, load_greyscale, mnist_style, normalise_stroke,
                               stroke_width, to_ink)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def png_claiming(path, width, height):
    """A valid-looking PNG whose header declares ``width x height`` greyscale pixels (the data is not there)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def digit_image(width, height, mode="L"):
    """Dark digit-like strokes on white paper, ``width x height``."""
    im = Image.new(mode, (width, height), "white")
    draw = ImageDraw.Draw(im)
    s = min(width, height)
    draw.line([(width // 2, height // 2 - s // 3), (width // 2, height // 2 + s // 3)], fill="black",
              width=max(1, s // 20))
    return im


@pytest.mark.parametrize("width, height", [(15000, 15000), (20000, 20000), (7000, 6000)])
def test_images_above_the_pixel_limit_are_refused_before_decoding(tmp_path, width, height):
    path = png_claiming(tmp_path / "bomb.png", width, height)
    assert os.path.getsize(path) < 200
    with pytest.raises(ImagePrepError, match=r"bomb\.png: .*more than 40,000,000 pixels"):
        load_greyscale(path)


def test_image_at_the_limit_is_read_and_shrunk(tmp_path):
    path = tmp_path / "big.png"
    digit_image(3000, 2000).save(path)           # 6 MP: shrunk by 2 to 1500 x 1000 while loading
    grey = load_greyscale(path)
    assert grey.shape == (1000, 1500)
    assert grey.min() == 0 and grey.max() == 1
    small = tmp_path / "small.png"
    digit_image(300, 200).save(small)
    assert load_greyscale(small).shape == (200, 300)                # small images are left as they are


def test_big_jpeg_is_shrunk_while_decoding(tmp_path, monkeypatch):
    path = tmp_path / "photo.jpg"
    digit_image(4000, 3000, "RGB").save(path, quality=90)            # 12 MP: decoded at half scale
    decoded = []
    original = Image.Image.load
    monkeypatch.setattr(Image.Image, "load", lambda self: decoded.append(self.size) or original(self))
    grey = load_greyscale(path)
    assert decoded[0] == (2000, 1500)
    assert grey.shape == (1500, 2000)
    monkeypatch.setattr(imageprep, "MAX_PIXELS", 5_000_000)          # a JPEG above the limit, read at 1/2
    assert load_greyscale(path).shape == (1500, 2000)


@pytest.mark.parametrize("mode", ["1", "P", "I;16", "RGBA", "LA"])
def test_every_mode_can_be_shrunk(mode):
    im = digit_image(2100, 2000)
    if mode == "I;16":                                       # 16-bit greyscale, as in a 16-bit PNG
        im = Image.fromarray(np.asarray(im).astype(np.uint16) * 257)
        assert im.mode == "I;16"
    else:
        im = im.convert(mode)
    grey = load_greyscale(im)
    assert grey.shape == (1000, 1050)
    assert 0 <= grey.min() < 0.5 < grey.max() <= 1


def test_special_files_are_refused(tmp_path):
    with pytest.raises(ImagePrepError, match="is a directory"):
        load_greyscale(tmp_path)
    with pytest.raises(ImagePrepError, match="no such file"):
        load_greyscale(tmp_path / "nothing.png")
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "pipe.png")
        with pytest.raises(ImagePrepError, match="not a regular file"):
            load_greyscale(tmp_path / "pipe.png")


@pytest.mark.parametrize("data", [b"", b"\x89PNG\r\n\x1a\n", b"GIF89a" + b"\xff" * 20, b"\xff\xd8\xff" + b"\0" * 50])
def test_damaged_files_give_one_error(tmp_path, data):
    path = tmp_path / "damaged.png"
    path.write_bytes(data)
    with pytest.raises(ImagePrepError, match=r"damaged\.png: "):
        mnist_style(path)


def test_truncated_png_gives_one_error(tmp_path):
    path = tmp_path / "cut.png"
    digit_image(400, 300).save(path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(ImagePrepError, match=r"cut\.png: cannot read the image"):
        mnist_style(path)


# ================================================================= the preparation steps
def seven(width=12, size=(200, 160), slant=0):
    """A 7 drawn with a round pen of ``width`` pixels: bright ink (1) on black (0), float64."""
    img = Image.new("L", size[::-1], 0)
    d = ImageDraw.Draw(img)
    h, w = size
    pts = [(0.25 * w + slant, 0.2 * h), (0.75 * w + slant, 0.2 * h), (0.45 * w, 0.8 * h)]
    d.line(pts, fill=255, width=width, joint="curve")
    for x, y in pts:
        d.ellipse([x - width / 2, y - width / 2, x + width / 2, y + width / 2], fill=255)
    return np.asarray(img, np.float64) / 255


def on_paper(ink, paper=0.9, ink_level=0.1):
    return paper * (1 - ink) + ink_level * ink


def centre_of_mass(x):
    rows, cols = np.indices(x.shape)
    return (rows * x).sum() / x.sum(), (cols * x).sum() / x.sum()


def correlation(a, b):
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


# ---------------------------------------------------------------------- polarity
@pytest.mark.parametrize("paper, ink_level", [(0.9, 0.1), (0.45, 0.05), (0.3, 0.0)])
def test_dark_ink_is_found_even_on_paper_darker_than_mid_grey(paper, ink_level):
    """A photo in a dim room: the paper is below 0.5 but the ink is still the darker part."""
    grey = on_paper(seven(), paper, ink_level)
    assert ink_polarity(grey) == -1
    assert ink_polarity(1 - grey) == +1
    np.testing.assert_allclose(mnist_style(grey), mnist_style(on_paper(seven())), atol=0.05)


def test_inverted_images_give_the_same_digit():
    grey = on_paper(seven())
    np.testing.assert_allclose(mnist_style(grey), mnist_style(1 - grey), atol=1e-6)


# ---------------------------------------------------------------- uneven light
def test_a_light_gradient_and_a_shadow_are_removed():
    ink = seven()
    h, w = ink.shape
    yy, xx = np.mgrid[0:h, 0:w]
    shadow = 1 - 0.45 / (1 + np.exp(-(yy - 0.6 * h) / 4))                # a soft-edged shadow below
    light = (1 - 0.5 * xx / w) * shadow                                  # and darker to the right
    grey = on_paper(ink) * light
    bg = estimate_background(grey, sign=-1)
    paper = ~(ink > 0.01)
    assert np.median(np.abs(bg - grey)[paper]) < 0.02                      # the paper is followed
    clean = to_ink(grey)
    assert clean[paper].max() < 0.5 and np.mean(clean[paper] > 0.2) < 0.01  # no paper left as ink
    np.testing.assert_allclose(mnist_style(grey), mnist_style(on_paper(ink)), atol=0.15)


def test_a_thick_digit_filling_a_low_resolution_scan_is_not_hollowed():
    """A 16x16 black-and-white scan of a fat 0 (strokes 4 of 16 pixels), enlarged 12 times, no margin.

    The paper is taken as one level here: a closing a third of the image wide
    (for uneven light) would fill these strokes in, and find no ink at all.
    """
    yy, xx = np.mgrid[0:16, 0:16]
    ring = (np.abs(np.hypot(yy - 7.5, (xx - 7.5) * 1.1) - 5) < 2).astype(np.float64)
    scan = on_paper(np.kron(ring, np.ones((12, 12))), paper=0.95, ink_level=0.05)
    assert evenly_lit(scan) and not evenly_lit(scan * np.linspace(1, 0.6, scan.shape[1]))
    x = mnist_style(scan)
    framed = mnist_style(on_paper(np.pad(np.kron(ring, np.ones((12, 12))), 150)))    # the same 0 with a wide margin
    assert correlation(x, framed) > 0.95
    assert x[12:16, 12:16].max() < 0.2                  # the hole in the middle stays empty


def test_specks_and_marks_far_from_the_digit_are_dropped():
    ink = np.pad(seven(), 60)
    clean = mnist_style(on_paper(ink))
    ink[5:9, 5:9] = 1                                  # a speck in the corner
    ink[-12:-4, 100:260] = 1                           # a line at the bottom edge: the end of a form field
    kept = keep_digit(ink)
    assert kept[5:9, 5:9].max() == 0 and kept[-12:-4, 100:260].max() == 0
    np.testing.assert_allclose(mnist_style(on_paper(ink)), clean, atol=1e-6)


def test_a_digit_in_two_strokes_keeps_both():
    ink = seven()
    ink[25:55, 95:105] = 0                              # the top bar written apart from the stem
    assert ink[40, 50:90].min() == 1 and ink[40, 95:105].max() == 0
    np.testing.assert_array_equal(keep_digit(ink), ink)


# ------------------------------------------------------------------ stroke width
def test_stroke_width_is_measured_in_pixels():
    for width in (4, 10, 24):
        bar = np.zeros((300, 100))
        bar[20:280, 50 - width // 2:50 - width // 2 + width] = 1
        assert stroke_width(bar) == pytest.approx(width, rel=0.1)


def test_thick_and_thin_pens_prepare_to_similar_images():
    thin, thick = mnist_style(on_paper(seven(width=3))), mnist_style(on_paper(seven(width=30)))
    mid = mnist_style(on_paper(seven(width=11)))
    # (without normalise_stroke: 0.55, 0.83, 0.72)
    assert correlation(thin, thick) > 0.85 and correlation(thin, mid) > 0.95 and correlation(thick, mid) > 0.85
    for x in (thin, mid, thick):                          # the stroke ends up near MNIST's width
        assert 2.0 <= stroke_width(x) <= 4.5


def test_normalise_stroke_moves_the_width_towards_mnist():
    for pen in (3, 50):
        before = fit_into_box(seven(width=pen), box=80)       # normalise_stroke works at 4 x 20 pixels
        after = normalise_stroke(seven(width=pen))
        target = imageprep.MNIST_STROKE * 4
        assert abs(stroke_width(after) - target) < 0.5 * abs(stroke_width(before) - target)
        assert target / 1.5 < stroke_width(after) < target * 1.5
    medium = seven(width=18)
    top, bottom, left, right = ink_bounding_box(medium)
    medium = medium[top:bottom, left:right]               # already MNIST-like: only scaled to 80 pixels
    same = normalise_stroke(medium)
    assert max(same.shape) == 80
    assert stroke_width(same) == pytest.approx(stroke_width(fit_into_box(medium, box=80)), rel=0.1)


# ------------------------------------------------------------ size and centring
def test_aspect_is_kept_and_the_long_side_fills_the_box():
    ink = np.zeros((300, 300))
    ink[20:280, 130:170] = 1                              # a tall 6.5:1 bar
    x = mnist_style(on_paper(ink))
    rows, cols = np.flatnonzero(x.max(axis=1) > 0.5), np.flatnonzero(x.max(axis=0) > 0.5)
    assert rows[-1] - rows[0] + 1 in (19, 20, 21)
    assert 2 <= cols[-1] - cols[0] + 1 <= 5
    assert fit_into_box(np.ones((200, 50))).shape == (20, 5)


def test_centre_of_mass_lands_at_the_centre():
    for ink in (seven(), np.pad(seven(), ((10, 150), (200, 0)))):
        x = mnist_style(on_paper(ink))
        cy, cx = centre_of_mass(x)
        assert abs(cy - 14) <= 0.5 and abs(cx - 14) <= 0.5
        assert x.shape == (28, 28) and x.dtype == np.float32 and x.max() == 1 and x[0].max() == 0
    assert centre_of_mass(center_by_mass(np.ones((5, 5)))) == (14.0, 14.0)


def test_a_one_pixel_pen_on_a_big_page_comes_out_at_full_brightness():
    # shrunk to 20x20 the pen's line is faint (its brightest pixel near 0.6); MNIST digits peak at 1
    page = np.ones((300, 300))
    page[50:250, 150] = 0
    page[50, 100:200] = 0
    x = mnist_style(page)
    assert x.max() == 1 and (x > 0.5).sum() >= 20


def test_blank_and_nearly_blank_pages_are_rejected():
    rng = np.random.default_rng(0)
    for page in (np.full((80, 80), 0.9), np.clip(0.8 + rng.normal(0, 0.02, (120, 90)), 0, 1)):
        with pytest.raises(ImagePrepError, match="no ink"):
            mnist_style(page)



@pytest.mark.parametrize("ink, paper", [(1.0, 0.0), (0.0, 1.0)])
def test_a_single_dot_is_a_digit_not_a_blank_page(ink, paper):
    # a dot covers under 0.5% of the page, so the 0.5/99.5 percentiles both see paper only
    yy, xx = np.mgrid[:280, :280]
    page = np.where((yy - 140) ** 2 + (xx - 140) ** 2 <= 10 ** 2, ink, paper)
    out = mnist_style(page)
    assert out.max() == pytest.approx(1.0) and 100 < (out > 0.5).sum() < 500
    rows, cols = np.nonzero(out > 0.5)
    assert abs(rows.mean() - 13.5) < 1.5 and abs(cols.mean() - 13.5) < 1.5

# --------------------------------------------------- degraded MNIST, a real model
@pytest.fixture(scope="module")
def small_model():
    """A small conv net trained for 2 epochs on 5000 MNIST digits (about 90% test accuracy)."""
    from convnet import Sequential, layers, optimizers
    from convnet.datasets import load_mnist, preprocess

    (x_train, y_train), (x_test, y_test) = load_mnist()
    model = Sequential([layers.Conv2D(16, 5, strides=2, activation="relu"), layers.MaxPool2D(2),
                        layers.Flatten(), layers.Dense(10, activation="softmax")], input_shape=(28, 28, 1), seed=0)
    model.compile(optimizers.Adam(3e-3))
    model.fit(preprocess(x_train[:5000]), y_train[:5000], epochs=2, batch_size=128, seed=0, verbose=0)
    return model, x_test[:150], y_test[:150]


def test_photographed_mnist_digits_are_recognised_like_the_clean_ones(small_model):
    """MNIST digits enlarged onto paper with uneven light, shadows, blur, noise and JPEG (one seed, 150 digits)."""
    from convnet.datasets import preprocess
    from experiments.handwriting_sets import _crop, _enlarge, photograph

    model, digits, labels = small_model
    rng = np.random.default_rng(0)
    photos = [photograph(_enlarge(_crop(d.astype(np.float64)), int(rng.integers(56, 200))), rng) for d in digits]
    clean = model.predict(preprocess(digits)).argmax(axis=1)
    prepared = model.predict(np.stack([mnist_style(p) for p in photos])[..., None]).argmax(axis=1)
    assert np.mean(clean == labels) > 0.85
    # measured: 93% agree; the preparation before issue 14: 29%, the textbook one of prep_eval: 49%
    assert np.mean(prepared == clean) >= 0.9, np.mean(prepared == clean)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
@pytest.mark.parametrize("orientation, stored_as", [(6, Image.Transpose.ROTATE_90), (8, Image.Transpose.ROTATE_270),
                                                    (3, Image.Transpose.ROTATE_180),
                                                    (2, Image.Transpose.FLIP_LEFT_RIGHT)])
def test_exif_orientation_is_applied_as_viewers_do(tmp_path, fmt, orientation, stored_as):
    """A phone stores a portrait photo sideways with EXIF Orientation 6 (or 8): it is read upright."""
    upright = Image.new("L", (300, 400), 255)
    ImageDraw.Draw(upright).line([(80, 80), (220, 80), (120, 330)], fill=0, width=28)     # a 7
    upright.save(tmp_path / f"upright.{fmt}", format=fmt)
    exif = Image.Exif()
    exif[0x0112] = orientation
    upright.transpose(stored_as).save(tmp_path / f"stored.{fmt}", format=fmt, exif=exif)
    expected = mnist_style(tmp_path / f"upright.{fmt}")
    read = mnist_style(tmp_path / f"stored.{fmt}")
    assert np.abs(read - expected).max() < 0.1
    with Image.open(tmp_path / f"stored.{fmt}") as im:              # as a PIL image too
        assert np.abs(mnist_style(im) - expected).max() < 0.1
    upright.transpose(stored_as).save(tmp_path / f"plain.{fmt}", format=fmt)    # the same pixels, no EXIF
    assert np.abs(mnist_style(tmp_path / f"plain.{fmt}") - expected).max() > 0.5
