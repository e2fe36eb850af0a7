"""Safebooru's dapi: listing posts page by page, and judging a post from its metadata alone.

`GET {base}/index.php?page=dapi&s=post&q=index&json=1&limit=L&pid=P&tags=T` answers a bare JSON
array, newest first, or an EMPTY body when nothing matches. `pid` fails past about 20,000 posts
("Too deep"), so we always ask for `pid=0` and page by id: `tags=T id:<smallest id seen so far`."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from urllib.parse import quote, urlencode, urljoin, urlsplit

from colorization.config import SafebooruSource
from colorization.sources import polite_http

# Extension on the site -> format `colorization.images.sniff_format` must find in the bytes.
STILL_IMAGE_FORMATS = {"jpg": "jpeg", "jpeg": "jpeg", "png": "png", "webp": "webp"}
# The site's directory is a number and its image name a hash; anything else is not used in a URL.
_SAFE_DIRECTORY = re.compile(r"^[A-Za-z0-9_-]+$")
_SAFE_IMAGE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$")


class PageFailed(Exception):
    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"{url}: {reason}")
        self.url, self.reason = url, reason


class PostRejected(ValueError):
    """A post we will not download; `str(err)` is the reason."""


@dataclass(frozen=True)
class Post:
    post_id: int
    file_url: str
    ext: str  # lower-case extension of the original file, without the dot
    width: int  # as the site declares; 0 when unknown
    height: int
    md5: str
    tags: str
    rating: str | None
    score: int | None
    source_url: str | None


def _int_or_none(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def post_id_of(raw: object) -> int | None:
    return _int_or_none(raw.get("id")) if isinstance(raw, dict) else None


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def parse_post(raw: object, base_url: str) -> Post:
    if not isinstance(raw, dict):
        raise PostRejected("malformed post: not an object")
    post_id = post_id_of(raw)
    if post_id is None or post_id <= 0:
        raise PostRejected(f"malformed post: bad id {raw.get('id')!r}")
    if isinstance(url := raw.get("file_url"), str) and url.strip():
        # urljoin also resolves the protocol-relative '//host/...' that older responses used.
        url = urljoin(base_url.rstrip("/") + "/", url.strip())
    else:  # no file_url: {base}/images/{directory}/{image}
        directory, image = str(raw.get("directory", "")), str(raw.get("image", ""))
        if not (_SAFE_DIRECTORY.match(directory) and _SAFE_IMAGE.match(image)):
            raise PostRejected(f"malformed post: unusable directory/image {directory!r}/{image!r}")
        url = f"{base_url.rstrip('/')}/images/{quote(directory)}/{quote(image)}"
    return Post(
        post_id=post_id,
        file_url=url,
        ext=PurePosixPath(urlsplit(url).path).suffix.lower().lstrip("."),
        width=_int_or_none(raw.get("width")) or 0,
        height=_int_or_none(raw.get("height")) or 0,
        md5=str(raw.get("hash") or "").lower(),
        tags=str(raw.get("tags") or "").strip(),
        rating=_str_or_none(raw.get("rating")),
        score=_int_or_none(raw.get("score")),
        source_url=_str_or_none(raw.get("source")),
    )


def excluded_tags(query: str) -> frozenset[str]:
    """Tags the query negates ('-monochrome'); checked again locally in case the site ignored one."""
    return frozenset(
        t[1:].lower() for t in query.split() if t.startswith("-") and ":" not in t and len(t) > 1
    )


def skip_reason(
    post: Post,
    *,
    min_size: int,
    excluded: frozenset[str],
    allow: polite_http.HostAllowList,
    max_pixels: int | None = None,
) -> str | None:
    """Why a post is not worth downloading, judged from metadata only; None when it is."""
    if post.ext not in STILL_IMAGE_FORMATS:
        return f"not a still image (.{post.ext or '?'})"
    if post.width and post.height and min(post.width, post.height) < min_size:
        return f"too small: {post.width}x{post.height} < min_size {min_size}"
    if max_pixels and post.width and post.height and post.width * post.height > max_pixels:
        # The bytes are checked again after download: metadata may understate the size.
        return f"too large: {post.width}x{post.height} > max_pixels {max_pixels}"
    if hit := excluded.intersection(post.tags.lower().split()):
        return f"excluded tag: {sorted(hit)[0]}"
    if not allow.allows(post.file_url):
        return f"host not allowed: {allow.host_of(post.file_url) or post.file_url}"
    return None


def parse_page(fetched: polite_http.Fetched) -> list:
    """Posts of one listing page; [] for the empty body the site sends when nothing matches."""
    text = fetched.body.strip()
    if not text:
        return []
    if text[:8].lower() == b"too deep":
        # Deterministic, so not retried; paging by id should never get here.
        raise polite_http.FetchError("too deep: the site refused a deep page", permanent=True)
    try:
        posts = json.loads(text)
    except ValueError as err:
        # Typically an HTML error page served with 200 by an overloaded front end.
        raise polite_http.RetryableBody(f"invalid JSON ({err.msg} at {err.pos}): {text[:60]!r}") from None
    if not isinstance(posts, list):
        raise polite_http.RetryableBody(f"expected a JSON array, got {type(posts).__name__}: {text[:80]!r}")
    return posts


class PostLister:
    """Walks the listing newest-first by id. `newest_id` is the largest id seen; `pages` the pages read."""

    def __init__(self, session: polite_http.PoliteSession, cfg: SafebooruSource) -> None:
        self.session, self.cfg = session, cfg
        self.limiter = polite_http.RateLimiter(cfg.requests_per_second)
        self.endpoint = cfg.base_url.rstrip("/") + "/index.php"
        self.tags = " ".join(cfg.tags.split())
        self.newest_id: int | None = None
        self.pages = 0

    def fetch_page(self, query: str) -> list:
        params = dict(
            page="dapi", s="post", q="index", json="1", limit=str(self.cfg.page_size), pid="0", tags=query
        )
        url = f"{self.endpoint}?{urlencode(params)}"
        for attempt in range(self.cfg.empty_page_retries + 1):
            if attempt:
                # A spurious empty page happens mid-listing: ask again, after a backoff, before believing it.
                self.session.sleep_backoff(attempt - 1)
            try:
                posts = self.session.get(
                    self.endpoint,
                    params=params,
                    max_bytes=self.cfg.max_bytes,
                    limiter=self.limiter,
                    parse=parse_page,
                )
            except polite_http.FetchError as err:
                raise PageFailed(url, err.reason) from None
            self.pages += 1
            if posts:
                return posts
        return []

    def iter_posts(self, floor_id: int | None = None) -> Iterator[object]:
        """Raw posts, newest first, down to (excluding) `floor_id`; raises PageFailed."""
        cursor: int | None = None
        while True:
            query = self.tags if cursor is None else f"{self.tags} id:<{cursor}".strip()
            if not (page := self.fetch_page(query)):
                return
            fresh = [(post_id_of(raw), raw) for raw in page]
            fresh = [(i, raw) for i, raw in fresh if i is None or cursor is None or i < cursor]
            valid_ids = [i for i, _ in fresh if i is not None]
            if not valid_ids:
                # Nothing below the cursor: the site ignored `id:<` or sent junk; stop rather than loop.
                yield from (raw for _, raw in fresh)
                return
            self.newest_id = max(self.newest_id or 0, *valid_ids)
            fresh.sort(key=lambda pair: -1 if pair[0] is None else pair[0], reverse=True)
            for post_id, raw in fresh:
                if floor_id is not None and post_id is not None and post_id <= floor_id:
                    return
                yield raw
            cursor = min(valid_ids)
