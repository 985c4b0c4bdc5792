"""Image sets that look like what users bring to ``experiments.predict``, made deterministically from a seed.

The preparation of a user's image (:func:`convnet.imageprep.mnist_style`)
cannot be judged on MNIST itself: MNIST digits are already prepared. These
sets imitate the images people actually photograph, scan or draw, each with
its true label, so that a preparation can be compared on them:

``photo``
    MNIST test digits degraded into phone photos: enlarged onto a paper
    canvas with a margin, ink and paper of varying darkness (down to a dim
    room), a brightness gradient and sometimes a shadow, blur, low
    resolution, sensor noise and JPEG artefacts; one in ten is light ink on
    a dark board.
``restroke``
    MNIST test digits enlarged, binarised and re-stroked thinner or thicker
    (erosion or dilation), as drawn with a thin pen or a marker in a paint
    program: clean dark ink on white.
``drawn``
    Digits drawn from stroke templates (several shapes per digit, e.g. 1
    with and without a flag, 4 open and closed, 7 with and without a bar)
    with random jitter, slant, aspect and pen width (2-20% of the height),
    half clean, half photographed like ``photo``.
``fonts``
    Digits in handwriting-like fonts (those of :data:`FONT_FILES` that are
    installed), slanted and rotated, photographed like ``photo``.
``scan``
    Low-resolution scans enlarged onto paper: an MNIST test digit reduced to
    a 12-32 pixel cell (sometimes widened to fill it), often binarised,
    enlarged 2-40 times to 64-480 pixels (nearest-neighbour blocks or smooth
    interpolation) and pasted on a paper page with a margin, paper texture,
    light noise and sometimes JPEG.

Every image is a ``uint8`` greyscale array; the generator is pure NumPy and
Pillow and depends only on ``seed`` (and on which fonts are installed, for
``fonts``). MNIST test digits are drawn from one half of the test set per
split (:data:`SPLITS`), so a development split and a held-out split never
share a digit.

>>> from experiments.handwriting_sets import make_set
>>> images, labels = make_set("photo", seed=1, n=100, digits=x_test[:5000], digit_labels=y_test[:5000])
"""
import io
import os

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

__all__ = ["SETS", "SPLITS", "FONT_FILES", "available_fonts", "make_set", "iter_set", "photograph",
           "draw_digit", "render_font_digit", "restroke", "low_res_scan"]

SETS = ("photo", "restroke", "drawn", "fonts", "scan")

#: split name -> (default seed, slice of the MNIST test set its digits come from)
SPLITS = {"dev": (1, slice(0, 5000)), "heldout": (2, slice(5000, 10000))}

#: Handwriting-like fonts from Debian's fonts-* packages (fonts-comic-neue, fonts-dkg-handwriting,
#: fonts-breip, fonts-bwht, fonts-humor-sans, fonts-kristi, fonts-dancingscript,
#: fonts-rufscript, fonts-kaushanscript, fonts-klee); the ``fonts`` set uses those installed.
#: (fonts-femkeklaver is left out: its digits are outlines, not strokes.)
FONT_FILES = (
    "/usr/share/fonts/opentype/comic-neue/ComicNeue-Regular.otf",
    "/usr/share/fonts/opentype/comic-neue/ComicNeue-Bold.otf",
    "/usr/share/fonts/opentype/comic-neue/ComicNeue-LightItalic.otf",
    "/usr/share/fonts/truetype/fifthhorseman/dkg.ttf",
    "/usr/share/fonts/truetype/fifthhorseman/dkgBd.ttf",
    "/usr/share/fonts/truetype/breip/Breip.ttf",
    "/usr/share/fonts/opentype/bwht/BecauseWeBuild-Regular.otf",
    "/usr/share/fonts/opentype/bwht/BecauseWeConnect-Regular.otf",
    "/usr/share/fonts/opentype/bwht/BecauseWeCreate-Regular.otf",
    "/usr/share/fonts/opentype/bwht/BecauseWeLearn-Regular.otf",
    "/usr/share/fonts/opentype/bwht/BecauseWeMentor-Regular.otf",
    "/usr/share/fonts/opentype/bwht/BecauseWeOrganize-Regular.otf",
    "/usr/share/fonts/truetype/humor-sans/Humor-Sans.ttf",
    "/usr/share/fonts/truetype/kristi/Kristi.ttf",
    "/usr/share/fonts/opentype/dancingscript/DancingScript-Regular.otf",
    "/usr/share/fonts/truetype/rufscript/Rufscript010.ttf",
    "/usr/share/fonts/opentype/kaushanscript/KaushanScript-Regular.otf",
    "/usr/share/fonts/truetype/klee/KleeOne-Regular.ttf",
)

# Stroke templates in a unit box (x right, y down; the digit spans y 0.05-0.95). A digit is a list of
# strokes, a stroke a list of control points joined by a Catmull-Rom curve; a sharp corner is where two
# strokes meet. Several shapes per digit, as people write them.
TEMPLATES = {
    0: [[[(0.5, 0.05), (0.25, 0.2), (0.2, 0.5), (0.28, 0.85), (0.5, 0.95), (0.72, 0.85), (0.8, 0.5),
          (0.73, 0.18), (0.5, 0.05), (0.42, 0.1)]]],
    1: [[[(0.5, 0.05), (0.5, 0.95)]],
        [[(0.3, 0.25), (0.52, 0.05)], [(0.52, 0.05), (0.5, 0.95)]],
        [[(0.58, 0.05), (0.42, 0.95)]]],
    2: [[[(0.22, 0.28), (0.35, 0.1), (0.55, 0.06), (0.75, 0.18), (0.74, 0.38), (0.5, 0.65), (0.2, 0.93)],
         [(0.2, 0.93), (0.82, 0.92)]],
        [[(0.22, 0.25), (0.45, 0.06), (0.72, 0.15), (0.7, 0.42), (0.35, 0.8), (0.2, 0.93), (0.4, 0.85),
          (0.6, 0.9), (0.82, 0.92)]]],
    3: [[[(0.22, 0.15), (0.45, 0.05), (0.7, 0.12), (0.72, 0.3), (0.45, 0.47)],
         [(0.45, 0.47), (0.72, 0.58), (0.76, 0.8), (0.55, 0.95), (0.2, 0.88)]]],
    4: [[[(0.62, 0.05), (0.18, 0.66)], [(0.18, 0.66), (0.85, 0.66)], [(0.64, 0.3), (0.64, 0.95)]],
        [[(0.25, 0.05), (0.2, 0.58)], [(0.2, 0.58), (0.82, 0.56)], [(0.7, 0.05), (0.68, 0.95)]]],
    5: [[[(0.78, 0.06), (0.3, 0.06)], [(0.3, 0.06), (0.26, 0.45)],
         [(0.26, 0.45), (0.5, 0.38), (0.74, 0.5), (0.78, 0.72), (0.6, 0.93), (0.38, 0.94), (0.2, 0.84)]]],
    6: [[[(0.7, 0.05), (0.45, 0.2), (0.3, 0.45), (0.26, 0.72), (0.4, 0.93), (0.62, 0.92), (0.74, 0.74),
          (0.62, 0.55), (0.42, 0.55), (0.28, 0.7)]]],
    7: [[[(0.2, 0.07), (0.8, 0.07)], [(0.8, 0.07), (0.55, 0.5), (0.42, 0.95)]],
        [[(0.2, 0.07), (0.8, 0.07)], [(0.8, 0.07), (0.55, 0.5), (0.42, 0.95)], [(0.4, 0.5), (0.72, 0.5)]]],
    8: [[[(0.7, 0.18), (0.5, 0.05), (0.28, 0.15), (0.3, 0.35), (0.5, 0.48), (0.72, 0.65), (0.7, 0.88),
          (0.5, 0.96), (0.28, 0.88), (0.27, 0.66), (0.5, 0.48), (0.7, 0.33), (0.7, 0.18)]]],
    9: [[[(0.72, 0.3), (0.58, 0.08), (0.38, 0.07), (0.25, 0.25), (0.35, 0.45), (0.55, 0.45), (0.72, 0.3)],
         [(0.72, 0.3), (0.7, 0.95)]],
        [[(0.72, 0.3), (0.58, 0.08), (0.38, 0.07), (0.25, 0.25), (0.35, 0.45), (0.55, 0.45), (0.72, 0.3)],
         [(0.72, 0.3), (0.68, 0.7), (0.55, 0.95)]]],
}


def available_fonts():
    """The files of :data:`FONT_FILES` present on this machine."""
    return [f for f in FONT_FILES if os.path.isfile(f)]


# ------------------------------------------------------------------ photographing
def _smooth_noise(shape, rng, cells):
    """Low-frequency noise in about [-1, 1]: a coarse random grid enlarged smoothly."""
    h, w = shape
    grid = rng.uniform(-1, 1, (cells, cells)).astype(np.float32)
    return np.asarray(Image.fromarray(grid, mode="F").resize((w, h), Image.Resampling.BICUBIC), np.float64)


def _lighting(shape, rng):
    """A multiplicative light field: a linear gradient in a random direction, sometimes a soft shadow."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.cos(angle) * xx + np.sin(angle) * yy
    ramp = (ramp - ramp.min()) / max(np.ptp(ramp), 1e-9)
    light = 1 - rng.uniform(0, 0.45) * ramp
    if rng.random() < 0.4:                      # the shadow of a hand or a phone: a soft-edged half-plane
        angle = rng.uniform(0, 2 * np.pi)
        d = np.cos(angle) * (xx - xx.mean()) + np.sin(angle) * (yy - yy.mean()) - rng.uniform(-0.3, 0.3)
        soft = rng.uniform(0.01, 0.12)
        light = light * (1 - rng.uniform(0.25, 0.55) / (1 + np.exp(-d / soft)))
    return light


def photograph(ink, rng, clean=False):
    """``ink`` (float coverage in [0, 1], 1 = full ink) as a uint8 photo of dark ink on paper.

    Adds a margin of paper, then (unless ``clean``) paper texture, a light
    gradient and shadow, blur, lower resolution, noise and JPEG; one image in
    ten comes out as light ink on a dark board instead.
    """
    h, w = ink.shape
    size = max(h, w)
    top, bottom, left, right = (int(rng.uniform(0.1, 0.8) * size) for _ in range(4))
    cover = np.zeros((h + top + bottom, w + left + right))
    cover[top:top + h, left:left + w] = ink
    if clean:
        return np.round(255 * (1 - cover)).astype(np.uint8)
    paper = rng.uniform(0.4, 0.97)
    ink_level = rng.uniform(0.0, max(0.0, min(0.4, paper - 0.3)))
    page = paper * (1 + rng.uniform(0, 0.05) * _smooth_noise(cover.shape, rng, int(rng.integers(3, 9))))
    img = page * (1 - cover) + ink_level * cover
    img = img * _lighting(cover.shape, rng)
    if rng.random() < 0.1:                       # chalk or a light pen on a dark board
        img = 1 - img
    pil = Image.fromarray(np.clip(img * 255, 0, 255).astype(np.uint8))
    sigma = rng.uniform(0, 0.015) * size
    if sigma > 0.3:
        pil = pil.filter(ImageFilter.GaussianBlur(sigma))
    if rng.random() < 0.5:                       # a low-resolution camera, shown enlarged
        factor = rng.uniform(1.5, 4)
        small = (max(8, round(pil.width / factor)), max(8, round(pil.height / factor)))
        pil = pil.resize(small, Image.Resampling.BOX).resize(pil.size, Image.Resampling.BILINEAR)
    a = np.asarray(pil, np.float64) + rng.normal(0, rng.uniform(0.5, 12), (pil.height, pil.width))
    pil = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
    if rng.random() < 0.6:
        buf = io.BytesIO()
        pil.save(buf, format="JPEG", quality=int(rng.integers(15, 85)))
        buf.seek(0)
        pil = Image.open(buf).convert("L")
    return np.asarray(pil, np.uint8)


# ------------------------------------------------------------------------ the digits
def _enlarge(digit, height, resample=Image.Resampling.BICUBIC):
    """A 2-D uint8/float image in [0, 255] enlarged to ``height`` rows (aspect kept), as float coverage in [0, 1]."""
    h, w = digit.shape
    width = max(1, round(w * height / h))
    img = Image.fromarray(np.asarray(digit, np.float32), mode="F").resize((width, height), resample)
    return np.clip(np.asarray(img, np.float64) / 255.0, 0, 1)


def _crop(a, level=0.1):
    rows = np.flatnonzero((a > level).any(axis=1))
    cols = np.flatnonzero((a > level).any(axis=0))
    return a[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def restroke(digit, rng, height=None):
    """An MNIST digit enlarged, binarised and drawn with a thinner or thicker pen (float coverage)."""
    height = height or int(rng.integers(100, 320))
    big = _enlarge(_crop(np.asarray(digit, np.float64)), height)
    r = int(round(height * rng.uniform(0.0, 0.07)))       # pen radius change, up to 7% of the height
    shape = Image.fromarray(np.pad((big > 0.45) * np.uint8(255), r + 2))     # room to grow
    if r > 0 and rng.random() < 0.4:
        shape = shape.filter(ImageFilter.MinFilter(2 * min(r, max(1, height // 40)) + 1))     # thinner pen
    elif r > 0:
        shape = shape.filter(ImageFilter.MaxFilter(2 * r + 1))                                # marker
    shape = shape.filter(ImageFilter.GaussianBlur(1.0))                                        # anti-aliased edge
    return np.asarray(shape, np.float64) / 255.0


def _catmull_rom(points, per_segment=16):
    p = np.asarray(points, np.float64)
    if len(p) < 3:
        return p
    p = np.vstack([2 * p[0] - p[1], p, 2 * p[-1] - p[-2]])
    t = np.linspace(0, 1, per_segment, endpoint=False)[:, None]
    out = []
    for i in range(1, len(p) - 2):
        p0, p1, p2, p3 = p[i - 1], p[i], p[i + 1], p[i + 2]
        out.append(0.5 * (2 * p1 + (p2 - p0) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t ** 2
                          + (3 * p1 - p0 - 3 * p2 + p3) * t ** 3))
    out.append(p[-2][None])
    return np.vstack(out)


def draw_digit(label, rng, height=None):
    """Digit ``label`` drawn from a random template with jitter, slant, aspect and pen width (float coverage)."""
    height = height or int(rng.integers(60, 360))
    strokes = TEMPLATES[label][int(rng.integers(len(TEMPLATES[label])))]
    shear, aspect, turn = rng.uniform(-0.35, 0.25), rng.uniform(0.7, 1.25), np.radians(rng.uniform(-8, 8))
    pen = height * np.exp(rng.uniform(np.log(0.02), np.log(0.2)))
    jitter = rng.normal(0, 0.025, (sum(len(s) for s in strokes), 2))
    rot = np.array([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]])
    curves, k = [], 0
    for stroke in strokes:
        pts = np.asarray(stroke, np.float64) + jitter[k:k + len(stroke)]
        k += len(stroke)
        pts[:, 0] = 0.5 + (pts[:, 0] - 0.5) * aspect + shear * (0.5 - pts[:, 1])
        curves.append((_catmull_rom(pts) - 0.5) @ rot.T)
    allp = np.vstack(curves)
    lo = allp.min(axis=0)
    pad = pen
    scale = (height - 2 * pad) / max(np.ptp(allp[:, 1]), 1e-6)
    w = int(np.ptp(allp[:, 0]) * scale + 2 * pad) + 1
    img = Image.new("L", (w, height), 0)
    draw = ImageDraw.Draw(img)
    for c in curves:
        xy = [(float((x - lo[0]) * scale + pad), float((y - lo[1]) * scale + pad)) for x, y in c]
        draw.line(xy, fill=255, width=max(1, int(round(pen))), joint="curve")
        for x, y in (xy[0], xy[-1]):             # round pen ends
            draw.ellipse([x - pen / 2, y - pen / 2, x + pen / 2, y + pen / 2], fill=255)
    return np.asarray(img.filter(ImageFilter.GaussianBlur(0.7)), np.float64) / 255.0


def render_font_digit(label, font_file, rng, height=None):
    """Digit ``label`` in ``font_file``, slanted and rotated a little (float coverage)."""
    height = height or int(rng.integers(60, 300))
    font = ImageFont.truetype(font_file, size=height)
    left, top, right, bottom = font.getbbox(str(label))
    pad = height // 4
    img = Image.new("L", (right - left + 2 * pad, bottom - top + 2 * pad), 0)
    ImageDraw.Draw(img).text((pad - left, pad - top), str(label), fill=255, font=font)
    shear = rng.uniform(-0.25, 0.25)
    img = img.transform(img.size, Image.Transform.AFFINE, (1, shear, -shear * img.height / 2, 0, 1, 0),
                        resample=Image.Resampling.BICUBIC)
    img = img.rotate(rng.uniform(-8, 8), resample=Image.Resampling.BICUBIC, expand=True)
    a = np.asarray(img, np.float64) / 255.0
    return _crop(a, 0.05)


def low_res_scan(digit, rng):
    """An MNIST digit as a low-resolution scan (12-32 pixel cell) enlarged onto a page (uint8, dark ink on paper)."""
    d = _crop(np.asarray(digit, np.float64))
    h, w = d.shape
    cell = int(rng.integers(12, 33))
    widen = 1.0 if rng.random() < 0.5 else rng.uniform(1.0, 1.8)     # some scanners fill the cell
    nh = cell if h >= w * widen else max(1, round(cell * h / (w * widen)))
    nw = min(cell, max(1, round(nh * w * widen / h)))
    small = np.asarray(Image.fromarray(d.astype(np.float32), mode="F").resize((nw, nh), Image.Resampling.BOX))
    cellimg = np.zeros((cell, cell))
    y0, x0 = (cell - nh) // 2, (cell - nw) // 2
    cellimg[y0:y0 + nh, x0:x0 + nw] = np.clip(small / 255.0, 0, 1)
    if rng.random() < 0.6:                                       # a black-and-white scan
        cellimg = (cellimg > rng.uniform(0.25, 0.55)).astype(np.float64)
    factor = int(rng.integers(max(2, 64 // cell), max(3, 480 // cell) + 1))
    resample = Image.Resampling.NEAREST if rng.random() < 0.5 else Image.Resampling.BICUBIC
    big = np.clip(np.asarray(Image.fromarray((cellimg * 255).astype(np.float32), mode="F").resize(
        (cell * factor, cell * factor), resample), np.float64) / 255.0, 0, 1)
    page_h, page_w = (int(cell * factor * rng.uniform(1.0, 2.5)) for _ in range(2))
    cover = np.zeros((page_h, page_w))
    top, left = int(rng.integers(0, page_h - big.shape[0] + 1)), int(rng.integers(0, page_w - big.shape[1] + 1))
    cover[top:top + big.shape[0], left:left + big.shape[1]] = big
    paper = rng.uniform(0.75, 1.0)
    img = paper * (1 + rng.uniform(0, 0.04) * _smooth_noise(cover.shape, rng, int(rng.integers(3, 9))))
    img = img * (1 - cover) + rng.uniform(0, 0.25) * cover
    img = img + rng.normal(0, rng.uniform(0, 0.03), img.shape)
    pil = Image.fromarray(np.clip(img * 255, 0, 255).astype(np.uint8))
    if rng.random() < 0.4:
        buf = io.BytesIO()
        pil.save(buf, format="JPEG", quality=int(rng.integers(30, 90)))
        buf.seek(0)
        pil = Image.open(buf).convert("L")
    return np.asarray(pil, np.uint8)


# ------------------------------------------------------------------------------ sets
def iter_set(name, seed, n, digits=None, digit_labels=None, fonts=None):
    """Yield ``(image, label)`` for ``n`` images of set ``name``; the same ``seed`` gives the same images.

    ``digits``/``digit_labels`` (uint8 ``(N, 28, 28)`` MNIST digits and their
    labels) are needed by the sets built from MNIST (photo, restroke, scan);
    ``fonts`` defaults to :func:`available_fonts`.
    """
    if name not in SETS:
        raise ValueError(f"unknown set {name!r}; expected one of {', '.join(SETS)}")
    rng = np.random.default_rng([seed, SETS.index(name)])
    if name in ("photo", "restroke", "scan"):
        if digits is None or digit_labels is None:
            raise ValueError(f"set {name!r} is made from MNIST digits: pass digits and digit_labels")
        order = rng.choice(len(digits), size=n, replace=n > len(digits))
        for i in order:
            d, label = digits[i], int(digit_labels[i])
            if name == "photo":
                height = int(rng.integers(56, 340))
                yield photograph(_enlarge(_crop(d.astype(np.float64)), height), rng), label
            elif name == "restroke":
                yield photograph(restroke(d, rng), rng, clean=True), label
            else:
                yield low_res_scan(d, rng), label
        return
    if name == "fonts":
        fonts = available_fonts() if fonts is None else list(fonts)
        if not fonts:
            raise ValueError("no handwriting font installed (see experiments.handwriting_sets.FONT_FILES)")
    for _ in range(n):
        label = int(rng.integers(10))
        if name == "drawn":
            yield photograph(draw_digit(label, rng), rng, clean=rng.random() < 0.5), label
        else:
            font = fonts[int(rng.integers(len(fonts)))]
            yield photograph(render_font_digit(label, font, rng), rng), label


def make_set(name, seed, n, digits=None, digit_labels=None, fonts=None):
    """``(images, labels)``: the list of ``n`` uint8 images of :func:`iter_set` and an int array of labels."""
    images, labels = [], []
    for img, label in iter_set(name, seed, n, digits, digit_labels, fonts):
        images.append(img)
        labels.append(label)
    return images, np.array(labels, dtype=np.int64)
