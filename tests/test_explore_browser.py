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
from explore_support import as_png, mnist_test, model_of_kind, trained_model_path

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
    """The page with its first screen (a test digit) cleared: these tests draw on an empty canvas."""
    pg.goto(server.url)
    pg.wait_for_selector("body[data-ready='1']")
    pg.click("#clear")


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
    assert page.locator("#forward-layers .layer-head .legend").count() == 11
    assert page.locator("#forward-layers details.weights .param-value").count() == 8      # kernel and bias of 4 layers
    assert page.locator("#layer-conv2d canvas.map").count() == 32
    assert page.locator("#layer-dense .layer-arrays > canvas.bars").count() == 1
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
    bars = page.locator("#layer-dense_1 .layer-arrays > canvas.bars")
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


# ------------------------------------------------------------------ a learner's tour
@pytest.fixture(scope="module")
def recipe_server():
    """The explorer serving a model trained by experiments.mnist's default recipe (cosine schedule, averaged
    weights, augmentation): the model a learner who followed the docs has. ``CONVNET_TOUR_MODEL`` names
    another such model file (the docs' screenshots: one trained longer than this test's 500 images)."""
    path = os.environ.get("CONVNET_TOUR_MODEL") or model_of_kind("default")
    explorer = Explorer(load_model_for_inference(path), model_path=str(path))
    s = srv.serve_in_thread(explorer)
    yield s
    s.shutdown()
    s.server_close()
    explorer.close()


SIZES = {"desktop": (1280, 800), "phone": (390, 844), "wide": (1920, 1080)}


def _no_wider_than_the_window(pg, where):
    over = pg.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
    assert over <= 0, f"{where}: the page is {over} px wider than the window"


def _in_view(pg, selector):
    return pg.evaluate("""(sel) => { const r = document.querySelector(sel).getBoundingClientRect();
        return r.top >= 0 && r.bottom <= window.innerHeight && r.left >= 0 && r.right <= window.innerWidth; }""", selector)


@pytest.mark.parametrize("size", ["desktop", "phone", "wide"])
def test_a_learners_tour(browser, recipe_server, size, tmp_path):
    """Draw, every tab, a training step previewed and applied, live training started and stopped, the code
    beside the backward pass: no console error and no HTTP error status anywhere on the way."""
    width, height = SIZES[size]
    context = browser.new_context(viewport={"width": width, "height": height})
    pg = context.new_page()
    pg.set_default_timeout(TIMEOUT)
    problems = []
    pg.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    pg.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    pg.on("response", lambda r: problems.append(f"HTTP {r.status} {r.url}") if r.status >= 400 else None)
    try:
        pg.goto(recipe_server.url)
        pg.wait_for_selector("body[data-ready='1']")
        pg.wait_for_function("document.body.dataset.busy === '0'")
        # the first screen: a test digit predicted, the architecture, the lessons
        assert pg.locator("#prediction").text_content() != "–"
        assert "MNIST test digit 0" in pg.locator("#input-source").text_content()
        assert pg.locator("#arch button.block").count() == 10
        assert pg.locator("#lessons button").count() == 7
        _no_wider_than_the_window(pg, "first screen")
        if size == "desktop":
            _save_screenshot(pg, tmp_path, "explorer_first_screen.png")
        # two lessons of the guided path: one opens a unit, the next goes to the backward view
        pg.click("#lessons button[data-lesson='1']")
        pg.wait_for_selector("#unit-formula")
        assert "receptive field" in pg.locator("#lesson-text").text_content()
        pg.click("#lessons button[data-lesson='2']")
        pg.wait_for_selector("#grad-conv2d .gate")
        assert pg.locator("#tab-backward").is_visible()
        pg.click("[data-tab=forward]")
        # draw: the first touch is a dot, then a stroke; the prediction stays in view while drawing
        pg.click("#clear")
        pg.evaluate("document.querySelector('#draw-panel').scrollIntoView({block: 'start'})")
        _draw_one(pg)
        pg.wait_for_function("document.body.dataset.busy === '0'")
        assert "your drawing" in pg.locator("#input-source").text_content()
        assert pg.locator("#prediction").text_content() in list("0123456789")
        assert _in_view(pg, "#draw") and _in_view(pg, "#prediction"), "the prediction is out of view while drawing"
        if size == "phone":
            _save_screenshot(pg, tmp_path, "explorer_phone.png")
        # forward: channel numbers, a unit with its receptive field beside it, below the maps on a phone
        assert pg.locator("#layer-conv2d .maps figcaption").count() == 32
        assert pg.locator("#layer-conv2d details.weights .param-value").count() == 2
        assert "Conv2D.call" in pg.locator("#layer-conv2d details.code summary").text_content()
        assert "z[i,j,f] = b[f]" in pg.locator("#layer-conv2d .formula").text_content()
        pg.locator("#layer-conv2d canvas.map").nth(3).click(position={"x": 20, "y": 20})
        pg.wait_for_selector("#unit-formula")
        assert pg.locator("#unit-rf").is_visible()
        if size == "phone":
            unit_top = pg.evaluate("document.querySelector('#unit').getBoundingClientRect().top")
            maps_bottom = pg.evaluate("document.querySelector('#forward-layers').getBoundingClientRect().bottom")
            assert unit_top >= maps_bottom, "on a narrow screen the unit panel goes below the maps"
        _no_wider_than_the_window(pg, "forward tab")
        # the architecture strip jumps to a layer
        pg.click("#arch button[data-layer='3']")
        pg.wait_for_function("Math.abs(document.querySelector('#layer-conv2d_1').getBoundingClientRect().top) < 5")
        # backward: dL/dz beside dL/d(output), the ReLU gate, the code of layers.py with its lines highlighted
        pg.click("[data-tab=backward]")
        pg.wait_for_selector("#grad-conv2d pre.source")
        gate = pg.locator("#grad-conv2d .gate").first.text_content()
        assert "0 a non-zero dL/dz" in gate, gate
        conv = pg.locator("#grad-conv2d")
        assert "convnet/layers.py, lines" in conv.text_content()
        assert "Conv2D.backprop" in conv.text_content() and "ReLUFunction.backward" in conv.text_content()
        highlighted = conv.locator("pre.source .line.hl").all_text_contents()
        assert any('self.grads["kernel"]' in t for t in highlighted), highlighted
        assert "Only the winners get a gradient" in pg.locator("#grad-max_pooling2d").text_content()
        # a kernel's gradient under the mouse shows the weight too
        pg.locator("#grad-conv2d .param-grad canvas.mosaic").first.hover(position={"x": 3, "y": 3})
        assert pg.locator("#tooltip").is_visible()
        tip = pg.locator("#tooltip").text_content()
        assert tip.startswith("conv2d dL/dkernel[0, 0, 0, 0]") and ";  kernel = " in tip, tip
        if size == "desktop":
            conv.scroll_into_view_if_needed()
            _save_screenshot(pg, tmp_path, "explorer_backward_code.png", conv)
        pg.click("#gradcheck-run")
        pg.wait_for_selector("#gradcheck-table")
        assert "27 entries sampled in 9 arrays" in pg.locator("#gradcheck-summary").text_content()
        assert pg.locator("#gradcheck-table td.bad").count() == 0
        _no_wider_than_the_window(pg, "backward tab")
        # one training step: the rate the default recipe's model moves with, previewed, applied, the loss falls
        pg.click("[data-tab=step]")
        assert float(pg.locator("#step-lr").input_value()) == pytest.approx(1e-3)
        assert "CosineDecay" in pg.locator("#step-lr-source").text_content()
        pg.click("#label-buttons button[data-class='1']")
        pg.click("#step-preview")
        pg.wait_for_selector("#step-table")
        assert "learning rate 0.001" in pg.locator("#step-result .formula").text_content()
        pg.click("#step-apply")
        pg.wait_for_selector("#step-applied")
        applied = pg.locator("#step-applied").text_content()         # "... loss for label 1 A -> B; ..."
        applied = applied.replace("\u2011", "-")                     # the page's exponents: a non-breaking hyphen
        before, after = (float(v) for v in applied.split("loss for label 1 ")[1].split(";")[0].split(" -> "))
        assert after < before, applied
        _no_wider_than_the_window(pg, "training-step tab")
        # live training, started and stopped
        pg.click("[data-tab=train]")
        pg.fill("#train-images", "60000")
        pg.click("#train-start")
        pg.wait_for_function("document.querySelector('#train-state').dataset.state === 'running'")
        pg.click("#train-stop")
        pg.wait_for_function("['stopped', 'finished'].includes(document.querySelector('#train-state').dataset.state)")
        _no_wider_than_the_window(pg, "live-training tab")
        pg.click("[data-tab=mnist]")
        pg.wait_for_selector("#mnist-grid .thumb")
        _no_wider_than_the_window(pg, "MNIST tab")
        pg.wait_for_function("document.body.dataset.busy === '0'")
    finally:
        context.close()
    assert not problems, problems


def test_the_first_screen_without_mnist_says_so_without_an_error(browser, monkeypatch):
    import convnet.datasets

    model = load_model_for_inference(model_of_kind("default"))        # trained before MNIST goes away

    def offline(*args, **kwargs):
        raise OSError("no network and no cache")
    monkeypatch.setattr(convnet.datasets, "load_mnist", offline)
    explorer = Explorer(model, model_path="default recipe")
    s = srv.serve_in_thread(explorer)
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    pg = context.new_page()
    problems = []
    pg.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    pg.on("response", lambda r: problems.append(f"HTTP {r.status} {r.url}") if r.status >= 400 else None)
    try:
        pg.goto(s.url)
        pg.wait_for_selector("body[data-ready='1']")
        assert "No MNIST test digit to start with" in pg.locator("#input-source").text_content()
        assert pg.locator("#error").is_hidden() and pg.locator("#arch button.block").count() == 10
        _draw_zero(pg)                             # drawing works as ever
        pg.wait_for_function("document.body.dataset.busy === '0'")
        assert pg.locator("#prediction").text_content() in list("0123456789")
    finally:
        context.close()
        s.shutdown()
        s.server_close()
        explorer.close()
    assert not problems, problems
