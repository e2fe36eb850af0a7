"""The global concurrency limit that keeps two flow runs from crawling safebooru at once (the
source's own rate limit holds within one process only)."""

from __future__ import annotations

from contextlib import suppress

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

SAFEBOORU_LIMIT = "safebooru-downloads"


def ensure_download_limit() -> None:
    """Create the global concurrency limit (one slot) `acquire` holds, if the server lacks it."""
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(SAFEBOORU_LIMIT)
        except ObjectNotFound:
            with suppress(ObjectAlreadyExists):  # another run created it meanwhile
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=SAFEBOORU_LIMIT, limit=1)
                )
