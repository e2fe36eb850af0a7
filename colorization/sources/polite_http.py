"""A polite (User-Agent, shared rate limit and Retry-After, allow-listed hosts), failure-tolerant
(timeouts, retries with backoff and jitter, a body cap) HTTP client for scraping one site.
Clock and sleep are injectable, so tests check waits without waiting."""

from __future__ import annotations

import fnmatch
import random
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TypeVar
from urllib.parse import urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter
from requests.exceptions import ChunkedEncodingError, ContentDecodingError

T = TypeVar("T")
Clock = Callable[[], float]
Sleep = Callable[[float], None]
MAX_REDIRECTS = 5
CHUNK_BYTES = 64 * 1024
# 408 and 429 are "try again later"; every 5xx is the server's trouble, not ours.
RETRYABLE_STATUS = frozenset({408, 429})
# Failures of the network path: worth another try.
TRANSIENT_ERRORS = (requests.Timeout, requests.ConnectionError, ChunkedEncodingError, ContentDecodingError)


class FetchError(Exception):
    """No usable body. `permanent`: asking again later would get the same answer (404, too large)."""

    def __init__(self, reason: str, *, permanent: bool) -> None:
        super().__init__(reason)
        self.reason, self.permanent = reason, permanent


class RetryableBody(Exception):
    """Raised by a `parse` callback for a 200 whose body looks like a passing glitch."""


class _RetryLater(Exception):
    def __init__(self, reason: str, retry_after: float | None) -> None:
        super().__init__(reason)
        self.reason, self.retry_after = reason, retry_after


@dataclass(frozen=True)
class Fetched:
    url: str  # after redirects
    content_type: str
    body: bytes


class HostAllowList:
    """The base URL's host plus shell-style patterns ('*.example.org'), compared lower-case without the
    root's trailing dot ('Example.ORG.' is 'example.org' to DNS)."""

    def __init__(self, base_url: str, patterns: list[str]) -> None:
        base_host = self.host_of(base_url)
        self.patterns = [p.lower().rstrip(".") for p in patterns] + ([base_host] if base_host else [])

    def host_of(self, url: str) -> str:
        return (urlsplit(url).hostname or "").lower().rstrip(".")

    def allows(self, url: str) -> bool:
        # hostname (not netloc) so 'http://safebooru.org@evil.example/' is judged as evil.example.
        if urlsplit(url).scheme not in ("http", "https") or not (host := self.host_of(url)):
            return False
        return any(fnmatch.fnmatchcase(host, pattern) for pattern in self.patterns)


class RateLimiter:
    """At most `per_second` requests a second, as the *server* sees them: `acquire()` spaces starts
    1/rate apart across threads, no burst after idling (unlike a token bucket); `release()` at a
    response's end restarts the interval, so arrivals stay 1/rate apart whatever the network delay."""

    def __init__(
        self, per_second: float, *, clock: Clock = time.monotonic, sleep: Sleep = time.sleep
    ) -> None:
        self.interval = 1.0 / per_second if per_second > 0 else 0.0
        self._clock, self._sleep = clock, sleep
        self._next_slot = float("-inf")
        self._lock = threading.Lock()

    def acquire(self) -> None:
        if not self.interval:
            return
        with self._lock:
            now = self._clock()
            slot = max(now, self._next_slot)
            self._next_slot = slot + self.interval
        if slot > now:
            self._sleep(slot - now)

    def release(self) -> None:
        if not self.interval:
            return
        with self._lock:
            self._next_slot = max(self._next_slot, self._clock() + self.interval)


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int
    backoff_s: float
    max_wait_s: float

    def backoff(self, attempt: int, rng: random.Random) -> float:
        # Doubling spreads retries; "equal jitter" (half fixed, half random) parts clients failing together.
        ceiling = min(self.max_wait_s, self.backoff_s * 2.0**attempt)
        return ceiling / 2 + rng.uniform(0.0, ceiling / 2)


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds asked for by a Retry-After header (delta-seconds or HTTP-date), or None."""
    if not value:
        return None
    value = value.strip()
    with suppress(ValueError):
        return max(0.0, float(value))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    when = when.replace(tzinfo=when.tzinfo or UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


class PoliteSession:
    """GET with allow-list, rate limit, retries and a body cap. Safe to share between threads."""

    def __init__(
        self,
        *,
        user_agent: str,
        timeout_s: float,
        policy: RetryPolicy,
        allow: HostAllowList,
        pool_size: int = 10,
        seed: int = 0,
        clock: Clock = time.monotonic,
        sleep: Sleep = time.sleep,
    ) -> None:
        self.policy, self.allow = policy, allow
        self.timeout = (timeout_s, timeout_s)  # (connect, read between bytes)
        self._clock, self._sleep = clock, sleep
        self._rng = random.Random(seed)
        self._session = requests.Session()
        self._session.headers["User-Agent"] = user_agent
        # We retry ourselves (with Retry-After and jitter), so urllib3 must not retry underneath.
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_size, max_retries=0)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._pause_lock = threading.Lock()
        self._not_before = float("-inf")  # a Retry-After pauses every thread, not just the one told

    def close(self) -> None:
        self._session.close()

    def sleep_backoff(self, attempt: int) -> None:  # as long as retry number `attempt` (0-based) would
        self._sleep(self.policy.backoff(attempt, self._rng))

    def get(
        self,
        url: str,
        *,
        params: dict[str, str] | None = None,
        max_bytes: int,
        limiter: RateLimiter | None = None,
        parse: Callable[[Fetched], T] | None = None,
    ) -> T | Fetched:
        """The parsed body of a 200, or FetchError once retries are spent or the answer is final."""
        delay, reason, attempts = 0.0, "", self.policy.max_retries + 1
        for attempt in range(attempts):
            with self._pause_lock:  # a Retry-After told to any thread holds this one too
                wait = max(delay, self._not_before - self._clock())
            if wait > 0:
                self._sleep(wait)
            delay = 0.0
            try:
                fetched = self._get_once(url, params, max_bytes, limiter)
                return fetched if parse is None else parse(fetched)
            except _RetryLater as err:
                reason = err.reason
                if err.retry_after is None:
                    delay = self.policy.backoff(attempt, self._rng)
                elif err.retry_after > self.policy.max_wait_s:
                    raise FetchError(
                        f"{reason}: Retry-After {err.retry_after:.0f}s exceeds max_wait_s", permanent=False
                    ) from None
                else:  # at least what was asked; the backoff still grows if the server keeps saying 0
                    pause = max(err.retry_after, self.policy.backoff(attempt, self._rng))
                    with self._pause_lock:
                        self._not_before = max(self._not_before, self._clock() + pause)
            except RetryableBody as err:
                reason, delay = str(err), self.policy.backoff(attempt, self._rng)
            except TRANSIENT_ERRORS as err:
                reason, delay = _describe(err), self.policy.backoff(attempt, self._rng)
            except requests.RequestException as err:  # bad URL, bad TLS setup, ...: retrying won't help
                raise FetchError(_describe(err), permanent=True) from None
        raise FetchError(f"{reason} (gave up after {attempts} attempts)", permanent=False)

    def _get_once(
        self, url: str, params: dict[str, str] | None, max_bytes: int, limiter: RateLimiter | None
    ) -> Fetched:
        for _hop in range(MAX_REDIRECTS + 1):
            if not self.allow.allows(url):
                raise FetchError(f"host not allowed: {self.allow.host_of(url) or url}", permanent=True)
            if limiter is not None:
                limiter.acquire()  # every hop and every retry is one more request to the site
            try:
                # Redirects are followed by hand so that every hop passes the allow-list.
                with self._session.get(
                    url, params=params, stream=True, timeout=self.timeout, allow_redirects=False
                ) as resp:
                    status = resp.status_code
                    if resp.is_redirect:
                        url, params = urljoin(resp.url, resp.headers["Location"]), None
                        continue
                    if status in RETRYABLE_STATUS or 500 <= status < 600:
                        retry_after = retry_after_seconds(resp.headers.get("Retry-After"))
                        raise _RetryLater(f"HTTP {status}", retry_after)
                    if status != 200:
                        raise FetchError(f"HTTP {status}", permanent=True)
                    body = _read_capped(resp, max_bytes)
                    return Fetched(resp.url, resp.headers.get("Content-Type", ""), body)
            finally:
                if limiter is not None:
                    limiter.release()
        raise FetchError(f"more than {MAX_REDIRECTS} redirects", permanent=True)


def _read_capped(resp: requests.Response, max_bytes: int) -> bytes:
    declared = resp.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise FetchError(f"too large: {declared} bytes > max_bytes {max_bytes}", permanent=True)
    # Stream and count decoded bytes: neither a lying Content-Length nor a gzip bomb gets past.
    body = bytearray()
    for chunk in resp.iter_content(CHUNK_BYTES):
        body += chunk
        if len(body) > max_bytes:
            raise FetchError(f"too large: over max_bytes {max_bytes}", permanent=True)
    return bytes(body)


def _describe(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: " + (text.splitlines()[0][:200] if text else "no detail")
