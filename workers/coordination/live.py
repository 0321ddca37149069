"""Sessions that are queued or running, per repository, in Redis: what `/retrain status` shows and where
`/retrain cancel` leaves its request. Records expire on their own, so a worker that died leaves no
session shown forever."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import Any

import redis

RECORD_TTL_S = 24 * 3600
SESSIONS_KEY = "retrain:live:{repo}"
CANCEL_KEY = "retrain:cancel:{session_id}"


@dataclass(frozen=True)
class LiveSession:
    session_id: str
    profile: str
    status: str  # queued | running
    trigger: str
    sender: str | None = None
    iteration: int | None = None
    session_iteration: int = 0
    max_iters: int | None = None
    loss: float | None = None
    eta_s: float | None = None
    check_url: str | None = None
    updated_at: float = 0.0


class LiveSessions:
    def __init__(self, client: redis.Redis) -> None:
        self._redis = client

    def put(self, repo: str, session: LiveSession) -> None:
        key = SESSIONS_KEY.format(repo=repo)
        record = {**asdict(session), "updated_at": time.time()}
        pipe = self._redis.pipeline()
        pipe.hset(key, session.session_id, json.dumps(record))
        pipe.expire(key, RECORD_TTL_S)
        pipe.execute()

    def update(self, repo: str, session_id: str, **fields: Any) -> None:
        current = self.get(repo, session_id)
        if current is not None:
            self.put(repo, LiveSession(**{**asdict(current), **fields}))

    def get(self, repo: str, session_id: str) -> LiveSession | None:
        raw = self._redis.hget(SESSIONS_KEY.format(repo=repo), session_id)
        return _parse(raw) if raw else None

    def remove(self, repo: str, session_id: str) -> None:
        self._redis.hdel(SESSIONS_KEY.format(repo=repo), session_id)

    def of_repo(self, repo: str) -> list[LiveSession]:
        """Running first, then queued, each oldest first; records older than the TTL are dropped."""
        now = time.time()
        sessions = []
        for session_id, raw in self._redis.hgetall(SESSIONS_KEY.format(repo=repo)).items():
            parsed = _parse(raw)
            if parsed is None or now - parsed.updated_at > RECORD_TTL_S:
                self._redis.hdel(SESSIONS_KEY.format(repo=repo), session_id)
                continue
            sessions.append(parsed)
        return sorted(sessions, key=lambda s: (s.status != "running", s.updated_at))

    def cancel(self, repo: str) -> list[LiveSession]:
        """Ask every queued and running session of the repository to stop; the sessions asked."""
        sessions = self.of_repo(repo)
        for session in sessions:
            self._redis.set(CANCEL_KEY.format(session_id=session.session_id), "1", ex=RECORD_TTL_S)
        return sessions

    def cancel_requested(self, session_id: str) -> bool:
        return bool(self._redis.exists(CANCEL_KEY.format(session_id=session_id)))


def _parse(raw: bytes | str) -> LiveSession | None:
    try:
        data = json.loads(raw)
        return LiveSession(**data)
    except (ValueError, TypeError):
        return None


def status_rows(sessions: list[LiveSession]) -> list[dict[str, str]]:
    """What `/retrain status` shows of each session."""
    return [
        {
            "session": f"[`{s.session_id[:8]}`]({s.check_url})" if s.check_url else f"`{s.session_id[:8]}`",
            "profile": f"`{s.profile}`",
            "status": s.status,
            "iteration": f"{s.iteration} ({s.session_iteration}/{s.max_iters})" if s.iteration is not None else "–",
            "loss": f"{s.loss:.4f}" if s.loss is not None else "–",
            "eta": f"{s.eta_s:.0f} s" if s.eta_s is not None else "–",
            "by": f"@{s.sender}" if s.sender else s.trigger,
        }
        for s in sessions
    ]


def for_url(url: str) -> LiveSessions:
    return LiveSessions(redis.Redis.from_url(url))
