"""Source `safebooru`: the paper's data, fetched politely from safebooru.org (or a site like it).
One thread lists posts, a small pool downloads originals, journalled so a killed run resumes; `limit`
is what the folder holds (a lower one keeps the newest). docs/safebooru.md."""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tqdm import tqdm

from colorization.atomic import atomic_write_bytes
from colorization.config import SafebooruSource
from colorization.images import DEFAULT_MAX_PIXELS, ImageRejected, decode_rgb, sniff_format
from colorization.progress import progress_bar
from colorization.sources import polite_http
from colorization.sources import safebooru_api as api
from colorization.sources.journal import Journal, JournalState
from colorization.textsafe import escaped

log = logging.getLogger(__name__)
SOURCE = "safebooru"
EXTENSION_OF = {"jpeg": "jpg", "png": "png", "webp": "webp"}


@dataclass(frozen=True)
class Outcome:
    post: api.Post
    kind: Literal["accepted", "rejected", "failed"]  # rejected: final, journalled; failed: may work next run
    row: dict


class _Run:
    """One run: candidates listed on the main thread, downloads on workers; see `acquire_safebooru`."""

    def __init__(self, cfg: SafebooruSource, out_dir: Path, seed: int, max_pixels: int) -> None:
        self.cfg, self.max_pixels, self.out_dir = cfg, max_pixels, Path(out_dir)
        self.allow = polite_http.HostAllowList(cfg.base_url, cfg.allowed_hosts)
        self.session = polite_http.PoliteSession(
            user_agent=cfg.user_agent,
            timeout_s=cfg.timeout_s,
            policy=polite_http.RetryPolicy(cfg.max_retries, cfg.backoff_s, cfg.max_wait_s),
            allow=self.allow,
            pool_size=cfg.concurrent_downloads + 1,
            seed=seed,
        )
        self.lister = api.PostLister(self.session, cfg)
        self.excluded = api.excluded_tags(cfg.tags)
        self.journal = Journal(self.out_dir, SOURCE)
        self.state = JournalState()
        self.lock = threading.Lock()  # guards the de-duplication maps below, shared with workers
        self.owner_of_sha: dict[str, int] = {}
        self.owner_of_md5: dict[str, int] = {}
        self.seen: set[int] = set()
        self.problems: dict[str, dict] = {}  # this run's skips and failures, by item
        self.accepted = self.skipped = self.failed = 0

    def _problem(self, item: str, reason: str, *, failed: bool = False) -> None:
        self.problems[item] = {"source": SOURCE, "item": item, "reason": reason}
        if failed:
            self.failed += 1
            log.warning("safebooru: failed %s: %s", escaped(item), escaped(reason))
        else:
            self.skipped += 1
            log.debug("safebooru: skipped %s: %s", escaped(item), escaped(reason))

    def candidates(self, floor_id: int | None) -> Iterator[api.Post]:
        """Posts worth downloading, in listing order; metadata-only rejections are recorded here."""
        try:
            for raw in self.lister.iter_posts(floor_id):
                post_id = api.post_id_of(raw)
                if post_id in self.seen or post_id in self.state.accepted or post_id in self.state.rejected:
                    continue  # de-duplicate by post id: listed twice, or decided by an earlier run
                try:
                    post = api.parse_post(raw, self.cfg.base_url)
                except api.PostRejected as err:
                    self._problem(str(post_id if post_id is not None else raw), str(err))
                    continue
                self.seen.add(post.post_id)
                reason = api.skip_reason(
                    post,
                    min_size=self.cfg.min_size,
                    excluded=self.excluded,
                    allow=self.allow,
                    max_pixels=self.max_pixels,
                )
                if reason is None and post.md5:
                    with self.lock:
                        owner = self.owner_of_md5.setdefault(post.md5, post.post_id)
                    if owner != post.post_id:
                        reason = f"duplicate md5 of {SOURCE}-{owner}"
                if reason is not None:
                    self._problem(str(post.post_id), reason)
                    continue
                yield post
        except api.PageFailed as err:  # counted as failed: no crawl_done is recorded
            self._problem(err.url, f"failed: listing page: {err.reason}", failed=True)

    def download(self, post: api.Post) -> Outcome:
        try:
            return self._download(post)
        except polite_http.FetchError as err:
            return (self._reject if err.permanent else self._fail)(post, err.reason)
        except ImageRejected as err:
            return self._reject(post, str(err))
        except Exception as err:  # a disk error or a bug must not take the other downloads down
            log.exception("safebooru: post %s", post.post_id)
            return self._fail(post, f"{type(err).__name__}: {err}")

    def _download(self, post: api.Post) -> Outcome:
        if (orphan := self.state.orphans.pop(post.post_id, None)) is not None:
            data = orphan.read_bytes()  # killed between rename and journal: already downloaded
            orphan.unlink()
        else:
            data = self.session.get(post.file_url, max_bytes=self.cfg.max_bytes).body
        fmt = sniff_format(data)
        if fmt is None:
            # An HTML or JSON error page with status 200 is usually the site's passing trouble.
            return self._fail(post, f"not an image: {data[:40]!r}")
        if fmt != api.STILL_IMAGE_FORMATS[post.ext]:
            return self._reject(post, f"content is {fmt}, expected {api.STILL_IMAGE_FORMATS[post.ext]}")
        rgb = decode_rgb(data, min_size=self.cfg.min_size, max_pixels=self.max_pixels)
        sha256 = hashlib.sha256(data).hexdigest()
        with self.lock:
            owner = self.owner_of_sha.setdefault(sha256, post.post_id)
            if owner != post.post_id and post.md5:
                self.owner_of_md5[post.md5] = owner  # later posts with this hash are skipped unfetched
        if owner != post.post_id:
            return self._reject(post, f"duplicate content of {SOURCE}-{owner}")
        rel = self.journal.relative_path(post.post_id, EXTENSION_OF[fmt])
        row = {
            "id": f"{SOURCE}-{post.post_id}",
            "source": SOURCE,
            "path": rel,
            "width": int(rgb.shape[1]),
            "height": int(rgb.shape[0]),
            "sha256": sha256,
            "post_id": post.post_id,
            "tags": post.tags,
            "rating": post.rating,
            "md5": post.md5 or None,
            "file_url": post.file_url,
            "source_url": post.source_url,
            "score": post.score,
        }
        try:
            self.journal.append({"writing": rel})  # first: a kill after the write leaves a file it names
            atomic_write_bytes(self.out_dir / rel, data)
            self.journal.record_accepted(row, len(data))
        except BaseException:
            with self.lock:
                self.owner_of_sha.pop(sha256, None)
            raise
        return Outcome(post, "accepted", row)

    def _reject(self, post: api.Post, reason: str) -> Outcome:
        row = {"source": SOURCE, "item": str(post.post_id), "reason": reason}
        self.journal.record_rejected(post.post_id, row)
        return Outcome(post, "rejected", row)

    def _fail(self, post: api.Post, reason: str) -> Outcome:
        return Outcome(
            post, "failed", {"source": SOURCE, "item": str(post.post_id), "reason": f"failed: {reason}"}
        )

    def collect(self, outcome: Outcome, bar: tqdm) -> None:
        if outcome.kind == "accepted":
            self.state.accepted[outcome.post.post_id] = outcome.row
            self.accepted += 1
            bar.update(1)
        else:
            if outcome.kind == "failed":
                with self.lock:  # free the md5: another post with the same file may have better luck
                    if self.owner_of_md5.get(outcome.post.md5) == outcome.post.post_id:
                        del self.owner_of_md5[outcome.post.md5]
            if outcome.kind == "rejected":
                self.state.rejected[outcome.post.post_id] = outcome.row
            self._problem(outcome.row["item"], outcome.row["reason"], failed=outcome.kind == "failed")
        bar.set_postfix(accepted=self.accepted, skipped=self.skipped, failed=self.failed, refresh=False)

    def run(self) -> tuple[list[dict], list[dict]]:
        started = time.monotonic()
        try:
            self.state = self.journal.open({"min_size": self.cfg.min_size, "max_bytes": self.cfg.max_bytes})
            for post_id, row in self.state.accepted.items():
                self.owner_of_sha[row["sha256"]] = post_id
                if row.get("md5"):
                    self.owner_of_md5[row["md5"]] = post_id
            floor = self.state.crawl_done if self.cfg.incremental else None
            self._crawl(floor)
            if not self.failed and self.lister.newest_id is not None:
                self.journal.append({"crawl_done": max(self.lister.newest_id, floor or 0)})
            extra = sorted(self.state.accepted)[: max(0, len(self.state.accepted) - self.cfg.limit)]
            if extra:
                log.warning(
                    "safebooru: limit %d is below the %d images held: deleting the oldest %d",
                    self.cfg.limit,
                    len(self.state.accepted),
                    len(extra),
                )
            for post_id in extra:  # the journal forgets them on the next start, their files being gone
                (self.out_dir / self.state.accepted.pop(post_id)["path"]).unlink(missing_ok=True)
        finally:
            self.journal.close()
            self.session.close()
            for orphan in self.state.orphans.values():  # not claimed: disk must match the manifest
                orphan.unlink(missing_ok=True)
        log.info(
            f"safebooru: {self.accepted} accepted, {self.skipped} skipped, {self.failed} failed; "
            f"{len(self.state.accepted)} held (limit {self.cfg.limit}); "
            f"{self.lister.pages} pages in {time.monotonic() - started:.1f}s"
        )
        accepted = sorted(self.state.accepted.values(), key=lambda r: r["post_id"])
        rejected = {row["item"]: row for row in self.state.rejected.values()} | self.problems
        return accepted, list(rejected.values())

    def _crawl(self, floor: int | None) -> None:
        """Download until the folder holds `limit` images or the listing ends."""
        want = self.cfg.limit - len(self.state.accepted)
        if want <= 0:
            return
        concurrency = self.cfg.concurrent_downloads
        posts = self.candidates(floor)
        pending: set[Future[Outcome]] = set()
        with progress_bar("acquire safebooru", total=want) as bar, ThreadPoolExecutor(concurrency) as pool:
            try:
                while True:
                    # Never more downloads in flight than images still wanted, so the run
                    # ends at exactly `limit` without fetching extras.
                    while pending and (len(pending) >= concurrency or self.accepted + len(pending) >= want):
                        done, pending = wait(pending, return_when=FIRST_COMPLETED)
                        for future in done:
                            self.collect(future.result(), bar)
                    if self.accepted >= want or (post := next(posts, None)) is None:
                        break
                    pending.add(pool.submit(self.download, post))
                for future in pending:
                    self.collect(future.result(), bar)
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise


def acquire_safebooru(
    cfg: SafebooruSource, out_dir: Path, *, seed: int = 0, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[list[dict], list[dict]]:
    """Fill `out_dir/images` from safebooru; return (manifest rows of every image held, rejected rows:
    this run's skips and failures, earlier runs' rejections; "failed: ..." may work next run)."""
    return _Run(cfg, out_dir, seed, max_pixels).run()
