"""ChildSpec naming the Elixir way: ``kwargs={"name": ...}`` registers the child."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from children import Child, crash

import aiotp


class Named(aiotp.Actor):
    """Records the keyword arguments its init got, to show that ``name`` is not among them."""

    async def init(self, log: list[Any], **kwargs: Any) -> None:
        self.kwargs = kwargs
        log.append(("start", self.ref.name, kwargs))

    async def handle_call(self, msg: Any, caller: aiotp.Caller) -> Any:
        if msg == "crash":
            raise RuntimeError("named crashed")
        return self.ref.name


@pytest.mark.expect_errors("crashed")
async def test_name_in_kwargs_registers_the_child_again_after_each_restart(
    rt: aiotp.Runtime,
) -> None:
    log: list[Any] = []
    spec = aiotp.ChildSpec("x", Named, args=(log,), kwargs={"name": "x", "size": 3})
    sup = await rt.spawn(aiotp.Supervisor, [spec])
    first = rt.whereis("x")
    assert first is not None and await first.call("who") == "x"
    for _ in range(2):
        old = await crash(sup, "x")
        again = rt.whereis("x")
        assert again is not None and again is not old and again.alive
        assert await again.call("who") == "x"
    # The name is consumed as the registered name; init gets the other keys only.
    assert log == [("start", "x", {"size": 3})] * 3


@pytest.mark.expect_errors("crashed")
async def test_dynamic_supervisor_registers_a_name_given_in_kwargs(rt: aiotp.Runtime) -> None:
    log: list[Any] = []
    dyn = await rt.spawn(aiotp.DynamicSupervisor)
    ref = await dyn.start_child(aiotp.ChildSpec("s", Named, args=(log,), kwargs={"name": "s1"}))
    assert rt.whereis("s1") is ref
    with pytest.raises(RuntimeError):
        await ref.call("crash")
    while ref.alive:
        await asyncio.sleep(0)
    await dyn.count_children()  # the supervisor has handled the Exit and restarted the child
    again = rt.whereis("s1")
    assert again is not None and again is not ref and await again.call("who") == "s1"
    with pytest.raises(aiotp.StartChildError):  # the name is held by the running child
        await dyn.start_child(aiotp.ChildSpec("s", Named, args=(log,), kwargs={"name": "s1"}))


def test_name_given_both_ways_is_refused_saying_which_to_keep() -> None:
    with pytest.raises(ValueError, match=r"keep one \(name= or kwargs\['name'\]\)"):
        aiotp.ChildSpec("x", Child, name="x", kwargs={"name": "y"})
    spec = aiotp.ChildSpec("x", Child, kwargs={"name": "x"})
    assert spec.registered_name == "x" and spec.init_kwargs == {}
    assert aiotp.ChildSpec("x", Child, name="x").registered_name == "x"


async def test_a_factory_gets_the_name_key_unchanged(rt: aiotp.Runtime) -> None:
    log: list[Any] = []

    async def factory(*, name: str) -> aiotp.ActorRef:
        return await rt.spawn(Child, name, log, name=name)

    sup = await rt.spawn(aiotp.Supervisor, [aiotp.ChildSpec("f", factory, kwargs={"name": "f"})])
    ref = rt.whereis("f")
    assert ref is not None and await ref.call("who") == "f"
    await rt.stop(sup)
