"""Turn a photo or scan of a handwritten digit into an MNIST-style 28x28 image.

MNIST digits were made from scanned forms in a fixed way (LeCun et al.):
each digit was size-normalised to fit a 20x20 box keeping its aspect ratio
(with anti-aliasing, so edges become grey levels), then placed in a 28x28
frame so that its centre of mass sits at the centre. Ink is bright (1.0) on a
black (0.0) background. A network trained on MNIST expects exactly that, so
:func:`mnist_style` repeats those steps on an arbitrary image:

1. greyscale, scaled to [0, 1];
2. invert if the background is light (judged by the median of the border
   pixels), so ink becomes bright; big images then get a 3x3 median filter
   against noise;
3. subtract the background level and stretch the ink to [0, 1];
4. crop to the bounding box of the pixels brighter than ``threshold``;
5. resize (anti-aliased) so the longer side is 20 pixels;
6. paste into a 28x28 frame, shifted so the centre of mass is at the centre.

>>> from convnet.imageprep import mnist_style
>>> x = mnist_style("my_digit.png")          # (28, 28) float32 in [0, 1]
>>> model.predict(x[None, :, :, None])
"""
import math
import os

import numpy as np

__all__ = ["ImagePrepError", "mnist_style", "load_greyscale", "bright_ink", "denoise", "to_ink", "ink_bounding_box",
           "fit_into_box", "center_by_mass"]

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
        return _pil_to_grey(_shrink(image))
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
                return _pil_to_grey(_shrink(im))
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
def border_level(grey):
    """Median brightness of the outermost rows and columns: the paper (background) level."""
    border = np.concatenate([grey[0], grey[-1], grey[1:-1, 0], grey[1:-1, -1]])
    return float(np.median(border))


def bright_ink(grey):
    """``grey`` with ink brighter than the paper: inverted if the border (the paper) is lighter than mid-grey."""
    return 1.0 - grey if border_level(grey) > 0.5 else grey


def to_ink(grey, min_contrast=0.1):
    """Bright-ink-on-black version of ``grey``: invert if needed, remove the background, stretch to [0, 1].

    The background is light if the border is brighter than mid-grey; then the
    image is inverted. ``ink = clip(img - background, 0) / (max - background)``.
    Raises :class:`ImagePrepError` if nothing is at least ``min_contrast``
    brighter than the background (a blank page).
    """
    grey = bright_ink(grey)
    bg = border_level(grey)
    ink = np.clip(grey - bg, 0, None)
    top = ink.max()
    if top < min_contrast:
        raise ImagePrepError(f"no ink found: nothing differs from the background by more than "
                             f"{min_contrast:.0%} of the brightness range (blank image?)")
    return ink / top


def denoise(grey, size=3):
    """3x3 median filter: removes isolated noisy pixels (sensor noise, JPEG speckle), keeps stroke edges.

    Only worth it for images much larger than the 20x20 target, where a
    stroke is many pixels wide; :func:`mnist_style` skips it for small ones.
    """
    from PIL import Image, ImageFilter

    img = Image.fromarray(grey.astype(np.float32), mode="F")
    return np.asarray(img.filter(ImageFilter.MedianFilter(size)), dtype=np.float64)


def ink_bounding_box(ink, threshold=0.2):
    """``(top, bottom, left, right)`` (bottom/right exclusive) of the pixels with ``ink > threshold``."""
    rows = np.flatnonzero((ink > threshold).any(axis=1))
    cols = np.flatnonzero((ink > threshold).any(axis=0))
    if rows.size == 0:
        raise ImagePrepError(f"no ink found above the threshold {threshold}")
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def fit_into_box(ink, box=BOX):
    """Resize (anti-aliased) so the longer side is ``box`` pixels, keeping the aspect ratio.

    Pillow's resampling filters widen with the scale factor when shrinking,
    so every source pixel contributes (an area-weighted average, not a
    subsample): a thin pen line in a big photo becomes a faint grey stroke
    rather than disappearing.
    """
    from PIL import Image

    h, w = ink.shape
    scale = box / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    img = Image.fromarray(ink.astype(np.float32), mode="F")
    out = np.asarray(img.resize((nw, nh), resample=Image.Resampling.LANCZOS), dtype=np.float64)
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
    grey = bright_ink(load_greyscale(image))      # invert first, so both polarities give the same result
    if min(grey.shape) >= 3 * BOX:
        grey = denoise(grey)
    try:
        ink = to_ink(grey, min_contrast=min_contrast)
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
