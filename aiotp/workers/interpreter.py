"""How worker and template interpreters start: without ``site``, on the runtime's own sys.path.

The problem: a child interpreter builds its sys.path from scratch (PYTHONPATH, the venv's
site-packages, the .pth files), so it does not see directories the runtime added at run time,
such as ``uvicorn --app-dir somedir``, and an adapter found there would not import. And ``site``
with the venv's .pth files is more than half of a bare interpreter's start here (an editable
install's import hook alone is ~12 ms).

So a worker (or template) starts as ``python -S -P -c <boot> <module> <path>...``: no ``site``,
no current directory put first, and the runtime's sys.path handed over explicitly, in this
order:

1. the entries of ``PYTHONPATH`` in the pool's ``env=``, if it sets one (they come first, as
   PYTHONPATH's entries do in any interpreter; they add to what the worker sees, never remove);
2. the runtime's sys.path when the worker (or its template) starts, relative entries and ``''``
   made absolute against the runtime's working directory (the worker inherits that directory
   anyway). The runtime's own PYTHONPATH is in there already, in its place;
3. the directories of the packages the runtime has imported from outside its sys.path, through
   an import hook (an editable install's finder, say): without ``site`` the hook is not
   installed in the worker, but the package's directory does the same job.

What this is not: ``.pth`` files' import lines (hooks, coverage's start-up) do not run in
workers; ``sitecustomize`` does (as do ``exit``/``quit``/``help``). A worker that needs the
full ``site`` start gets it with ``AIOTP_WORKER_SITE=1`` in the pool's ``env=`` or in the
runtime's environment (it still gets the runtime's sys.path first).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

__all__ = ["boot", "command", "worker_path"]

#: What the child runs: put the handed-over path first, then hand over to `boot`.
BOOT = (
    "import sys; sys.path[:0] = sys.argv[2:]; "
    "from aiotp.workers.interpreter import boot; boot(sys.argv[1])"
)


def command(module: str, env: Mapping[str, str] | None) -> list[str]:
    """The argv that starts `module`'s ``main()`` in a worker interpreter (see the module doc)."""
    full_site = (env or {}).get("AIOTP_WORKER_SITE", os.environ.get("AIOTP_WORKER_SITE")) == "1"
    flags = ["-P"] if full_site else ["-S", "-P"]
    return [sys.executable, *flags, "-c", BOOT, module, *worker_path(env)]


def worker_path(env: Mapping[str, str] | None) -> list[str]:
    """The sys.path entries a worker gets, in order (see the module doc)."""
    cwd = os.getcwd()
    entries: list[str] = []
    pythonpath = (env or {}).get("PYTHONPATH")
    if pythonpath:
        entries.extend(pythonpath.split(os.pathsep))
    entries.extend(e for e in sys.path if isinstance(e, str))
    seen: set[str] = set()
    out: list[str] = []
    for entry in entries:
        path = os.path.normpath(os.path.join(cwd, entry)) if entry else cwd
        if path not in seen:
            seen.add(path)
            out.append(path)
    for root in _hooked_roots(seen):
        seen.add(root)
        out.append(root)
    return out


def boot(module: str) -> None:
    """The child's side: tidy sys.path, do what ``site`` does besides paths, run `module`."""
    handed = sys.argv[2:]
    first = set(handed)
    sys.path[:] = handed + [e for e in sys.path[len(handed) :] if e not in first]
    del sys.argv[2:]
    if sys.flags.no_site:  # else AIOTP_WORKER_SITE=1 and site ran already
        import site

        site.setquit()
        site.setcopyright()
        site.sethelper()
        site.execsitecustomize()
    # msgpack imports the datetime module for its C API capsule and three C types, all of them
    # _datetime's own; on 3.11 datetime.py first builds its pure-Python fallback, 1 ms of a
    # worker's start. So while `module` loads (one thread, before any adapter code runs)
    # "datetime" is _datetime; whoever imports datetime afterwards gets the real module, whose
    # classes are the same objects.
    stand_in = sys.version_info < (3, 12) and "datetime" not in sys.modules
    if stand_in:
        import _datetime  # type: ignore[import-not-found]  # (it has no stubs)

        sys.modules["datetime"] = _datetime
    try:
        main = __import__(module, fromlist=["main"]).main
    finally:
        if stand_in and sys.modules.get("datetime") is _datetime:
            del sys.modules["datetime"]
    main()


def _hooked_roots(on_path: set[str]) -> list[str]:
    """Directories of imported top-level packages that no sys.path entry accounts for."""
    roots: list[str] = []
    for name, mod in list(sys.modules.items()):
        if "." in name or name.startswith("__"):
            continue
        file = getattr(mod, "__file__", None)
        if isinstance(file, str):
            where = os.path.dirname(os.path.abspath(file))
            if os.path.basename(file).startswith("__init__."):
                where = os.path.dirname(where)
            candidates = [where]
        else:  # a namespace package: every portion's parent
            candidates = [os.path.dirname(p) for p in getattr(mod, "__path__", ()) or ()]
        for root in candidates:
            if root not in on_path and root not in roots:
                roots.append(root)
    return roots
