"""Where rollout state, counters, the quality window and the audit log live.

SQLite (WAL) is the default: one file, durable across kill -9, no service to run.
Redis is the shared store when several gateway replicas sit behind a load
balancer; both implement the same small async interface, and state changes are
compare-and-set in both so concurrent replicas cannot double-apply a decision.
A state change, its audit record and its outbox event (the webhook to send) are
written in one transaction: a crash keeps all three or none.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from operator import itemgetter
from pathlib import Path
from typing import Any

from quantship.errors import InputError
from quantship.rollout.quality import Observation
from quantship.rollout.state import RolloutState


class Store:
    """Interface; see SqliteStore and RedisStore."""

    async def init_state(self, state: RolloutState) -> RolloutState: ...  # create unless present
    async def load_state(self) -> RolloutState: ...
    async def cas_state(
        self, expected_version: int, state: RolloutState, audit: dict[str, Any] | None = None,
        outbox: dict[str, Any] | None = None,
    ) -> bool: ...  # outbox events carry an "id"
    async def write(self, counters: dict[str, int], observations: list[Observation]) -> None: ...  # one batch (buffered.py)
    async def counters(self) -> dict[str, int]: ...
    async def window(self, since_ts: float) -> list[Observation]: ...
    async def prune(self, before_ts: float) -> None: ...
    async def audit_log(self, limit: int = 100) -> list[dict[str, Any]]: ...  # the newest `limit`, oldest first
    async def pending_events(self) -> list[dict[str, Any]]: ...  # outbox events not yet delivered, oldest first
    async def mark_delivered(self, event_id: str) -> None: ...
    async def acquire_lease(self, owner: str, ttl_s: float) -> bool: ...
    async def close(self) -> None: ...


def _obs_json(observation: Observation) -> str:
    return json.dumps(vars(observation), separators=(",", ":"))  # flat fields: asdict's deep copy costs 10x


def _obs_load(text: str | bytes) -> Observation:
    return Observation(**json.loads(text))


class SqliteStore(Store):
    """One SQLite file in WAL mode; every call is a short transaction on the event loop thread."""

    def __init__(self, path: Path, experiment: str):
        self.experiment = experiment
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable against process kill
        # The window already read (window()): (ts, observation) with ts >= _seen_since, ids up to _seen_id.
        self._seen: list[tuple[float, Observation]] = []
        self._seen_id, self._seen_since = 0, math.inf
        self._db.executescript(
            """
            CREATE TABLE IF NOT EXISTS state (experiment TEXT PRIMARY KEY, version INTEGER, body TEXT);
            CREATE TABLE IF NOT EXISTS counters (experiment TEXT, name TEXT, value INTEGER,
                PRIMARY KEY (experiment, name));
            CREATE TABLE IF NOT EXISTS observations (id INTEGER PRIMARY KEY, experiment TEXT, ts REAL, body TEXT);
            CREATE INDEX IF NOT EXISTS observations_ts ON observations (experiment, ts);
            CREATE TABLE IF NOT EXISTS audit (id INTEGER PRIMARY KEY, experiment TEXT, ts REAL, body TEXT);
            CREATE TABLE IF NOT EXISTS lease (experiment TEXT PRIMARY KEY, owner TEXT, expires REAL);
            CREATE TABLE IF NOT EXISTS outbox (seq INTEGER PRIMARY KEY, experiment TEXT, id TEXT UNIQUE, body TEXT);
            """
        )

    async def init_state(self, state: RolloutState) -> RolloutState:
        self._db.execute(
            "INSERT OR IGNORE INTO state VALUES (?, ?, ?)", (self.experiment, state.version, state.model_dump_json())
        )
        return await self.load_state()

    async def load_state(self) -> RolloutState:
        row = self._db.execute("SELECT body FROM state WHERE experiment = ?", (self.experiment,)).fetchone()
        return RolloutState.model_validate_json(row[0])

    async def cas_state(
        self, expected_version: int, state: RolloutState, audit: dict[str, Any] | None = None,
        outbox: dict[str, Any] | None = None,
    ) -> bool:
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            cursor = self._db.execute(
                "UPDATE state SET version = ?, body = ? WHERE experiment = ? AND version = ?",
                (state.version, state.model_dump_json(), self.experiment, expected_version),
            )
            if cursor.rowcount != 1:
                return False
            if audit is not None:
                self._db.execute(
                    "INSERT INTO audit (experiment, ts, body) VALUES (?, ?, ?)", (self.experiment, audit["ts"], json.dumps(audit))
                )
            if outbox is not None:
                self._db.execute(
                    "INSERT INTO outbox (experiment, id, body) VALUES (?, ?, ?)", (self.experiment, outbox["id"], json.dumps(outbox))
                )
            return True

    async def write(self, counters: dict[str, int], observations: list[Observation]) -> None:
        with self._db:  # one transaction: counters and window never disagree
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(
                "INSERT INTO counters VALUES (?, ?, ?) ON CONFLICT (experiment, name) DO UPDATE SET value = value + excluded.value",
                [(self.experiment, name, n) for name, n in counters.items()],
            )
            self._db.executemany(
                "INSERT INTO observations (experiment, ts, body) VALUES (?, ?, ?)",
                [(self.experiment, o.ts, _obs_json(o)) for o in observations],
            )

    async def counters(self) -> dict[str, int]:
        rows = self._db.execute("SELECT name, value FROM counters WHERE experiment = ?", (self.experiment,))
        return dict(rows.fetchall())

    async def window(self, since_ts: float) -> list[Observation]:
        """Oldest first. Only rows written since the last call are read and decoded.

        Each check used to decode the whole window: at 1,000 requests/s, 120,000 rows and
        about 1 s of CPU every 10 s (benchmarks/rollout_window.py). Row ids grow in commit
        order (SQLite serialises writers, every replica's included) and prune never deletes
        the newest row, so an id cursor misses nothing; an earlier `since_ts` than last time
        reads everything again.
        """
        if since_ts < self._seen_since:
            self._seen_id, self._seen = 0, []
        rows = self._db.execute(
            "SELECT id, ts, body FROM observations WHERE experiment = ? AND id > ? AND ts >= ? ORDER BY id",
            (self.experiment, self._seen_id, since_ts),
        ).fetchall()
        self._seen_since = since_ts
        if rows:
            self._seen_id = rows[-1][0]
        self._seen = [item for item in self._seen if item[0] >= since_ts]
        self._seen.extend((ts, _obs_load(body)) for _, ts, body in rows)
        self._seen.sort(key=itemgetter(0))  # a late batch of another replica goes in its place
        return [observation for _, observation in self._seen]

    async def prune(self, before_ts: float) -> None:
        """Old rows go, but never the newest (its id would be handed out again, behind window's cursor)."""
        self._db.execute(
            "DELETE FROM observations WHERE experiment = ? AND ts < ? AND id < (SELECT MAX(id) FROM observations)",
            (self.experiment, before_ts),
        )

    async def audit_log(self, limit: int = 100) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT body FROM audit WHERE experiment = ? ORDER BY id DESC LIMIT ?", (self.experiment, limit)
        )
        return [json.loads(r[0]) for r in reversed(rows.fetchall())]

    async def pending_events(self) -> list[dict[str, Any]]:
        rows = self._db.execute("SELECT body FROM outbox WHERE experiment = ? ORDER BY seq", (self.experiment,))
        return [json.loads(r[0]) for r in rows.fetchall()]

    async def mark_delivered(self, event_id: str) -> None:
        self._db.execute("DELETE FROM outbox WHERE experiment = ? AND id = ?", (self.experiment, event_id))

    async def acquire_lease(self, owner: str, ttl_s: float) -> bool:
        now = time.time()
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            row = self._db.execute("SELECT owner, expires FROM lease WHERE experiment = ?", (self.experiment,)).fetchone()
            if row is not None and row[0] != owner and row[1] > now:
                return False
            self._db.execute("INSERT OR REPLACE INTO lease VALUES (?, ?, ?)", (self.experiment, owner, now + ttl_s))
            return True

    async def close(self) -> None:
        self._db.close()


_CAS = """
local cur = redis.call('GET', KEYS[1])
if not cur then return 0 end
if cjson.decode(cur)['version'] == tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[2])
  if ARGV[3] ~= '' then redis.call('RPUSH', KEYS[2], ARGV[3]) end
  if ARGV[4] ~= '' then redis.call('RPUSH', KEYS[3], ARGV[4]) end
  return 1
end
return 0
"""
_LEASE = """
local cur = redis.call('GET', KEYS[1])
if (not cur) or cur == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1
end
return 0
"""


class RedisStore(Store):
    """Keys under quantship:rollout:<experiment>:, shared by every replica."""

    def __init__(self, url: str, experiment: str):
        import redis.asyncio as redis

        self.experiment = experiment
        self._redis = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        prefix = f"quantship:rollout:{experiment}:"
        self._k = {name: prefix + name for name in ("state", "counters", "obs", "audit", "lease", "outbox")}
        self._cas = self._redis.register_script(_CAS)
        self._lease = self._redis.register_script(_LEASE)
        self._decoded: dict[bytes, Observation] = {}  # the window's members as of the last window()

    async def init_state(self, state: RolloutState) -> RolloutState:
        await self._redis.set(self._k["state"], state.model_dump_json(), nx=True)
        return await self.load_state()

    async def load_state(self) -> RolloutState:
        return RolloutState.model_validate_json(await self._redis.get(self._k["state"]))

    async def cas_state(
        self, expected_version: int, state: RolloutState, audit: dict[str, Any] | None = None,
        outbox: dict[str, Any] | None = None,
    ) -> bool:
        keys = [self._k["state"], self._k["audit"], self._k["outbox"]]
        args = [expected_version, state.model_dump_json(), json.dumps(audit) if audit else "", json.dumps(outbox) if outbox else ""]
        return bool(await self._cas(keys=keys, args=args))

    async def write(self, counters: dict[str, int], observations: list[Observation]) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            for name, n in counters.items():
                pipe.hincrby(self._k["counters"], name, n)
            if observations:  # a unique suffix: two equal observations are two members
                pipe.zadd(self._k["obs"], {f"{_obs_json(o)}#{time.monotonic_ns()}.{i}": o.ts for i, o in enumerate(observations)})
            await pipe.execute()

    async def counters(self) -> dict[str, int]:
        raw = await self._redis.hgetall(self._k["counters"])
        return {k.decode(): int(v) for k, v in raw.items()}

    async def window(self, since_ts: float) -> list[Observation]:
        """Oldest first; a member decoded at an earlier call is not decoded again (members are unique)."""
        members = await self._redis.zrangebyscore(self._k["obs"], since_ts, "+inf")
        decoded = self._decoded
        self._decoded = {m: decoded.get(m) or _obs_load(m.rsplit(b"#", 1)[0]) for m in members}
        return list(self._decoded.values())

    async def prune(self, before_ts: float) -> None:
        await self._redis.zremrangebyscore(self._k["obs"], "-inf", f"({before_ts}")

    async def audit_log(self, limit: int = 100) -> list[dict[str, Any]]:
        if limit <= 0:  # LRANGE -0 -1 would be the whole log
            return []
        return [json.loads(e) for e in await self._redis.lrange(self._k["audit"], -limit, -1)]

    async def pending_events(self) -> list[dict[str, Any]]:
        return [json.loads(e) for e in await self._redis.lrange(self._k["outbox"], 0, -1)]

    async def mark_delivered(self, event_id: str) -> None:
        for raw in await self._redis.lrange(self._k["outbox"], 0, -1):
            if json.loads(raw)["id"] == event_id:
                await self._redis.lrem(self._k["outbox"], 1, raw)

    async def acquire_lease(self, owner: str, ttl_s: float) -> bool:
        return bool(await self._lease(keys=[self._k["lease"]], args=[owner, int(ttl_s * 1000)]))

    async def close(self) -> None:
        await self._redis.aclose()


def open_store(url: str, experiment: str) -> Store:
    """`sqlite:///relative/or//absolute/path.db` or `redis://host:port/db`."""
    if url.startswith("sqlite:///"):
        return SqliteStore(Path(url[len("sqlite:///") :]), experiment)
    if url.startswith(("redis://", "rediss://")):
        return RedisStore(url, experiment)
    raise InputError(f"unknown rollout store {url!r}", "use sqlite:///PATH or redis://HOST:PORT/DB")
