"""``aiotp.metrics``: the Prometheus exporter (`aiotp.ops.metrics`), under its short name.

A real module, not only an attribute of the package, so that ``import aiotp.metrics`` and
``from aiotp.metrics import serve_metrics`` work as well as ``aiotp.metrics.serve_metrics``.
"""

from __future__ import annotations

from aiotp.ops.metrics import Metrics, MetricsServerError, serve_metrics

__all__ = ["Metrics", "MetricsServerError", "serve_metrics"]
