"""Process titles for worker and template processes: ``aiotp: ml worker 3``, ``aiotp: ml template``.

The problem: in ``ps``, ``top`` or a container's process list every worker reads
``python -S -P -c import sys; sys.path[:0] = ...``, so an operator cannot tell which pool a
process serves, which one is the template, or which worker to look at.

A worker sets its title once it has sent READY (`host.serve`), so the title costs nothing on
the way to READY; the template sets its own once it is ready to fork, and its forks inherit the
loaded module (they only rewrite the title). The titles are `worker_title` and
`template_title`; the runtime hands them over (``AIOTP_TITLE`` for a fresh start, the fork
request for a fork).

Cost: ``import setproctitle`` imports ``logging`` (12 ms of a worker's ~16 ms start here), so
the C extension ``setproctitle._setproctitle`` is loaded by itself, without its package
(0.3 ms). Best effort, never an error: without setproctitle, on a platform it does not support,
or if anything goes wrong, the process keeps its command line and serves as usual.

This module runs in workers: it imports only what an interpreter has loaded before ``site``.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing in a worker process
if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["set_title", "template_title", "worker_title"]

_setter: Callable[[str], None] | None = None


def worker_title(pool: str, index: int) -> str:
    """``aiotp: <pool> worker <index>``: the same for a worker and its replacements."""
    return f"aiotp: {pool} worker {index}"


def template_title(pool: str) -> str:
    """``aiotp: <pool> template``: the pool's zygote, which forks its workers."""
    return f"aiotp: {pool} template"


def set_title(title: str | None) -> bool:
    """Set this process's title; False (and nothing changed) when it cannot be done."""
    global _setter
    if not title:
        return False
    try:
        if _setter is None:
            _setter = _load()
        if _setter is None:
            return False
        _setter(title)
    except Exception:  # a title is never worth a worker
        return False
    return True


def _load() -> Callable[[str], None] | None:
    """``setproctitle._setproctitle.setproctitle``, loaded without the package's __init__
    (which imports logging); None when setproctitle is not installed."""
    loaded = sys.modules.get("setproctitle._setproctitle")
    if loaded is None:
        import _frozen_importlib  # importlib._bootstrap, loaded at every start
        import _frozen_importlib_external

        finder = _frozen_importlib_external.PathFinder
        package = finder.find_spec("setproctitle")
        where = package.submodule_search_locations if package is not None else None
        if not where:
            return None
        spec = finder.find_spec("setproctitle._setproctitle", list(where))
        if spec is None or spec.loader is None:
            return None
        loaded = _frozen_importlib.module_from_spec(spec)
        spec.loader.exec_module(loaded)
        # Registered, so that `import setproctitle` later (by an adapter) reuses it.
        sys.modules["setproctitle._setproctitle"] = loaded
    setter: Callable[[str], None] = loaded.setproctitle
    return setter
