"""Calling a tool of an adapter instance, the same way in a thread worker and a worker process.

Failures become plain data (type name, message, traceback text) so that both profiles report
them identically and the process profile can send them over the wire: `ToolError` on the
caller's side.
"""

from __future__ import annotations

from aiotp.workers.adapter import SESSION_PARAM, Adapter, tool_flags, tools_of
from aiotp.workers.session_state import SessionStates

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing in a worker process
if TYPE_CHECKING:
    from typing import Any

__all__ = ["ToolFailure", "Toolbox", "describe_failure"]


class ToolFailure(Exception):
    """Raised inside a worker: carries a failure as data for the caller's side."""

    def __init__(self, kind: str, type_name: str, message: str, tb: str = "") -> None:
        super().__init__(f"{type_name}: {message}")
        self.kind = kind  # "unknown_tool" or "tool_error"
        self.type_name = type_name
        self.message = message
        self.tb = tb


def describe_failure(exc: BaseException) -> ToolFailure:
    if isinstance(exc, ToolFailure):
        return exc
    import traceback  # only once a tool failed: it is a few ms of a worker's start

    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return ToolFailure("tool_error", type(exc).__name__, str(exc), tb)


class Toolbox:
    """An adapter instance and its tools, looked up once."""

    def __init__(self, adapter_cls: type[Adapter]) -> None:
        self.adapter = adapter_cls()
        self.kinds = tools_of(adapter_cls)
        self.names = sorted(self.kinds)
        self._bound = {name: getattr(self.adapter, name) for name in self.kinds}
        self.idempotent, self.sessioned = tool_flags(adapter_cls)
        self.sessions = SessionStates()  # per-session state of the sessions pinned here

    def bind(self, tool: str, args: dict[str, Any], session: Any) -> dict[str, Any]:
        """The keyword arguments of a call: ``args``, plus ``session`` for a tool that asks.

        ``session`` is the request's ``[session_id, settings]`` (settings None: unchanged
        since the last request of that session here) or None for a call without a session.
        """
        record = None
        if session is not None:
            record = self.sessions.enter(session[0], session[1])
        if tool not in self.sessioned:
            return args
        if SESSION_PARAM in args:
            raise ToolFailure(
                "tool_error",
                "TypeError",
                f"tool {tool!r} takes its session from the call's session=, not from an "
                f"argument named {SESSION_PARAM!r}",
            )
        return {**args, SESSION_PARAM: record}

    def lookup(self, tool: str) -> tuple[Any, str]:
        fn = self._bound.get(tool)
        if fn is None:
            raise ToolFailure(
                "unknown_tool",
                "UnknownTool",
                f"unknown tool {tool!r}; the adapter's tools are: {', '.join(self.names)}",
            )
        return fn, self.kinds[tool]
