"""A hypothesis state machine: the Redis store, on a real server, agrees with the in-memory
`SessionStore` (the model) under any sequence of creates, reads, updates, transitions, pins,
heartbeats, deletes, clock moves and sweeps: same results, same errors, same sessions, same
removal hooks, same counters."""

from __future__ import annotations

import asyncio
import itertools
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from aiotp.session_store.redis_store import RedisSessionStore
from aiotp.session_store.session import Session
from aiotp.session_store.store import SessionStore

IDS = st.sampled_from(["a", "b", "c", "d"])
STATES = st.sampled_from(["running", "input_required", "done", "pending", "aborted", "nope"])
_prefixes = itertools.count(1)


def _view(s: Session) -> tuple[Any, ...]:
    """Every field but created_at (wall clock at creation, not the store's clock)."""
    return (
        s.id, s.ttl, s.last_accessed, s.metadata, s.programs, s.last_worker_id, s.stats,
        s.awaiting_input, s.last_heartbeat, s.state, s.affinity,
    )  # fmt: skip


class RedisAgreesWithMemory(RuleBasedStateMachine):
    url = ""
    prefix = ""

    def __init__(self) -> None:
        super().__init__()
        self.now = 1000.0
        self.loop = asyncio.new_event_loop()
        options: dict[str, Any] = {
            "ttl": 10, "max_sessions": 3, "heartbeat_timeout": 4, "clock": lambda: self.now,
        }  # fmt: skip
        self.model = SessionStore(**options)
        self.redis = RedisSessionStore(
            self.url, prefix=f"{self.prefix}-{next(_prefixes)}", **options
        )
        self.removed_model: list[tuple[str, str]] = []
        self.removed_redis: list[tuple[str, str]] = []
        self.model.on_remove(lambda sid, why, s: self.removed_model.append((sid, why)))
        self.redis.on_remove(lambda sid, why, s: self.removed_redis.append((sid, why)))

    def teardown(self) -> None:
        self.loop.run_until_complete(self.redis.stop())
        self.loop.close()

    def both(self, op: str, *args: Any) -> Any:
        """Run `op` on both stores; assert the same outcome; return the model's."""
        try:
            expected: Any = getattr(self.model, op)(*args)
            failure: BaseException | None = None
        except Exception as exc:
            expected, failure = None, exc
        try:
            got: Any = self.loop.run_until_complete(getattr(self.redis, op)(*args))
        except Exception as exc:
            assert failure is not None, f"{op}{args}: redis raised {exc!r}, memory returned"
            assert type(exc) is type(failure), f"{op}{args}: {exc!r} vs {failure!r}"
            return None
        assert failure is None, f"{op}{args}: memory raised {failure!r}, redis returned {got!r}"
        if isinstance(expected, Session):
            assert _view(got) == _view(expected), f"{op}{args}"
        elif op not in ("sweep",):
            assert got == expected, f"{op}{args}: {got!r} vs {expected!r}"
        else:
            assert got == expected, f"sweep removed {got} vs {expected}"
        return expected

    @rule(sid=IDS, ttl=st.sampled_from([None, 5, 20]))
    def create(self, sid: str, ttl: int | None) -> None:
        self.both("create", sid, ttl, {"n": 0})

    @rule(sid=IDS)
    def get_or_create(self, sid: str) -> None:
        self.both("get_or_create", sid)

    @rule(sid=IDS)
    def get(self, sid: str) -> None:
        self.both("get", sid)

    @rule(sid=IDS)
    def peek(self, sid: str) -> None:
        self.both("peek", sid)

    @rule(sid=IDS)
    def touch(self, sid: str) -> None:
        self.both("touch", sid)

    @rule(sid=IDS)
    def update(self, sid: str) -> None:
        self.both("update", sid, lambda s: s.put_metadata("n", s.get_metadata("n", 0) + 1))

    @rule(sid=IDS, state=STATES)
    def transition(self, sid: str, state: str) -> None:
        self.both("transition", sid, state)

    @rule(sid=IDS, pool=st.sampled_from(["p", "q"]), worker=st.sampled_from([None, "w1", "w2"]))
    def pin(self, sid: str, pool: str, worker: str | None) -> None:
        self.both("pin", sid, pool, worker)

    @rule(sid=IDS)
    def heartbeat(self, sid: str) -> None:
        self.both("heartbeat", sid)

    @rule(sid=IDS, awaiting=st.booleans())
    def set_awaiting_input(self, sid: str, awaiting: bool) -> None:
        self.both("set_awaiting_input", sid, awaiting)

    @rule(sid=IDS)
    def delete(self, sid: str) -> None:
        self.both("delete", sid)

    @rule(seconds=st.sampled_from([1, 3, 5, 11]))
    def advance(self, seconds: int) -> None:
        # Whole seconds, at least the in-memory store's reclaim pause (1 s): a full store
        # reclaims on both sides alike.
        self.now += seconds

    @rule()
    def sweep(self) -> None:
        self.both("sweep")

    @invariant()
    def same_sessions_hooks_and_counters(self) -> None:
        assert sorted(self.loop.run_until_complete(self.redis.ids())) == sorted(self.model.ids())
        assert sorted(self.removed_redis) == sorted(self.removed_model)
        a = self.model.stats()
        b = self.loop.run_until_complete(self.redis.stats())
        assert (a.current_sessions, a.sessions_created, a.sessions_deleted) == (
            b.current_sessions, b.sessions_created, b.sessions_deleted,
        )  # fmt: skip
        assert (a.sessions_expired, a.sessions_gc) == (b.sessions_expired, b.sessions_gc)


@pytest.mark.slow
def test_the_redis_store_agrees_with_the_in_memory_store(redis_url: str, prefix: str) -> None:
    RedisAgreesWithMemory.url = redis_url
    RedisAgreesWithMemory.prefix = prefix
    run_state_machine_as_test(
        RedisAgreesWithMemory,
        settings=settings(
            max_examples=int(os.environ.get("AIOTP_REDIS_MODEL_EXAMPLES", "100")),
            stateful_step_count=50,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
