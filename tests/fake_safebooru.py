"""A local stand-in for safebooru.org, for tests and `bench/scrape.py`.

It speaks the same dapi format as the real site (JSON array newest first, EMPTY body
for no results, "Too deep" past `deep_limit` posts, `id:<N` paging) and serves image
bytes under /images/{directory}/{image}. Scripted faults (status codes, Retry-After,
stalls, cut connections, odd bodies) are queued per API call or per file path; every
request is logged so tests can assert what the client asked for and what it got.

    with FakeSafebooru() as site:
        site.add_post(1)
        site.api_faults.append(Fault(status=503))
        ... site.base_url ...
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import cv2
import numpy as np

TOO_DEEP_BODY = b"Too deep! Pull it back some. Holy fuck."
CONTENT_TYPES = {"jpg": "image/jpeg", "jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}


@dataclass
class Fault:
    """One scripted answer that replaces the normal one (fields left at default keep normal behaviour)."""

    status: int = 200
    body: bytes | None = None  # None: the normal body
    headers: dict[str, str] = field(default_factory=dict)
    stall_s: float = 0.0  # wait before answering (read timeouts); cut short when the server stops
    cut_after: int | None = None  # announce the full length, send this many bytes, drop the connection
    omit_length: bool = False  # no Content-Length: the body ends when the connection closes


@dataclass(frozen=True)
class Request:
    kind: str  # "api" | "file" | "other"
    path: str
    query: dict[str, str]
    user_agent: str
    t: float  # time.monotonic() on arrival


def make_image(seed: int, width: int = 48, height: int = 40, fmt: str = "jpg") -> bytes:
    """A small picture unique to `seed`: a gradient plus seeded noise, encoded by OpenCV."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack(
        [x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), np.full_like(x, seed % 256)], -1
    )
    noise = rng.integers(0, 24, size=(height, width, 3))
    bgr = np.clip(base + noise, 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode("." + fmt, bgr)
    assert ok, fmt
    return buf.tobytes()


class FakeSafebooru:
    def __init__(self, *, deep_limit: int = 20000, file_delay_s: float = 0.0) -> None:
        self.posts: dict[int, dict] = {}
        self.files: dict[str, bytes] = {}  # URL path -> bytes
        self.deep_limit = deep_limit
        self.file_delay_s = file_delay_s  # simulated network latency per file
        self.api_faults: list[Fault] = []  # consumed one per API request
        self.file_faults: dict[str, list[Fault]] = {}  # consumed one per request of that path
        self.requests: list[Request] = []
        self.completed_files: Counter[str] = Counter()  # bodies sent in full, by path
        self.too_deep_served = 0
        # Kill tests: after `hold_files_after` complete files, answer further files with half
        # a body and wait for `release` -- a client killed now is mid-download, deterministically.
        self.hold_files_after: int | None = None
        self.release = threading.Event()
        self._let_through = 0
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ content

    @property
    def base_url(self) -> str:
        assert self._server is not None, "start the server first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def add_post(
        self,
        post_id: int,
        *,
        ext: str = "jpg",
        width: int = 48,
        height: int = 40,
        tags: str = "1girl solo smile",
        data: bytes | None = None,
        declared: tuple[int, int] | None = None,
        md5: str | None = None,
        with_file_url: bool = True,
        file_url: str | None = None,
        score: int | None = 3,
    ) -> dict:
        """Add a post and its file; `data` defaults to a generated image of `ext` and size."""
        if data is None:
            data = make_image(post_id, width, height, ext) if ext in CONTENT_TYPES else b"\x00" * 64
        md5 = md5 if md5 is not None else hashlib.md5(data).hexdigest()
        directory, image = str(post_id // 100), f"{md5}.{ext}"
        path = f"/images/{directory}/{image}"
        self.files[path] = data
        w, h = declared or (width, height)
        post = {
            "id": post_id,
            "directory": directory,
            "image": image,
            "hash": md5,
            "width": w,
            "height": h,
            "tags": tags,
            "rating": "general",
            "score": score,
            "owner": "uploader",
            "parent_id": 0,
            "change": 1700000000 + post_id,
            "sample": False,
            "sample_width": 0,
            "sample_height": 0,
        }
        if with_file_url:
            post.update(
                file_url=file_url or f"{self.base_url}{path}",
                sample_url="",
                preview_url=f"{self.base_url}/thumbnails/{directory}/thumbnail_{md5}.jpg",
                source=f"https://example.org/art/{post_id}",
                status="active",
                has_notes=False,
                comment_count=0,
            )
        self.posts[post_id] = post
        return post

    def file_path(self, post_id: int) -> str:
        post = self.posts[post_id]
        return f"/images/{post['directory']}/{post['image']}"

    def api_requests(self) -> list[Request]:
        return [r for r in self.requests if r.kind == "api"]

    def file_requests(self, path: str | None = None) -> list[Request]:
        return [r for r in self.requests if r.kind == "file" and (path is None or r.path == path)]

    # ------------------------------------------------------------ the dapi

    def _matches(self, post: dict, terms: list[str]) -> bool:
        tags = set(post["tags"].split())
        for term in terms:
            if term.startswith("id:<") and not post["id"] < int(term[4:]):
                return False
            if term.startswith("id:>") and not post["id"] > int(term[4:]):
                return False
            if term.startswith("-") and term[1:] in tags:
                return False
            if not term.startswith(("-", "id:")) and ":" not in term and term not in tags:
                return False
        return True

    def list_posts(self, query: dict[str, str]) -> bytes:
        limit = min(int(query.get("limit", "100")), 1000)
        pid = int(query.get("pid", "0"))
        if pid * limit >= self.deep_limit:
            with self._lock:
                self.too_deep_served += 1
            return TOO_DEEP_BODY
        terms = query.get("tags", "").split()
        with self._lock:
            posts = sorted(self.posts.values(), key=lambda p: p["id"], reverse=True)
        page = [p for p in posts if self._matches(p, terms)][pid * limit : (pid + 1) * limit]
        return json.dumps(page).encode() if page else b""  # the site sends nothing, not []

    # ------------------------------------------------------------ serving

    def _next_fault(self, kind: str, path: str) -> Fault | None:
        with self._lock:
            queue = self.api_faults if kind == "api" else self.file_faults.get(path)
            return queue.pop(0) if queue else None

    def handle(self, handler: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(handler.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        kind = "api" if parts.path == "/index.php" else "file" if parts.path in self.files else "other"
        with self._lock:
            self.requests.append(
                Request(kind, parts.path, query, handler.headers.get("User-Agent", ""), time.monotonic())
            )
        fault = self._next_fault(kind, parts.path)
        if fault and fault.stall_s:
            self._stopping.wait(fault.stall_s)
        headers: dict[str, str] = {}
        status = 200
        if kind == "api":
            if query.get("page") == "dapi" and query.get("s") == "post" and query.get("json") == "1":
                body, headers["Content-Type"] = self.list_posts(query), "application/json; charset=utf-8"
            else:
                status, body = 400, b"bad request"
        elif kind == "file":
            if self.file_delay_s:
                time.sleep(self.file_delay_s)
            body = self.files[parts.path]
            headers["Content-Type"] = CONTENT_TYPES.get(
                parts.path.rsplit(".", 1)[-1], "application/octet-stream"
            )
        else:
            status, body = 404, b"<html><body>404 Not Found</body></html>"
            headers["Content-Type"] = "text/html"
        if fault:
            status = fault.status
            body = fault.body if fault.body is not None else body
            headers.update(fault.headers)
        self._send(handler, kind, parts.path, status, headers, body, fault)

    def _send(self, handler, kind, path, status, headers, body, fault) -> None:
        hold = False
        if kind == "file" and status == 200 and self.hold_files_after is not None:
            with self._lock:  # decided on arrival, so exactly `hold_files_after` files get through
                hold = self._let_through >= self.hold_files_after
                self._let_through += not hold
        handler.send_response(status)
        for key, value in headers.items():
            handler.send_header(key, value)
        if fault and fault.omit_length:
            handler.send_header("Connection", "close")
            handler.close_connection = True
        else:
            handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if fault and fault.cut_after is not None:
            handler.wfile.write(body[: fault.cut_after])
            handler.wfile.flush()
            handler.close_connection = True
            return
        if hold:
            handler.wfile.write(body[: len(body) // 2])
            handler.wfile.flush()
            self.release.wait()
            # Whoever asked was killed meanwhile: the rest only fills a dead socket's buffer.
            handler.close_connection = True
            return
        handler.wfile.write(body)
        handler.wfile.flush()
        if kind == "file" and status == 200:
            with self._lock:
                self.completed_files[path] += 1

    # ------------------------------------------------------------ lifecycle

    def start(self) -> FakeSafebooru:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, like the real site
            disable_nagle_algorithm = True  # else headers and body meet delayed ACKs: +40 ms a file

            def do_GET(self) -> None:  # noqa: N802 -- http.server's naming
                try:
                    fake.handle(self)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True  # the client gave up (timeout, kill): expected

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="fake-safebooru", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self.release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> FakeSafebooru:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
