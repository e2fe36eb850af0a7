"""`colorization studio`: a local web page for colouring, and `POST /api/colorize` for scripts.
Bad input is a 4xx JSON `{"error": "one line"}`, never a traceback (docs/studio.md)."""

from __future__ import annotations

import base64
import inspect
import logging
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import cv2
import numpy as np
from fastapi import APIRouter, FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Message, Receive

from colorization import colorize
from colorization.admission import Admission, Busy, default_concurrency
from colorization.colorize import load_model
from colorization.config import LineartParams
from colorization.hint_layer import HintLayerError, hint_layer
from colorization.histogram import bin_centers, color_histogram, heaviest_bins
from colorization.images import ImageRejected, check_file_size, decode_rgb, encode_png
from colorization.inference import takes_local_hints
from colorization.models import WEIGHTS_FILE
from colorization.models.specs import GENERATOR_KINDS, HINT_KIND, HINT_VARIANTS, SPECS
from colorization.palette import PaletteError, hex_colour, palette_hint, parse_palette_bytes
from colorization.textsafe import escaped
from colorization.tracking import tracking_uri

log = logging.getLogger(__name__)

HINT_MODES = ("auto", "palette", "palette_file", "reference")
DESCRIPTION = "Colour line art or colour pictures with the project's CNN and c-GAN."
TOO_LARGE = "upload too large: over the studio's limit of {} bytes"
HINTS_FIELD = (
    "local colour hints (dots, strokes): an RGBA PNG or WebP the picture's size (opaque = colour), "
    'or JSON points [{"x": 10, "y": 20, "color": "#rrggbb", "radius": 4}]'
)


# method -> (label, generator kind, always the automatic hint?): each generator, and "<kind>_auto" too
METHODS = {
    kind + suffix: (SPECS[kind].label + label, kind, bool(suffix))
    for kind in GENERATOR_KINDS
    for suffix, label in (("", ""), ("_auto", f", {HINT_VARIANTS['auto']}"))
    if not suffix or "auto" in SPECS[kind].hints
}


@dataclass
class StudioConfig:
    models_dir: Path
    # params.yaml's section (None: none at hand): upload limits; lines of a model saved without its recipe
    lineart: LineartParams | None
    device: str = "cpu"
    max_upload_bytes: int = 32 * 2**20
    concurrency: int | None = None  # colourings at once; None: the cores
    queue: int | None = None  # admitted requests waiting for a colouring; None: 2 x concurrency


@dataclass
class Part:
    data: bytes
    filename: str | None


@dataclass
class ColorizeForm:
    """One /api/colorize form as FastAPI parsed it; text fields already stripped ('' = not given)."""

    image: Part | None
    hint: str = "auto"
    palette: str = ""
    palette_file: Part | None = None
    reference: Part | None = None
    hints: Part | None = None  # local colour hints: an RGBA layer the picture's size, or JSON points
    methods: str = ""
    models: dict[str, str] = field(default_factory=dict)  # kind -> folder or URI, when given


def bounded_receive(receive: Receive, limit: int) -> Receive:
    """`receive` that refuses (413) the body once past `limit` bytes, whatever the declared length.
    An HTTPException: FastAPI turns any other error raised while parsing the form into a 400."""
    size = 0

    async def receive_at_most() -> Message:
        nonlocal size
        message = await receive()
        if message["type"] == "http.request":
            size += len(message.get("body", b""))
            if size > limit:
                raise StarletteHTTPException(413, TOO_LARGE.format(limit))
        return message

    return receive_at_most


class UploadRoute(APIRoute):
    """Admits (or answers 503) and bounds the body before FastAPI parses the form (before any dependency)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        parse_and_answer = super().get_route_handler()

        async def admitted(request: Request) -> Response:
            studio: Studio = request.app.state.studio
            limit = studio.config.max_upload_bytes
            with studio.admission.admit():  # full: 503 at once, before the body is read
                content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
                if content_type != "multipart/form-data":
                    raise HTTPException(415, "expected a multipart/form-data upload")
                declared = request.headers.get("content-length")
                if declared is not None and declared.isdigit() and int(declared) > limit:
                    raise HTTPException(413, TOO_LARGE.format(limit))
                return await parse_and_answer(Request(request.scope, bounded_receive(request.receive, limit)))

        return admitted


def palette_of(hint: np.ndarray, max_colours: int = 12, mass: float = 0.98) -> list[dict[str, Any]]:
    """A hint as the page draws it: its heaviest bins (bin centre colours) until `mass` is covered."""
    centres = bin_centers()
    return [
        {"colour": hex_colour(tuple(int(v) for v in centres[b])), "weight": round(float(hint[b]), 4)}
        for b in heaviest_bins(hint, max_colours, mass)
    ]


def data_url(image: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(encode_png(image)).decode("ascii")


class Studio:
    def __init__(self, config: StudioConfig):
        self.config = config
        self.fallback = config.lineart.recipe() if config.lineart else None  # for models without one
        self.max_pixels, self.max_file_bytes = colorize.input_limits(config.lineart)
        self.loaded: dict[tuple, colorize.LoadedModel] = {}
        self.lock = threading.Lock()
        concurrency = config.concurrency or default_concurrency()
        self.admission = Admission(concurrency, 2 * concurrency if config.queue is None else config.queue)

    def decode_upload(self, part: Part | None, what: str) -> np.ndarray:
        if part is None or not part.data:
            raise HTTPException(422, f"no {what} uploaded")
        try:
            check_file_size(len(part.data), self.max_file_bytes)
            return decode_rgb(part.data, max_pixels=self.max_pixels)
        except ImageRejected as err:
            status = 413 if "too large" in str(err) else 422
            raise HTTPException(status, f"{escaped(part.filename or what)}: {err}") from None

    def given_hint(self, form: ColorizeForm) -> np.ndarray | None:
        """The user's hint (None: automatic); a palette or reference that does not parse is a 422."""
        if form.hint not in HINT_MODES:
            raise HTTPException(
                422, f"hint must be one of {', '.join(HINT_MODES)}, got {escaped(form.hint)!r}"
            )
        if form.hint == "auto":
            return None
        try:
            if form.hint == "palette":
                if not form.palette:
                    raise HTTPException(422, "hint=palette needs a palette field: '#rrggbb:weight,...'")
                return colorize.parse_palette(form.palette)
            if form.hint == "palette_file":
                part = form.palette_file
                if part is None or not part.data:
                    raise HTTPException(422, "hint=palette_file needs a palette_file upload (.gpl or .json)")
                name = part.filename or "palette"
                return palette_hint(parse_palette_bytes(part.data, Path(name).suffix, escaped(name)))
        except (colorize.ColorizeError, PaletteError) as err:
            raise HTTPException(422, str(err)) from None
        return color_histogram(self.decode_upload(form.reference, "reference image"))

    def given_layer(self, part: Part | None, image: np.ndarray) -> np.ndarray | None:
        """The local hints (RGBA, the picture's size; None: none sent); a bad layer is a 400."""
        if part is None or not part.data:
            return None
        try:
            check_file_size(len(part.data), self.max_file_bytes)
            return hint_layer(part.data, part.filename or "hints", *image.shape[:2], self.max_pixels)
        except (HintLayerError, ImageRejected) as err:
            raise HTTPException(400, f"hints {escaped(part.filename or 'hints')}: {err}") from None

    def model(self, spec: str, kinds: tuple[str, ...]) -> colorize.LoadedModel:
        """Each model loaded once: a folder is reloaded only when its weights file changes."""
        try:
            weights = Path(spec) / WEIGHTS_FILE
            key = (spec, weights.stat().st_mtime_ns if weights.is_file() else None, kinds)
            with self.lock:
                if key not in self.loaded:
                    self.loaded[key] = load_model(spec, self.config.device, kinds, self.fallback)
                return self.loaded[key]
        except colorize.ColorizeError as err:
            raise HTTPException(424, str(err)) from None
        except Exception as err:  # a registry server that is down or answers nonsense, a broken file
            log.warning("cannot load %s", escaped(spec), exc_info=True)
            raise HTTPException(424, f"cannot load {escaped(spec)}: {type(err).__name__}: {err}") from None

    def colour_one(
        self,
        generator: colorize.LoadedModel,
        image: np.ndarray,
        hint: np.ndarray | None,
        mode: str,
        specs: dict[str, str],
        layer: np.ndarray | None,
    ) -> tuple[dict[str, Any], colorize.Layers]:
        """One result of the page: `generator`'s picture (hint None: automatic), its palette and time."""
        hinter = self.model(specs[HINT_KIND], (HINT_KIND,)) if hint is None else None
        source = colorize.HintSource(fixed=hint, model=hinter)
        started = time.perf_counter()
        try:
            (layers,), used = colorize.colorize_images(
                [image], generator, source, self.config.device, hint_layers=[layer]
            )
        except cv2.error as err:
            raise HTTPException(422, f"the picture cannot be processed ({err})") from None
        except colorize.ColorizeError as err:  # local hints for a model trained without them
            raise HTTPException(422, str(err)) from None
        return {
            "hint": "auto" if hint is None else mode,
            "palette": palette_of(used[0]),
            "seconds": round(time.perf_counter() - started, 3),
            "composite": data_url(layers.composite),
            "colour": data_url(layers.colour),
        }, layers

    def colorize(self, form: ColorizeForm) -> dict[str, Any]:
        with self.admission.working():  # decoding too: a waiting request holds only its upload
            image = self.decode_upload(form.image, "image")
            hint = self.given_hint(form)
            layer = self.given_layer(form.hints, image)
            specs = {kind: str(self.config.models_dir / kind) for kind in SPECS} | form.models
            wanted = [m.strip() for m in (form.methods or ",".join(METHODS)).split(",") if m.strip()]
            unknown = [m for m in wanted if m not in METHODS]
            if unknown or not wanted:
                raise HTTPException(
                    422, f"methods must be some of {', '.join(METHODS)}, got {escaped(unknown)}"
                )
            results, lines, refusals = [], None, []
            for method in wanted:
                label, kind, always_auto = METHODS[method]
                entry: dict[str, Any] = {"method": method, "label": label, "model": specs[kind]}
                try:
                    generator = self.model(specs[kind], GENERATOR_KINDS)
                    entry["local_hints"] = takes_local_hints(generator.module)  # the page warns when not
                    given = None if always_auto else hint
                    coloured, layers = self.colour_one(generator, image, given, form.hint, specs, layer)
                    entry |= coloured
                    lines = lines or data_url(layers.lines)
                except HTTPException as err:
                    entry["error"] = " ".join(str(err.detail).split())
                    refusals.append(err)
                results.append(entry)
            if len(refusals) == len(results):
                raise refusals[0]
            height, width = image.shape[:2]
            kind = "line art" if colorize.is_lineart(image) else "colour picture"
            return {"width": width, "height": height, "input": kind, "lines": lines, "results": results}

    def model_choices(self) -> dict[str, Any]:
        from colorization.tracking.registry import RegistryError, list_versions

        folder = self.config.models_dir
        kinds = {kind: (folder / kind / WEIGHTS_FILE).is_file() for kind in SPECS}
        registry: dict[str, Any] = {"uri": tracking_uri(), "models": {}}
        choices = {"folder": {"path": str(folder), "kinds": kinds}, "registry": registry}
        try:
            found = list_versions([spec.registered for spec in SPECS.values()])
        except RegistryError as err:
            registry["error"] = " ".join(str(err).split())
            return choices
        for kind, spec in SPECS.items():
            name = spec.registered  # each version: {"version", "aliases"}
            registry["models"][kind] = [
                {"uri": f"models:/{name}/{v['version']}", "name": name, **v} for v in found.get(name, [])
            ]
        return choices


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": " ".join(str(message).split())}, status_code=status, headers=headers)


async def refusal(_: Request, err: Exception) -> JSONResponse:
    """Every refusal as `{"error": "one line"}`, never a traceback; busy with Retry-After."""
    if isinstance(err, Busy):
        return error_response(503, err.message, {"Retry-After": str(err.retry_after)})
    if isinstance(err, RequestValidationError):
        first = err.errors()[0] if err.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()))
        return error_response(422, f"{where}: {first.get('msg', 'invalid request')}")
    if isinstance(err, StarletteHTTPException):
        return error_response(err.status_code, str(err.detail))
    log.exception("studio request failed")  # the traceback goes to the server's log, not the page
    return error_response(500, f"internal error ({type(err).__name__}); see the studio's log")


def with_model_fields(endpoint: Callable) -> Callable:
    """`endpoint` with an optional form field `<kind>_model` per kind in SPECS, gathered into `**models`."""
    signature = inspect.signature(endpoint)
    named = [p for p in signature.parameters.values() if p.kind != p.VAR_KEYWORD]
    fields = [
        inspect.Parameter(
            f"{kind}_model",
            inspect.Parameter.KEYWORD_ONLY,
            default="",
            annotation=Annotated[str, Form(description=f"folder or models:/ URI (default <models>/{kind})")],
        )
        for kind in SPECS
    ]
    endpoint.__signature__ = signature.replace(parameters=named + fields)
    return endpoint


def create_app(config: StudioConfig) -> FastAPI:
    studio = Studio(config)
    app = FastAPI(title="Line-art colorization studio", description=DESCRIPTION, version="1")
    app.state.studio = studio
    for refused in (Busy, RequestValidationError, StarletteHTTPException, Exception):
        app.add_exception_handler(refused, refusal)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse(resources.files("colorization.studio").joinpath("index.html").read_text("utf-8"))

    @app.get("/api/models", summary="The models the studio can use")
    def models() -> dict[str, Any]:
        """The models/ folder (which kinds it has) and the registry's versions with their aliases."""
        return studio.model_choices()

    uploads = APIRouter(route_class=UploadRoute)  # admitted and bounded before the form is parsed

    @uploads.post(
        "/api/colorize",
        summary="Colour one picture with the CNN, the c-GAN and the c-GAN with the automatic hint",
    )
    @with_model_fields
    async def colorize(
        image: Annotated[UploadFile, File(description="line art or colour picture")],
        hint: Annotated[str, Form(json_schema_extra={"enum": list(HINT_MODES)})] = "auto",
        palette: Annotated[str, Form(description="hint=palette: '#rrggbb:weight,...'")] = "",
        palette_file: Annotated[UploadFile | None, File(description="hint=palette_file: .gpl, .json")] = None,
        reference: Annotated[UploadFile | None, File(description="hint=reference: a colour image")] = None,
        hints: Annotated[UploadFile | None, File(description=HINTS_FIELD)] = None,
        methods: Annotated[str, Form(description="comma-separated")] = ",".join(METHODS),
        **models: str,  # `<kind>_model` per kind in SPECS (with_model_fields)
    ) -> dict[str, Any]:
        """Multipart upload in, JSON out: `width`, `height`, `lines` (the line layer, a PNG data URL with
        alpha) and one entry per method in `results`: `local_hints` (whether its model takes them),
        `palette` (the hint it used: colours and weights), `seconds`, `composite` and `colour` (PNG
        data URLs at the input's size), or `error`.

        Refusals are `{"error": "..."}`: 400 (a hint layer of another size, unreadable, a bad colour),
        413 (upload or image too large), 415 (not multipart), 422 (not an image, a palette that does
        not parse, local hints for a model trained without them), 424 (no model, or the registry is
        down), 503 with `Retry-After` (seconds) when the studio already holds all the uploads it takes.
        """
        files = {"image": image, "palette_file": palette_file, "reference": reference, "hints": hints}
        form = ColorizeForm(
            **{key: None if f is None else Part(await f.read(), f.filename) for key, f in files.items()},
            hint=hint.strip() or "auto",
            palette=palette.strip(),
            methods=methods.strip(),
            models={kind: spec for kind in SPECS if (spec := models[f"{kind}_model"].strip())},
        )
        return await run_in_threadpool(studio.colorize, form)

    app.include_router(uploads)
    return app
