"""The studio in a real browser: headless Chromium (the system's package) driven through chromedriver.

A person's path through the page: upload a line art, choose "colours with weights", make the
palette red, colour, wait for the three results; then blue. The images the browser shows must
be at the input's size and coloured, the red run redder than the blue one, and every layer
downloadable. And painting local hints: a red dot clicked inside one closed shape makes it
red in every result, then blue; strokes, undo, clear, the eyedropper, a hint layer uploaded.
No browser is ever downloaded: without /usr/bin/chromium (Debian's `chromium`
and `chromium-driver`) the test is skipped, unless COLORIZATION_REQUIRE_BROWSER=1 (set by
`.ci/run`), where a missing browser fails it.
"""

from __future__ import annotations

import base64
import os
import shutil
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import pytest

from colorization.studio import StudioConfig, create_app
from tests.registry_fixtures import save_hint_following
from tests.unit.test_colorize import drawing, painting, save
from tests.unit.test_evaluate import save_model_dir
from tests.unit.test_studio_app import boxes, inside, save_local_hint_models

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
# Chromium on a closed network: without the background-networking flags it hangs on start-up.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,1400",
]
WIDTH, HEIGHT = 300, 200  # not square, not the model's size: results must come back at this size
METHODS = ("cnn", "cgan", "cgan_auto")
WAIT_S = 180  # the whole colouring of one picture, on a loaded 2-core machine


def browser_missing() -> str | None:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        return f"{' and '.join(missing)} not found: apt-get install chromium chromium-driver"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed: make setup"
    return None


@contextmanager
def serve_studio(models: Path) -> Iterator[str]:
    """The studio app served by uvicorn on a socket bound to 127.0.0.1:0 (no port race)."""
    import uvicorn

    app = create_app(StudioConfig(models, None, "cpu"))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    ready = threading.Event()
    while thread.is_alive() and not server.started:
        ready.wait(0.05)
    assert server.started, "the studio did not start"
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


@pytest.fixture(scope="module")
def studio_url(tmp_path_factory):
    models = tmp_path_factory.mktemp("models")
    save_hint_following(models / "cnn", "cnn")
    save_hint_following(models / "cgan", "cgan")
    save_model_dir(models / "hint", "hint")
    with serve_studio(models) as url:
        yield url


@pytest.fixture(scope="module")
def local_studio_url(tmp_path_factory):
    """The studio with a CNN and a c-GAN that take local hints (dots and strokes)."""
    with serve_studio(save_local_hint_models(tmp_path_factory.mktemp("local-models"))) as url:
        yield url


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    reason = browser_missing()
    if reason:
        if os.environ.get("COLORIZATION_REQUIRE_BROWSER") == "1":
            pytest.fail(f"COLORIZATION_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    log = tmp_path_factory.mktemp("chromedriver") / "chromedriver.log"
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER, log_output=str(log)))
    try:
        yield driver
    finally:
        driver.quit()


def decode_data_url(url: str) -> np.ndarray:
    assert url.startswith("data:image/png;base64,"), url[:40]
    data = np.frombuffer(base64.b64decode(url.split(",", 1)[1]), np.uint8)
    return cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def set_palette(driver, colour: str) -> None:
    """One row in 'colours with weights': `colour`, weight 1 (the picker's value set as a pick does)."""
    from selenium.webdriver.common.by import By

    driver.find_element(By.CSS_SELECTOR, "input[name=hint][value=palette]").click()
    assert driver.find_element(By.ID, "panel-palette").is_displayed()
    for remove in driver.find_elements(By.CSS_SELECTOR, ".colour-row button"):
        remove.click()
    driver.find_element(By.ID, "add-colour").click()
    (row,) = driver.find_elements(By.CSS_SELECTOR, ".colour-row")
    picker = row.find_element(By.CSS_SELECTOR, "input.colour")
    driver.execute_script(
        "arguments[0].value = arguments[1]; arguments[0].dispatchEvent(new Event('input'));", picker, colour
    )
    weight = row.find_element(By.CSS_SELECTOR, "input.weight")
    weight.clear()
    weight.send_keys("1")


def colour_and_wait(driver) -> dict[str, dict]:
    """Click 'Colour it' and wait for the three results; {method: {image, shown size, downloads}}."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    previous = driver.find_elements(By.CSS_SELECTOR, "#results .result")
    driver.find_element(By.ID, "colorize").click()
    wait = WebDriverWait(driver, WAIT_S)
    for box in previous:  # the page replaces its results: wait until the old ones are gone
        wait.until(ec.staleness_of(box))
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results .result")) == len(METHODS))
    # Every image decoded by the browser (naturalWidth > 0), not only inserted.
    wait.until(
        lambda d: d.execute_script(
            "return [...document.querySelectorAll('#results img.composite')]"
            ".every((i) => i.complete && i.naturalWidth > 0)"
        )
    )
    assert driver.find_element(By.ID, "message").text == "done"
    found = {}
    for box in driver.find_elements(By.CSS_SELECTOR, "#results .result"):
        method = box.get_attribute("data-method")
        assert not box.find_elements(By.CSS_SELECTOR, ".error"), box.text
        img = box.find_element(By.CSS_SELECTOR, "img.composite")
        shown = driver.execute_script("return [arguments[0].naturalWidth, arguments[0].naturalHeight]", img)
        links = {
            a.get_attribute("download"): a.get_attribute("href")
            for a in box.find_elements(By.CSS_SELECTOR, ".downloads a")
        }
        found[method] = {"image": decode_data_url(img.get_attribute("src")), "shown": shown, "links": links}
    return found


def redness(rgb: np.ndarray) -> float:
    return float((rgb[..., 0].astype(np.float64) - rgb[..., 2]).mean())


@pytest.mark.slow
def test_a_person_colours_a_line_art_red_then_blue_in_chromium(browser, studio_url, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    picture = save(tmp_path / "sketch.png", drawing(HEIGHT, WIDTH))
    browser.get(studio_url)
    # The model lists arrive from /api/models: the page is live, not only loaded.
    WebDriverWait(browser, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#cgan-model option"))
    browser.find_element(By.ID, "image").send_keys(str(picture))

    runs = {}
    for name, colour in (("red", "#e02020"), ("blue", "#2030e0")):
        set_palette(browser, colour)
        results = colour_and_wait(browser)
        assert sorted(results) == sorted(METHODS)
        for method, result in results.items():
            image = result["image"]
            assert image.shape == (HEIGHT, WIDTH, 3), method
            assert result["shown"] == [WIDTH, HEIGHT], method
            assert set(result["links"]) == {
                f"sketch.{method}.png",
                f"sketch.{method}.colour.png",
                "sketch.lines.png",
            }
            for href in result["links"].values():
                decode_data_url(href)  # each download is a PNG
        shot = tmp_path / f"studio-{name}.png"
        assert browser.save_screenshot(str(shot))
        screenshot = cv2.imread(str(shot))
        assert screenshot is not None and screenshot.shape[1] >= 1000
        runs[name] = results

    # The CNN and the c-GAN are coloured by the palette the page sent, the red run redder;
    # the automatic hint ignores the palette (its untrained hint net predicts near-grey).
    for method in ("cnn", "cgan"):
        red, blue = (redness(runs[name][method]["image"]) for name in ("red", "blue"))
        assert red > 30 and blue < -30 and red > blue + 60, (method, red, blue)
    np.testing.assert_array_equal(runs["red"]["cgan_auto"]["image"], runs["blue"]["cgan_auto"]["image"])


# ---------------------------------------------------------------- painting local hints (issue 25)


def offsets(driver, element, points: list[tuple[float, float]]) -> list[tuple[int, int]]:
    """Selenium's offsets for `points` given in the picture's own pixels: from the centre of the
    element's visible part, so it is scrolled to be seen whole first."""
    shown, natural = driver.execute_script(
        "const e = arguments[0]; e.scrollIntoView({block: 'center'});"
        "const r = e.getBoundingClientRect();"
        "return [[r.width, r.height], [e.naturalWidth || e.width, e.naturalHeight || e.height]];",
        element,
    )
    return [
        (round(x * shown[0] / natural[0] - shown[0] / 2), round(y * shown[1] / natural[1] - shown[1] / 2))
        for x, y in points
    ]


def click_at(driver, element, x: float, y: float) -> None:
    """A click on `element` at (x, y) of the picture it shows, in the picture's own pixels."""
    from selenium.webdriver.common.action_chains import ActionChains

    ((dx, dy),) = offsets(driver, element, [(x, y)])
    ActionChains(driver).move_to_element_with_offset(element, dx, dy).click().perform()


def drag(driver, canvas, start: tuple[int, int], end: tuple[int, int], steps: int = 6) -> None:
    """Press at `start`, move to `end` in `steps`, release (in the picture's pixels)."""
    from selenium.webdriver.common.action_chains import ActionChains

    path = [tuple(a + (b - a) * i / steps for a, b in zip(start, end, strict=True)) for i in range(steps + 1)]
    (first, *rest) = offsets(driver, canvas, path)
    actions = ActionChains(driver).move_to_element_with_offset(canvas, *first).click_and_hold()
    for dx, dy in rest:
        actions.move_to_element_with_offset(canvas, dx, dy)
    actions.release().perform()


def opaque_at(driver, x: int, y: int) -> bool:
    script = "return $('hint-canvas').getContext('2d').getImageData(arguments[0], arguments[1], 1, 1)"
    return driver.execute_script(script + ".data[3] >= 128", x, y)


def set_paint_colour(driver, colour: str) -> None:
    from selenium.webdriver.common.by import By

    picker = driver.find_element(By.ID, "paint-colour")
    driver.execute_script(
        "arguments[0].value = arguments[1]; arguments[0].dispatchEvent(new Event('input'));", picker, colour
    )


def painted_pixels(driver) -> int:
    """The hint layer's opaque pixels, read from the page's canvas."""
    return driver.execute_script(
        "const c = document.getElementById('hint-canvas');"
        "const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        "let n = 0; for (let i = 3; i < d.length; i += 4) n += d[i] >= 128; return n;"
    )


def region_colour(results: dict[str, dict], box: int) -> dict[str, np.ndarray]:
    return {method: inside(result["image"].astype(np.float64), box) for method, result in results.items()}


@pytest.mark.slow
def test_a_person_dots_a_region_red_then_blue_in_chromium(browser, local_studio_url, tmp_path):
    """Click a red dot inside one closed shape, colour: the shape comes out red in every result;
    the eyedropper picks that red back from a result; then a stray dot undone, the layer cleared,
    a blue dot with a palette as the global hint: the shape comes out blue."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    picture = save(tmp_path / "boxes.png", boxes())
    browser.get(local_studio_url)
    WebDriverWait(browser, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#cgan-model option"))
    browser.find_element(By.ID, "image").send_keys(str(picture))
    WebDriverWait(browser, 30).until(lambda d: d.execute_script("return $('hint-canvas').width") == 256)
    browser.execute_script("$('preview').style.width = '512px'")  # shown at twice its resolution
    canvas = browser.find_element(By.ID, "hint-canvas")
    assert browser.execute_script("return arguments[0].getBoundingClientRect().width", canvas) == 512

    set_paint_colour(browser, "#ff0000")
    click_at(browser, canvas, 68, 68)  # inside the top-left box (tests/unit/test_studio_app.py's BOXES)
    assert painted_pixels(browser) > 0
    layer = cv2.imdecode(
        np.frombuffer(base64.b64decode(browser.find_element(By.ID, "download-hints").get_attribute("href")
                                       .split(",", 1)[1]), np.uint8), cv2.IMREAD_UNCHANGED)  # fmt: skip
    assert layer.shape == (256, 256, 4) and tuple(layer[68, 68]) == (0, 0, 255, 255)  # BGRA: opaque red
    assert layer[..., 3].sum() == layer[60:77, 60:77, 3].sum()  # the dot, and only there
    assert 2 <= (layer[68, :, 3] >= 128).sum() <= 5  # the 8 px brush on the screen, 4 px in the picture
    red = colour_and_wait(browser)
    assert browser.save_screenshot(str(tmp_path / "studio-dots.png"))
    for method, (r, g, b) in region_colour(red, 0).items():
        assert r > g + 120 and r > b + 120, (method, r, g, b)

    set_paint_colour(browser, "#00ff00")
    browser.find_element(By.ID, "eyedropper").click()
    click_at(browser, browser.find_element(By.CSS_SELECTOR, "[data-method=cgan] img.composite"), 68, 68)
    picked = browser.find_element(By.ID, "paint-colour").get_attribute("value")
    r, g, b = (int(picked[i : i + 2], 16) for i in (1, 3, 5))
    assert r > g + 100 and r > b + 100, picked

    set_paint_colour(browser, "#0000ff")
    one_dot = painted_pixels(browser)
    click_at(browser, canvas, 188, 68)  # a stray dot in another box, undone
    assert painted_pixels(browser) > one_dot
    browser.find_element(By.ID, "undo").click()
    assert painted_pixels(browser) == one_dot
    browser.find_element(By.ID, "clear").click()
    assert painted_pixels(browser) == 0
    wrong = tmp_path / "small.hints.png"  # a layer of another size is refused, nothing painted
    cv2.imwrite(str(wrong), np.zeros((100, 100, 4), np.uint8))
    browser.find_element(By.ID, "hints-file").send_keys(str(wrong))
    WebDriverWait(browser, 30).until(lambda d: "100x100" in d.find_element(By.ID, "message").text)
    assert painted_pixels(browser) == 0
    points = tmp_path / "points.json"  # JSON points, as colorize --hints reads them: drawn, then undone
    points.write_text('[{"x": 188, "y": 188, "color": "#00ff00", "radius": 5}]')
    browser.find_element(By.ID, "hints-file").send_keys(str(points))
    WebDriverWait(browser, 30).until(lambda d: painted_pixels(d) > 0)
    browser.find_element(By.ID, "undo").click()
    assert painted_pixels(browser) == 0
    drag(browser, canvas, (40, 200), (100, 200))  # a stroke across the bottom-left box, undone
    stroke = painted_pixels(browser)
    assert stroke > 60 * 3 and all(opaque_at(browser, x, 200) for x in (45, 70, 95)), stroke
    browser.find_element(By.ID, "undo").click()
    assert painted_pixels(browser) == 0
    click_at(browser, canvas, 68, 68)
    set_palette(browser, "#808080")  # the dots go with the global hint chosen
    blue = colour_and_wait(browser)
    for method, (r, g, b) in region_colour(blue, 0).items():
        assert b > r + 120 and b > g + 120, (method, r, g, b)

    # The eyedropper on a reference picture: the colour of the pixel clicked, exactly.
    browser.find_element(By.CSS_SELECTOR, "input[name=hint][value=reference]").click()
    browser.find_element(By.ID, "reference").send_keys(str(save(tmp_path / "ref.png", painting(90, 120))))
    reference = browser.find_element(By.ID, "reference-preview")
    WebDriverWait(browser, 30).until(
        lambda d: d.execute_script("return arguments[0].naturalWidth", reference)
    )
    browser.find_element(By.ID, "eyedropper").click()
    click_at(browser, reference, 60, 45)  # the red disc of tests/unit/test_colorize.py's painting
    assert browser.find_element(By.ID, "paint-colour").get_attribute("value") == "#e63c32"
