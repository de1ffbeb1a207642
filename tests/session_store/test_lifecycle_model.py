"""A hypothesis state machine: states, events and "end" agree with a plain model under any sequence
of creates, transitions, heartbeats, publishes, deletes, clock moves and sweeps.

Every session gets a subscriber when it is created; after each step every subscriber must hold
exactly the events the model predicts (read with `get_nowait`: no loop needed, nothing waits).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

import aiotp
from aiotp.session_store.admission import RECLAIM_PAUSE
from aiotp.session_store.lifecycle import DEFAULT_TRANSITIONS

IDS = st.sampled_from(["a", "b", "c"])
STATES = st.sampled_from(sorted(DEFAULT_TRANSITIONS))
TTL = 10.0


class LifecycleMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.store = aiotp.SessionStore(ttl=TTL, max_sessions=3, clock=lambda: self.now)
        self.fruitless_at: float | None = None  # the last reclaim that freed nothing
        self.model: dict[str, dict[str, Any]] = {}  # held sessions: state, last access
        self.subs: list[tuple[aiotp.Subscription, list[tuple[str, Any]]]] = []
        self.expect: dict[int, list[tuple[str, Any]]] = {}
        self.current: dict[str, int] = {}  # session id -> index of its live subscriber

    def live(self, sid: str) -> bool:
        return sid in self.model and self.now - self.model[sid]["at"] <= TTL

    def expect_event(self, sid: str, kind: str, data: Any) -> None:
        self.subs[self.current[sid]][1].append((kind, data))

    def removed(self, sid: str, reason: str) -> None:
        self.expect_event(sid, "end", {"reason": reason})
        del self.model[sid]
        del self.current[sid]

    def drop_if_expired(self, sid: str) -> None:
        if sid in self.model and not self.live(sid):
            self.removed(sid, "expired")

    @rule(sid=IDS)
    def create(self, sid: str) -> None:
        if self.live(sid):
            with pytest.raises(aiotp.SessionExists):
                self.store.create(sid)
            return
        self.drop_if_expired(sid)
        paused = self.fruitless_at is not None and self.now - self.fruitless_at < RECLAIM_PAUSE
        if len(self.model) >= 3 and not paused:  # full: the store reclaims expired ones first
            dead = [s for s in self.model if not self.live(s)]
            for other in dead:
                self.removed(other, "expired")
            self.fruitless_at = None if dead else self.now
        if len(self.model) >= 3:
            with pytest.raises(aiotp.SessionQuotaExceeded):
                self.store.create(sid)
            return
        self.store.create(sid)
        self.model[sid] = {"state": "pending", "at": self.now}
        self.current[sid] = len(self.subs)
        self.subs.append((self.store.subscribe(sid, max_queue=1000), []))

    @rule(sid=IDS, to=STATES)
    def transition(self, sid: str, to: str) -> None:
        target = to
        if not self.live(sid):
            with pytest.raises(aiotp.SessionNotFound):
                self.store.transition(sid, target)
            self.drop_if_expired(sid)
            return
        old = self.model[sid]["state"]
        if target in DEFAULT_TRANSITIONS[old]:
            s = self.store.transition(sid, target)
            assert s.awaiting_input == (target == "input_required")
            self.model[sid].update(state=target, at=self.now)
            self.expect_event(sid, "state", {"from": old, "to": target})
        else:
            with pytest.raises(aiotp.IllegalTransition):
                self.store.transition(sid, target)

    @rule(sid=IDS)
    def heartbeat(self, sid: str) -> None:
        if not self.live(sid):
            with pytest.raises(aiotp.SessionNotFound):
                self.store.heartbeat(sid)
            self.drop_if_expired(sid)
            return
        self.store.heartbeat(sid)
        self.model[sid]["at"] = self.now
        self.expect_event(sid, "heartbeat", {})

    @rule(sid=IDS, data=st.integers(0, 9))
    def publish(self, sid: str, data: int) -> None:
        if not self.live(sid):
            with pytest.raises(aiotp.SessionNotFound):
                self.store.publish(sid, data)
            self.drop_if_expired(sid)
            return
        self.store.publish(sid, data)  # does not touch
        self.expect_event(sid, "published", data)

    @rule(sid=IDS)
    def delete(self, sid: str) -> None:
        was_live = self.live(sid)
        assert self.store.delete(sid) == was_live
        if sid in self.model:
            self.removed(sid, "deleted" if was_live else "expired")

    @rule(dt=st.sampled_from([0.5, 4.0, 11.0]))
    def advance(self, dt: float) -> None:
        self.now += dt

    @rule()
    def sweep(self) -> None:
        expired = [s for s in self.model if not self.live(s)]
        assert self.store.sweep() == len(expired)
        for s in expired:
            self.removed(s, "expired")

    @invariant()
    def subscribers_got_exactly_the_model_events(self) -> None:
        for sub, expected in self.subs:
            got: list[tuple[str, Any]] = []
            while True:
                try:
                    ev = sub.get_nowait()
                except asyncio.QueueEmpty:
                    break
                got.append((ev.kind, ev.data))
            assert got == expected
            expected.clear()
        open_subs = len(self.current)
        assert self.store.stats().subscribers == open_subs
        assert len(self.store._subs.by_session) == open_subs

    @invariant()
    def states_agree(self) -> None:
        for sid, m in self.model.items():
            if self.live(sid):
                assert self.store.peek(sid).state == m["state"]


TestLifecycleMachine = LifecycleMachine.TestCase
TestLifecycleMachine.settings = settings(max_examples=80, stateful_step_count=40, deadline=None)
