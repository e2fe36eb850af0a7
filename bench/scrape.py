"""Benchmark the safebooru source against the local fake site (tests/fake_safebooru.py).

Two tables:
  1. throughput: accepted images/s with the API rate limit off and N concurrent downloads
     (the fake adds --latency-ms per file to stand in for the network);
  2. politeness: the API request rate the site actually sees with the limit on -- it must
     sit at the limit, never above. Measured from the server's arrival times.

    python bench/scrape.py [--posts 400] [--size 256] [--latency-ms 20]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from anywhere

from colorization.config import SafebooruSource  # noqa: E402
from colorization.sources.safebooru import acquire_safebooru  # noqa: E402
from tests.fake_safebooru import FakeSafebooru  # noqa: E402


def config(site: FakeSafebooru, **overrides) -> SafebooruSource:
    values = {
        "base_url": site.base_url,
        "tags": "-monochrome -greyscale -comic",
        "limit": 100_000,
        "min_size": 32,
        "allowed_hosts": [],
        "requests_per_second": 0.0,
        "concurrent_downloads": 4,
        "timeout_s": 30.0,
        "max_retries": 3,
        "backoff_s": 0.01,
        "max_wait_s": 5.0,
        "empty_page_retries": 2,
        "max_bytes": 32 << 20,
        "page_size": 100,
        "incremental": True,
        "user_agent": "lineart-colorization-bench/0.1",
    }
    values.update(overrides)
    return SafebooruSource(**values)


def quietly(cfg: SafebooruSource, out: Path) -> list[dict]:
    with contextlib.redirect_stderr(io.StringIO()):  # the per-run summary line
        rows, _ = acquire_safebooru(cfg, out)
    return rows


def throughput(posts: int, size: int, latency_s: float, concurrency: list[int]) -> list[tuple]:
    results = []
    with FakeSafebooru(file_delay_s=latency_s) as site:
        for post_id in range(1, posts + 1):
            site.add_post(post_id, width=size, height=size)
        megabytes = sum(len(b) for b in site.files.values()) / 1e6
        for workers in concurrency:
            with tempfile.TemporaryDirectory() as tmp:
                started = time.perf_counter()
                rows = quietly(config(site, concurrent_downloads=workers), Path(tmp))
                seconds = time.perf_counter() - started
            results.append((workers, len(rows), seconds, len(rows) / seconds, megabytes / seconds))
    return results


def request_rate(limit: float, page_size: int = 5) -> tuple:
    requests = max(8, round(3 * limit))  # about three seconds of listing
    pages = requests - 3  # the last page is asked 1 + empty_page_retries times
    with FakeSafebooru() as site:
        for post_id in range(1, pages * page_size + 1):
            site.add_post(post_id, width=32, height=32)
        with tempfile.TemporaryDirectory() as tmp:
            quietly(
                config(site, requests_per_second=limit, page_size=page_size, concurrent_downloads=8),
                Path(tmp),
            )
        times = [r.t for r in site.api_requests()]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    achieved = (len(times) - 1) / (times[-1] - times[0])
    return limit, len(times), achieved, 1 / min(gaps), achieved <= limit


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--posts", type=int, default=400)
    parser.add_argument("--size", type=int, default=256, help="image side, px")
    parser.add_argument("--latency-ms", type=float, default=20.0, help="simulated network latency per file")
    parser.add_argument("--concurrency", default="1,2,4,8")
    parser.add_argument("--rates", default="1,2,5,10", help="API rate limits to check, requests/s")
    args = parser.parse_args()

    rows = throughput(
        args.posts, args.size, args.latency_ms / 1000, [int(c) for c in args.concurrency.split(",")]
    )
    print(
        f"\nThroughput: {args.posts} posts of {args.size}x{args.size} JPEG, rate limit off, "
        f"{args.latency_ms:g} ms latency per file"
    )
    print(f"{'downloads':>9} | {'accepted':>8} | {'seconds':>7} | {'images/s':>8} | {'MB/s':>6}")
    print(f"{'-' * 9}-+-{'-' * 8}-+-{'-' * 7}-+-{'-' * 8}-+-{'-' * 6}")
    for workers, accepted, seconds, per_s, mb_s in rows:
        print(f"{workers:>9} | {accepted:>8} | {seconds:>7.2f} | {per_s:>8.1f} | {mb_s:>6.2f}")

    print("\nAPI request rate seen by the site, limit on (page_size 5)")
    print(f"{'limit/s':>7} | {'requests':>8} | {'achieved/s':>10} | {'peak/s (1/min gap)':>18} | at or below")
    print(f"{'-' * 7}-+-{'-' * 8}-+-{'-' * 10}-+-{'-' * 18}-+-{'-' * 11}")
    for rate in (float(r) for r in args.rates.split(",")):
        limit, count, achieved, peak, ok = request_rate(rate)
        print(f"{limit:>7g} | {count:>8} | {achieved:>10.3f} | {peak:>18.3f} | {'yes' if ok else 'NO'}")


if __name__ == "__main__":
    main()
