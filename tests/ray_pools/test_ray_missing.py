"""Without Ray on the machine the Ray pool tests are not collected (see conftest.py): this one
says so in one line. With Ray, it checks that the profile's modules load."""

from __future__ import annotations

import importlib.util

import pytest


def test_ray_is_installed_for_the_ray_profile() -> None:
    if importlib.util.find_spec("ray") is None:
        pytest.skip("Ray is not installed: pip install 'aiotp[ray]' (the Ray pool tests skip)")
    for module in ("ray_host", "ray_worker", "ray_start", "ray_connect", "ray_guests"):
        assert importlib.import_module(f"aiotp.workers.{module}") is not None
