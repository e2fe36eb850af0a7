"""`colorization studio`: a local web page for colouring, and `POST /api/colorize` for scripts.

One FastAPI app: `/` serves the page (plain HTML and JS, shipped in this package), `/api/models`
lists the models it can use (a models/ folder, and the registry's versions with their aliases
when MLflow has them), `/api/colorize` colours one upload with the CNN, the c-GAN and the c-GAN
with the automatic hint, through the same path as `colorization colorize` (`colorize_images`).

Bad input is a 4xx JSON `{"error": "one line"}`, never a traceback. Uploads are read into
memory (the request body is refused past `max_upload_bytes`, before it is parsed) and nothing
is written to disk. Each model is loaded once and kept. At most `concurrency` uploads are
decoded and coloured at once and `queue` more wait (their bytes only); beyond that a request is
answered 503 with `Retry-After` before its body is read (colorization.admission).
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from dataclasses import dataclass, field
from email.message import Message
from importlib import resources
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from colorization.admission import Admission, Busy, default_concurrency
from colorization.colorize import (
    GENERATOR_KINDS,
    ColorizeError,
    HintSource,
    Layers,
    LoadedModel,
    colorize_images,
    input_limits,
    is_lineart,
    load_model,
    parse_palette,
)
from colorization.config import LineartParams, LineartRecipe
from colorization.histogram import bin_centers, color_histogram, heaviest_bins
from colorization.images import ImageRejected, check_file_size, decode_rgb, encode_png
from colorization.palette import PaletteError, hex_colour, palette_hint, parse_palette_bytes
from colorization.textsafe import escaped

log = logging.getLogger(__name__)

DEFAULT_MAX_UPLOAD_BYTES = 32 * 2**20
HINT_MODES = ("auto", "palette", "palette_file", "reference")
METHODS = {  # method -> (label, generator kind, whether it always takes the automatic hint)
    "cnn": ("CNN", "cnn", False),
    "cgan": ("c-GAN", "cgan", False),
    "cgan_auto": ("c-GAN, automatic hint", "cgan", True),
}


class StudioError(Exception):
    """A refused request: HTTP status and the one-line message the page shows."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = " ".join(message.split())


@dataclass
class StudioConfig:
    models_dir: Path
    # The user's params.yaml section (None: none at hand): upload limits, and the lines of a
    # model saved without its recipe (a model's own recipe decides its colour inputs' lines).
    lineart: LineartParams | None
    device: str = "cpu"
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    concurrency: int | None = None  # colourings at once; None: the cores
    queue: int | None = None  # admitted requests waiting for a colouring; None: 2 x concurrency


@dataclass
class ModelCache:
    """Each model loaded once: a folder is reloaded only when its weights file changes."""

    device: str
    fallback: LineartRecipe | None = None  # for a model saved without its line-art recipe
    loaded: dict[tuple, LoadedModel] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, spec: str, kinds: tuple[str, ...]) -> LoadedModel:
        weights = Path(spec) / "model.pt"
        stamp = weights.stat().st_mtime_ns if weights.is_file() else None
        key = (spec, stamp, kinds)
        with self.lock:
            if key not in self.loaded:
                self.loaded[key] = load_model(spec, self.device, kinds, self.fallback)
            return self.loaded[key]


# ---------------------------------------------------------------- multipart, in memory


@dataclass
class Part:
    data: bytes
    filename: str | None


def _header_params(value: str) -> Message:
    message = Message()
    message["content-type"] = value
    return message


def parse_multipart(body: bytes, content_type: str) -> dict[str, Part]:
    """multipart/form-data -> {field name: Part}. The last part of a repeated name wins."""
    header = _header_params(content_type)
    boundary = header.get_param("boundary")
    if header.get_content_type() != "multipart/form-data" or not isinstance(boundary, str) or not boundary:
        raise StudioError(415, "expected a multipart/form-data upload")
    parts: dict[str, Part] = {}
    sections = body.split(b"--" + boundary.encode("latin-1"))
    if len(sections) < 2 or not sections[-1].startswith(b"--"):
        raise StudioError(400, "the multipart upload is incomplete")
    for section in sections[1:-1]:
        head, sep, data = section.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        if not sep:
            raise StudioError(400, "a multipart part has no headers")
        disposition = next(
            (
                line.split(b":", 1)[1].decode("utf-8", "replace").strip()
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-disposition:")
            ),
            None,
        )
        if disposition is None:
            raise StudioError(400, "a multipart part has no Content-Disposition")
        params = _header_params(f"form-data; {disposition.partition(';')[2]}")
        name = params.get_param("name")
        filename = params.get_param("filename")
        if isinstance(name, str):
            parts[name] = Part(data.removesuffix(b"\r\n"), filename if isinstance(filename, str) else None)
    return parts


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) as soon as it passes `limit` bytes."""
    declared = request.headers.get("content-length")
    too_large = f"upload too large: over the studio's limit of {limit} bytes"
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise StudioError(413, too_large)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise StudioError(413, too_large)
        chunks.append(chunk)
    return b"".join(chunks)


# ---------------------------------------------------------------- the work


def decode_upload(part: Part | None, what: str, lineart: LineartParams | None) -> np.ndarray:
    if part is None or not part.data:
        raise StudioError(422, f"no {what} uploaded")
    name = escaped(part.filename or what)
    max_pixels, max_file_bytes = input_limits(lineart)
    try:
        check_file_size(len(part.data), max_file_bytes)
        return decode_rgb(part.data, max_pixels=max_pixels)
    except ImageRejected as err:
        status = 413 if "too large" in str(err) else 422
        raise StudioError(status, f"{name}: {err}") from None


def field_text(parts: dict[str, Part], name: str, default: str = "") -> str:
    part = parts.get(name)
    if part is None:
        return default
    try:
        return part.data.decode("utf-8").strip() or default
    except UnicodeDecodeError:
        raise StudioError(422, f"field {name!r} is not UTF-8 text") from None


def given_hint(parts: dict[str, Part], mode: str, lineart: LineartParams | None) -> np.ndarray | None:
    """The user's hint (None: automatic); a palette or reference that does not parse is a 422."""
    if mode not in HINT_MODES:
        raise StudioError(422, f"hint must be one of {', '.join(HINT_MODES)}, got {escaped(mode)!r}")
    if mode == "auto":
        return None
    if mode == "palette":
        spec = field_text(parts, "palette")
        if not spec:
            raise StudioError(422, "hint=palette needs a palette field: '#rrggbb:weight,...'")
        try:
            return parse_palette(spec)
        except ColorizeError as err:
            raise StudioError(422, str(err)) from None
    if mode == "palette_file":
        part = parts.get("palette_file")
        if part is None or not part.data:
            raise StudioError(422, "hint=palette_file needs a palette_file upload (.gpl or .json)")
        name = part.filename or "palette"
        try:
            return palette_hint(parse_palette_bytes(part.data, Path(name).suffix, escaped(name)))
        except PaletteError as err:
            raise StudioError(422, str(err)) from None
    return color_histogram(decode_upload(parts.get("reference"), "reference image", lineart))


def palette_of(hint: np.ndarray, max_colours: int = 12, mass: float = 0.98) -> list[dict[str, Any]]:
    """A hint as the page draws it: its heaviest bins (bin centre colours) until `mass` is covered."""
    centres = bin_centers()
    return [
        {"colour": hex_colour(tuple(int(v) for v in centres[b])), "weight": round(float(hint[b]), 4)}
        for b in heaviest_bins(hint, max_colours, mass)
    ]


def data_url(image: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(encode_png(image)).decode("ascii")


def default_specs(models_dir: Path) -> dict[str, str]:
    return {kind: str(models_dir / kind) for kind in ("cnn", "cgan", "hint")}


class Studio:
    def __init__(self, config: StudioConfig):
        self.config = config
        self.models = ModelCache(config.device, config.lineart.recipe() if config.lineart else None)
        concurrency = config.concurrency or default_concurrency()
        self.admission = Admission(concurrency, 2 * concurrency if config.queue is None else config.queue)

    def model(self, spec: str, kinds: tuple[str, ...]) -> LoadedModel:
        try:
            return self.models.get(spec, kinds)
        except ColorizeError as err:
            raise StudioError(424, str(err)) from None
        except Exception as err:  # a registry server that is down or answers nonsense, a broken file
            log.warning("cannot load %s", escaped(spec), exc_info=True)
            raise StudioError(424, f"cannot load {escaped(spec)}: {type(err).__name__}: {err}") from None

    def colour_one(
        self, method: str, image: np.ndarray, hint: np.ndarray | None, mode: str, specs: dict[str, str]
    ) -> tuple[dict[str, Any], Layers]:
        """One result of the page: a method's picture, the palette it used and its time."""
        _, kind, always_auto = METHODS[method]
        generator = self.model(specs[kind], GENERATOR_KINDS)
        auto = always_auto or hint is None
        source = HintSource(model=self.model(specs["hint"], ("hint",))) if auto else HintSource(fixed=hint)
        started = time.perf_counter()
        try:
            (layers,), used = colorize_images([image], generator, source, self.config.device)
        except cv2.error as err:
            raise StudioError(422, f"the picture cannot be processed ({err})") from None
        seconds = time.perf_counter() - started
        return {
            "hint": "auto" if auto else mode,
            "palette": palette_of(used[0]),
            "seconds": round(seconds, 3),
            "composite": data_url(layers.composite),
            "colour": data_url(layers.colour),
        }, layers

    def colorize(self, parts: dict[str, Part]) -> dict[str, Any]:
        with self.admission.working():  # decoding too: a waiting request holds only its upload
            return self.colorize_now(parts)

    def colorize_now(self, parts: dict[str, Part]) -> dict[str, Any]:
        lineart = self.config.lineart
        image = decode_upload(parts.get("image"), "image", lineart)
        mode = field_text(parts, "hint", "auto")
        hint = given_hint(parts, mode, lineart)
        specs = default_specs(self.config.models_dir)
        specs |= {kind: field_text(parts, f"{kind}_model", spec) for kind, spec in specs.items()}
        wanted = [m.strip() for m in field_text(parts, "methods", ",".join(METHODS)).split(",") if m.strip()]
        unknown = [m for m in wanted if m not in METHODS]
        if unknown or not wanted:
            raise StudioError(422, f"methods must be some of {', '.join(METHODS)}, got {escaped(unknown)}")
        results, lines, refusals = [], None, []
        for method in wanted:
            label, kind, _ = METHODS[method]
            entry: dict[str, Any] = {"method": method, "label": label, "model": specs[kind]}
            try:
                coloured, layers = self.colour_one(method, image, hint, mode, specs)
                entry |= coloured
                lines = lines or data_url(layers.lines)
            except StudioError as err:
                entry["error"] = err.message
                refusals.append(err)
            results.append(entry)
        if len(refusals) == len(results):
            raise refusals[0]
        height, width = image.shape[:2]
        kind = "line art" if is_lineart(image) else "colour picture"
        return {"width": width, "height": height, "input": kind, "lines": lines, "results": results}

    def model_choices(self) -> dict[str, Any]:
        from colorization.models.specs import SPECS
        from colorization.tracking.registry import RegistryError, list_versions
        from colorization.tracking.runs import tracking_uri

        registered = {kind: spec.registered for kind, spec in SPECS.items()}
        folder = self.config.models_dir
        choices: dict[str, Any] = {
            "folder": {
                "path": str(folder),
                "kinds": {
                    kind: (Path(spec) / "model.pt").is_file() for kind, spec in default_specs(folder).items()
                },
            },
            "registry": {"uri": tracking_uri(), "models": {}},
        }
        try:
            found = list_versions(list(registered.values()))
        except RegistryError as err:
            choices["registry"]["error"] = " ".join(str(err).split())
            return choices
        for kind, name in registered.items():
            choices["registry"]["models"][kind] = [
                {
                    "uri": f"models:/{name}/{v['version']}",
                    "name": name,
                    "version": v["version"],
                    "aliases": v["aliases"],
                }
                for v in found.get(name, [])
            ]
        return choices


# ---------------------------------------------------------------- the app


COLORIZE_FORM = {
    "type": "object",
    "required": ["image"],
    "properties": {
        "image": {"type": "string", "format": "binary", "description": "line art or colour picture"},
        "hint": {"type": "string", "enum": list(HINT_MODES), "default": "auto"},
        "palette": {"type": "string", "description": "hint=palette: '#rrggbb:weight,...'"},
        "palette_file": {
            "type": "string",
            "format": "binary",
            "description": "hint=palette_file: .gpl or .json",
        },
        "reference": {"type": "string", "format": "binary", "description": "hint=reference: a colour image"},
        "methods": {"type": "string", "default": ",".join(METHODS), "description": "comma-separated"},
        "cnn_model": {"type": "string", "description": "folder or models:/ URI (default <models>/cnn)"},
        "cgan_model": {"type": "string", "description": "folder or models:/ URI (default <models>/cgan)"},
        "hint_model": {"type": "string", "description": "folder or models:/ URI (default <models>/hint)"},
    },
}


def error_response(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": " ".join(str(message).split())}, status_code=status)


def add_error_handlers(app: FastAPI) -> None:
    """Every refusal as `{"error": "one line"}`, never a traceback; busy with Retry-After."""

    @app.exception_handler(StudioError)
    async def refused(_: Request, err: StudioError) -> JSONResponse:
        return error_response(err.status, err.message)

    @app.exception_handler(Busy)
    async def busy(_: Request, err: Busy) -> JSONResponse:
        answer = error_response(503, err.message)
        answer.headers["Retry-After"] = str(err.retry_after)
        return answer

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0] if err.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()))
        return error_response(422, f"{where}: {first.get('msg', 'invalid request')}")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, err: StarletteHTTPException) -> JSONResponse:
        return error_response(err.status_code, str(err.detail))

    @app.exception_handler(Exception)
    async def crashed(_: Request, err: Exception) -> JSONResponse:
        log.exception("studio request failed")  # the traceback goes to the server's log, not the page
        return error_response(500, f"internal error ({type(err).__name__}); see the studio's log")


def create_app(config: StudioConfig) -> FastAPI:
    studio = Studio(config)
    app = FastAPI(
        title="Line-art colorization studio",
        description="Colour line art or colour pictures with the project's CNN and c-GAN.",
        version="1",
    )
    app.state.studio = studio

    add_error_handlers(app)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse(resources.files("colorization.studio").joinpath("index.html").read_text("utf-8"))

    @app.get("/api/models", summary="The models the studio can use")
    def models() -> dict[str, Any]:
        """The models/ folder (which kinds it has) and the registry's versions with their aliases."""
        return studio.model_choices()

    @app.post(
        "/api/colorize",
        summary="Colour one picture with the CNN, the c-GAN and the c-GAN with the automatic hint",
        openapi_extra={
            "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": COLORIZE_FORM}}}
        },
    )
    async def colorize(request: Request) -> dict[str, Any]:
        """Multipart upload in, JSON out: `width`, `height`, `lines` (the line layer, a PNG data URL with
        alpha) and one entry per method in `results`: `palette` (the hint it used: colours and weights),
        `seconds`, `composite` and `colour` (PNG data URLs at the input's size), or `error`.

        Refusals are `{"error": "..."}`: 413 (upload or image too large), 415 (not multipart),
        422 (not an image, a palette that does not parse), 424 (no model, or the registry is down),
        503 with `Retry-After` (seconds) when the studio already holds all the uploads it takes.
        """
        with studio.admission.admit():  # full: 503 at once, before the body is read
            body = await read_body(request, config.max_upload_bytes)
            parts = parse_multipart(body, request.headers.get("content-type", ""))
            del body
            return await run_in_threadpool(studio.colorize, parts)

    return app
