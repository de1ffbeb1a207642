"""Process workers import the adapter with the runtime's sys.path, not only PYTHONPATH's.

As with ``uvicorn --app-dir somedir`` started from another directory: the directory is on the
runtime's sys.path only, never in the environment a child interpreter builds its path from.
"""

from __future__ import annotations

import os
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import aiotp
from aiotp.workers import interpreter

ADAPTER_SOURCE = textwrap.dedent(
    """
    import sys

    import aiotp


    class Probe(aiotp.Adapter):
        @aiotp.tool
        def where(self) -> list:
            return [__file__, sys.path]
    """
)


@pytest.fixture
def app_dir(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A module in a directory on this process's sys.path only; sys.path is restored after."""
    module = f"syspath_probe_{uuid.uuid4().hex[:8]}"
    directory = tmp_path / "app"
    directory.mkdir()
    (directory / f"{module}.py").write_text(ADAPTER_SOURCE)
    assert str(directory) not in os.environ.get("PYTHONPATH", "")
    assert not (Path.cwd() / f"{module}.py").exists()
    saved = list(sys.path)
    sys.path.insert(0, str(directory))
    try:
        yield directory, module
    finally:
        sys.path[:] = saved
        sys.modules.pop(module, None)


@pytest.mark.parametrize("preload", [True, False], ids=["template", "fresh"])
async def test_a_process_worker_imports_an_adapter_found_only_on_the_runtimes_sys_path(
    rt: aiotp.Runtime, app_dir: tuple[Path, str], preload: bool
) -> None:
    directory, module = app_dir
    await rt.start_pool("p", f"{module}:Probe", profile="process", size=2, preload=preload)
    for _ in range(2):
        file, path = await rt.execute("p", "where")
        assert Path(file).parent == directory
        assert path[0] == str(directory)  # in the runtime's order
    assert module not in sys.modules  # found by the worker itself, not through our import


def test_the_worker_path_puts_env_pythonpath_first_and_makes_entries_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", ["", "rel", *sys.path])
    path = interpreter.worker_path({"PYTHONPATH": os.pathsep.join(["/first", "second"])})
    assert path[:4] == ["/first", str(tmp_path / "second"), str(tmp_path), str(tmp_path / "rel")]
    assert len(path) == len(set(path))
    # aiotp itself is importable in a worker, however the runtime found it (an editable
    # install's import hook does not run in a worker started without site).
    assert str(Path(aiotp.__file__).parent.parent) in path
