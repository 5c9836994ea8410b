"""The Prometheus metrics (GET /metrics). It needs the API key when BDI_API_KEY is set: X-API-Key, or
``Authorization: Bearer`` as Prometheus sends it."""

from __future__ import annotations

from litestar import Controller, Response, get
from litestar.di import NamedDependency

from ...core import InspectionService
from ..auth import INSPECTOR
from ..openapi import error_responses
from ..shared import off_loop


class MonitoringController(Controller):
    """The service's metrics in Prometheus text format."""

    tags = ["monitoring"]

    @get(
        "/metrics",
        guards=[INSPECTOR],
        operation_id="metrics",
        summary="Prometheus metrics",
        description="Prometheus text format: requests by route and status, latency histograms, backbone forward time and "
        "batch sizes, the inference queue, memory-cache hits and misses, `bdi_inspections_total` by model and decision, "
        "fits and their duration, registry errors, free disk of the models dir, record writes and failures. Summed "
        "over every worker under `bdi serve --workers N`. With BDI_API_KEY set, scrape with `Authorization: Bearer "
        "<key>` (or X-API-Key).",
        response_description="The metrics in Prometheus text format.",
        media_type="text/plain",
        responses=error_responses(),
    )
    async def metrics(self, service: NamedDependency[InspectionService]) -> Response[bytes]:
        body, content_type = await off_loop(service.metrics.render, service.settings.models_dir)
        return Response(body, media_type=content_type)
