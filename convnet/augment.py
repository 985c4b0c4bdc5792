"""Data augmentation: random shifts, small rotations and zooms of a batch of images, on the fly.

Each image gets its own affine map (rotation about the image centre, zoom,
shift) and is resampled bilinearly; pixels that come from outside the image
are 0 (MNIST's background). Everything is vectorised over the batch in
NumPy: for a batch of 32 MNIST digits it costs a small fraction of a training
step.

>>> from convnet.augment import RandomAffine
>>> augment = RandomAffine(rotation_range=10, zoom_range=0.1, shift_range=2)
>>> xb = augment(xb, np.random.default_rng(0))      # (N, H, W, C) float in, same shape out

The same generator state gives the same batch, so training with it stays
reproducible and resumable.
"""
import numpy as np


def affine(images, angle=0.0, zoom=1.0, shift=(0.0, 0.0)):
    """Apply one affine map per image: rotate by ``angle`` degrees (counter-clockwise as displayed),
    scale by ``zoom`` (>1 enlarges), both about the centre, then shift by ``shift = (dy, dx)`` pixels.

    ``images``: (N, H, W, C) floats. ``angle``, ``zoom``: scalars or length-N arrays; ``shift``: a pair
    or an (N, 2) array. Output pixel ``p`` takes the bilinear interpolation of the input at
    ``c + R(-angle) (p - c - shift) / zoom`` (``c`` the centre); outside the image counts as 0.
    """
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"images must have shape (N, H, W, C), got {images.shape}")
    if not np.issubdtype(images.dtype, np.floating):
        raise ValueError(f"images must be floating point, got {images.dtype}")
    n, h, w, c = images.shape
    angle = np.broadcast_to(np.asarray(angle, dtype=np.float64), (n,))
    zoom = np.broadcast_to(np.asarray(zoom, dtype=np.float64), (n,))
    shift = np.broadcast_to(np.asarray(shift, dtype=np.float64), (n, 2))
    if np.any(zoom <= 0):
        raise ValueError("zoom must be positive")
    # inverse map, per image: source = centre + M (target - centre - shift), M = R(-angle) / zoom
    cos, sin = rotation(angle, zoom)
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    ty = np.arange(h, dtype=np.float64)[None, :, None] - cy - shift[:, 0, None, None]   # (N, H, 1)
    tx = np.arange(w, dtype=np.float64)[None, None, :] - cx - shift[:, 1, None, None]   # (N, 1, W)
    # rows grow downwards, so a turn that looks counter-clockwise on screen is clockwise in (row, col)
    sy = cy + cos[:, None, None] * ty + sin[:, None, None] * tx                          # (N, H, W)
    sx = cx - sin[:, None, None] * ty + cos[:, None, None] * tx
    return _bilinear(images, sy, sx)


def rotation(angle, zoom):
    """``cos(angle) / zoom`` and ``sin(angle) / zoom`` (angles in degrees): the inverse map's matrix entries."""
    theta = np.deg2rad(angle)
    return np.cos(theta) / zoom, np.sin(theta) / zoom


def _bilinear(images, sy, sx):
    """Sample ``images`` (N, H, W, C) at real coordinates (N, H, W); zero outside."""
    n, h, w, c = images.shape
    # zeros around the image (one row/column before, two after), so that a point clipped into
    # [0, h + 1] x [0, w + 1] of the padded image has all four neighbours, zero outside the image
    hp, wp = h + 3, w + 3
    padded = np.zeros((n, hp, wp, c), dtype=images.dtype)
    padded[:, 1:h + 1, 1:w + 1] = images
    sy = np.clip(sy + 1.0, 0.0, h + 1.0)
    sx = np.clip(sx + 1.0, 0.0, w + 1.0)
    y0 = sy.astype(np.intp)                       # floor: the coordinates are not negative
    x0 = sx.astype(np.intp)
    fy = (sy - y0).astype(images.dtype).reshape(-1, 1)
    fx = (sx - x0).astype(images.dtype).reshape(-1, 1)
    # flat index of each sample's top-left neighbour; one 1-D gather per neighbour
    base = (np.arange(n)[:, None, None] * (hp * wp) + y0 * wp + x0).reshape(-1)
    flat = padded.reshape(-1, c)
    top = flat[base] * (1 - fx) + flat[base + 1] * fx
    bottom = flat[base + wp] * (1 - fx) + flat[base + wp + 1] * fx
    return (top * (1 - fy) + bottom * fy).reshape(n, h, w, c)


class RandomAffine:
    """Random rotation, zoom and shift for every image of a batch (a callable ``(images, rng) -> images``).

    ``rotation_range``: degrees, the angle is uniform in [-r, r]; ``zoom_range``: the zoom is uniform in
    [1 - z, 1 + z]; ``shift_range``: pixels, each of dy and dx uniform in [-s, s]. Zero ranges turn a
    part off; all zero returns the images unchanged.
    """

    def __init__(self, rotation_range=10.0, zoom_range=0.1, shift_range=2.0):
        for name, value, top in (("rotation_range", rotation_range, 180), ("zoom_range", zoom_range, 1),
                                 ("shift_range", shift_range, 1000)):
            if not (isinstance(value, (int, float, np.floating, np.integer)) and 0 <= value < top):
                raise ValueError(f"{name} must be a number in [0, {top}), got {value!r}")
        self.rotation_range = float(rotation_range)
        self.zoom_range = float(zoom_range)
        self.shift_range = float(shift_range)

    @property
    def identity(self):
        """True when every range is zero: the images are returned unchanged, and nothing is drawn."""
        return not (self.rotation_range or self.zoom_range or self.shift_range)

    def __call__(self, images, rng):
        if self.identity:
            return images
        return affine(images, *self.draw(len(images), rng))

    def draw(self, n, rng):
        """``(angle, zoom, shift)`` for ``n`` images: one row of four uniforms per image."""
        # draw all three whatever the ranges, so one part's range does not change another's numbers
        u = rng.random((n, 4))
        angle = (2 * u[:, 0] - 1) * self.rotation_range
        zoom = 1 + (2 * u[:, 1] - 1) * self.zoom_range
        shift = (2 * u[:, 2:] - 1) * self.shift_range
        return angle, zoom, shift

    def get_config(self):
        return {"rotation_range": self.rotation_range, "zoom_range": self.zoom_range,
                "shift_range": self.shift_range}

    def __repr__(self):
        return (f"RandomAffine(rotation_range={self.rotation_range:g}, zoom_range={self.zoom_range:g}, "
                f"shift_range={self.shift_range:g})")
