"""Litestar app factory: the domains' controllers, error bodies of the contract, correlation ids, start-up."""

from __future__ import annotations

import msgspec
from litestar import Litestar
from litestar.config.cors import CORSConfig
from litestar.di import Provide
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig

from .. import __version__
from ..core import InspectionService
from ..logs import configure_logging
from ..settings import Settings
from .audit.controller import AuditController
from .auth import ANYONE, authenticate, route_roles
from .console.controller import STATIC, TEMPLATES, ConsoleController
from .datasets.controller import DatasetsController
from .error_handlers import EXCEPTION_HANDLERS
from .inspection.controller import InspectionController
from .jobs.controller import JobsController
from .middleware import CorrelationMiddleware, echo_correlation_id
from .monitoring.controller import MonitoringController
from .openapi import CORRELATION_HEADER, DOC_ROUTES, document_roles, finish_document, openapi_config
from .records.controller import RecordsController
from .reviews.controller import ReviewsController, ShadowController
from .versions.controller import VersionsController


def create_app(settings: Settings | None = None, service: InspectionService | None = None) -> Litestar:
    """Build the app; weights are loaded and the registry migrated before it is returned.

    ``service`` lets tests share one loaded extractor between apps over different models dirs.
    """
    settings = settings or Settings.load()
    configure_logging(settings.log_level, settings.log_format)
    owned = service is None
    service = service or InspectionService(settings)
    service.start()

    def shutdown() -> None:
        if owned:
            service.close()

    app = Litestar(
        route_handlers=[InspectionController, DatasetsController, RecordsController, MonitoringController, AuditController,
                        JobsController, ReviewsController, ShadowController, VersionsController,
                        *DOC_ROUTES, ConsoleController,
                        create_static_files_router("/console/static", [STATIC], include_in_schema=False,
                                                   guards=[ANYONE])],
        template_config=TemplateConfig(directory=TEMPLATES, engine=JinjaTemplateEngine),
        dependencies={"service": Provide(lambda: service, use_cache=True, sync_to_thread=False)},
        exception_handlers=EXCEPTION_HANDLERS,
        middleware=[CorrelationMiddleware()],
        guards=[authenticate],
        cors_config=CORSConfig(
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
            allow_headers=["Content-Type", "X-API-Key", "Authorization", "X-Correlation-Id", "X-Request-Id",
                           "X-Recipe-Id", "X-Part-Id"],
            expose_headers=["X-Correlation-Id", "X-Request-Id"],
        ) if settings.cors_origins else None,
        before_send=[echo_correlation_id],
        response_headers=[CORRELATION_HEADER],
        on_shutdown=[shutdown],
        request_max_body_size=settings.max_body_bytes,
        multipart_form_part_limit=settings.max_fit_images + 64,
        openapi_config=openapi_config(__version__),
        type_encoders={msgspec.UnsetType: lambda _: None},
        logging_config=None,  # keep configure_logging's handler (it stamps the correlation id)
        debug=False,
    )
    finish_document(app.openapi_schema)
    document_roles(app.openapi_schema, route_roles(app.routes))
    app.state.settings = settings
    app.state.service = service
    return app
