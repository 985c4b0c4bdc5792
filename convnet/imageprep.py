"""Turn a photo or scan of a handwritten digit into an MNIST-style 28x28 image.

MNIST digits were made from scanned forms in a fixed way (LeCun et al.):
each digit was size-normalised to fit a 20x20 box keeping its aspect ratio
(with anti-aliasing, so edges become grey levels), then placed in a 28x28
frame so that its centre of mass sits at the centre. Ink is bright (1.0) on a
black (0.0) background. A network trained on MNIST expects exactly that, so
:func:`mnist_style` repeats those steps on an arbitrary image, first undoing
what a phone photo or a scan adds:

1. greyscale, scaled to [0, 1];
2. polarity (:func:`ink_polarity`): is the ink darker or lighter than the
   paper? Judged from the pixels that differ most from their surroundings,
   so a photo taken in a dim room (paper below mid-grey) is not inverted;
3. the paper's brightness at every pixel (:func:`estimate_background`): a
   gradient of light or a shadow is followed, not taken for ink; the ink is
   the relative darkening ``(paper - image) / paper`` with the sensor noise
   level subtracted and the result stretched to [0, 1] (:func:`to_ink`);
4. only the digit is kept (:func:`keep_digit`): specks, shadow edges and
   other marks away from the largest stroke are dropped;
5. crop to the bounding box of the pixels brighter than ``threshold``;
6. the pen is brought to MNIST's stroke width (:func:`normalise_stroke`): a
   thin pen line is thickened, a marker thinned;
7. resize (anti-aliased) so the longer side is 20 pixels;
8. paste into a 28x28 frame, shifted so the centre of mass is at the centre.

The choices were made on the development split of
:mod:`experiments.handwriting_sets` and are measured by
``python -m experiments.prep_eval`` (README, "Recognise your own digits").

>>> from convnet.imageprep import mnist_style
>>> x = mnist_style("my_digit.png")          # (28, 28) float32 in [0, 1]
>>> model.predict(x[None, :, :, None])
"""
import math
import os

import numpy as np

__all__ = ["ImagePrepError", "mnist_style", "load_greyscale", "evenly_lit", "ink_polarity", "estimate_background", "to_ink",
           "keep_digit", "ink_bounding_box", "stroke_width", "normalise_stroke", "fit_into_box", "center_by_mass"]

#: Size of the frame and of the box the digit is scaled to fit, as in MNIST.
FRAME = 28
BOX = 20

#: Image files with more pixels than this (width x height as the file's header says, checked
#: before decoding) are refused: decoding costs up to 4 bytes a pixel. Well under Pillow's own
#: limit (179 million), which would let a 100 KB file cost gigabytes. A JPEG above it is still
#: read if its decoder can shrink it below the limit while decoding (``draft``, up to 1/8 a side).
MAX_PIXELS = 40_000_000
#: Larger images are shrunk while loading (JPEG: by the decoder; others: averaging blocks of
#: pixels) to at most this many pixels, which bounds the memory of the steps that follow (about
#: 40 bytes a pixel); a digit ends up 20x20 pixels anyway.
WORKING_PIXELS = 4_000_000


class ImagePrepError(ValueError):
    """The file or array cannot be turned into a digit image (unreadable, not an image, no ink).

    ``reason`` says what is wrong, ``path`` names the file (None for arrays);
    the message is ``"<path>: <reason>"``.
    """

    def __init__(self, reason, path=None):
        self.reason, self.path = reason, None if path is None else os.fspath(path)
        super().__init__(reason if path is None else f"{self.path}: {reason}")


# --------------------------------------------------------------------------- loading
def load_greyscale(image):
    """Read ``image`` (a path, a PIL image or an array) as a float64 greyscale array in [0, 1].

    Arrays may be ``(H, W)`` greyscale or ``(H, W, 3|4)`` colour, integer
    (0..255) or floating point (0..1). Transparent pixels are composited
    onto white, as an image viewer shows them. Files above :data:`MAX_PIXELS`
    are refused before decoding, and images (files or PIL images) above
    :data:`WORKING_PIXELS` are shrunk by an integer factor while loading.
    """
    from PIL import Image

    if isinstance(image, (str, os.PathLike)):
        return _load_file(os.fspath(image))
    if isinstance(image, Image.Image):
        return _pil_to_grey(_upright(_shrink(image), _orientation(image)))
    return _array_to_grey(np.asarray(image))


def _load_file(path):
    """Decode the image file ``path`` within the pixel limits, as greyscale in [0, 1]."""
    import stat
    import warnings

    from PIL import Image, UnidentifiedImageError

    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise ImagePrepError("no such file", path) from None
    except OSError as e:
        raise ImagePrepError(f"cannot read the file ({e.strerror or e})", path) from None
    if stat.S_ISDIR(mode):
        raise ImagePrepError("is a directory, expected an image file (PNG, JPEG, ...)", path)
    if not stat.S_ISREG(mode):
        raise ImagePrepError("is not a regular file (a device or a pipe?), expected an image file", path)
    too_large = (f"more than {MAX_PIXELS:,} pixels (convnet.imageprep.MAX_PIXELS): shrink the image "
                 f"(a digit needs no more than a few hundred pixels a side)")
    try:
        with warnings.catch_warnings():                # the size is checked here, against a lower limit
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:               # reads the header only
                w, h = im.size
                if im.format == "JPEG" and w * h > WORKING_PIXELS:
                    k = math.ceil(math.sqrt(w * h / WORKING_PIXELS))
                    im.draft(im.mode, (max(1, w // k), max(1, h // k)))   # decode at 1/2, 1/4 or 1/8 scale
                if im.size[0] * im.size[1] > MAX_PIXELS:
                    raise ImagePrepError(f"the image is {w} x {h} pixels, {too_large}", path)
                im.load()
                return _pil_to_grey(_upright(_shrink(im), _orientation(im)))
    except ImagePrepError:
        raise
    except Image.DecompressionBombError:
        raise ImagePrepError(f"the image has {too_large}", path) from None
    except UnidentifiedImageError:
        raise ImagePrepError("not an image file that Pillow can read (expected PNG, JPEG, BMP, GIF, TIFF, ...)",
                             path) from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:   # truncated or corrupt image data
        raise ImagePrepError(f"cannot read the image ({e})", path) from None
    except MemoryError:
        raise ImagePrepError("not enough memory to decode the image", path) from None


#: EXIF Orientation -> the transpose that shows the picture upright, as every image viewer does
#: (a phone stores a portrait photo sideways, with 6 or 8)
_ORIENTATION = {2: "FLIP_LEFT_RIGHT", 3: "ROTATE_180", 4: "FLIP_TOP_BOTTOM", 5: "TRANSPOSE", 6: "ROTATE_270",
                7: "TRANSVERSE", 8: "ROTATE_90"}


def _orientation(im):
    """The EXIF Orientation tag of ``im`` (1, upright, when absent or unreadable)."""
    try:
        value = im.getexif().get(0x0112, 1)
    except Exception:                     # a damaged EXIF block: shown as stored, as viewers do
        return 1
    return value if value in _ORIENTATION else 1


def _upright(im, orientation):
    """``im`` turned as its EXIF orientation says (after shrinking: a quarter turn of fewer pixels)."""
    if orientation == 1:
        return im
    from PIL import Image

    return im.transpose(getattr(Image.Transpose, _ORIENTATION[orientation]))


def _shrink(im):
    """``im`` reduced by an integer factor (block averages) to at most :data:`WORKING_PIXELS`."""
    w, h = im.size
    if w * h <= WORKING_PIXELS:
        return im
    if im.mode in ("1", "P", "I;16", "I;16B", "I;16L"):          # modes Image.reduce does not take
        transparent = im.mode == "P" and "transparency" in im.info
        im = im.convert("RGBA" if transparent else "RGB" if im.mode == "P" else "L" if im.mode == "1" else "I")
    return im.reduce(math.ceil(math.sqrt(w * h / WORKING_PIXELS)))


def _pil_to_grey(im):
    from PIL import Image

    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, rgba)
    if im.mode in ("I", "I;16", "F"):       # 16-bit or float greyscale: scale by the real range
        a = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I") and a.max() > 255 else (1.0 if im.mode == "F" else 255.0)
        return np.clip(a / top, 0, 1)
    return np.asarray(im.convert("L"), dtype=np.float64) / 255.0


def _array_to_grey(a):
    if a.ndim == 3 and a.shape[2] in (3, 4):
        a = a.astype(np.float64)
        if np.issubdtype(a.dtype, np.integer) or a.max() > 1:
            a = a / 255.0
        rgb, alpha = a[..., :3], (a[..., 3:4] if a.shape[2] == 4 else 1.0)
        rgb = rgb * alpha + (1 - alpha)                     # composite onto white
        # ITU-R 601 luma, the same weights Pillow's convert("L") uses
        return rgb @ np.array([0.299, 0.587, 0.114])
    if a.ndim != 2:
        raise ImagePrepError(f"expected a 2-D greyscale or (H, W, 3|4) colour image array, got shape {a.shape}")
    if a.size == 0:
        raise ImagePrepError("the image array is empty")
    if a.dtype == bool:
        return a.astype(np.float64)
    if np.issubdtype(a.dtype, np.integer):
        return a.astype(np.float64) / (65535.0 if a.max() > 255 else 255.0)
    a = a.astype(np.float64)
    if not np.all(np.isfinite(a)):
        raise ImagePrepError("the image array contains NaN or infinite values")
    return a / 255.0 if a.max() > 1 else a


# ------------------------------------------------------------------------ the steps
#: MNIST's median stroke width in pixels at the 20-pixel box (2 x area / boundary of the pixels above
#: 0.5, over the first 5000 training digits; 10th-90th percentile 2.2-3.9).
MNIST_STROKE = 2.8

#: Background and polarity are judged on a copy shrunk to about this many pixels on the shorter side.
COARSE = 48


def border_level(grey):
    """Median brightness of the outermost rows and columns: the paper (background) level."""
    border = np.concatenate([grey[0], grey[-1], grey[1:-1, 0], grey[1:-1, -1]])
    return float(np.median(border))


def _resize(a, size, resample="box"):
    """``a`` resized to ``size`` = (width, height) with a Pillow filter, as float64."""
    from PIL import Image

    method = {"box": Image.Resampling.BOX, "bilinear": Image.Resampling.BILINEAR,
              "lanczos": Image.Resampling.LANCZOS}[resample]
    return np.asarray(Image.fromarray(np.asarray(a, np.float32), mode="F").resize(size, method), np.float64)


def _coarse_copy(grey, side=COARSE):
    """``grey`` area-averaged down so its shorter side is about ``side`` pixels (unchanged if smaller)."""
    h, w = grey.shape
    f = max(1.0, min(h, w) / side)
    return _resize(grey, (max(1, round(w / f)), max(1, round(h / f))), "box")


def _window(a, size, reduce):
    """``reduce`` (np.median, np.max, np.min) over the ``size x size`` window around each pixel, edges mirrored."""
    pad = size // 2
    v = np.lib.stride_tricks.sliding_window_view(np.pad(a, pad, mode="reflect"), (size, size))
    return reduce(v, axis=(2, 3))


def _blur(a, sigma):
    """Gaussian blur of a small 2-D array (edges repeated)."""
    r = int(np.ceil(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    p = np.pad(a, r, mode="edge")
    p = np.apply_along_axis(np.convolve, 0, p, k, mode="valid")
    return np.apply_along_axis(np.convolve, 1, p, k, mode="valid")


def ink_polarity(grey):
    """-1 if the ink is darker than the paper, +1 if lighter.

    Each pixel is compared with the median of its neighbourhood (half the
    shorter side wide, where the paper is the majority); of the 1% of pixels
    that differ most, ink outweighs noise and the sign of their summed
    difference is the ink's. Unlike "the border is lighter than mid-grey",
    this holds for grey paper in a dim photo and under a shadow.
    """
    small = _coarse_copy(grey)
    size = max(3, (min(small.shape) // 2) | 1)
    diff = small - _window(small, size, np.median)
    strong = np.abs(diff) >= np.percentile(np.abs(diff), 99)
    return 1 if diff[strong].sum() >= 0 else -1


def estimate_background(grey, sign=-1):
    """The paper's brightness at every pixel of ``grey``, following uneven light and shadows.

    A morphological closing (for dark ink, ``sign=-1``: the maximum over a
    window, then the minimum over it) removes every dark stroke narrower than
    the window, a third of the shorter side, while keeping the steps and
    slopes of the lighting. Computed on a copy shrunk to about
    :data:`COARSE` pixels, smoothed and enlarged back; ``sign=+1`` does the
    same for light ink (an opening).
    """
    h, w = grey.shape
    small = _coarse_copy(grey)
    size = max(3, (min(small.shape) // 3) | 1)
    first, second = (np.max, np.min) if sign < 0 else (np.min, np.max)
    bg = _blur(_window(_window(small, size, first), size, second), max(1.0, size / 4))
    return _resize(bg, (w, h), "bilinear")


def evenly_lit(grey, spread=0.08):
    """True if the border (the paper around the digit) varies by less than ``spread`` of its brightness.

    Judged on the coarse copy (noise averaged out): the 5th to 95th
    percentile of its outermost pixels. A scan or an evenly lit photo passes;
    a gradient of light or a shadow across the page does not.
    """
    small = _coarse_copy(grey)
    border = np.concatenate([small[0], small[-1], small[1:-1, 0], small[1:-1, -1]])
    lo, mid, hi = np.percentile(border, [5, 50, 95])
    return hi - lo < spread * max(mid, 1 - mid)


def to_ink(grey, min_contrast=0.1, noise_floor=3.0):
    """Bright ink on black from ``grey``: polarity, paper removed, noise floor subtracted, stretched to [0, 1].

    On evenly lit paper (:func:`evenly_lit`: scans, small images) the paper
    is one level, the border's median, and the ink is on the side where the
    image reaches farther from it; otherwise the polarity comes from
    :func:`ink_polarity` and the paper from :func:`estimate_background`
    (which needs strokes narrower than a third of the image: a digit that
    fills the page thickly is left to the first case). The ink is the relative
    darkening ``(paper - image) / paper`` (light multiplies the paper's and
    the ink's reflectance alike, so a shadowed stroke counts as much as a lit
    one); light ink is inverted first. ``noise_floor`` times the noise level
    (a robust standard deviation of the residual) is subtracted, so paper
    texture and sensor noise become black as in MNIST. Raises
    :class:`ImagePrepError` if the strongest ink (the 99.5th percentile)
    stands out from the paper by less than ``min_contrast`` beyond that
    floor (a blank page).
    """
    if min(grey.shape) < 3 * BOX or evenly_lit(grey):
        level = border_level(grey)
        lo, hi = np.percentile(grey, [0.5, 99.5])
        if hi - lo <= 0:             # ink on under 0.5% of the page (a dot): the percentiles miss it
            lo, hi = grey.min(), grey.max()
        g = grey if level - lo >= hi - level else 1.0 - grey       # dark ink on light paper from here on
        paper = np.full(g.shape, level if g is grey else 1.0 - level)
    else:
        g = grey if ink_polarity(grey) < 0 else 1.0 - grey
        paper = estimate_background(g)
    rel = (paper - g) / np.maximum(paper, 0.05)
    ink = np.clip(rel, 0, None)
    noise = 1.4826 * np.median(np.abs(rel - np.median(rel)))
    top = max(np.percentile(ink, 99.5), 0.5 * ink.max())      # a few hot pixels do not set the scale
    floor = noise_floor * noise
    if top - floor < min_contrast:
        raise ImagePrepError(f"no ink found: nothing differs from the paper by more than "
                             f"{min_contrast:.0%} of its brightness beyond the noise (blank image?)")
    return np.clip((ink - floor) / (top - floor), 0, 1)


def _label(mask):
    """8-connected components of a small boolean mask: a label > 0 per component (not consecutive), 0 off it."""
    h, w = mask.shape
    none = h * w + 1
    lab = np.where(mask, np.arange(1, h * w + 1).reshape(h, w), none)
    while True:
        p = np.pad(lab, 1, constant_values=none)
        m = lab
        for dy in range(3):
            for dx in range(3):
                m = np.minimum(m, p[dy:dy + h, dx:dx + w])
        m = np.where(mask, m, none)
        flat = np.append(m.ravel(), none)
        m = np.where(mask, flat[m - 1], none)          # jump to the label's own label: fewer rounds
        if np.array_equal(m, lab):
            return np.where(mask, lab, 0)
        lab = m


def keep_digit(ink, threshold=0.25, keep=0.1, coarse=96):
    """``ink`` with specks, shadow edges and other marks away from the digit set to 0.

    The pixels above ``threshold`` are grouped into connected pieces (on a
    grid of at most ``coarse`` cells a side, so a gap of a cell or less
    joins); the piece with the most ink is the digit's, and another piece is
    kept if it holds at least ``keep`` times that ink and its centre lies
    within the main piece's box widened by half its size on each side (the
    detached bar of a 5 or a 7). Kept pieces keep their faint edges.
    """
    h, w = ink.shape
    b = max(1, int(np.ceil(max(h, w) / coarse)))
    H, W = -(-h // b) * b, -(-w // b) * b
    padded = np.zeros((H, W))
    padded[:h, :w] = ink
    cells = padded.reshape(H // b, b, W // b, b)
    lab = _label((cells > threshold).any(axis=(1, 3)))
    ids, inv = np.unique(lab, return_inverse=True)
    mass = np.bincount(inv.ravel(), weights=cells.sum(axis=(1, 3)).ravel())
    mass[ids == 0] = 0
    if mass.max() <= 0:
        return ink
    rows, cols = np.nonzero(lab == ids[np.argmax(mass)])
    mh, mw = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
    top, bottom, left, right = rows.min() - mh / 2, rows.max() + mh / 2, cols.min() - mw / 2, cols.max() + mw / 2
    kept = np.zeros(lab.shape, bool)
    for i, m in zip(ids, mass):
        if i and m >= keep * mass.max():
            r, c = np.nonzero(lab == i)
            if top <= r.mean() <= bottom and left <= c.mean() <= right:
                kept |= lab == i
    grown = _window(kept.astype(np.float64), 3, np.max) > 0          # one cell of margin
    full = np.repeat(np.repeat(grown, b, axis=0), b, axis=1)[:h, :w]
    return np.where(full, ink, 0.0)


def ink_bounding_box(ink, threshold=0.2):
    """``(top, bottom, left, right)`` (bottom/right exclusive) of the pixels with ``ink > threshold``."""
    rows = np.flatnonzero((ink > threshold).any(axis=1))
    cols = np.flatnonzero((ink > threshold).any(axis=0))
    if rows.size == 0:
        raise ImagePrepError(f"no ink found above the threshold {threshold}")
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def stroke_width(ink, threshold=0.5):
    """Mean stroke width in pixels: 2 x area / boundary length of the pixels above ``threshold``."""
    m = ink > threshold
    p = np.pad(m, 1)
    inner = m & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return 2 * m.sum() / max(1, (m & ~inner).sum())


def _disk(a, r, reduce):
    """Grey-level dilation (np.max) or erosion (np.min) of ``a`` by a disk of radius ``r`` pixels."""
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    v = np.lib.stride_tricks.sliding_window_view(np.pad(a, r), (2 * r + 1, 2 * r + 1))
    return reduce(v[..., yy ** 2 + xx ** 2 <= r * r + r], axis=-1)


def normalise_stroke(ink, box=BOX, work=4, tolerance=1.4):
    """The cropped digit ``ink`` with its pen brought to MNIST's stroke width when far from it.

    Works at ``work`` times the box size (the digit is area-averaged down to
    that first). If the stroke is more than ``tolerance`` times wider than
    :data:`MNIST_STROKE` (scaled to this size), it is eroded by a disk; if
    that much thinner, dilated; otherwise left as it is. Returns the new,
    possibly larger, image (a dilated digit grows by the disk's radius).
    """
    h, w = ink.shape
    scale = work * box / max(h, w)
    if scale < 1:
        ink = np.clip(_resize(ink, (max(1, round(w * scale)), max(1, round(h * scale))), "box"), 0, 1)
    width = stroke_width(ink)
    want = MNIST_STROKE * max(ink.shape) / box
    if width > want * tolerance:
        r = int(round((width - want) / 2))
        return _disk(ink, r, np.min) if r > 0 else ink
    if width < want / tolerance:
        r = int(round((want - width) / 2))
        return _disk(np.pad(ink, r), r, np.max) if r > 0 else ink
    return ink


def fit_into_box(ink, box=BOX):
    """Resize (anti-aliased) so the longer side is ``box`` pixels, keeping the aspect ratio.

    Pillow's resampling filters widen with the scale factor when shrinking,
    so every source pixel contributes (an area-weighted average, not a
    subsample): a thin pen line in a big photo becomes a faint grey stroke
    rather than disappearing.
    """
    h, w = ink.shape
    scale = box / max(h, w)
    out = _resize(ink, (max(1, round(w * scale)), max(1, round(h * scale))), "lanczos")
    return np.clip(out, 0, 1)      # Lanczos overshoots slightly at edges


def center_by_mass(digit, frame=FRAME):
    """Paste ``digit`` into a ``frame x frame`` black image so its centre of mass is at the centre.

    The shift is rounded to whole pixels and limited so the digit stays
    entirely inside the frame.
    """
    h, w = digit.shape
    if h > frame or w > frame:
        raise ImagePrepError(f"digit of shape {digit.shape} does not fit a {frame}x{frame} frame")
    mass = digit.sum()
    rows, cols = np.arange(h), np.arange(w)
    cy = (digit.sum(axis=1) @ rows) / mass if mass > 0 else (h - 1) / 2
    cx = (digit.sum(axis=0) @ cols) / mass if mass > 0 else (w - 1) / 2
    # MNIST's centres of mass sit at pixel (14, 14) (mean 13.99, 14.00 over
    # the training set, 0-based), i.e. at frame / 2, not (frame - 1) / 2
    centre = frame / 2
    top = int(np.clip(round(centre - cy), 0, frame - h))
    left = int(np.clip(round(centre - cx), 0, frame - w))
    out = np.zeros((frame, frame), dtype=np.float64)
    out[top:top + h, left:left + w] = digit
    return out


def mnist_style(image, threshold=0.2, min_contrast=0.1):
    """A handwritten digit (path, PIL image or array) as an MNIST-like ``(28, 28)`` float32 image in [0, 1].

    ``threshold`` (fraction of the ink's brightness range) decides which
    pixels count as ink for the bounding box; fainter pixels inside the box
    are kept as grey levels. Raises :class:`ImagePrepError` for unreadable
    files, non-images and images without ink.
    """
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    grey = load_greyscale(image)
    try:
        ink = keep_digit(to_ink(grey, min_contrast=min_contrast))
        top, bottom, left, right = ink_bounding_box(ink, threshold)
        ink = normalise_stroke(ink[top:bottom, left:right])
        top, bottom, left, right = ink_bounding_box(ink, threshold)
        framed = center_by_mass(fit_into_box(ink[top:bottom, left:right]))
        peak = framed.max()
        if peak <= 0:
            raise ImagePrepError("no ink left after resizing to 20x20")
    except ImagePrepError as e:
        if isinstance(image, (str, os.PathLike)) and e.path is None:
            raise ImagePrepError(e.reason, image) from None
        raise
    return (framed / peak).astype(np.float32)
