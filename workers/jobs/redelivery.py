"""Failed webhook deliveries: GitHub never redelivers one by itself, and a delivery that failed (the receiver
was down, or answered 5xx) is an event Retrain never saw. Beat runs this every few minutes: list the App's
recent deliveries (`GET /app/hook/deliveries`, App JWT) and ask once for a redelivery of each that failed
(`POST /app/hook/deliveries/{id}/attempts`).

"Once" holds across runs and processes: a guid is claimed in Redis with SET NX, kept longer than the
window looked back on, before its redelivery is asked for, and released again when asking fails, so the
next run asks again (at least once). A redelivery keeps the guid, so should one ever arrive twice (an
ask whose answer was lost, asked again), the receiver's delivery dedupe drops the second.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import redis.asyncio as aioredis
from gidgethub import HTTPException, sansio
from gidgethub.apps import get_jwt

from app.config.settings import Settings
from app.github.client import API_VERSION, USER_AGENT
from app.github.retry import requested_wait_s, with_retries

log = logging.getLogger(__name__)
LOOKBACK = timedelta(hours=24)  # covers a day of this job being down; GitHub keeps about 3 days
CLAIM_KEY = "retrain:redelivered:{}"
CLAIM_TTL_S = int(3 * LOOKBACK.total_seconds())  # longer than LOOKBACK: a claimed guid is never listed again
PER_PAGE = 100
MAX_PAGES = 50  # 5,000 deliveries a run at most; the next run goes on from the newest again


Delivery = dict[str, Any]


# -- pure: which deliveries to redeliver -----------------------------------------------------------------------
def delivered_at(delivery: Delivery) -> datetime:
    return datetime.fromisoformat(str(delivery["delivered_at"]).replace("Z", "+00:00"))


def failed(delivery: Delivery) -> bool:
    """GitHub's status is "OK" for a 2xx answer, else the reason ("Invalid HTTP Response: 502", "timed out")."""
    return int(delivery.get("status_code") or 0) >= 400 or delivery.get("status") != "OK"


def select_redeliveries(deliveries: Iterable[Delivery], *, now: datetime, lookback: timedelta = LOOKBACK) -> list[
    Delivery
]:
    """One delivery per guid to redeliver, newest first: an original (not itself a redelivery) that failed
    within the window, whose guid has no successful delivery (a redelivery that worked counts)."""
    recent = [d for d in deliveries if delivered_at(d) >= now - lookback]
    succeeded = {d["guid"] for d in recent if not failed(d)}
    chosen: dict[str, Delivery] = {}
    for d in sorted(recent, key=lambda d: (delivered_at(d), int(d["id"])), reverse=True):
        if failed(d) and not d.get("redelivery") and d["guid"] not in succeeded:
            chosen.setdefault(d["guid"], d)
    return list(chosen.values())


# -- thin I/O: the two App-JWT endpoints -------------------------------------------------------------------------
class AppDeliveries:
    """gidgethub's sans-I/O helpers over aiohttp, so errors are gidgethub's and `with_retries` applies."""

    def __init__(self, session: aiohttp.ClientSession, settings: Settings) -> None:
        self._session = session
        self._base = settings.github_api_url.rstrip("/")
        self._app_id, self._private_key = settings.require_app()

    def _headers(self) -> dict[str, str]:
        # A JWT per request: it lives 10 minutes, and paging may take longer.
        headers = sansio.create_headers(USER_AGENT, jwt=get_jwt(app_id=self._app_id, private_key=self._private_key))
        return {**headers, "x-github-api-version": API_VERSION}

    @with_retries
    async def page(self, url: str) -> tuple[list[Delivery], str | None]:
        """One page of deliveries (newest first) and the next page's URL from the `Link` header."""
        async with self._session.get(url, headers=self._headers()) as resp:
            data, _, more = sansio.decipher_response(resp.status, resp.headers, await resp.read())
        return list(data or []), more

    async def since(self, oldest: datetime) -> list[Delivery]:
        """Deliveries newer than `oldest` (and a few older), paging by cursor until a page is all older."""
        url: str | None = f"{self._base}/app/hook/deliveries?per_page={PER_PAGE}"
        found: list[Delivery] = []
        for _ in range(MAX_PAGES):
            if url is None:
                break
            items, url = await self.page(url)
            found.extend(items)
            if all(delivered_at(d) < oldest for d in items):  # the list is newest first
                break
        return found

    @with_retries
    async def redeliver(self, delivery_id: int) -> None:
        url = f"{self._base}/app/hook/deliveries/{int(delivery_id)}/attempts"
        async with self._session.post(url, headers=self._headers()) as resp:
            sansio.decipher_response(resp.status, resp.headers, await resp.read())


RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


async def release(claims: aioredis.Redis, claim: str, delivery_id: int) -> None:
    """Give the claim up, if it is still this run's (one script: a get-then-delete could drop another's)."""
    await claims.eval(RELEASE, 1, claim, str(delivery_id))


async def redeliver_failed(settings: Settings, *, now: datetime | None = None, lookback: timedelta = LOOKBACK) -> list[
    int
]:
    """Ask for the redeliveries this run owes; returns the delivery ids asked for."""
    now = now or datetime.now(UTC)
    asked: list[int] = []
    claims = aioredis.Redis.from_url(settings.redis_url)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
            api = AppDeliveries(session, settings)
            for delivery in select_redeliveries(await api.since(now - lookback), now=now, lookback=lookback):
                guid, delivery_id = str(delivery["guid"]), int(delivery["id"])
                # Claimed before asking: two overlapping runs ask once between them.
                claim = CLAIM_KEY.format(guid)
                if not await claims.set(claim, delivery_id, nx=True, ex=CLAIM_TTL_S):
                    continue
                extra = {"guid": guid, "delivery_id": delivery_id, "event": delivery.get("event")}
                try:
                    await api.redeliver(delivery_id)
                except (HTTPException, aiohttp.ClientError, TimeoutError) as exc:
                    if requested_wait_s(exc) is None:  # a real answer (404: the delivery is gone): final
                        log.warning("redelivery of %s (%s) refused: %s; not asking again", delivery_id, guid, exc,
                                    extra=extra)
                        continue
                    await release(claims, claim, delivery_id)
                    log.warning("redelivery of %s (%s) failed: %s; the next run asks again", delivery_id, guid,
                                exc, extra=extra)
                    continue
                log.info("asked GitHub to redeliver %s (%s, %s)", delivery_id, guid, delivery.get("event"),
                         extra=extra)
                asked.append(delivery_id)
    finally:
        await claims.aclose()
    return asked
