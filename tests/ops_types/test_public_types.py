"""The public API is typed where users call it, and type checkers see the installed package.

mypy runs for real, from a directory outside the project, on a user's file that imports aiotp
the way the README installs it (an editable install here): it must find the package and its
``py.typed``, type `rt.spawn(aiotp.Supervisor, ...)` as a `SupervisorRef`, and reject a
misspelt pool option, a wrong option type and an unknown affinity mode.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import attrs

from aiotp.workers.config import PoolConfig
from aiotp.workers.options import PoolOptions

USER_CODE = textwrap.dedent(
    """
    import aiotp

    class Counter(aiotp.Actor):
        pass

    class MLAdapter(aiotp.Adapter):
        @aiotp.tool
        def predict(self, x: float) -> float:
            return x

    async def main(rt: aiotp.Runtime) -> None:
        sup = await rt.spawn(aiotp.Supervisor, [], name="app")
        reveal_type(sup)
        children = await sup.which_children()
        counter = await rt.spawn(Counter)
        reveal_type(counter)
        await rt.start_pool("ml", MLAdapter, profile="process", size=4, affinity="strict_queue")
        await rt.start_pool("ml", MLAdapter, szie=4)
        await rt.start_pool("ml", MLAdapter, size="4")
        reveal_type(rt.pool_stats("ml"))
        reveal_type(rt.sessions)
        await rt.execute("ml", "predict", {"x": 1.0}, affinity="bogus")
        await counter.cast("forgotten await is fine")
    """
)


def test_pool_options_type_lists_every_pool_setting() -> None:
    settings = {f.name for f in attrs.fields(PoolConfig)} - {"name", "adapter"}
    assert set(PoolOptions.__annotations__) == settings


def test_mypy_sees_the_installed_package_and_its_types(tmp_path: Path) -> None:
    user = tmp_path / "user.py"
    user.write_text(USER_CODE)
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(user)],
        cwd=tmp_path,  # outside the project: only the installed package can be found
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = done.stdout
    assert "import-not-found" not in out and "has type \"Any\"" not in out, out
    assert 'Revealed type is "aiotp.supervisors.refs.SupervisorRef"' in out, out
    assert 'Revealed type is "aiotp.runtime.ref.ActorRef"' in out, out
    assert 'Revealed type is "aiotp.workers.pool_stats.PoolStats"' in out, out
    assert 'Revealed type is "aiotp.session_store.store.SessionStore"' in out, out
    assert 'Unexpected keyword argument "szie"' in out, out
    assert 'Argument "size" to "start_pool" of "Runtime" has incompatible type "str"' in out, out
    assert "Literal['bogus']" in out, out
    errors = [line for line in out.splitlines() if ": error:" in line]
    assert len(errors) == 3, out  # exactly the three mistakes, nothing else
