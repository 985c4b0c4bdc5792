"""The explorer page in a real browser: Playwright for Python driving Chromium.

The server serves a small trained model (explore_support: one epoch on
8,000 MNIST images). The tests draw strokes on the canvas with the mouse,
upload files, click through the forward and backward views, take and apply
a training step, run a short live training and check error handling.

The browser is Debian's ``chromium`` (``/usr/bin/chromium``, or
``$CONVNET_CHROMIUM``): Playwright cannot download its own browser without
internet access. Without a browser these tests are skipped, unless
``CONVNET_REQUIRE_BROWSER=1`` (set by ``.ci/run``), which makes that a
failure so CI cannot pass without running them. ``CONVNET_SCREENSHOT_DIR``
set: the README's screenshots are written there.
"""
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from experiments.explore import server as srv
from experiments.explore.core import Explorer
from experiments.predict import load_model_for_inference
from explore_support import as_png, mnist_test, trained_model_path

CHROMIUM = os.environ.get("CONVNET_CHROMIUM", "/usr/bin/chromium")
REQUIRED = os.environ.get("CONVNET_REQUIRE_BROWSER") == "1"
TIMEOUT = 60_000          # ms: the machine may be busy (a loaded 2-core machine: 4 times slower)


def _unavailable(reason):
    if REQUIRED:
        pytest.fail(f"{reason} (CONVNET_REQUIRE_BROWSER=1: the browser tests must run)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install -e '.[browser]')")
    if not os.path.exists(CHROMIUM):
        _unavailable(f"no browser at {CHROMIUM} (apt-get install -y chromium)")
    args = ["--headless", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"]
    if os.geteuid() == 0:
        args.insert(0, "--no-sandbox")         # Chromium refuses to run as root with its sandbox
    with sync_playwright() as p:
        try:
            b = p.chromium.launch(executable_path=CHROMIUM, args=args)
        except Exception:                      # a container without user namespaces: no sandbox either
            b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"] + args)
        yield b
        b.close()


@pytest.fixture(scope="module")
def model_path():
    return trained_model_path()


@pytest.fixture(scope="module")
def server(model_path):
    explorer = Explorer(load_model_for_inference(model_path), model_path=str(model_path))
    s = srv.serve_in_thread(explorer)
    yield s
    s.shutdown()
    s.server_close()
    explorer.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1300, "height": 1000})
    pg = context.new_page()
    pg.set_default_timeout(TIMEOUT)
    errors = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    _open(pg, server)
    yield pg
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def _open(pg, server):
    pg.goto(server.url)
    pg.wait_for_selector("body[data-ready='1']")


def _stroke(pg, points):
    """Draw a polyline on the canvas; points in the canvas's 280x280 coordinates."""
    box = pg.locator("#draw").bounding_box()
    sx, sy = box["width"] / 280, box["height"] / 280
    pg.mouse.move(box["x"] + points[0][0] * sx, box["y"] + points[0][1] * sy)
    pg.mouse.down()
    for x, y in points[1:]:
        pg.mouse.move(box["x"] + x * sx, box["y"] + y * sy, steps=2)
    pg.mouse.up()


def _draw_one(pg):
    _stroke(pg, [(140, 40), (140, 240)])


def _draw_zero(pg):
    _stroke(pg, [(140 + 60 * math.sin(t), 140 - 95 * math.cos(t)) for t in np.linspace(0, 2 * math.pi, 40)])


def _expect_prediction(pg, digit):
    """Wait until the page has settled (every update of the last stroke done), then check the digit."""
    pg.wait_for_function("document.body.dataset.busy === '0'")
    assert pg.locator("#prediction").text_content() == str(digit)


def _shaded(pg):
    """How many pixels of the 28x28 receptive-field overlay are shaded."""
    return pg.evaluate("""() => { const d = document.querySelector('#rf-overlay').getContext('2d')
        .getImageData(0, 0, 28, 28).data; let n = 0; for (let i = 3; i < d.length; i += 4) n += d[i] > 0; return n; }""")


def _save_screenshot(pg, tmp_path, name, element=None):
    path = tmp_path / name
    if element is None:
        pg.evaluate("window.scrollTo(0, 0)")  # clicking a unit may have scrolled the page
    (element or pg).screenshot(path=str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = os.environ.get("CONVNET_SCREENSHOT_DIR")
    if out:
        shutil.copyfile(path, Path(out) / name)


def test_drawing_a_one_and_a_zero_and_the_forward_view(page, tmp_path):
    _draw_one(page)
    _expect_prediction(page, 1)
    page.click("#clear")
    assert page.locator("#prediction").text_content() == "–"
    _draw_zero(page)
    _expect_prediction(page, 0)
    # ten probability bars, the largest for 0
    assert page.locator("#probabilities .prob").count() == 10
    assert page.locator("#probabilities .prob.best").get_attribute("data-class") == "0"
    # every layer drawn with its colour legend: the input, then 10 layers
    assert page.locator("#forward-layers .layer").count() == 11
    assert page.locator("#forward-layers .legend").count() == 11
    assert page.locator("#layer-conv2d canvas.map").count() == 32
    assert page.locator("#layer-dense canvas.bars").count() == 1
    # hovering a feature map shows its value
    fmap = page.locator("#layer-conv2d canvas.map").nth(3)
    fmap.hover(position={"x": 20, "y": 30})
    assert page.locator("#tooltip").is_visible()
    assert page.locator("#tooltip").text_content().startswith("conv2d channel 3, (")
    # hovering a unit of the second conv layer shades its 11x11 receptive field on the input
    page.locator("#layer-conv2d_1 canvas.map").nth(5).hover(position={"x": 20, "y": 20})
    assert _shaded(page) == 121
    # clicking a unit shows its receptive field and its dot product
    fmap.click(position={"x": 19, "y": 36})             # on the ring of the 0
    formula = page.locator("#unit-formula")
    formula.wait_for()
    text = formula.text_content()
    assert "Σ products" in text and "+ bias" in text and "relu(z)" in text
    assert "Receptive field: input rows" in page.locator("#unit").text_content()
    assert _shaded(page) == 16              # a 4x4 window of the input is shaded
    _save_screenshot(page, tmp_path, "explorer.png")
    # a dense unit: the top products, the bias and the softmax
    bars = page.locator("#layer-dense_1 canvas.bars")
    bars.click(position={"x": 13, "y": 30})
    page.wait_for_function("document.querySelector('#unit-formula').textContent.includes('softmax')")
    assert page.locator("#unit h3").text_content().startswith("dense_1 (Dense): unit 0")


def test_upload_an_image_file_and_a_bad_one(page, model_path, tmp_path):
    from convnet.imageprep import mnist_style

    x, _ = mnist_test()
    png = tmp_path / "digit.png"
    png.write_bytes(as_png(x[0] / 255.0))        # a 7, dark ink on white, 280x280
    expected = load_model_for_inference(model_path).predict(mnist_style(png)[None, :, :, None])[0].argmax()
    page.set_input_files("#upload", str(png))
    page.wait_for_function("document.querySelector('#input-source').textContent.includes('uploaded: digit.png')")
    _expect_prediction(page, int(expected))
    bad = tmp_path / "notes.txt"
    bad.write_text("not a picture")
    page.set_input_files("#upload", str(bad))
    page.wait_for_selector("#error:not([hidden])")
    assert "notes.txt: not an image file" in page.locator("#error").text_content()


def test_backward_view_and_gradient_check(page, tmp_path):
    _draw_one(page)
    _expect_prediction(page, 1)
    page.click("[data-tab=backward]")
    page.click("#target-buttons button[data-class='7']")
    page.wait_for_function("document.querySelector('#backward-loss').textContent.includes('p[7]')")
    assert page.locator("#backward-layers .layer").count() == 10
    assert page.locator("#backward-layers .param-grad").count() == 8     # kernel and bias of 4 layers
    first = page.locator("#backward-layers .layer").first.get_attribute("id")
    assert first == "grad-dense_1"                  # backward runs from the top
    assert "dL/dz (logits" in page.locator("#grad-dense_1").text_content()
    saliency_ink = page.evaluate("""() => { const d = document.querySelector('#saliency').getContext('2d')
        .getImageData(0, 0, 28, 28).data; let n = 0; for (let i = 0; i < d.length; i += 4) n += (d[i] + d[i+1] + d[i+2]) < 700; return n; }""")
    assert saliency_ink > 10                        # the saliency map is not blank
    _save_screenshot(page, tmp_path, "explorer_backward.png")
    page.click("#gradcheck-run")
    page.wait_for_selector("#gradcheck-table")
    rows = page.locator("#gradcheck-table tr")
    assert rows.count() == 1 + 9 * 3                # header, 3 entries of the input and of 8 parameter arrays
    ok, kinks = page.locator("#gradcheck-table td.ok").count(), page.locator("#gradcheck-table td.kink").count()
    assert page.locator("#gradcheck-table td.bad").count() == 0 and ok + kinks == 27 and ok >= 20


def test_one_training_step_apply_and_reset(page):
    _draw_one(page)
    _expect_prediction(page, 1)
    before = page.locator("#probabilities").text_content()
    page.click("[data-tab=step]")
    page.click("#label-buttons button[data-class='7']")
    page.click("#step-preview")
    page.wait_for_selector("#step-table")
    assert page.locator("#step-table tr").count() == 9
    assert "Adam" in page.locator("#step-result .formula").text_content()
    assert page.locator("#probabilities").text_content() == before      # a preview changes nothing
    for n in (1, 2, 3):
        page.click("#step-apply")
        page.wait_for_function(f"document.querySelector('#steps-applied').textContent.includes(': {n}')")
    page.wait_for_selector("#step-applied")
    after = page.locator("#probabilities").text_content()
    assert after != before
    page.click("#step-reset")
    page.wait_for_function("document.querySelector('#steps-applied').textContent.includes(': 0')")
    page.wait_for_function(f"document.querySelector('#probabilities').textContent === {before!r}")


def test_live_training_runs_and_stops(page, tmp_path):
    page.click("[data-tab=train]")
    page.fill("#train-images", "640")
    page.click("#train-start")
    page.wait_for_function("document.querySelector('#train-state').dataset.state === 'finished'", timeout=120_000)
    state = page.locator("#train-state").text_content()
    assert "step 20 of 20" in state and "test accuracy" in state
    drawn = page.evaluate("""() => ['#chart-loss', '#chart-acc', '#chart-grads'].map(id => {
        const c = document.querySelector(id), d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 0; i < d.length; i += 4) n += (d[i] + d[i+1] + d[i+2]) < 600; return n; })""")
    assert all(n > 100 for n in drawn), drawn
    assert page.locator("#train-filters canvas").count() == 1
    _save_screenshot(page, tmp_path, "explorer_train.png", page.locator("#tab-train"))
    page.click("#train-use")
    page.wait_for_function("document.querySelector('#train-state').textContent.includes('trained weights')")
    # a long run, stopped at once
    page.fill("#train-images", "60000")
    page.click("#train-start")
    page.wait_for_function("document.querySelector('#train-state').dataset.state === 'running'")
    page.click("#train-stop")
    page.wait_for_function("document.querySelector('#train-state').dataset.state === 'stopped'")
    assert "stopped after" in page.locator("#train-state").text_content()
    # a bad setting is refused with a message
    page.fill("#train-images", "5")
    page.click("#train-start")
    page.wait_for_selector("#error:not([hidden])")
    assert "images must be in 100..60000" in page.locator("#error").text_content()


def test_mnist_digits_mistakes_and_two_tabs(page, browser, server):
    page.click("[data-tab=mnist]")
    page.wait_for_selector("#mnist-grid .thumb")
    assert page.locator("#mnist-grid .thumb").count() == 60
    all_range = page.locator("#mnist-range").text_content()               # "1-60 of 10000"
    page.click("#mnist-mistakes")
    page.wait_for_function("(before) => document.querySelector('#mnist-range').textContent !== before", arg=all_range)
    thumbs = page.locator("#mnist-grid .thumb")
    assert thumbs.count() > 0 and thumbs.count() == page.locator("#mnist-grid .thumb.wrong").count()
    caption = thumbs.first.locator("figcaption").text_content()            # "label → prediction"
    thumbs.first.click()
    page.wait_for_function("document.querySelector('#input-source').textContent.includes('MNIST test digit')")
    _expect_prediction(page, int(caption.split("→")[1]))
    # a second tab is a second session: a step applied in one does not change the other
    other = page.context.new_page()
    other.set_default_timeout(TIMEOUT)
    _open(other, server)
    _draw_one(other)
    _expect_prediction(other, 1)
    before = other.locator("#probabilities").text_content()
    _draw_one(page)
    page.click("[data-tab=step]")
    page.click("#label-buttons button[data-class='4']")
    page.click("#step-apply")
    page.wait_for_function("document.querySelector('#steps-applied').textContent.includes(': 1')")
    other.click("#clear")
    _draw_one(other)
    _expect_prediction(other, 1)
    assert other.locator("#probabilities").text_content() == before
    other.close()


def test_errors_are_shown_and_the_page_goes_on(page):
    page.click("[data-tab=backward]")
    page.click("#gradcheck-run")
    page.wait_for_selector("#error:not([hidden])")
    assert "draw or pick a digit first" in page.locator("#error").text_content()
    _draw_one(page)
    _expect_prediction(page, 1)
    assert page.locator("#error").is_hidden()
