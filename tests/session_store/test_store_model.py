"""A hypothesis state machine: the SessionStore agrees with a plain model under any sequence of
creates, gets, deletes, clock moves and sweeps (TTL and quota included: a full store reclaims
its expired sessions before it refuses a create)."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

import aiotp
from aiotp.session_store.admission import RECLAIM_PAUSE

IDS = st.sampled_from(["a", "b", "c", "d", "e"])


class StoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.store = aiotp.SessionStore(ttl=10, max_sessions=3, clock=lambda: self.now)
        self.model: dict[str, float] = {}  # id -> last access time (held, expired or not)
        self.fruitless_at: float | None = None  # the last reclaim that freed nothing

    def live(self, sid: str) -> bool:
        return sid in self.model and self.now - self.model[sid] <= 10

    @rule(sid=IDS)
    def create(self, sid: str) -> None:
        if self.live(sid):
            with pytest.raises(aiotp.SessionExists):
                self.store.create(sid)
        elif sid not in self.model and len(self.model) >= 3:
            # A full store reclaims its expired sessions (one sweep) before it refuses, unless
            # its last reclaim freed nothing less than RECLAIM_PAUSE ago.
            if self.fruitless_at is None or self.now - self.fruitless_at >= RECLAIM_PAUSE:
                dead = [s for s in self.model if not self.live(s)]
                for gone in dead:
                    del self.model[gone]
                self.fruitless_at = None if dead else self.now
            if len(self.model) >= 3:
                with pytest.raises(aiotp.SessionQuotaExceeded):
                    self.store.create(sid)
            else:
                self.store.create(sid)
                self.model[sid] = self.now
        else:
            self.store.create(sid)  # new, or replacing its own expired self in place
            self.model[sid] = self.now

    @rule(sid=IDS)
    def get(self, sid: str) -> None:
        if self.live(sid):
            assert self.store.get(sid).id == sid
            self.model[sid] = self.now
        else:
            with pytest.raises(aiotp.SessionNotFound):
                self.store.get(sid)
            self.model.pop(sid, None)  # an expired session is dropped when touched

    @rule(sid=IDS)
    def delete(self, sid: str) -> None:
        assert self.store.delete(sid) == self.live(sid)
        self.model.pop(sid, None)

    @rule(dt=st.sampled_from([0.5, 4.0, 9.0, 11.0]))
    def advance(self, dt: float) -> None:
        self.now += dt

    @rule()
    def sweep(self) -> None:
        expired = [s for s in self.model if not self.live(s)]
        assert self.store.sweep() == len(expired)
        for s in expired:
            del self.model[s]

    @invariant()
    def agrees(self) -> None:
        assert sorted(self.store.ids()) == sorted(s for s in self.model if self.live(s))
        assert self.store.stats().current_sessions == len(self.model)


TestStoreMachine = StoreMachine.TestCase
TestStoreMachine.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
