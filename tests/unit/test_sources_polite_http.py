"""What the polite HTTP client promises, against servers on 127.0.0.1 and a clock that never moves
(every wait is recorded, none is slept): redirects followed by hand up to a limit and each hop
judged by the allow-list, bodies capped while streaming (decoded bytes counted), backoff between
retries, failures named by their error and marked permanent or not, seeded jitter, read timeouts
that end a stalled answer."""

from __future__ import annotations

import gzip
import threading
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from colorization.sources.polite_http import (
    MAX_REDIRECTS,
    FetchError,
    HostAllowList,
    PoliteSession,
    RateLimiter,
    RetryPolicy,
    retry_after_seconds,
)
from tests.fake_safebooru import FakeSafebooru, Fault
from tests.unit.test_sources_safebooru import FakeClock

# ---------------------------------------------------------------- Retry-After, every thread


class ThreadClock:
    """A clock that never moves; each thread's sleeps are recorded, none is slept."""

    def __init__(self) -> None:
        self.sleeps: dict[str, list[float]] = {}
        self.lock = threading.Lock()

    def now(self) -> float:
        return 500.0

    def sleep(self, seconds: float) -> None:
        with self.lock:
            self.sleeps.setdefault(threading.current_thread().name, []).append(seconds)


def test_retry_after_told_to_one_thread_pauses_every_download_thread():
    clock = ThreadClock()
    with FakeSafebooru() as site:
        for post_id in (1, 2, 3):
            site.add_post(post_id)
        first, *others = (site.file_path(i) for i in (1, 2, 3))
        site.file_faults[first] = [Fault(status=429, headers={"Retry-After": "30"})]
        session = PoliteSession(
            user_agent="tests",
            timeout_s=30,
            policy=RetryPolicy(max_retries=2, backoff_s=0.001, max_wait_s=60),
            allow=HostAllowList(site.base_url, []),
            clock=clock.now,
            sleep=clock.sleep,
        )

        bodies: dict[str, bytes] = {}

        def download(path: str) -> None:
            bodies[path] = session.get(site.base_url + path, max_bytes=1 << 20).body

        told = threading.Thread(target=download, args=(first,), name="told")
        told.start()
        told.join()
        # Later downloads on other threads, while the clock still reads the moment of the 429.
        for i, path in enumerate(others):
            thread = threading.Thread(target=download, args=(path,), name=f"other-{i}")
            thread.start()
            thread.join()
        session.close()
        # What the client got, and what the server was asked (recorded before it answers).
        assert all(bodies[p] == site.files[p] for p in (first, *others))
        assert [len(site.file_requests(p)) for p in (first, *others)] == [2, 1, 1]
    assert clock.sleeps["told"] == [30.0]
    assert clock.sleeps["other-0"] == [30.0] and clock.sleeps["other-1"] == [30.0], clock.sleeps


# ---------------------------------------------------------------- polite_http edges


def polite(site: FakeSafebooru, clock: ThreadClock, **policy) -> PoliteSession:
    values = {"max_retries": 2, "backoff_s": 0.001, "max_wait_s": 60} | policy
    return PoliteSession(
        user_agent="tests",
        timeout_s=30,
        policy=RetryPolicy(**values),
        allow=HostAllowList(site.base_url, []),
        clock=clock.now,
        sleep=clock.sleep,
    )


def test_a_first_answer_waits_for_nothing_and_a_retry_after_of_max_wait_is_honoured():
    clock = ThreadClock()
    with FakeSafebooru() as site:
        site.add_post(1)
        path = site.file_path(1)
        session = polite(site, clock, max_wait_s=30)
        assert session.get(site.base_url + path, max_bytes=1 << 20).body == site.files[path]
        assert clock.sleeps == {}, "no pause before a first request"
        site.file_faults[path] = [Fault(status=429, headers={"Retry-After": "30"})]  # = max_wait_s
        assert session.get(site.base_url + path, max_bytes=1 << 20).body == site.files[path]
        session.close()
    assert sum(clock.sleeps.values(), []) == [30.0]


def test_a_retry_after_beyond_max_wait_is_a_failure_worth_retrying_later():
    from colorization.sources.polite_http import FetchError

    with FakeSafebooru() as site:
        site.add_post(1)
        path = site.file_path(1)
        site.file_faults[path] = [Fault(status=429, headers={"Retry-After": "31"})]
        session = polite(site, ThreadClock(), max_wait_s=30)
        with pytest.raises(FetchError, match=r"^HTTP 429: Retry-After 31s exceeds max_wait_s$") as err:
            session.get(site.base_url + path, max_bytes=1 << 20)
        session.close()
    assert err.value.permanent is False


def test_a_body_of_exactly_max_bytes_is_accepted():
    with FakeSafebooru() as site:
        site.add_post(1)
        path = site.file_path(1)
        size = len(site.files[path])
        session = polite(site, ThreadClock())
        assert len(session.get(site.base_url + path, max_bytes=size).body) == size
        session.close()


def test_a_refused_connection_is_named_in_the_failure():
    import socket

    from colorization.sources.polite_http import FetchError

    with socket.socket() as bound:  # bound, never listening: connections are refused at once
        bound.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{bound.getsockname()[1]}/x"
        session = PoliteSession(
            user_agent="tests",
            timeout_s=30,
            policy=RetryPolicy(max_retries=1, backoff_s=0.001, max_wait_s=1),
            allow=HostAllowList(url, []),
            sleep=lambda s: None,
        )
        with pytest.raises(FetchError, match=r"^ConnectionError: .+ \(gave up after 2 attempts\)$") as err:
            session.get(url, max_bytes=100)
        session.close()
    assert err.value.permanent is False


def test_retry_after_values_and_the_seeded_jitter():
    from datetime import UTC, datetime

    from colorization.sources.polite_http import RateLimiter, retry_after_seconds

    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert retry_after_seconds("0", now) == 0.0
    assert retry_after_seconds("Thu, 01 Jan 2026 12:00:10 -0000", now) == 10.0  # no zone: UTC
    import random

    policy = RetryPolicy(max_retries=3, backoff_s=1.0, max_wait_s=60)
    draws = [policy.backoff(2, random.Random(seed)) for seed in range(400)]  # ceiling 4
    assert max(draws) > 3.9 and min(draws) < 2.1  # spread over the whole [ceiling / 2, ceiling]

    def sleeps_of(seed: int) -> list[float]:
        slept: list[float] = []
        session = PoliteSession(
            user_agent="t", timeout_s=1, policy=policy, allow=HostAllowList("http://a", []),
            sleep=slept.append, seed=seed,
        )  # fmt: skip
        for attempt in range(3):
            session.sleep_backoff(attempt)
        return slept

    assert sleeps_of(3) == sleeps_of(3) and sleeps_of(3) != sleeps_of(4)
    never: list[float] = []
    unlimited = RateLimiter(0.0, sleep=never.append)
    for _ in range(3):
        unlimited.acquire()
        unlimited.release()
    assert never == []


class StoppedClock:
    def __init__(self) -> None:
        self.slept: list[float] = []
        self.lock = threading.Lock()

    def now(self) -> float:
        return 1000.0

    def sleep(self, seconds: float) -> None:
        with self.lock:
            self.slept.append(seconds)


def session_for(base_url: str, clock: StoppedClock, *, timeout_s: float = 30, **policy) -> PoliteSession:
    values = {"max_retries": 2, "backoff_s": 0.4, "max_wait_s": 60} | policy
    return PoliteSession(
        user_agent="tests",
        timeout_s=timeout_s,
        policy=RetryPolicy(**values),
        allow=HostAllowList(base_url, []),
        clock=clock.now,
        sleep=clock.sleep,
    )


@pytest.fixture
def site():
    with FakeSafebooru() as server:
        server.add_post(1)
        yield server


# ---------------------------------------------------------------- redirects


def chain(site: FakeSafebooru, hops: int) -> str:
    """/hop0 -> /hop1 -> ... -> the file of post 1, `hops` redirects in all; returns the first path."""
    target = site.file_path(1)
    for i in reversed(range(hops)):
        site.file_faults[f"/hop{i}"] = [Fault(status=302, headers={"Location": target})]
        target = f"/hop{i}"
    return target


def test_five_redirects_are_followed_and_the_query_stays_with_the_first_request(site):
    session = session_for(site.base_url, StoppedClock())
    got = session.get(site.base_url + chain(site, MAX_REDIRECTS), params={"a": "1"}, max_bytes=1 << 20)
    session.close()
    assert got.body == site.files[site.file_path(1)]
    assert got.url == site.base_url + site.file_path(1)  # where the body came from
    assert [r.path for r in site.requests] == [f"/hop{i}" for i in range(5)] + [site.file_path(1)]
    assert site.requests[0].query == {"a": "1"} and all(r.query == {} for r in site.requests[1:])


def test_a_sixth_redirect_is_a_permanent_failure_without_a_retry(site):
    clock = StoppedClock()
    session = session_for(site.base_url, clock)
    with pytest.raises(FetchError, match=r"^more than 5 redirects$") as err:
        session.get(site.base_url + chain(site, MAX_REDIRECTS + 1), max_bytes=1 << 20)
    session.close()
    assert err.value.permanent is True
    assert len(site.requests) == MAX_REDIRECTS + 1 and clock.slept == []


def test_a_redirect_off_the_allowed_hosts_is_not_followed(site):
    site.file_faults["/away"] = [Fault(status=301, headers={"Location": "http://evil.invalid/x.jpg"})]
    session = session_for(site.base_url, StoppedClock())
    with pytest.raises(FetchError, match=r"^host not allowed: evil\.invalid$") as err:
        session.get(site.base_url + "/away", max_bytes=1 << 20)
    session.close()
    assert err.value.permanent is True


def test_allowed_hosts_ignore_case_and_a_trailing_dot():
    allow = HostAllowList("https://Safebooru.org/", ["*.Example.ORG."])
    assert allow.allows("https://safebooru.org/a") and allow.allows("https://SAFEBOORU.ORG./a")
    assert allow.allows("https://img.example.org./a") and allow.allows("http://IMG.example.org/a")
    assert not allow.allows("https://example.org.evil/a") and not allow.allows("https:///a")
    assert allow.host_of("https://img.example.org./a") == "img.example.org"
    hostless = HostAllowList("", ["cdn.example.org"])
    assert hostless.patterns == ["cdn.example.org"]
    assert hostless.allows("https://cdn.example.org/a") and not hostless.allows("https://example.org/a")


def test_a_base_url_with_a_trailing_dot_allows_its_own_host():
    allow = HostAllowList("https://Example.org./", [])
    assert allow.patterns == ["example.org"]
    assert allow.allows("https://example.org/a") and allow.allows("https://example.org./a")
    assert not allow.allows("https://img.example.org/a")


# ---------------------------------------------------------------- bodies


class EndlessBody(BaseHTTPRequestHandler):
    """No Content-Length, 64 KiB chunks up to `LIMIT`; records how much it got to send."""

    LIMIT = 64 << 20
    sent = 0
    done = threading.Event()

    def do_GET(self) -> None:  # noqa: N802 -- http.server's naming
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        chunk = b"\x00" * (64 << 10)
        try:
            while type(self).sent < self.LIMIT:
                self.wfile.write(chunk)
                type(self).sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client hung up: what a cap should make it do
        finally:
            type(self).done.set()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


def test_an_endless_body_is_cut_at_max_bytes_while_it_streams():
    handler = type("Handler", (EndlessBody,), {"sent": 0, "done": threading.Event()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        session = session_for(base, StoppedClock())
        with pytest.raises(FetchError, match=r"^too large: over max_bytes 100000$") as err:
            session.get(base + "/big", max_bytes=100_000)
        session.close()
        assert handler.done.wait(60)
    finally:
        server.shutdown()
        server.server_close()
    assert err.value.permanent is True
    # The client stopped reading at the cap; the rest never left the server (socket buffers aside).
    assert handler.sent < handler.LIMIT // 2


def test_decoded_bytes_count_against_the_cap(site):
    bomb = gzip.compress(b"\x00" * 1_000_000)  # ~1 KB on the wire, 1 MB decoded
    path = site.file_path(1)
    site.file_faults[path] = [Fault(body=bomb, headers={"Content-Encoding": "gzip"})]
    session = session_for(site.base_url, StoppedClock())
    with pytest.raises(FetchError, match=r"^too large: over max_bytes 100000$"):
        session.get(site.base_url + path, max_bytes=100_000)
    site.file_faults[path] = [Fault(body=bomb, headers={"Content-Encoding": "gzip"})]
    assert session.get(site.base_url + path, max_bytes=1_000_000).body == b"\x00" * 1_000_000
    session.close()


def test_a_declared_length_over_the_cap_is_refused_before_reading(site):
    path = site.file_path(1)
    size = len(site.files[path])
    session = session_for(site.base_url, StoppedClock())
    with pytest.raises(FetchError, match=rf"^too large: {size} bytes > max_bytes {size - 1}$") as err:
        session.get(site.base_url + path, max_bytes=size - 1)
    session.close()
    assert err.value.permanent is True


# ---------------------------------------------------------------- retries, waits and reasons


def test_retries_back_off_doubling_with_jitter_and_only_between_attempts(site):
    path = site.file_path(1)
    site.file_faults[path] = [Fault(status=503), Fault(status=502)]
    clock = StoppedClock()
    session = session_for(site.base_url, clock, backoff_s=0.4)
    assert session.get(site.base_url + path, max_bytes=1 << 20).body == site.files[path]
    session.close()
    first, second = clock.slept
    assert 0.2 <= first <= 0.4 and 0.4 <= second <= 0.8  # half fixed, half random, doubling
    assert len(site.file_requests(path)) == 3


def test_a_retry_after_of_zero_still_backs_off(site):
    path = site.file_path(1)
    site.file_faults[path] = [Fault(status=429, headers={"Retry-After": "0"})]
    clock = StoppedClock()
    session = session_for(site.base_url, clock, backoff_s=0.4)
    assert session.get(site.base_url + path, max_bytes=1 << 20).body == site.files[path]
    session.close()
    assert len(clock.slept) == 1 and 0.2 <= clock.slept[0] <= 0.4


def test_a_final_answer_is_not_retried(site):
    clock = StoppedClock()
    session = session_for(site.base_url, clock)
    with pytest.raises(FetchError, match=r"^HTTP 404$") as err:
        session.get(site.base_url + "/missing", max_bytes=1 << 20)
    session.close()
    assert err.value.permanent is True and clock.slept == [] and len(site.requests) == 1


def raising(error: Exception):
    def parse(fetched):
        raise error

    return parse


def test_a_transient_failure_is_named_by_the_first_line_of_its_error(site):
    path = site.file_path(1)
    clock = StoppedClock()
    session = session_for(site.base_url, clock, max_retries=1)
    long_line = "x" * 300
    with pytest.raises(FetchError) as err:
        session.get(
            site.base_url + path,
            max_bytes=1 << 20,
            parse=raising(requests.ConnectionError(long_line + "\nmore")),
        )
    assert err.value.reason == f"ConnectionError: {'x' * 200} (gave up after 2 attempts)"
    assert err.value.permanent is False and len(clock.slept) == 1
    with pytest.raises(FetchError) as err:
        session.get(site.base_url + path, max_bytes=1 << 20, parse=raising(requests.Timeout()))
    assert err.value.reason == "Timeout: no detail (gave up after 2 attempts)"
    session.close()


def test_an_unusable_url_fails_at_once_for_good():
    clock = StoppedClock()
    session = session_for("http://127.0.0.1", clock)
    with pytest.raises(FetchError) as err:
        session.get("http://127.0.0.1:notaport/x", max_bytes=100)
    session.close()
    assert err.value.reason.startswith("InvalidURL: Failed to parse: ")
    assert "notaport" in err.value.reason
    assert err.value.permanent is True and clock.slept == []


def test_a_stalled_answer_ends_at_the_read_timeout_and_is_retried(site):
    path = site.file_path(1)
    # Stalls last until the server stops (or 10 s): only the read timeout can end them.
    site.file_faults[path] = [Fault(stall_s=10), Fault(stall_s=10)]
    clock = StoppedClock()
    session = session_for(site.base_url, clock, timeout_s=0.2, max_retries=1)
    with pytest.raises(FetchError, match=r"^ReadTimeout: .*Read timed out.* \(gave up after 2 attempts\)$"):
        session.get(site.base_url + path, max_bytes=1 << 20)
    session.close()
    assert len(site.file_requests(path)) == 2


# ---------------------------------------------------------------- jitter and Retry-After dates


def test_sessions_built_alike_jitter_alike():
    def sleeps() -> list[float]:
        clock = StoppedClock()
        session = session_for("http://a.example", clock, backoff_s=1.0)
        for attempt in range(4):
            session.sleep_backoff(attempt)
        return clock.slept

    first = sleeps()
    assert first == sleeps()
    assert len(set(first)) == 4  # and they are jittered, not fixed


def test_a_retry_after_date_is_measured_from_now():
    soon = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    assert 60 < retry_after_seconds(soon) <= 121
    assert retry_after_seconds(format_datetime(datetime(2000, 1, 1, tzinfo=UTC), usegmt=True)) == 0.0
    assert retry_after_seconds("soon") is None and retry_after_seconds("") is None
    assert retry_after_seconds(" 7 ") == 7.0


# ---------------------------------------------------------------- what a fetch returns, which statuses retry


class PlainAnswer(BaseHTTPRequestHandler):
    """200 with a body and no Content-Type header at all."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 -- http.server's naming
        self.send_response(200)
        self.send_header("Content-Length", "5")
        self.end_headers()
        self.wfile.write(b"hello")

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


def test_the_content_type_is_the_servers_or_empty_when_it_names_none(site):
    path = site.file_path(1)
    session = session_for(site.base_url, StoppedClock())
    assert session.get(site.base_url + path, max_bytes=1 << 20).content_type == "image/jpeg"
    session.close()
    server = ThreadingHTTPServer(("127.0.0.1", 0), PlainAnswer)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        session = session_for(base, StoppedClock())
        got = session.get(base + "/plain", max_bytes=100)
        session.close()
    finally:
        server.shutdown()
        server.server_close()
    assert got.body == b"hello" and got.content_type == ""


@pytest.mark.parametrize("status", [500, 599])
def test_every_5xx_is_retried(site, status):
    path = site.file_path(1)
    site.file_faults[path] = [Fault(status=status)]
    clock = StoppedClock()
    session = session_for(site.base_url, clock)
    assert session.get(site.base_url + path, max_bytes=1 << 20).body == site.files[path]
    session.close()
    assert len(site.file_requests(path)) == 2 and len(clock.slept) == 1


def test_a_status_beyond_5xx_is_final(site):
    path = site.file_path(1)
    site.file_faults[path] = [Fault(status=600)]
    session = session_for(site.base_url, StoppedClock())
    with pytest.raises(FetchError, match=r"^HTTP 600$") as err:
        session.get(site.base_url + path, max_bytes=1 << 20)
    session.close()
    assert err.value.permanent is True and len(site.file_requests(path)) == 1


def test_a_url_without_a_host_is_refused_even_by_a_match_everything_pattern():
    anything = HostAllowList("", ["*"])
    assert anything.allows("https://example.org/a") and not anything.allows("https:///a")
    session = PoliteSession(
        user_agent="t", timeout_s=1, policy=RetryPolicy(0, 0.1, 1), allow=anything, sleep=lambda s: None
    )
    with pytest.raises(FetchError, match=r"^host not allowed: https:///a$"):
        session.get("https:///a", max_bytes=10)
    session.close()


def test_allowed_image_hosts_are_matched_by_pattern():
    allow = HostAllowList("https://safebooru.org", ["*.safebooru.org"])
    assert allow.allows("https://safebooru.org/images/1/a.jpg")
    assert allow.allows("https://img3.safebooru.org/images/1/a.jpg")
    assert not allow.allows("https://safebooru.org.evil.example/a.jpg")
    assert not allow.allows("https://safebooru.org@evil.example/a.jpg")
    assert not allow.allows("file:///etc/passwd") and not allow.allows("ftp://safebooru.org/a.jpg")


# ------------------------------------------------------------------ politeness helpers


def test_rate_limiter_spaces_calls_and_never_bursts():
    clock = FakeClock()
    limiter = RateLimiter(4.0, clock=clock.now, sleep=clock.sleep)
    times = []
    for _ in range(5):
        limiter.acquire()
        times.append(clock.now())
    assert [round(b - a, 9) for a, b in zip(times, times[1:], strict=False)] == [0.25] * 4
    clock.t += 10  # idle for a while: still one slot at a time, no burst of saved-up tokens
    limiter.acquire(), limiter.acquire()
    assert clock.sleeps[-1] == pytest.approx(0.25)
    clock.t += 10
    limiter.acquire()
    clock.t += 0.1  # the response took 100 ms: the next request waits 250 ms from its end
    limiter.release()
    limiter.acquire()
    assert clock.sleeps[-1] == pytest.approx(0.25)


def test_backoff_doubles_with_jitter_and_is_capped():
    import random

    policy = RetryPolicy(max_retries=10, backoff_s=1.0, max_wait_s=20.0)
    rng = random.Random(0)
    for attempt, ceiling in [(0, 1), (1, 2), (2, 4), (3, 8), (6, 20)]:
        delays = [policy.backoff(attempt, rng) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays) and len(set(delays)) > 1


def test_retry_after_parsing():
    now = datetime(2024, 1, 1, tzinfo=UTC)
    assert retry_after_seconds("12", now) == 12.0
    assert retry_after_seconds(format_datetime(now + timedelta(seconds=90), usegmt=True), now) == 90.0
    assert retry_after_seconds(format_datetime(now - timedelta(seconds=9), usegmt=True), now) == 0.0
    assert retry_after_seconds("soon", now) is None and retry_after_seconds(None, now) is None
