"""Recognising handwriting from image files: MNIST-style preprocessing and the predict CLI.

The key test re-renders MNIST test digits the way a user's photo might look
(large, dark ink on white paper, off-centre, thicker strokes) and checks that
after :func:`convnet.imageprep.mnist_style` a trained model recognises them
about as well as the original 28x28 digits.
"""
import os

import numpy as np
import pytest
from PIL import Image, ImageFilter

from convnet import Sequential, layers, optimizers
from convnet.datasets import load_mnist, preprocess
from convnet.imageprep import ImagePrepError, center_by_mass, fit_into_box, mnist_style
from experiments import predict
from convnet.saving import save_model


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def mnist():
    return load_mnist()


@pytest.fixture(scope="module")
def trained_model(mnist):
    """A small conv net trained for 2 epochs on 5000 MNIST digits (about 89% test accuracy)."""
    (x_train, y_train), _ = mnist
    model = Sequential([layers.Conv2D(16, 5, strides=2, activation="relu"), layers.MaxPool2D(2),
                        layers.Flatten(), layers.Dense(10, activation="softmax")],
                       input_shape=(28, 28, 1), seed=0)
    model.compile(optimizers.Adam(3e-3))
    model.fit(preprocess(x_train[:5000]), y_train[:5000], epochs=2, batch_size=128, seed=0, verbose=0)
    return model


@pytest.fixture(scope="module")
def model_file(trained_model, tmp_path_factory):
    return str(save_model(trained_model, tmp_path_factory.mktemp("model") / "model.npz"))


def render_like_a_photo(digit, rng):
    """An MNIST digit (uint8 28x28) as a big image of dark ink on white paper.

    Scaled up 3-8x (bilinear), strokes thickened by a max filter (dilation)
    for some digits, pasted at a random offset in a larger canvas, inverted.
    """
    scale = int(rng.integers(3, 9))
    big = Image.fromarray(digit).resize((28 * scale, 28 * scale), Image.Resampling.BILINEAR)
    thickness = int(rng.choice([1, 3, 5]))
    if thickness > 1:
        big = big.filter(ImageFilter.MaxFilter(thickness))
    h, w = big.size[1] + int(rng.integers(10, 200)), big.size[0] + int(rng.integers(10, 200))
    canvas = Image.new("L", (w, h), 0)
    canvas.paste(big, (int(rng.integers(0, w - big.size[0])), int(rng.integers(0, h - big.size[1]))))
    return 255 - np.asarray(canvas)


def write_png(path, array):
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)
    return str(path)


# ---------------------------------------------------------- preprocessing
def test_rerendered_digits_are_recognised_as_well_as_the_originals(trained_model, mnist):
    _, (x_test, y_test) = mnist
    rng = np.random.default_rng(0)
    n = 300
    originals = preprocess(x_test[:n])
    photos = np.stack([mnist_style(render_like_a_photo(d, rng)) for d in x_test[:n]])[..., None]
    acc_original = np.mean(trained_model.predict(originals).argmax(1) == y_test[:n])
    acc_photo = np.mean(trained_model.predict(photos).argmax(1) == y_test[:n])
    assert acc_original > 0.85
    assert acc_photo >= acc_original - 0.04, (acc_photo, acc_original)


def test_grey_noisy_paper_is_handled(trained_model, mnist):
    """Grey ink on grey paper with sensor-like noise (std 5% of the range): still recognised."""
    _, (x_test, y_test) = mnist
    rng = np.random.default_rng(1)
    n = 150
    photos = []
    for d in x_test[:n]:
        p = 0.15 + 0.7 * render_like_a_photo(d, rng) / 255.0          # ink at 0.15, paper at 0.85
        photos.append(mnist_style(np.clip(p + rng.normal(0, 0.05, p.shape), 0, 1)))
    acc_original = np.mean(trained_model.predict(preprocess(x_test[:n])).argmax(1) == y_test[:n])
    acc_photo = np.mean(trained_model.predict(np.stack(photos)[..., None]).argmax(1) == y_test[:n])
    assert acc_photo >= acc_original - 0.05, (acc_photo, acc_original)


def test_without_preprocessing_the_photos_are_not_recognised(trained_model, mnist):
    """Control: naively shrinking the photo to 28x28 (no inversion, crop or centring) fails."""
    _, (x_test, y_test) = mnist
    rng = np.random.default_rng(0)
    n = 100
    naive = np.stack([np.asarray(Image.fromarray(render_like_a_photo(d, rng)).resize((28, 28)), np.float32) / 255
                      for d in x_test[:n]])[..., None]
    assert np.mean(trained_model.predict(naive).argmax(1) == y_test[:n]) < 0.5


def test_output_is_mnist_like_and_polarity_does_not_matter(mnist):
    _, (x_test, _) = mnist
    photo = render_like_a_photo(x_test[0], np.random.default_rng(1))
    dark_on_light = mnist_style(photo)
    light_on_dark = mnist_style(255 - photo)
    assert dark_on_light.shape == (28, 28) and dark_on_light.dtype == np.float32
    assert dark_on_light.min() == 0 and dark_on_light.max() == 1
    np.testing.assert_allclose(dark_on_light, light_on_dark, atol=1e-6)
    # ink is bright, the border is black as in MNIST
    assert dark_on_light[0].max() == 0 and dark_on_light[:, 0].max() == 0
    # centre of mass at (14, 14) like MNIST, within the half pixel of rounding
    rows, cols = np.indices((28, 28))
    mass = dark_on_light.sum()
    assert abs((rows * dark_on_light).sum() / mass - 14) <= 0.5
    assert abs((cols * dark_on_light).sum() / mass - 14) <= 0.5


def test_aspect_ratio_is_kept_and_the_long_side_is_20():
    bar = np.zeros((200, 50))
    bar[:, :] = 1.0                      # a tall 4:1 block of ink
    box = fit_into_box(bar)
    assert box.shape == (20, 5)
    wide = fit_into_box(np.ones((30, 90)))
    assert wide.shape == (7, 20) or wide.shape == (6, 20)


def test_center_by_mass_moves_the_mass_to_the_centre():
    rows = np.indices((28, 28))[0]
    digit = np.zeros((10, 10))
    digit[:5, :] = 1.0                   # centre of mass at row 2, column 4.5
    framed = center_by_mass(digit)
    assert framed.sum() == digit.sum()
    assert (rows * framed).sum() / framed.sum() == 14
    # a shift that would push the digit out of the frame stops at the edge
    tall = np.zeros((20, 10))
    tall[:5, :] = 1.0                    # centre of mass at row 2: would need to start at row 12
    framed = center_by_mass(tall)
    assert framed.sum() == tall.sum()    # nothing cut off
    assert (rows * framed).sum() / framed.sum() == 8 + 2   # placed at the lowest row that fits (8)


def test_colour_and_transparent_images(tmp_path, mnist):
    _, (x_test, _) = mnist
    grey = render_like_a_photo(x_test[1], np.random.default_rng(2))
    expected = mnist_style(grey)
    rgb = np.stack([grey, grey, grey], axis=-1)
    np.testing.assert_allclose(mnist_style(rgb), expected, atol=1e-2)
    # black ink drawn on a transparent canvas: transparent counts as white paper
    rgba = np.zeros(grey.shape + (4,), np.uint8)
    rgba[..., 3] = 255 - grey
    path = tmp_path / "transparent.png"
    Image.fromarray(rgba, mode="RGBA").save(path)
    np.testing.assert_allclose(mnist_style(path), expected, atol=2e-2)


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_text("hello, not an image"), "not an image"),
    (lambda p: p.write_bytes(b""), "not an image"),
    (lambda p: write_png(p, np.full((50, 60), 255)), "no ink"),
    (lambda p: write_png(p, np.full((50, 60), 3)), "no ink"),
    (lambda p: p.write_bytes(open(write_png(p.with_suffix(".ok.png"), np.eye(40) * 255), "rb").read()[:60]),
     "cannot read|not an image"),
])
def test_bad_files_get_clear_errors(tmp_path, make, message):
    path = tmp_path / "bad.png"
    make(path)
    with pytest.raises(ImagePrepError, match=message):
        mnist_style(path)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ImagePrepError, match="no such file") as info:
        mnist_style(tmp_path / "nope.png")
    assert info.value.path == str(tmp_path / "nope.png") and str(info.value).startswith(str(tmp_path))
    with pytest.raises(ImagePrepError, match="directory"):
        mnist_style(tmp_path)


def test_bad_arrays_and_threshold():
    with pytest.raises(ImagePrepError, match="2-D greyscale"):
        mnist_style(np.zeros((3, 4, 5, 6)))
    with pytest.raises(ValueError, match="threshold"):
        mnist_style(np.eye(10), threshold=1.5)


# ---------------------------------------------------------------- the CLI
def test_cli_predicts_and_continues_after_errors(tmp_path, mnist, model_file, trained_model, capsys):
    _, (x_test, y_test) = mnist
    rng = np.random.default_rng(3)
    good = []
    for i in range(3):
        good.append(write_png(tmp_path / f"digit{i}.png", render_like_a_photo(x_test[i], rng)))
    Image.fromarray(render_like_a_photo(x_test[3], rng)).convert("RGB").save(tmp_path / "digit3.jpg", quality=90)
    good.append(str(tmp_path / "digit3.jpg"))
    blank = write_png(tmp_path / "blank.png", np.full((40, 40), 250))
    text = tmp_path / "notes.png"
    text.write_text("not an image")

    code = predict.main([good[0], blank, str(text)] + good[1:] + ["--model", model_file, "--show",
                                                                   "--out", str(tmp_path / "shown")])
    out, err = capsys.readouterr()
    assert code == 1
    assert "blank.png: error: no ink" in err and "notes.png: error: not an image" in err
    assert "2 of 6 images failed" in err
    expected = trained_model.predict(np.stack([mnist_style(g) for g in good])[..., None])
    for path, probs in zip(good, expected):
        line = next(l for l in out.splitlines() if l.startswith(path + ":"))
        assert line.split()[1] == str(probs.argmax())           # the digit
        assert line.count("%") == 3                              # top-3 probabilities
        assert f"{probs.max():6.1%}".strip() in line
        assert (tmp_path / "shown" / (path.split("/")[-1] + ".prediction.png")).stat().st_size > 1000


def test_cli_exit_code_zero_when_all_succeed(tmp_path, mnist, model_file, capsys):
    _, (x_test, _) = mnist
    img = write_png(tmp_path / "seven.png", 255 - x_test[0])
    assert predict.main([img, "--model", model_file]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith(img + ": 7")


def test_cli_without_a_model_says_how_to_get_one(tmp_path, capsys):
    img = write_png(tmp_path / "x.png", np.eye(30) * 255)
    code = predict.main([img, "--runs-dir", str(tmp_path / "runs")])
    assert code == 2
    assert "python -m experiments.mnist" in capsys.readouterr().err


def test_default_model_is_the_latest_run(tmp_path, model_file, mnist, capsys):
    """The `runs/latest` pointer written by experiments.mnist decides the default model."""
    import shutil
    runs = tmp_path / "runs"
    run = runs / "mnist-20990101-000000"
    run.mkdir(parents=True)
    shutil.copy(model_file, run / "model.npz")
    (runs / "latest").write_text(str(run.resolve()))
    _, (x_test, _) = mnist
    img = write_png(tmp_path / "d.png", 255 - x_test[1])
    assert predict.main([img, "--runs-dir", str(runs)]) == 0
    assert f"model: {run / 'model.npz'}" in capsys.readouterr().out


# ------------------------------------------------------------- hostile inputs
def png_claiming(path, width, height):
    from tests.test_imageprep import png_claiming as make
    return str(make(path, width, height))


def test_cli_continues_after_an_image_above_the_pixel_limit(tmp_path, mnist, model_file, capsys):
    _, (x_test, _) = mnist
    bomb = png_claiming(tmp_path / "bomb.png", 8000, 8000)
    huge = png_claiming(tmp_path / "huge.png", 15000, 15000)          # above Pillow's own limit too
    img = write_png(tmp_path / "seven.png", 255 - x_test[0])
    code = predict.main([bomb, huge, img, "--model", model_file])
    out, err = capsys.readouterr()
    assert code == 1
    assert f"{bomb}: error: the image is 8000 x 8000 pixels, more than 40,000,000 pixels" in err
    assert f"{huge}: error: the image has more than 40,000,000 pixels" in err
    assert out.splitlines()[-1].startswith(img + ": 7")
    assert "2 of 3 images failed" in err and "Traceback" not in err


def test_show_names_are_unique_for_inputs_with_the_same_name(tmp_path, mnist, model_file, capsys):
    _, (x_test, _) = mnist
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    first = write_png(tmp_path / "a" / "digit.png", 255 - x_test[0])
    second = write_png(tmp_path / "b" / "digit.png", 255 - x_test[1])
    out_dir = tmp_path / "shown"
    assert predict.main([first, second, first, "--model", model_file, "--show", "--out", str(out_dir)]) == 0
    assert sorted(os.listdir(out_dir)) == [".convnet-outputs", "digit.png.2.prediction.png",
                                           "digit.png.prediction.png"]
    assert predict.main([first, "--model", model_file, "--show", "--out", str(out_dir)]) == 0    # its own: replaced
    (tmp_path / "c").mkdir()
    third = write_png(tmp_path / "c" / "digit.png", 255 - x_test[2])
    (out_dir / "digit.png.3.prediction.png").write_text("not ours")      # someone else's file of that name
    assert predict.main([first, second, third, "--model", model_file, "--show", "--out", str(out_dir)]) == 1
    assert "digit.png.3.prediction.png exists and was not written by experiments.predict" in capsys.readouterr().err
    assert (out_dir / "digit.png.3.prediction.png").read_text() == "not ours"
    assert predict.output_names([first, second, first]) == {first: "digit.png.prediction.png",
                                                           second: "digit.png.2.prediction.png"}


@pytest.mark.parametrize("where, message", [
    ("file", "is a file, not a directory"),
    ("under a file", "is a file, not a directory"),
    ("read-only", "is not writable"),
])
def test_unusable_show_directory_is_an_error_before_any_work(tmp_path, model_file, capsys, where, message):
    if where == "read-only" and os.geteuid() == 0:
        pytest.skip("root can write into read-only directories")
    target = tmp_path / "taken"
    if where == "file":
        target.write_text("mine")
    elif where == "under a file":
        target.write_text("mine")
        target = target / "sub"
    else:
        target.mkdir(mode=0o555)
    img = write_png(tmp_path / "x.png", np.eye(30) * 255)
    assert predict.main([img, "--model", model_file, "--show", "--out", str(target)]) == 2
    out, err = capsys.readouterr()
    assert err.startswith("error: --out ") and message in err and err.count("\n") == 1
    assert "x.png" not in out


PREDICT_AND_MEASURE = """
import sys
from experiments import predict
code = predict.main(sys.argv[1:])
peak_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print("peak", code, peak_kb // 1024)
"""


@pytest.fixture(scope="module")
def big_images(tmp_path_factory, mnist):
    """A digit drawn across a 6,600 x 6,000 PNG (39.6 MP, just under the limit), a 10,000 x 8,000 JPEG
    and a 9,000 x 9,000 PNG (81 MP: above convnet's limit, below Pillow's)."""
    _, (x_test, _) = mnist
    d = tmp_path_factory.mktemp("big")
    digit = Image.fromarray(255 - x_test[0])
    png = digit.resize((6600, 6000), Image.Resampling.NEAREST)
    png.save(d / "big.png")
    digit.resize((10000, 8000), Image.Resampling.NEAREST).save(d / "big.jpg", quality=85)
    Image.new("L", (9000, 9000), 255).save(d / "bomb.png")
    return {"png": str(d / "big.png"), "jpeg": str(d / "big.jpg"),
            "bomb": str(d / "bomb.png")}


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads the peak RSS from /proc")
@pytest.mark.parametrize("image, code", [("png", 0), ("jpeg", 0), ("bomb", 1)])
def test_predict_on_any_single_image_stays_under_600_mb(big_images, model_file, image, code):
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run([sys.executable, "-c", PREDICT_AND_MEASURE, big_images[image], "--model", model_file],
                            capture_output=True, text=True, cwd=root, timeout=300)
    assert "Traceback" not in result.stderr, result.stderr
    line = result.stdout.splitlines()[-1].split()
    assert line[:2] == ["peak", str(code)], result.stdout + result.stderr
    if code == 0:
        assert ": 7 " in result.stdout                    # the digit is still recognised
    assert int(line[2]) < 600, f"predict on {image} peaked at {line[2]} MB"


def test_a_model_path_that_is_not_a_file_is_named_as_what_it_is(tmp_path, capsys):
    os.mkfifo(tmp_path / "fifo.npz")
    (tmp_path / "a.npz").symlink_to(tmp_path / "b.npz")
    (tmp_path / "b.npz").symlink_to(tmp_path / "a.npz")
    for model, message in [(tmp_path / "fifo.npz", "is a FIFO (named pipe), not a regular file"),
                           ("/dev/zero", "/dev/zero is a device, not a regular file"),
                           (tmp_path / "a.npz", "a.npz is a loop of symbolic links"),
                           (tmp_path / "gone.npz", "gone.npz does not exist")]:
        assert predict.main(["x.png", "--model", str(model)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: model file ") and message in err and err.count("\n") == 1, err


def test_names_are_printed_escaped_and_never_parsed(model_file, tmp_path, capsys):
    """A name with $...$ is no mathtext formula; a newline or an escape sequence cannot forge a line."""
    x = np.full((28, 28), 255, np.uint8)
    x[6:22, 13:16] = 0                                   # a 1, dark on white
    names = ["a$_$b.png", "x.png\n7.png: 9   (9: 100.0%)\x1b[2K.png", "plain.png"]
    for name in names:
        write_png(tmp_path / name, x)
    paths = [str(tmp_path / n) for n in names]
    assert predict.main([*paths, "--model", model_file, "--show", "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert len([l for l in lines if l.startswith(("/", "'/"))]) == 3, out      # one result line per image
    assert not any(l.startswith("7.png") for l in lines) and "\x1b" not in out
    assert repr(paths[1]) in out and f"{paths[0]}: " in out
    assert sorted(os.listdir(tmp_path / "out")) == sorted([".convnet-outputs"] + [n + ".prediction.png" for n in names])
