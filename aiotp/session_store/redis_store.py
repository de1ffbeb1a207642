"""`RedisSessionStore`: the `SessionStore` on a Redis server, shared by the app instances using it.

Several processes (or hosts) that point at the same server and prefix see one set of sessions:
a session created by one is read, updated, pinned and deleted by the others, and one quota
holds for them all::

    store = aiotp.RedisSessionStore("redis://127.0.0.1:6379/0", ttl=3600, max_sessions=10_000)
    async with aiotp.Runtime(sessions=store) as rt:     # the runtime runs its sweeps
        s = await store.create("user-1", metadata={"user_id": "u1"})
        s = await store.update("user-1", lambda s: s.put_metadata("step", 2))
        await store.transition("user-1", "running")
        async with store.subscribe("user-1") as events: ...   # from any instance
        await rt.execute("ml", "predict", {"x": 1.0}, session="user-1")  # routed by its pin

It has the in-memory store's operations and semantics (`aiotp.session_store.store`, lifecycle,
events, portable), as coroutines where they talk to the server; what differs is said here.

Guarantees:
- Atomic on the server: every operation is one Lua script (`redis_lua`), so a quota check and the
  insert it admits, a transition's edge check and its write, an expired session's removal and the
  right to report it, are each one step for every instance at once. ``max_sessions`` is never
  overshot however many instances create at once; a full store first reclaims expired sessions
  (in the same script) before `SessionQuotaExceeded`.
- `update` never loses a write: it reads the session, runs ``fn`` on a copy here, and writes
  back only if no other change (but plain touches) came in between, else it reads again and
  runs ``fn`` again. So ``fn`` may run more than once: keep it free of side effects. (A touch
  does not conflict: the accesses count is added, not overwritten.)
- TTL is Redis key expiry: each session's key expires ``expiry_grace`` after its deadline
  (default: two sweep intervals, at least 60 s; a touch moves the key's expiry once the
  deadline has moved 1 s, so the margin may be 1 s less), so a session no instance is left to
  sweep still leaves the server. Expiry itself is exact: from its deadline on a session is
  absent for `get`/`update`/`touch` on every instance, and the grace only lets a sweep hand its
  last state to the removal hooks. (Were the key gone already, the hooks get a `Session` with
  only its id.) Expired sessions hold their quota places until a sweep, an access or a create
  that finds the store full removes them, as in memory.
- Removal hooks (`on_remove`) run at most once per removal across all instances: on the
  instance whose script removed the session (its `delete`, its sweep, the access or create that
  found it expired). When that script's reply is lost (the call timed out or was cancelled after
  it was sent), the removal may have happened and no instance runs its hooks. Subscribers on
  every instance get its ``"end"`` event. The counters of `stats` are the totals of every
  instance.
- As hooks run only where the removal happened, the removal scripts also publish every end on a
  store-wide channel, which `on_ended` (redis_sharing.py) follows: pools of every runtime drop
  their pin and worker state of a session ended elsewhere. At most once per instance (pub/sub):
  an end missed during an outage is caught by that id's next request there (a new incarnation:
  the old state is dropped, never handed on), or when the worker or pool stops.
- A TTL (``ttl=``, `create`, `update`, `import_session`) is finite and in (0, 1e9] s (31 years):
  `ValueError` before anything is written otherwise, so the key's expiry in ms stays an integer.
- Redis down, unreachable or too slow: every operation raises `SessionStoreUnavailable` naming
  the store's URL (password hidden) and the operation within ``timeout`` (5 s): connect and read
  timeouts of 2 s (``connect_timeout``, ``socket_timeout``), one immediate retry (a pooled
  connection the server closed), and one deadline over the whole call, the wait for one of the
  ``max_connections`` (32) included. A background sweep that cannot reach the server logs one
  WARNING per outage and tries again next interval. A pool keeps serving requests that carry no
  session; requests with one get the error.
- Pools (`aiotp.workers.session_routing`) await `get_or_create` on a session request's path and
  record pins in the store before the request runs, so every runtime sharing the store routes
  a session by the pin recorded here.
- ``clock=None``: time is the Redis server's clock (``TIME``), the same for every instance. Pass
  a clock (seconds, as `SessionStore`'s ``clock=``) to drive TTLs from a test or a virtual clock;
  every instance sharing the prefix must then share that clock.
- ``prefix="aiotp"`` namespaces the keys (``{aiotp}:s:<id>``, ``{aiotp}:exp``...): stores with
  different prefixes share a server without seeing each other. Instances sharing a prefix
  should share ``max_sessions``, ``heartbeat_timeout`` and the transition table.
- Metadata, programs and published event data must be msgpack types, map keys str, int, float,
  bytes, bool or None (`TypeError` naming the key otherwise); every session handed out is the
  caller's own copy, decoded afresh.
- Use a store from one event loop at a time; `stop` (or leaving ``async with``) closes its
  connection pool and ends open subscriptions (``"end"``, reason ``"shutdown"``); the next
  operation opens connections again.

Not here: `snapshot`/`restore` (the server's own persistence does that), ``len()`` and ``in``
(they would need the network: use `count` and `exists`), thread safety beyond one loop.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import msgpack

try:
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.exceptions import NoScriptError, RedisError, ResponseError
except ImportError as exc:  # pragma: no cover - the extra is installed in development
    raise ImportError(
        "aiotp.RedisSessionStore needs the redis package: pip install 'aiotp[redis]'"
    ) from exc

from aiotp.session_store import redis_lua as lua
from aiotp.session_store.errors import (
    IllegalTransition,
    SessionExists,
    SessionNotFound,
    SessionQuotaExceeded,
    SessionStoreError,
    SessionStoreUnavailable,
)
from aiotp.session_store.events import _Registry
from aiotp.session_store.lifecycle import INPUT_REQUIRED, check_worker_id
from aiotp.session_store.redis_codec import MAX_TTL as _MAX_TTL
from aiotp.session_store.redis_codec import changes, check_id, decode, new_fields
from aiotp.session_store.redis_events import Listener
from aiotp.session_store.redis_sharing import RedisSharing
from aiotp.session_store.redis_sweeping import RedisWholeStore, check_cancelled
from aiotp.session_store.session import Session
from aiotp.session_store.store import RemovalHook, check_settings, positive

__all__ = ["RedisSessionStore"]

_log = logging.getLogger("aiotp.sessions")
_unpack = msgpack.unpackb




def _redact(url: str) -> str:
    """The URL without its password, for messages."""
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not at:
        return url
    user = creds.partition(":")[0]
    return f"{scheme}{sep}{user}:***@{host}" if user else f"{scheme}{sep}***@{host}"


class RedisSessionStore(RedisWholeStore, RedisSharing):
    """See the module docstring."""

    # Set by check_settings (shared with the in-memory SessionStore).
    ttl: float
    heartbeat_timeout: float | None
    clock: Callable[[], float] | None
    transitions: Mapping[str, frozenset[str]]
    initial_state: str

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        ttl: float = 3600,
        sweep_interval: float = 60,
        max_sessions: int = 10_000,
        *,
        prefix: str = "aiotp",
        clock: Callable[[], float] | None = None,
        heartbeat_timeout: float | None = None,
        sweep_chunk: int = 1_000,
        transitions: Mapping[str, Iterable[str]] | None = None,
        initial_state: str = "pending",
        timeout: float = 5.0,
        connect_timeout: float = 2.0,
        socket_timeout: float = 2.0,
        expiry_grace: float | None = None,
        max_connections: int = 32,
    ) -> None:
        if not isinstance(url, str) or "://" not in url:
            raise ValueError(f"url must be a redis:// rediss:// or unix:// URL, got {url!r}")
        if not isinstance(prefix, str) or not prefix or any(c in prefix for c in "{}"):
            raise ValueError(f"prefix must be a non-empty string without braces, got {prefix!r}")
        self.url = url
        self.name = _redact(url)
        self.prefix = prefix
        check_settings(
            self,
            ttl=ttl,
            sweep_interval=sweep_interval,
            max_sessions=max_sessions,
            heartbeat_timeout=heartbeat_timeout,
            sweep_chunk=sweep_chunk,
            clock=clock,
            transitions=transitions,
            initial_state=initial_state,
            max_ttl=_MAX_TTL,
        )
        self.timeout = positive("timeout", timeout)
        self.connect_timeout = positive("connect_timeout", connect_timeout)
        self.socket_timeout = positive("socket_timeout", socket_timeout)
        grace = max(60.0, 2 * self.sweep_interval) if expiry_grace is None else expiry_grace
        self.expiry_grace = positive("expiry_grace", grace)
        if not isinstance(max_connections, int) or max_connections < 1:
            raise ValueError(f"max_connections must be an int >= 1, got {max_connections!r}")
        self.max_connections = max_connections
        self._p = "{" + prefix + "}:"
        self._key = self._p + "s:"
        # This store's scripts, its prefix, grace and heartbeat timeout written in (redis_lua).
        self._scripts = lua.build(
            self._p, math.ceil(self.expiry_grace * 1000), self.heartbeat_timeout
        )
        self._hooks: list[RemovalHook] = []
        self._subs = _Registry()
        self._listener: Listener | None = None
        self._ended_callbacks: list[Callable[[str, float | None], None]] = []
        self._ends_task: asyncio.Task[None] | None = None
        self._client: Any = None
        self._client_loop: asyncio.AbstractEventLoop | None = None
        self._slots = asyncio.Semaphore(max_connections)
        self._sweeper: asyncio.Task[None] | None = None
        self._down_logged = False

    def __repr__(self) -> str:
        return f"<RedisSessionStore {self.name} prefix={self.prefix!r}>"

    # -- the connection -------------------------------------------------------------------
    def _redis(self) -> Any:
        """The client of the running loop (a connection pool is bound to one loop)."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            self._client = aioredis.Redis(
                connection_pool=aioredis.ConnectionPool.from_url(
                    self.url,
                    socket_connect_timeout=self.connect_timeout,
                    socket_timeout=self.socket_timeout,
                    # One immediate retry: the first command after a server restart meets a
                    # dead pooled connection; anything longer is the deadline's business.
                    retry=Retry(NoBackoff(), 1),
                    # Every command waits for one of the max_connections slots below; the one
                    # more is the event listener's pub/sub connection. A pool at its cap would
                    # fail a call ("Too many connections") rather than make it wait.
                    max_connections=self.max_connections + 1,
                )
            )
            # At most max_connections calls at once, the others wait here (within their
            # deadline). A semaphore, not redis-py's BlockingConnectionPool: that one costs a
            # condition variable and a timeout per call even when a connection is free.
            self._slots = asyncio.Semaphore(self.max_connections)
            self._client_loop = loop
        return self._client

    def _unavailable(self, op: str, exc: BaseException) -> SessionStoreUnavailable:
        cause = "no reply in time" if isinstance(exc, TimeoutError) else (str(exc) or repr(exc))
        return SessionStoreUnavailable(self.name, op, cause)

    async def _eval(
        self, name: str, op: str, key: str, *args: Any, deadline: float | None = None
    ) -> list[Any]:
        """Run script `name` for one operation; its reply decoded (msgpack, raw bytes).
        `deadline` (loop time): the operation's one deadline when it makes several calls."""
        now = "" if self.clock is None else repr(float(self.clock()))
        client = self._redis()
        sha = self._scripts.sha[name]
        if deadline is None:
            deadline = asyncio.get_running_loop().time() + self.timeout
        elif deadline <= asyncio.get_running_loop().time():  # spent: send nothing
            raise self._unavailable(op, TimeoutError())
        try:
            async with asyncio.timeout_at(deadline), self._slots:
                try:
                    reply = await client.evalsha(sha, 1, key, now, *args)
                except NoScriptError:  # a new server, or its script cache was flushed
                    await client.script_load(self._scripts.source[name])
                    reply = await client.evalsha(sha, 1, key, now, *args)
        except ResponseError as exc:
            raise SessionStoreError(
                f"session store {self.name}: {op}: the server said: {exc}"
            ) from None
        except (RedisError, OSError, TimeoutError) as exc:
            raise self._unavailable(op, exc) from exc
        result: list[Any] = _unpack(reply, raw=True)
        return result

    # -- removal bookkeeping ---------------------------------------------------------------
    def on_remove(self, hook: RemovalHook) -> Callable[[], None]:
        """Call ``hook(session_id, reason, session)`` on every removal this instance makes;
        returns an unsubscribe. Hooks run on the loop, after the removal's script."""
        if not callable(hook):
            raise TypeError(f"hook must be callable, got {hook!r}")
        self._hooks.append(hook)
        return lambda: self._hooks.remove(hook) if hook in self._hooks else None

    def _removed(self, claimed: list[Any]) -> None:
        """Run the hooks for the sessions a script just removed (this instance's claims)."""
        hooks = list(self._hooks)
        for raw_id, raw_reason, fields in claimed:
            sid = raw_id.decode(errors="replace")
            reason = raw_reason.decode()
            if not hooks:
                continue
            session: Session
            try:
                session = decode(sid, fields) if fields else Session(sid, 0.0, 0.0, 0.0)
            except SessionStoreError:
                session = Session(sid, 0.0, 0.0, 0.0)
            for hook in hooks:
                try:
                    hook(sid, reason, session)
                except Exception:
                    _log.exception("session removal hook %r failed", hook)

    def _gone(self, sid: str, reply: list[Any]) -> SessionNotFound:
        self._removed(reply[1])
        return SessionNotFound(f"no live session {sid!r}")

    # -- creation --------------------------------------------------------------------------
    def _new(self, session_id: str, ttl: float | None, metadata: dict[str, Any] | None) -> Session:
        check_id(session_id)
        life = self.ttl if ttl is None else positive("ttl", ttl, _MAX_TTL)
        if metadata is not None and not isinstance(metadata, dict):
            raise TypeError(f"metadata must be a dict, got {metadata!r}")
        session = Session(session_id, life, time.time(), 0.0, dict(metadata or {}))
        session.state = self.initial_state
        session.awaiting_input = self.initial_state == INPUT_REQUIRED
        return session

    async def create(
        self, session_id: str, ttl: float | None = None, metadata: dict[str, Any] | None = None
    ) -> Session:
        """A new session; `SessionExists` over a live one, `SessionQuotaExceeded` when the
        store holds `max_sessions` live sessions (expired ones are reclaimed first)."""
        return await self._insert(self._new(session_id, ttl, metadata), "0", 0.0, "create")

    async def get_or_create(
        self, session_id: str, ttl: float | None = None, metadata: dict[str, Any] | None = None
    ) -> Session:
        """The live session, touched, or a new one: one round trip either way."""
        return await self._insert(self._new(session_id, ttl, metadata), "g", 0.0, "get_or_create")

    async def _insert(self, session: Session, mode: str, age: float, op: str) -> Session:
        sid = session.id
        reply = await self._eval(
            "CREATE",
            op,
            self._key + sid,
            self.max_sessions,
            mode,
            self.sweep_chunk,
            repr(age),
            "0",
            *new_fields(session),
        )
        status = reply[0]
        if status == b"found":
            return decode(sid, reply[1])
        if status == b"exists":
            raise SessionExists(f"session {sid!r} already exists")
        self._removed(reply[1])
        if status == b"full":
            raise SessionQuotaExceeded(
                f"cannot create session {sid!r}: the store holds {int(reply[2])} live sessions "
                f"(max_sessions={self.max_sessions})"
            )
        return decode(sid, reply[2])

    # -- access ----------------------------------------------------------------------------
    async def _read(
        self, session_id: str, mode: bytes, op: str, deadline: float | None = None
    ) -> list[Any]:
        sid = check_id(session_id)
        reply = await self._eval("READ", op, self._key + sid, mode, deadline=deadline)
        if reply[0] != b"ok":
            raise self._gone(sid, reply)
        return reply

    async def get(self, session_id: str) -> Session:
        """The live session (touched: its TTL restarts); `SessionNotFound` otherwise."""
        return decode(session_id, (await self._read(session_id, b"g", "get"))[1])

    async def peek(self, session_id: str) -> Session:
        """Like `get`, without touching it."""
        return decode(session_id, (await self._read(session_id, b"p", "peek"))[1])

    async def touch(self, session_id: str) -> None:
        await self._read(session_id, b"t", "touch")

    async def exists(self, session_id: str) -> bool:
        """Whether a live session has this id (no touch); the async ``in`` of `SessionStore`."""
        try:
            await self._read(session_id, b"e", "exists")
        except SessionNotFound:
            return False
        return True

    async def update(self, session_id: str, fn: Callable[[Session], Any]) -> Session:
        """Run ``fn(session)`` on a copy and store the result, atomically (see the module
        docstring: ``fn`` runs again if another change got in first). Returns the session as
        stored. If ``fn`` raises, nothing changes. ``fn`` may not change ``id`` or ``state``."""
        sid = check_id(session_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout  # one for the whole call, however many rounds
        conflicts = 0
        while True:
            reply = await self._read(sid, b"p", "update", deadline)
            raw = reply[1]
            stored = decode(sid, raw)
            draft = stored.copy()
            draft.stats["accesses"] = draft.stats.get("accesses", 0) + 1
            result = fn(draft)
            if isinstance(result, Session) and result is not draft:
                draft = result.copy()
            if draft.id != sid:
                raise ValueError(
                    f"session {sid!r}: update() may not change its id (to {draft.id!r})"
                )
            if draft.state != stored.state:
                raise ValueError(
                    f"session {sid!r}: update() may not change state "
                    f"({stored.state} -> {draft.state}); use transition()"
                )
            delta, fields = changes(stored, raw, draft)
            out = await self._eval(
                "CHANGE",
                "update",
                self._key + sid,
                "cas",
                raw[8],
                delta,
                *fields,
                deadline=deadline,
            )
            if out[0] == b"ok":
                draft.last_accessed = float(out[1])
                draft.stats["accesses"] = int(out[2])
                return draft
            if out[0] == b"none":
                raise self._gone(sid, out)
            conflicts += 1  # another change came first: read it and run fn again
            check_cancelled()
            if loop.time() > deadline:
                raise SessionStoreUnavailable(
                    self.name,
                    f"update {sid!r}",
                    f"{conflicts} conflicting writes in {self.timeout} s",
                )

    async def _change(self, session_id: str, op: str, *args: Any) -> list[Any]:
        sid = check_id(session_id)
        reply = await self._eval("CHANGE", op, self._key + sid, op, *args)
        if reply[0] == b"none":
            raise self._gone(sid, reply)
        return reply

    async def set_affinity(self, session_id: str, worker_id: str | None) -> None:
        """Record the worker that served the session last (see `pin` for per-pool affinity)."""
        await self._change(session_id, "lw", check_worker_id(worker_id) or "")

    async def pin(self, session_id: str, pool: str, worker_id: str | None) -> None:
        """Pin the session to `worker_id` in `pool` (``None`` unpins it there); touches it."""
        if not isinstance(pool, str) or not pool:
            raise TypeError(f"pool name must be a non-empty string, got {pool!r}")
        await self._change(session_id, "pin", pool, check_worker_id(worker_id) or "")

    async def heartbeat(self, session_id: str) -> None:
        """The client is alive: touches, restarts the heartbeat GC's clock, emits "heartbeat"."""
        await self._change(session_id, "beat")

    async def set_awaiting_input(self, session_id: str, awaiting: bool = True) -> None:
        await self._change(session_id, "await", "1" if awaiting else "0")

    async def transition(self, session_id: str, new_state: str) -> Session:
        """Move the session along the transition table; returns it as stored.
        `IllegalTransition` without such an edge; nothing changes then."""
        if not isinstance(new_state, str) or new_state not in self.transitions:
            old = (await self.peek(session_id)).state
            raise IllegalTransition(
                session_id, old, str(new_state), self.transitions.get(old, frozenset())
            )
        sources = [s for s, targets in self.transitions.items() if new_state in targets]
        reply = await self._change(session_id, "move", new_state, INPUT_REQUIRED, *sources)
        if reply[0] == b"illegal":
            old = reply[1].decode()
            raise IllegalTransition(
                session_id, old, new_state, self.transitions.get(old, frozenset())
            )
        return decode(session_id, reply[1])

    async def delete(self, session_id: str) -> bool:
        """Remove a session; True if a live one was there (this instance runs the hooks)."""
        sid = check_id(session_id)
        reply = await self._eval("DELETE", "delete", self._key + sid)
        self._removed(reply[1])
        return bool(reply[0] == b"deleted")
