"""Adapters: the user code a pool runs. Subclass `Adapter`, mark methods with `@tool`.

::

    class MLAdapter(aiotp.Adapter):
        thread_safe = True                  # may serve several requests at once
        def setup(self) -> None:            # once per worker, inside the worker
            self.weights = [1.0, 2.0]
        @aiotp.tool
        def predict(self, x: float) -> float:
            return x * self.weights[1]
        @aiotp.tool
        def count(self, n: int):            # a generator tool streams its items
            yield from range(n)

Tools may be plain functions, coroutines, generators or async generators. Arguments arrive as
keyword arguments from the request's dict.

Thread safety (the patterns users of threaded workers rely on):
- ``thread_safe = False`` (the default): the worker never runs two requests of the adapter at
  once, whatever its thread count.
- ``thread_safe = True``: requests run concurrently on the worker's threads. Guard shared state
  with ``self.lock`` (one re-entrant lock per adapter instance), keep per-thread state in
  ``self.thread_local("conn", factory)``.
- ``safety_checks = True`` logs a warning once (and emits telemetry) when a non-thread-safe
  adapter would be entered concurrently, or when a threaded adapter imports a module known not to
  be thread-safe.
"""

from __future__ import annotations

import _thread
from types import FunctionType

# typing, inspect and importlib are imported only where needed: a worker process imports this
# module before it can serve, and typing + inspect alone are ~10 ms of its start.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TypeVar, overload

    F = TypeVar("F", bound=Callable[..., Any])

__all__ = [
    "Adapter",
    "adapter_path",
    "load_adapter",
    "tool",
    "tool_flags",
    "tools_of",
    "wants_session",
]

_TOOL_MARK = "__aiotp_tool__"
_IDEMPOTENT_MARK = "__aiotp_idempotent__"
SESSION_PARAM = "session"

#: Modules documented as unsafe to share between threads without care.
THREAD_UNSAFE_MODULES = ("pandas", "matplotlib", "sqlite3")


if TYPE_CHECKING:

    @overload
    def tool(fn: F, /) -> F: ...
    @overload
    def tool(*, idempotent: bool = False) -> Callable[[F], F]: ...


def tool(fn: Any = None, /, *, idempotent: bool = False) -> Any:
    """Mark an adapter method as a tool callable through `rt.execute` / `rt.stream`.

    ``@aiotp.tool`` or ``@aiotp.tool(idempotent=True)``: an idempotent tool may be run again
    after its worker died holding it (see `aiotp.Retry`); only declare it when running it twice
    is harmless.

    A tool that declares a keyword-only parameter ``session`` receives the caller's session as
    an `aiotp.WorkerSession` (its in-worker ``state`` and its ``settings``), or None for a call
    without ``session=``.
    """

    def mark(target: F) -> F:
        if not callable(target):
            raise TypeError(f"@tool needs a function, got {target!r}")
        if not isinstance(idempotent, bool):
            raise TypeError(f"@tool(idempotent=...) takes a bool, got {idempotent!r}")
        setattr(target, _TOOL_MARK, True)
        setattr(target, _IDEMPOTENT_MARK, idempotent)
        return target

    if fn is None:
        return mark
    return mark(fn)


def wants_session(fn: Any) -> bool:
    """Whether a tool declares the keyword-only ``session`` parameter."""
    if _plain_function(fn):  # what inspect.signature would say, read from the code object
        code = fn.__code__
        kwonly = code.co_varnames[code.co_argcount : code.co_argcount + code.co_kwonlyargcount]
        return SESSION_PARAM in kwonly
    import inspect  # wrapped, partial or foreign callables: inspect knows them all

    try:
        param = inspect.signature(fn).parameters.get(SESSION_PARAM)
    except (TypeError, ValueError):
        return False
    return param is not None and param.kind is inspect.Parameter.KEYWORD_ONLY


def tool_flags(cls: type) -> tuple[frozenset[str], frozenset[str]]:
    """(idempotent tools, tools that take ``session``) of an adapter class."""
    idempotent, sessioned = set(), set()
    for name in tools_of(cls):
        member = getattr(cls, name)
        if getattr(member, _IDEMPOTENT_MARK, False):
            idempotent.add(name)
        if wants_session(member):
            sessioned.add(name)
    return frozenset(idempotent), frozenset(sessioned)


# inspect.CO_GENERATOR, CO_COROUTINE, CO_ASYNC_GENERATOR (fixed by the code object's format).
_CO_GENERATOR, _CO_COROUTINE, _CO_ASYNC_GENERATOR = 0x20, 0x80, 0x200
# Attributes that make inspect look past a function's own code object.
_SIGNATURE_OVERRIDES = ("__wrapped__", "__signature__", "_partialmethod", "__partialmethod__")


def _plain_function(fn: Any) -> bool:
    """A def'd function whose code object tells its kind and signature exactly as inspect would
    (no wrapper, signature override or coroutine mark for inspect to follow)."""
    return (
        type(fn) is FunctionType
        and not hasattr(fn, "_is_coroutine_marker")  # inspect.markcoroutinefunction (3.12+)
        and not any(hasattr(fn, name) for name in _SIGNATURE_OVERRIDES)
    )


def _kind(fn: Any) -> str:
    if _plain_function(fn):  # inspect's own test, without importing inspect
        flags = fn.__code__.co_flags
        if flags & _CO_ASYNC_GENERATOR:
            return "agen"
        if flags & _CO_GENERATOR:
            return "gen"
        if flags & _CO_COROUTINE:
            return "async"
        return "sync"
    import inspect

    if inspect.isasyncgenfunction(fn):
        return "agen"
    if inspect.isgeneratorfunction(fn):
        return "gen"
    if inspect.iscoroutinefunction(fn):
        return "async"
    return "sync"


def tools_of(cls: type) -> dict[str, str]:
    """Tool name -> kind ("sync", "async", "gen", "agen") for an adapter class."""
    found: dict[str, str] = {}
    for name in dir(cls):
        if name.startswith("_"):
            continue
        member = getattr(cls, name, None)
        if member is not None and getattr(member, _TOOL_MARK, False):
            found[name] = _kind(member)
    return found


class Adapter:
    """Base class of adapters. See the module docstring."""

    thread_safe: bool = False
    safety_checks: bool = False

    def __init__(self) -> None:
        # threading.RLock() and threading.local() are these C types; importing threading in
        # every worker process just for them would cost a few ms of its start.
        self.lock = _thread.RLock()
        self._locals = _thread._local()

    def setup(self) -> None:
        """Runs once per worker before it serves (load models, open connections)."""

    def teardown(self) -> None:
        """Runs once when the worker stops gracefully."""

    def thread_local(self, name: str, default: Callable[[], Any] | Any = None) -> Any:
        """This thread's value of `name`, created from `default` (a factory or a value)."""
        try:
            return getattr(self._locals, name)
        except AttributeError:
            value = default() if callable(default) else default
            setattr(self._locals, name, value)
            return value


def adapter_path(cls: type) -> str:
    """ "module:Class" for a class importable by path (what process workers need)."""
    module = getattr(cls, "__module__", None)
    qualname = getattr(cls, "__qualname__", "")
    if not module or module == "__main__" or "<locals>" in qualname:
        raise ValueError(
            f"adapter {cls!r} is not importable by path (defined in {module!r}); move it to a "
            "module and pass 'module:Class'"
        )
    return f"{module}:{qualname}"


def load_adapter(spec: str | type) -> type[Adapter]:
    """The adapter class for a class or a "module:Class" path; clear errors otherwise."""
    if isinstance(spec, type):
        cls = spec
    elif isinstance(spec, str):
        module_name, sep, qualname = spec.partition(":")
        if not sep or not module_name or not qualname:
            raise ValueError(f"adapter path must look like 'module:Class', got {spec!r}")
        import importlib

        module = importlib.import_module(module_name)
        obj: Any = module
        for part in qualname.split("."):
            try:
                obj = getattr(obj, part)
            except AttributeError:
                raise ImportError(f"module {module_name!r} has no attribute {qualname!r}") from None
        cls = obj
    else:
        raise TypeError(f"adapter must be a class or 'module:Class', got {spec!r}")
    if not (isinstance(cls, type) and issubclass(cls, Adapter)):
        raise TypeError(f"{spec!r} is not an aiotp.Adapter subclass")
    if not tools_of(cls):
        raise TypeError(f"adapter {cls.__name__} has no @aiotp.tool methods")
    return cls
