"""The safebooru source against a local fake of the site (tests/fake_safebooru.py).

Delays are configured tiny (backoff 1 ms, no rate limit) and waits that must be
exact are checked with a fake clock, so nothing here sleeps and hopes.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from colorization.config import SafebooruSource
from colorization.images import decode_rgb
from colorization.manifest import read_manifest, write_manifest
from colorization.sources.polite_http import (
    FetchError,
    HostAllowList,
    PoliteSession,
    RateLimiter,
    RetryPolicy,
)
from colorization.sources.safebooru import acquire_safebooru
from colorization.sources.safebooru_api import parse_page
from tests.fake_safebooru import TOO_DEEP_BODY, FakeSafebooru, Fault, make_image

TAGS = "-monochrome -greyscale -comic"


UA = "lineart-colorization-tests/0.1 (+https://example.org/tests)"


@pytest.fixture
def site():
    with FakeSafebooru() as fake:
        yield fake


def make_cfg(site: FakeSafebooru, **overrides) -> SafebooruSource:
    values = {
        "base_url": site.base_url,
        "tags": TAGS,
        "limit": 1000,
        "min_size": 32,
        "allowed_hosts": [],
        "requests_per_second": 0.0,
        "concurrent_downloads": 4,
        "timeout_s": 30.0,  # only the stall tests time out; no count may hang on a slow machine
        "max_retries": 3,
        "backoff_s": 0.001,
        "max_wait_s": 2.0,
        "empty_page_retries": 2,
        "max_bytes": 1 << 20,
        "page_size": 10,
        "incremental": True,
        "user_agent": UA,
    }
    values.update(overrides)
    return SafebooruSource(**values)


def acquire(site: FakeSafebooru, out: Path, **overrides) -> tuple[list[dict], dict[str, str]]:
    """Run the source; returns manifest rows and {item: reason} of the rejected rows."""
    rows, rejected = acquire_safebooru(make_cfg(site, **overrides), out)
    return rows, {r["item"]: r["reason"] for r in rejected}


def add_posts(site: FakeSafebooru, ids) -> None:
    for post_id in ids:
        site.add_post(post_id)


def assert_consistent(out: Path, rows: list[dict]) -> None:
    """Manifest rows and the files on disk describe the same images, and nothing is half-written."""
    write_manifest(out, rows)
    manifest = read_manifest(out).to_pylist()
    on_disk = {p.relative_to(out).as_posix() for p in (out / "images").iterdir()}
    assert {r["path"] for r in manifest} == on_disk
    assert not [p for p in out.rglob(".tmp-*")]
    for row in manifest:
        data = (out / row["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == row["sha256"]
        assert decode_rgb(data).shape[:2] == (row["height"], row["width"])
        assert row["path"] == f"images/safebooru-{row['post_id']}.{row['path'].rsplit('.', 1)[1]}"


def tags_asked(site: FakeSafebooru) -> list[str]:
    return [r.query["tags"] for r in site.api_requests()]


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds


# ------------------------------------------------------------------ listing


def test_pages_by_id_across_several_pages(site, tmp_path, caplog):
    caplog.set_level("INFO", logger="colorization.sources.safebooru")
    add_posts(site, range(1, 36))
    rows, rejected = acquire(site, tmp_path)
    assert [r["post_id"] for r in rows] == list(range(1, 36)) and not rejected
    # pid is never used for depth: each page asks for ids below the smallest seen so far.
    assert tags_asked(site)[:5] == [
        TAGS,
        f"{TAGS} id:<26",
        f"{TAGS} id:<16",
        f"{TAGS} id:<6",
        f"{TAGS} id:<1",
    ]
    for request in site.api_requests():
        assert request.query | {"tags": ""} == {
            "page": "dapi",
            "s": "post",
            "q": "index",
            "json": "1",
            "limit": "10",
            "pid": "0",
            "tags": "",
        }
    assert {r.user_agent for r in site.requests} == {UA}
    post = site.posts[7]
    row = rows[6]
    assert row == {
        "id": "safebooru-7",
        "source": "safebooru",
        "path": "images/safebooru-7.jpg",
        "width": 48,
        "height": 40,
        "sha256": hashlib.sha256(site.files[site.file_path(7)]).hexdigest(),
        "post_id": 7,
        "tags": post["tags"],
        "rating": "general",
        "md5": post["hash"],
        "file_url": post["file_url"],
        "source_url": post["source"],
        "score": 3,
    }
    assert_consistent(tmp_path, rows)
    assert "safebooru: 35 accepted, 0 skipped, 0 failed; 35 held (limit 1000); 7 pages in" in caplog.text


def test_empty_body_ends_the_listing_after_asking_again(site, tmp_path):
    add_posts(site, range(1, 11))
    assert site.list_posts({"tags": "id:<1"}) == b""  # the site's "no results" is an empty body, not []
    rows, _ = acquire(site, tmp_path)
    assert len(rows) == 10
    # One full page, then the empty answer asked 1 + empty_page_retries times before it is believed.
    assert tags_asked(site) == [TAGS] + [f"{TAGS} id:<1"] * 3


def test_one_spurious_empty_page_mid_listing_is_retried(site, tmp_path):
    add_posts(site, range(1, 31))
    site.api_faults.extend([Fault(), Fault(body=b"")])  # the second page comes back empty once
    rows, _ = acquire(site, tmp_path)
    assert len(rows) == 30
    assert tags_asked(site)[1:3] == [f"{TAGS} id:<21"] * 2


def test_too_deep_is_never_reached_by_paging_by_id(tmp_path):
    with FakeSafebooru(deep_limit=10) as site:
        add_posts(site, range(1, 36))
        assert site.list_posts({"pid": "1", "limit": "10"}) == TOO_DEEP_BODY and site.too_deep_served == 1
        rows, _ = acquire(site, tmp_path)
        assert len(rows) == 35 and site.too_deep_served == 1


def test_too_deep_body_fails_the_page_without_retrying(site, tmp_path):
    add_posts(site, range(1, 6))
    site.api_faults.append(Fault(body=TOO_DEEP_BODY))
    rows, rejected = acquire(site, tmp_path)
    assert rows == [] and len(site.api_requests()) == 1
    (reason,) = rejected.values()
    assert reason.startswith("failed: listing page: too deep")


def test_invalid_json_is_retried(site, tmp_path):
    add_posts(site, range(1, 21))
    site.api_faults.extend([Fault(), Fault(body=b"<html><body>502 Bad Gateway</body></html>")])
    rows, rejected = acquire(site, tmp_path)
    assert len(rows) == 20 and not rejected


def test_a_page_that_keeps_failing_is_recorded_and_the_run_goes_on(site, tmp_path):
    add_posts(site, range(1, 21))
    site.api_faults.extend([Fault()] + [Fault(body=b"{not json")] * 3)
    rows, rejected = acquire(site, tmp_path, max_retries=2)
    assert [r["post_id"] for r in rows] == list(range(11, 21))  # the first page still got downloaded
    (item, reason), *_ = rejected.items()
    assert "id%3A%3C11" in item and reason.startswith("failed: listing page: invalid JSON")
    assert "crawl_done" not in (tmp_path / ".safebooru-journal.jsonl").read_text()
    rows, rejected = acquire(site, tmp_path)  # the next run picks the listing up again
    assert len(rows) == 20 and not rejected


def test_duplicate_posts_in_a_listing_are_fetched_once(site, tmp_path):
    add_posts(site, [1, 2])
    site.api_faults.append(Fault(body=json.dumps([site.posts[2], site.posts[2], site.posts[1]]).encode()))
    rows, _ = acquire(site, tmp_path)
    assert len(rows) == 2 and len(site.file_requests(site.file_path(2))) == 1


# ------------------------------------------------------------------ network and server failures


def test_429_on_the_api_honours_retry_after(site):
    add_posts(site, range(1, 4))
    site.api_faults.append(Fault(status=429, headers={"Retry-After": "7"}))
    clock = FakeClock()
    session = PoliteSession(
        user_agent=UA,
        timeout_s=30,
        policy=RetryPolicy(max_retries=3, backoff_s=0.5, max_wait_s=60),
        allow=HostAllowList(site.base_url, []),
        clock=clock.now,
        sleep=clock.sleep,
    )
    limiter = RateLimiter(1.0, clock=clock.now, sleep=clock.sleep)
    params = {"page": "dapi", "s": "post", "q": "index", "json": "1", "limit": "10", "pid": "0", "tags": ""}
    posts = session.get(
        f"{site.base_url}/index.php", params=params, max_bytes=1 << 20, limiter=limiter, parse=parse_page
    )
    assert [p["id"] for p in posts] == [3, 2, 1]
    assert clock.sleeps == [7.0]  # exactly what the server asked, which also covers the 1/s limit
    # A Retry-After beyond max_wait_s fails the request rather than hammering early or hanging.
    site.api_faults.append(Fault(status=429, headers={"Retry-After": "3600"}))
    with pytest.raises(FetchError, match="Retry-After 3600s exceeds max_wait_s"):
        session.get(f"{site.base_url}/index.php", params=params, max_bytes=1 << 20, limiter=limiter)
    assert clock.sleeps == [7.0, 1.0]  # only the rate limit's spacing
    session.close()


def test_429_on_files_and_pages_is_retried_end_to_end(site, tmp_path):
    add_posts(site, range(1, 6))
    site.api_faults.append(Fault(status=429, headers={"Retry-After": "0"}))
    site.file_faults[site.file_path(3)] = [Fault(status=429, headers={"Retry-After": "0"})]
    rows, rejected = acquire(site, tmp_path)
    assert len(rows) == 5 and not rejected
    assert len(site.file_requests(site.file_path(3))) == 2


def test_503_twice_then_success(site, tmp_path):
    add_posts(site, range(1, 6))
    site.api_faults.extend([Fault(status=503), Fault(status=503)])
    site.file_faults[site.file_path(4)] = [Fault(status=503, body=b"busy"), Fault(status=502)]
    rows, rejected = acquire(site, tmp_path)
    assert len(rows) == 5 and not rejected
    assert len(site.file_requests(site.file_path(4))) == 3
    assert tags_asked(site)[:3] == [TAGS] * 3


def test_503_forever_is_a_failure_that_a_later_run_retries(site, tmp_path):
    add_posts(site, range(1, 6))
    site.file_faults[site.file_path(2)] = [Fault(status=503)] * 4
    rows, rejected = acquire(site, tmp_path)
    assert len(rows) == 4 and rejected["2"].startswith("failed: HTTP 503 (gave up after 4 attempts)")
    rows, rejected = acquire(site, tmp_path)  # failures are not journalled as final
    assert len(rows) == 5 and not rejected


def test_read_timeout_is_retried(site, tmp_path):
    add_posts(site, range(1, 6))
    # The stalls outlast any timeout (they end only when the server stops); the 2 s read timeout
    # ends them. A slow answer elsewhere could only add a retry, so counts are "at least".
    site.api_faults.append(Fault(stall_s=3600))
    site.file_faults[site.file_path(5)] = [Fault(stall_s=3600)]
    rows, rejected = acquire(site, tmp_path, timeout_s=2.0)
    assert len(rows) == 5 and not rejected
    assert len(site.file_requests(site.file_path(5))) >= 2 and tags_asked(site)[:2] == [TAGS] * 2
    assert not site.file_faults[site.file_path(5)] and not site.api_faults  # both stalls were served


def test_connection_cut_mid_body_is_retried(site, tmp_path):
    add_posts(site, range(1, 4))
    site.file_faults[site.file_path(2)] = [Fault(cut_after=100)]
    rows, rejected = acquire(site, tmp_path)
    assert len(rows) == 3 and not rejected
    assert len(site.file_requests(site.file_path(2))) == 2


# ------------------------------------------------------------------ what gets accepted


def test_truncated_image_is_rejected_for_good(site, tmp_path):
    add_posts(site, [1, 3])
    whole = make_image(2, 64, 64, "jpg")
    site.add_post(2, data=whole[: len(whole) // 2])  # the site's copy itself is truncated
    rows, rejected = acquire(site, tmp_path)
    assert [r["post_id"] for r in rows] == [1, 3] and rejected["2"] == "truncated jpeg"
    assert not list((tmp_path / "images").glob("safebooru-2.*"))
    rows, rejected = acquire(site, tmp_path, incremental=False)  # journalled: not fetched again
    assert len(site.file_requests(site.file_path(2))) == 1 and rejected["2"] == "truncated jpeg"


def test_html_served_where_an_image_should_be(site, tmp_path):
    add_posts(site, [1])
    site.add_post(2, data=b"<!DOCTYPE html><html><body>Just a moment...</body></html>")
    rows, rejected = acquire(site, tmp_path)
    assert [r["post_id"] for r in rows] == [1]
    assert rejected["2"].startswith("failed: not an image: b'<!DOCTYPE html>")
    assert_consistent(tmp_path, rows)


def test_bytes_of_another_type_than_the_post_says_are_rejected(site, tmp_path):
    site.add_post(1, ext="png", data=make_image(1, 48, 40, "jpg"))
    _, rejected = acquire(site, tmp_path)
    assert rejected["1"] == "content is jpeg, expected png"


def test_file_url_on_a_host_that_is_not_allowed_is_never_requested(site, tmp_path):
    add_posts(site, [1, 2])
    port = site.base_url.rsplit(":", 1)[1]
    foreign = site.add_post(3, file_url=f"http://localhost:{port}/images/0/x.jpg")  # same server, other name
    site.files["/images/0/x.jpg"] = make_image(3)
    path4 = site.file_path(site.add_post(4)["id"])
    site.file_faults[path4] = [Fault(status=302, headers={"Location": f"http://localhost:{port}{path4}"})]
    rows, rejected = acquire(site, tmp_path)
    assert [r["post_id"] for r in rows] == [1, 2]
    assert rejected["3"] == "host not allowed: localhost" and rejected["4"] == "host not allowed: localhost"
    assert site.file_requests("/images/0/x.jpg") == [] and len(site.file_requests(path4)) == 1
    assert foreign["file_url"].startswith("http://localhost")


def test_a_post_without_file_url_is_fetched_from_the_images_path(site, tmp_path):
    post = site.add_post(1, with_file_url=False)
    rows, _ = acquire(site, tmp_path)
    assert rows[0]["file_url"] == f"{site.base_url}/images/{post['directory']}/{post['image']}"
    assert rows[0]["source_url"] is None


def test_videos_animations_and_archives_are_skipped_unfetched(site, tmp_path):
    add_posts(site, [1])
    for post_id, ext in [(2, "webm"), (3, "gif"), (4, "mp4"), (5, "zip")]:
        site.add_post(post_id, ext=ext)
    rows, rejected = acquire(site, tmp_path)
    assert [r["post_id"] for r in rows] == [1]
    assert rejected == {
        "2": "not a still image (.webm)",
        "3": "not a still image (.gif)",
        "4": "not a still image (.mp4)",
        "5": "not a still image (.zip)",
    }
    assert len(site.file_requests()) == 1


def test_small_images_are_skipped_on_metadata_and_on_pixels(site, tmp_path):
    site.add_post(1, width=20, height=100)
    site.add_post(2, width=24, height=24, declared=(500, 500))  # the site's sizes are wrong
    add_posts(site, [3])
    rows, rejected = acquire(site, tmp_path)
    assert [r["post_id"] for r in rows] == [3]
    assert rejected["1"] == "too small: 20x100 < min_size 32"
    assert rejected["2"] == "too small: 24x24 < min_size 32"
    assert site.file_requests(site.file_path(1)) == []


def test_duplicates_by_md5_and_by_content_are_stored_once(site, tmp_path):
    data = make_image(1)
    site.add_post(3, data=data)
    site.add_post(2, data=data, md5="0" * 32)  # same bytes under a wrong hash: caught by sha256
    site.add_post(1, data=data)  # same file, same md5: skipped before downloading
    rows, rejected = acquire(site, tmp_path, concurrent_downloads=1)
    assert [r["post_id"] for r in rows] == [3]
    assert rejected == {"2": "duplicate content of safebooru-3", "1": "duplicate md5 of safebooru-3"}
    assert len(site.file_requests()) == 2


def test_response_bodies_are_capped(site, tmp_path):
    big = make_image(1, 400, 400, "png")
    site.add_post(1, data=big, width=400, height=400)
    site.add_post(2, data=big[:-1] + b"\x01", width=400, height=400)
    site.file_faults[site.file_path(2)] = [Fault(omit_length=True)]  # no Content-Length to trust
    _, rejected = acquire(site, tmp_path, max_bytes=len(big) // 4)
    assert rejected["1"] == f"too large: {len(big)} bytes > max_bytes {len(big) // 4}"
    assert rejected["2"] == f"too large: over max_bytes {len(big) // 4}"


# ------------------------------------------------------------------ resume and incremental


def test_resume_reconciles_journal_and_disk(site, tmp_path):
    add_posts(site, range(1, 7))
    rows, _ = acquire(site, tmp_path)
    images = tmp_path / "images"
    (images / "safebooru-2.jpg").unlink()  # journal names a missing file
    (images / ".tmp-safebooru-9.jpg.x1y2z3w4").write_bytes(b"half")  # a kill mid-write (atomic_path names)
    (images / "safebooru-77.jpg").write_bytes(make_image(77))  # never journalled: not ours, kept
    (images / "safebooru-6.jpg").rename(images / "safebooru-6.keep")
    journal = tmp_path / ".safebooru-journal.jsonl"
    lines = [line for line in journal.read_text().splitlines() if '"post_id":6,' not in line]
    journal.write_text("\n".join(lines) + '\n{"accepted": {"id": "safebo')  # post 6 unjournalled; torn tail
    (images / "safebooru-6.keep").rename(images / "safebooru-6.jpg")  # ... but its file is there (orphan)
    rows, rejected = acquire(site, tmp_path, incremental=False)
    assert [r["post_id"] for r in rows] == list(range(1, 7)) and not rejected
    assert len(site.file_requests(site.file_path(2))) == 2  # lost file: fetched again
    assert len(site.file_requests(site.file_path(6))) == 1  # orphan: taken from disk, not re-downloaded
    assert all(len(site.file_requests(site.file_path(i))) == 1 for i in (1, 3, 4, 5))
    assert (images / "safebooru-77.jpg").read_bytes() == make_image(77)
    (images / "safebooru-77.jpg").unlink()  # the user's own file: not in the manifest
    assert_consistent(tmp_path, rows)


def test_journal_deletes_only_files_it_wrote(site, tmp_path):
    add_posts(site, range(1, 5))
    acquire(site, tmp_path)
    images = tmp_path / "images"
    foreign = {
        "safebooru-notes.txt": b"mine",
        "safebooru-3.png": make_image(33),  # a second format of a held post, copied in by hand
        "safebooru-50.jpg": make_image(50),  # our naming, never journalled
    }
    for name, data in foreign.items():
        (images / name).write_bytes(data)
    (images / "safebooru-dir").mkdir()
    (images / "safebooru-dir" / "keep.txt").write_bytes(b"mine")
    (images / "safebooru-60.jpg").write_bytes(make_image(60))  # ours: journalled "writing", then killed
    with open(tmp_path / ".safebooru-journal.jsonl", "a") as journal:
        journal.write('{"writing":"images/safebooru-60.jpg"}\n')
    rows, _ = acquire(site, tmp_path, incremental=False)
    assert [r["post_id"] for r in rows] == [1, 2, 3, 4]
    assert {name: (images / name).read_bytes() for name in foreign} == foreign
    assert (images / "safebooru-dir" / "keep.txt").read_bytes() == b"mine"
    assert not (images / "safebooru-60.jpg").exists()  # its orphan, unclaimed at the end: removed


def test_incremental_fetches_only_newer_posts(site, tmp_path):
    add_posts(site, range(1, 21))
    acquire(site, tmp_path)
    first_run = len(site.api_requests())
    add_posts(site, range(21, 26))
    rows, _ = acquire(site, tmp_path)
    assert len(rows) == 25
    assert tags_asked(site)[first_run:] == [TAGS]  # one page reached the newest id already held
    assert all(count == 1 for count in site.completed_files.values())
    rows, _ = acquire(site, tmp_path, incremental=False)  # a full re-listing still downloads nothing
    assert len(rows) == 25 and all(count == 1 for count in site.completed_files.values())


def test_limit_counts_images_held(site, tmp_path):
    add_posts(site, range(1, 31))
    rows, _ = acquire(site, tmp_path, limit=12)
    assert [r["post_id"] for r in rows] == list(range(19, 31))
    assert len(site.file_requests()) == 12  # no extra downloads thrown away at the limit
    before = len(site.requests)
    rows, _ = acquire(site, tmp_path, limit=12)  # already there: not a single request
    assert len(rows) == 12 and len(site.requests) == before
    rows, _ = acquire(site, tmp_path, limit=5)  # the folder follows params, keeping the newest
    assert [r["post_id"] for r in rows] == list(range(26, 31)) and len(site.requests) == before
    assert_consistent(tmp_path, rows)


@pytest.mark.slow
def test_limit_200_from_300_posts_with_40_unusable(site, tmp_path):
    out = tmp_path / "raw"
    unusable = [i for i in range(1, 301) if i % 7 == 0][:40]
    escape = tmp_path.parent / f"escaped-{tmp_path.name}.jpg"
    for post_id in range(1, 301):
        kind = unusable.index(post_id) % 8 if post_id in unusable else None
        if kind == 0:
            site.add_post(post_id, ext="webm")
        elif kind == 1:
            site.add_post(post_id, ext="gif")
        elif kind == 2:
            site.add_post(post_id, width=16, height=16)
        elif kind == 3:
            whole = make_image(post_id)
            site.add_post(post_id, data=whole[: len(whole) * 2 // 3])
        elif kind == 4:
            site.add_post(post_id, data=b"<html><body>Service Unavailable</body></html>")
        elif kind == 5:
            site.add_post(post_id, file_url=f"http://203.0.113.9/images/{post_id}.jpg")
        elif kind == 6:
            site.add_post(post_id, data=make_image(post_id - 1))  # same file as its neighbour
        elif kind == 7:  # a hostile name with no file_url: never a URL, never a path
            post = site.add_post(post_id, with_file_url=False)
            post["directory"], post["image"] = "../../..", f"../{escape}"
        else:
            post = site.add_post(post_id)
            if post_id % 10 == 3:  # hostile names beside a good file_url: stored by id regardless
                post["image"] = f"../../../{escape.name}"
    rows, rejected = acquire(site, out, limit=200)
    assert len(rows) == 200 and len({r["sha256"] for r in rows}) == 200
    write_manifest(out, rows)
    assert read_manifest(out).num_rows == 200
    assert len(list((out / "images").iterdir())) == 200
    assert_consistent(out, rows)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"] and not escape.exists()
    held = {r["post_id"] for r in rows}
    assert held.isdisjoint(i for i in unusable if unusable.index(i) % 8 != 6)
    listed = [i for i in unusable if i > min(held)]
    assert all(str(i) in rejected or str(i - 1) in rejected for i in listed)
