"""`telemetry.observes(prefix)`: hot-path emitters skip building events nobody receives, and the
answer follows every attach and detach."""

from __future__ import annotations

from typing import Any

from aiotp import telemetry


def _noop(*_args: Any) -> None:
    pass


def test_observes_follows_attach_and_detach() -> None:
    execute = ("aiotp", "pool", "execute")
    assert not telemetry.observes(execute)
    telemetry.attach("t-worker", ("aiotp", "pool", "worker"), _noop)
    try:
        assert not telemetry.observes(execute)  # another branch of the tree
        assert telemetry.observes(("aiotp", "pool"))  # a worker event is under it
        assert telemetry.observes(("aiotp", "pool", "worker", "spawned"))
        telemetry.attach("t-all", ("aiotp",), _noop)
        try:
            assert telemetry.observes(execute)  # the broad handler receives it
        finally:
            telemetry.detach("t-all")
        assert not telemetry.observes(execute)
    finally:
        telemetry.detach("t-worker")
    assert not telemetry.observes(("aiotp", "pool"))


async def test_a_pool_request_builds_no_event_for_an_unrelated_handler(rt: Any) -> None:
    import aiotp

    class Echo(aiotp.Adapter):
        @aiotp.tool
        def echo(self, x: int) -> int:
            return x

    seen: list[Any] = []
    telemetry.attach("t-deaths", ("aiotp", "pool", "worker", "terminated"), _noop)
    telemetry.attach("t-exec", ("aiotp", "pool", "execute", "stop"), lambda *a: seen.append(a))
    try:
        await rt.start_pool("obs", Echo, size=1)
        assert await rt.execute("obs", "echo", {"x": 3}) == 3
        assert len(seen) == 1  # the request's stop event still reaches who asked for it
        telemetry.detach("t-exec")
        assert await rt.execute("obs", "echo", {"x": 4}) == 4
        assert len(seen) == 1
        assert not telemetry.observes(("aiotp", "pool", "execute"))
    finally:
        telemetry.detach("t-deaths")
        telemetry.detach("t-exec")
