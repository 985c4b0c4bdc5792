"""Loading users' image files: bounded memory, one clear error per bad file (convnet.imageprep's loader)."""
import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageDraw

from convnet import imageprep
from convnet.imageprep import ImagePrepError, load_greyscale, mnist_style

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
