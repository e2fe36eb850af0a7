"""`colorization studio`: the page, POST /api/colorize and its refusals, through FastAPI's TestClient."""

from __future__ import annotations

import base64
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from colorization.colorize import LINE_LEVEL
from colorization.models import build_model, model_config
from colorization.models.specs import SPECS
from colorization.studio import StudioConfig, create_app
from tests.unit.test_colorize import drawing, painting
from tests.unit.test_evaluate import IMAGE_SIZE, save_model_dir


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    """cnn and hint as the tests elsewhere build them; a c-GAN that follows the hint's colour."""
    root = tmp_path_factory.mktemp("models")
    save_model_dir(root / "cnn", "cnn")
    save_model_dir(root / "hint", "hint")
    arch = {"base_channels": 4, "depth": 3, "hint_dim": 8, "hint_planes": True}
    torch.manual_seed(0)
    (root / "cgan").mkdir()
    torch.save(build_model("cgan", arch).state_dict(), root / "cgan/model.pt")
    (root / "cgan/config.json").write_text(json.dumps(model_config("cgan", arch, IMAGE_SIZE)))
    return root


def client_for(models: Path, **config) -> TestClient:
    return TestClient(create_app(StudioConfig(models, None, "cpu", **config)))


@pytest.fixture(scope="module")
def client(models) -> TestClient:
    return client_for(models)


def png(rgb: np.ndarray) -> bytes:
    return cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes()


def decode(url: str) -> np.ndarray:
    assert url.startswith("data:image/png;base64,")
    image = cv2.imdecode(
        np.frombuffer(base64.b64decode(url.split(",", 1)[1]), np.uint8), cv2.IMREAD_UNCHANGED
    )
    return cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA if image.shape[2] == 4 else cv2.COLOR_BGR2RGB)


def colorize(client: TestClient, image: bytes, data: dict | None = None, files: dict | None = None):
    return client.post("/api/colorize", files={"image": ("in.png", image, "image/png"), **(files or {})},
                       data=data or {})  # fmt: skip


def refused(answer, status: int, fragment: str) -> None:
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert list(body) == ["error"] and fragment in body["error"], body
    assert "\n" not in body["error"] and "Traceback" not in body["error"]


def test_the_page_and_the_api_docs_are_served(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "api/colorize" in page.text and 'type="color"' in page.text
    assert client.get("/docs").status_code == 200
    schema = client.get("/openapi.json").json()
    form = schema["paths"]["/api/colorize"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    form = schema["components"]["schemas"][form["$ref"].rsplit("/", 1)[1]]  # FastAPI's UploadFile / Form
    assert form["required"] == ["image"] and {"hint", "palette", "palette_file", "reference", "hints"} <= set(
        form["properties"]
    )
    # One optional model override per kind, named from the specs (no hand-written list).
    assert {f"{kind}_model" for kind in SPECS} <= set(form["properties"])


def test_three_results_with_the_palette_each_used_and_the_time(client):
    answer = colorize(client, png(drawing(60, 80)), {"hint": "palette", "palette": "#ff0000:3,#ffffff"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["width"], body["height"], body["input"]) == (80, 60, "line art")
    assert [r["method"] for r in body["results"]] == ["cnn", "cgan", "cgan_auto"]
    for result in body["results"]:
        assert "error" not in result, result
        assert result["seconds"] >= 0
        assert decode(result["composite"]).shape == decode(result["colour"]).shape == (60, 80, 3)
    cnn, cgan, auto = body["results"]
    assert cnn["hint"] == cgan["hint"] == "palette" and auto["hint"] == "auto"
    assert cgan["palette"] == [{"colour": "#f01010", "weight": 0.75}, {"colour": "#f0f0f0", "weight": 0.25}]
    weights = [c["weight"] for c in auto["palette"]]  # the predicted hint's heaviest bins, at most 12
    assert 1 <= len(weights) <= 12 and weights == sorted(weights, reverse=True) and min(weights) > 0
    assert decode(body["lines"]).shape == (60, 80, 4)


def test_a_large_picture_comes_back_at_its_size_with_its_lines(client):
    image = np.full((1400, 2000, 3), 255, np.uint8)
    cv2.rectangle(image, (300, 200), (1700, 1200), (20, 20, 20), 3, cv2.LINE_AA)
    cv2.circle(image, (1000, 700), 400, (0, 0, 0), 2, cv2.LINE_AA)
    answer = colorize(client, png(image), {"hint": "palette", "palette": "#33aa55", "methods": "cgan"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    composite = decode(body["results"][0]["composite"])
    assert composite.shape == (1400, 2000, 3)
    line = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) <= LINE_LEVEL
    assert line.sum() > 10_000 and (composite[line] == image[line]).all()
    lines = decode(body["lines"])
    assert (lines[..., 3][line] == 255).all() and (lines[..., 3][~line].max() < 255)


def redness(answer) -> float:
    assert answer.status_code == 200, answer.text
    rgb = decode(answer.json()["results"][0]["composite"]).astype(np.float64)
    return float((rgb[..., 0] - rgb[..., 2]).mean())


def test_each_kind_of_hint(client):
    image = png(drawing(64, 64))
    only_cgan = {"methods": "cgan"}
    red_file = ("red.gpl", b"GIMP Palette\n230 30 30\tweight 2\n", "text/plain")
    blue_file = ("blue.json", json.dumps({"#2030e0": 1}).encode(), "application/json")
    red = redness(colorize(client, image, {**only_cgan, "hint": "palette_file"}, {"palette_file": red_file}))
    blue = redness(
        colorize(client, image, {**only_cgan, "hint": "palette_file"}, {"palette_file": blue_file})
    )
    assert red > blue + 50, (red, blue)
    reference = ("ref.png", png(painting(40, 40)), "image/png")
    answer = colorize(client, image, {**only_cgan, "hint": "reference"}, {"reference": reference})
    assert answer.status_code == 200 and answer.json()["results"][0]["hint"] == "reference"
    answer = colorize(client, png(painting(50, 70)), {"methods": "cgan"})  # automatic, colour picture
    body = answer.json()
    assert answer.status_code == 200 and body["input"] == "colour picture"
    assert body["results"][0]["hint"] == "auto"


def test_each_model_is_loaded_once(models, monkeypatch):
    import colorization.studio.app as studio_app

    calls = []
    real = studio_app.load_model
    monkeypatch.setattr(studio_app, "load_model", lambda *a: calls.append(a[0]) or real(*a))
    client = client_for(models)
    for _ in range(2):
        assert colorize(client, png(drawing(30, 30))).status_code == 200
    assert sorted(calls) == sorted(str(models / k) for k in ("cnn", "cgan", "hint"))


def test_bad_input_is_a_one_line_4xx(client, models, tmp_path, monkeypatch):
    good = png(drawing(30, 30))
    refused(colorize(client, b"hello, not an image"), 422, "not a JPEG, PNG or WebP image")
    bomb = bytearray(png(drawing(8, 8)))  # a PNG whose header declares 30000 x 30000 pixels
    bomb[16:24] = (30000).to_bytes(4, "big") * 2
    refused(colorize(client, bytes(bomb)), 413, "too large: 30000x30000")
    refused(colorize(client, good, {"hint": "palette", "palette": "#12345"}), 422, "palette entry")
    bad_gpl = ("p.gpl", b"not a palette", "text/plain")
    refused(
        colorize(client, good, {"hint": "palette_file"}, {"palette_file": bad_gpl}), 422, "not a GIMP palette"
    )
    refused(colorize(client, good, {"hint": "sparkles"}), 422, "hint must be one of")
    refused(
        colorize(client, good, {"cgan_model": str(tmp_path / "none"), "methods": "cgan"}),
        424,
        "model not found",
    )
    refused(
        client.post("/api/colorize", content=b"{}", headers={"content-type": "application/json"}),
        415,
        "multipart",
    )
    refused(client.post("/api/colorize", files={"other": ("x", b"1")}), 422, "image: Field required")
    refused(colorize(client, b""), 422, "no image uploaded")
    refused(
        client.post(
            "/api/colorize", content=b"--x\r\nnot a part", headers={"content-type": "multipart/form-data"}
        ),
        400,
        "boundary",
    )
    small = client_for(models, max_upload_bytes=10_000)
    refused(
        colorize(small, png(np.random.default_rng(0).integers(0, 255, (80, 80, 3), np.uint8))),
        413,
        "upload too large",
    )
    chunked = iter([b"--x\r\n", b"0" * 6_000, b"0" * 6_000])  # no Content-Length: refused as it arrives
    refused(
        small.post(
            "/api/colorize", content=chunked, headers={"content-type": "multipart/form-data; boundary=x"}
        ),
        413,
        "upload too large",
    )
    # A registry that is not there: the page's list says so, and colouring from it is refused.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'no-registry.db'}")
    choices = client.get("/api/models").json()
    assert choices["folder"]["kinds"] == {"cnn": True, "cgan": True, "hint": True}
    assert "no MLflow registry" in choices["registry"]["error"]
    answer = colorize(client, good, {"cgan_model": "models:/lineart-cgan@champion", "methods": "cgan"})
    refused(answer, 424, "no MLflow registry")
    assert not (tmp_path / "no-registry.db").exists()


def test_the_command_binds_loopback_by_default(models, monkeypatch):
    import uvicorn
    from typer.testing import CliRunner

    from colorization.cli import app

    seen = {}
    monkeypatch.setattr(
        uvicorn, "run", lambda app, host, port, **kw: seen.update(host=host, port=port, app=app)
    )
    result = CliRunner().invoke(app, ["studio", "--models", str(models), "--device", "cpu", "--port", "8765"])
    assert result.exit_code == 0, result.output
    assert seen["host"] == "127.0.0.1" and seen["port"] == 8765
    assert TestClient(seen["app"]).get("/").status_code == 200
    admission = seen["app"].state.studio.admission
    assert admission.concurrency >= 1 and admission.queue == 2 * admission.concurrency  # the defaults
    args = ["studio", "--models", str(models), "--device", "cpu", "--concurrency", "3", "--queue", "1"]
    assert CliRunner().invoke(app, args).exit_code == 0
    admission = seen["app"].state.studio.admission
    assert (admission.concurrency, admission.queue) == (3, 1)


def test_the_page_script_parses(tmp_path):
    """No browser here (see issue 13 for the headless-browser test): at least the script is valid JS."""
    import re
    import shutil
    import subprocess
    from importlib import resources

    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    page = resources.files("colorization.studio").joinpath("index.html").read_text("utf-8")
    script = tmp_path / "page.js"
    script.write_text(re.search(r"<script>(.*)</script>", page, re.S).group(1))
    result = subprocess.run([node, "--check", str(script)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_a_missing_model_fails_its_result_only(models, tmp_path):
    client = client_for(models)
    answer = colorize(client, png(drawing(30, 30)), {"cnn_model": str(tmp_path / "absent")})
    assert answer.status_code == 200, answer.text
    cnn, cgan, auto = answer.json()["results"]
    assert "model not found" in cnn["error"] and "composite" not in cnn
    assert "error" not in cgan and "error" not in auto


def test_a_registry_server_that_is_down_is_a_one_line_answer(client, monkeypatch):
    from tests.servers import refused_port

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # as `colorization studio` sets it
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    with refused_port() as port:  # nothing listens there, and nothing can start to
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
        choices = client.get("/api/models").json()
        answer = colorize(
            client, png(drawing(30, 30)), {"cgan_model": "models:/lineart-cgan@champion", "methods": "cgan"}
        )
    assert "cannot be read" in choices["registry"]["error"] and "\n" not in choices["registry"]["error"]
    assert answer.status_code == 424 and list(answer.json()) == ["error"], answer.text
    error = answer.json()["error"]
    assert "MLflow registry at http://127.0.0.1" in error and "cannot be read" in error and "\n" not in error


def test_a_colour_picture_gets_the_line_art_recipe_of_the_model_it_is_coloured_with(tmp_path, monkeypatch):
    from colorization.colorize import fit_input
    from colorization.config import DEFAULT_RECIPE, load_params
    from colorization.lineart import extract_lineart
    from tests.unit.test_colorize import PARAMS, network_inputs

    recipe = DEFAULT_RECIPE.model_copy(update={"extractor": "xdog"})
    save_model_dir(tmp_path / "cnn", "cnn")
    config = json.loads((tmp_path / "cnn/config.json").read_text())
    (tmp_path / "cnn/config.json").write_text(json.dumps(config | {"lineart": recipe.model_dump()}))
    canny = load_params(PARAMS).lineart  # the studio's own params say Canny: the model's recipe wins
    client = TestClient(create_app(StudioConfig(tmp_path, canny, "cpu")))
    fed = network_inputs(monkeypatch)
    picture = painting(96, 128)
    answer = colorize(client, png(picture), {"methods": "cnn", "hint": "palette", "palette": "#00ff00"})
    assert answer.status_code == 200, answer.text
    np.testing.assert_array_equal(fed[0][0], fit_input(picture, IMAGE_SIZE, recipe).lineart)
    assert not np.array_equal(fed[0][0], fit_input(picture, IMAGE_SIZE, canny).lineart)
    np.testing.assert_array_equal(
        decode(answer.json()["lines"])[..., 3], 255 - extract_lineart(picture, recipe)
    )


def test_a_full_studio_answers_503_at_once_and_serves_again_once_free(models, monkeypatch):
    """One colouring at a time and one waiting: a third upload is turned away at once, with
    Retry-After and before its body is read; the waiting one is decoded only when its turn
    comes; once the colouring is let go, both are served, and so is the next."""
    import colorization.studio.app as studio_app

    client = client_for(models, concurrency=1, queue=1)
    studio = client.app.state.studio
    read, decoded, admitted = [], [], threading.Semaphore(0)
    colouring, release = threading.Event(), threading.Event()
    real_read, real_decode = studio_app.bounded_receive, studio_app.decode_rgb
    real_working, real_colour = studio.admission.working, studio.colour_one

    def counted_read(*args):
        read.append(1)
        return real_read(*args)

    monkeypatch.setattr(studio_app, "bounded_receive", counted_read)
    monkeypatch.setattr(studio_app, "decode_rgb", lambda *a, **k: decoded.append(1) or real_decode(*a, **k))
    monkeypatch.setattr(studio.admission, "working", lambda: admitted.release() or real_working())

    def held_colouring(*args):
        colouring.set()
        assert release.wait(60)
        return real_colour(*args)

    monkeypatch.setattr(studio, "colour_one", held_colouring)
    upload = png(drawing(30, 30))
    post = lambda: colorize(client, upload, {"methods": "cgan"})  # noqa: E731
    with ThreadPoolExecutor(3) as pool:
        try:
            first = pool.submit(post)
            assert colouring.wait(60)
            second = pool.submit(post)
            assert admitted.acquire(timeout=60) and admitted.acquire(timeout=60)  # both past admission
            third = pool.submit(post).result(timeout=30)  # queued instead of refused: times out
            refused(third, 503, "busy")
            assert int(third.headers["Retry-After"]) >= 1
            assert len(read) == 2  # the refused upload's body was never read
            assert len(decoded) == 1  # the first upload only: the waiting one not yet, the refused never
        finally:
            release.set()
        assert first.result(60).status_code == 200 and second.result(60).status_code == 200
    assert len(decoded) == 2 and colorize(client, upload, {"methods": "cgan"}).status_code == 200


# ---------------------------------------------------------------- local colour hints (issue 25)

LOCAL_ARCH = {  # as HINT_FOLLOWING (tests/registry_fixtures.py), taking local hints
    "cnn": {"base_channels": 4, "depth": 2, "hint_dim": 8, "hint_planes": True, "local_hints": True},
    "cgan": {"base_channels": 4, "depth": 3, "hint_dim": 8, "hint_planes": True, "local_hints": True},
}
BOXES = [(24, 24, 112, 112), (144, 24, 232, 112), (24, 144, 112, 232), (144, 144, 232, 232)]  # x0 y0 x1 y1


def save_local_hint_models(root: Path) -> Path:
    """models/{cnn,cgan} that take local hints (untrained), and the hint net."""
    for kind, arch in LOCAL_ARCH.items():
        torch.manual_seed(0)
        (root / kind).mkdir(parents=True)
        torch.save(build_model(kind, arch).eval().state_dict(), root / kind / "model.pt")
        (root / kind / "config.json").write_text(json.dumps(model_config(kind, arch, IMAGE_SIZE)))
    save_model_dir(root / "hint", "hint")
    return root


def boxes(size: int = 256) -> np.ndarray:
    """Line art with closed regions: four black rectangle outlines on white, RGB."""
    image = np.full((size, size, 3), 255, np.uint8)
    for x0, y0, x1, y1 in BOXES:
        cv2.rectangle(image, (x0, y0), (x1, y1), (0, 0, 0), 2)
    return image


def inside(rgb: np.ndarray, box: int) -> np.ndarray:
    """The mean colour of a rectangle's interior (clear of its outline)."""
    x0, y0, x1, y1 = BOXES[box]
    return rgb[y0 + 4 : y1 - 3, x0 + 4 : x1 - 3].reshape(-1, 3).mean(axis=0)


def dot_layer(size: int, x: int, y: int, colour: tuple[int, int, int], radius: int = 4) -> bytes:
    """A hint layer as the page paints it: an RGBA PNG, transparent but for one dot."""
    layer = np.zeros((size, size, 4), np.uint8)
    cv2.circle(layer, (x, y), radius, (*colour, 255), -1)
    return cv2.imencode(".png", cv2.cvtColor(layer, cv2.COLOR_RGBA2BGRA))[1].tobytes()


@pytest.fixture(scope="module")
def local_client(tmp_path_factory) -> TestClient:
    return client_for(save_local_hint_models(tmp_path_factory.mktemp("local-models")))


def test_a_dot_colours_its_closed_region_red_then_blue(local_client):
    image = png(boxes())
    grey = {"methods": "cnn,cgan", "hint": "palette", "palette": "#808080"}
    red = ("hints.png", dot_layer(256, 68, 68, (255, 0, 0)), "image/png")
    answer = colorize(local_client, image, grey, {"hints": red})
    assert answer.status_code == 200, answer.text
    for result in answer.json()["results"]:
        assert result["local_hints"] is True and "error" not in result, result
        composite = decode(result["composite"]).astype(np.float64)
        r, g, b = inside(composite, 0)
        assert r > g + 120 and r > b + 120, (result["method"], r, g, b)
    points = json.dumps([{"x": 68, "y": 68, "color": "#0000ff", "radius": 3}]).encode()  # JSON points too
    answer = colorize(local_client, image, grey, {"hints": ("hints.json", points, "application/json")})
    assert answer.status_code == 200, answer.text
    for result in answer.json()["results"]:
        r, g, b = inside(decode(result["composite"]).astype(np.float64), 0)
        assert b > r + 120 and b > g + 120, (result["method"], r, g, b)


def test_a_bad_hint_layer_or_a_model_without_local_hints_is_a_one_line_4xx(local_client, client):
    image = png(boxes())
    wrong = ("hints.png", dot_layer(128, 30, 30, (255, 0, 0)), "image/png")
    refused(colorize(local_client, image, {"methods": "cgan"}, {"hints": wrong}), 400, "128x128")
    rgb = ("hints.png", png(boxes()), "image/png")  # no alpha: not a layer
    refused(colorize(local_client, image, {"methods": "cgan"}, {"hints": rgb}), 400, "transparen")
    bad = ("p.json", b'[{"x": 3, "y": 4, "color": "red"}]', "application/json")
    refused(colorize(local_client, image, {"methods": "cgan"}, {"hints": bad}), 400, "not #rrggbb")
    red = ("hints.png", dot_layer(256, 68, 68, (255, 0, 0)), "image/png")
    answer = colorize(client, image, {"methods": "cgan"}, {"hints": red})  # models without local hints
    refused(answer, 422, "trained without local hints")
    answer = colorize(client, image, {"methods": "cgan"})  # the same model without hints: coloured
    assert answer.status_code == 200 and answer.json()["results"][0]["local_hints"] is False
