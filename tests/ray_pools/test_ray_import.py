"""The core never imports Ray, and a runtime starts (and stops) a local Ray by itself.

Both run in a child interpreter: this test process has Ray imported by its fixtures, and a
Ray started by aiotp must be checked from the process that owns it (its processes would be
re-parented away from us when that process exits).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run(code: str, timeout: float = 120.0) -> str:
    # Not the fixtures' loopback switch: the library must set it for a Ray it starts itself.
    env = {k: v for k, v in os.environ.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=HERE,
        env=env,
    )
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr[-3000:]}"
    return done.stdout


def test_aiotp_and_the_other_profiles_never_import_ray() -> None:
    out = run(
        """
        import asyncio, sys
        import aiotp
        from ray_adapters import RayEcho

        async def main():
            async with aiotp.Runtime() as rt:
                await rt.start_pool("t", RayEcho, profile="thread", size=1)
                assert await rt.execute("t", "twice", {"x": 2}) == 4
                aiotp.pool_spec("r", RayEcho, profile="ray", ray_options={"num_cpus": 1})

        asyncio.run(main())
        print("ray" in sys.modules)
        """
    )
    assert out.strip() == "False"


def test_a_runtime_starts_a_loopback_ray_and_stops_it_with_itself() -> None:
    out = run(
        """
        import asyncio, os, sys, time
        sys.path.insert(0, os.path.join(os.getcwd(), ".."))
        from procs import descendants
        import aiotp, ray

        async def main():
            async with aiotp.Runtime(name="auto") as rt:
                await rt.start_pool("r", "ray_adapters:RayEcho", profile="ray", size=1)
                assert await rt.execute("r", "twice", {"x": 4}) == 8
                print(ray.get_runtime_context().gcs_address.split(":")[0])
                print(ray.get_runtime_context().namespace)
                assert descendants()
            print(ray.is_initialized())

        asyncio.run(main())
        end = time.monotonic() + 30
        while descendants() and time.monotonic() < end:
            time.sleep(0.05)
        print(len(descendants()))
        """
    )
    assert out.split() == ["127.0.0.1", "auto", "False", "0"]


def test_an_unreachable_address_is_a_start_error_within_start_timeout() -> None:
    out = run(
        """
        import asyncio, time
        import aiotp

        async def main():
            async with aiotp.Runtime() as rt:
                started = time.monotonic()
                try:
                    await rt.start_pool("far", "ray_adapters:RayEcho", profile="ray", size=1,
                                        address="127.0.0.1:1", start_timeout=2.0)
                except aiotp.WorkerStartError as exc:
                    print("did not connect" in str(exc), time.monotonic() - started < 60)

        asyncio.run(main())
        """
    )
    assert out.split() == ["True", "True"]
