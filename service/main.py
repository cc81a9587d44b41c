import logging
from collections.abc import AsyncIterator, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi_offline import FastAPIOffline
from pydantic import ValidationError
from starlette.routing import Mount

from service import ops, routes
from service.auth import VARY_RESPONSE_HEADER, VaryByAuthorization, create_token_verifier
from service.db import create_engine, create_probe_engine, dispose
from service.edge import (
    BodySizeLimit,
    ConfiguredCORS,
    RequestHead,
    ResponseHeaders,
    WholeFiles,
)
from service.errors import UnexpectedErrors, install_error_handlers
from service.metrics import Metrics
from service.middleware import QUIET_ROUTES, REQUEST_ID_RESPONSE_HEADER, RequestTelemetry
from service.migrations import known_revisions, migration_heads
from service.openapi import MiddlewareHeader, install_openapi, operation_id
from service.pagination import TokenSigner
from service.repository import make_sessionmaker
from service.settings import (
    DEVELOPMENT_CURSOR_SECRET,
    Settings,
    configuration_errors,
    get_settings,
)
from service.transactions import ConnectionLine

logger = logging.getLogger(__name__)

DESCRIPTION = """\
Every session carries a trustworthy `last_modified_at`: set by the server on every real change
and only then, in UTC, equal to what the database holds.

Errors are RFC 9457 problem details (`application/problem+json`).

Every response carries `X-Request-ID`, the id the service logs the request under. A client may
send an `X-Request-ID` of its own to find its requests in those logs: it is kept if it matches
the pattern of that response header, else replaced by a new one, never refused.
"""


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    try:
        settings: Settings = app.state.settings or get_settings()
    except ValidationError as exc:
        raise RuntimeError(configuration_errors(exc)) from None
    if not settings.database_url:
        raise RuntimeError(
            "DATABASE_URL is not set: set it, or run `sessions-service serve`, "
            "which starts an embedded PostgreSQL"
        )
    configure(app, settings)
    engine = create_engine(settings)
    app.state.engine = engine
    app.state.probe_engine = create_probe_engine(settings)
    app.state.db_maker = make_sessionmaker(engine)
    app.state.metrics.watch_pool(engine.pool)
    await ops.log_schema_state(app.state)
    await ops.log_pooled_timeouts(app.state)
    try:
        async with app.state.token_verifier.keys_kept_current():
            yield
    finally:
        app.state.metrics.forget_pool()
        await dispose(engine)
        await dispose(app.state.probe_engine)


def configure(app: FastAPI, settings: Settings) -> None:
    """Build from the settings what requests use, but the database's engines (the lifespan's):
    before the first request, so that a bad key configuration fails the start, not a request."""
    app.state.settings = settings
    app.state.token_verifier = verifier = create_token_verifier(settings)
    if verifier.jwks is not None:
        app.state.metrics.watch_jwks(verifier.jwks)
    app.state.signer = TokenSigner(settings.cursor_secret)
    if settings.cursor_secret == DEVELOPMENT_CURSOR_SECRET:
        logger.warning(
            "CURSOR_SECRET is not set: cursors and change-feed tokens are signed with the "
            "development default; in production set one secret shared by every replica"
        )
    app.state.connection_line = ConnectionLine(settings)
    # Read once: /readyz compares the database with these on every probe.
    app.state.migration_heads = migration_heads()
    app.state.known_revisions = known_revisions()
    app.state.database_check = None  # the one in flight (service.ops._database_state)


def _quiet(scope: MutableMapping[str, Any]) -> bool:
    return scope.get("path") in QUIET_ROUTES


def create_app(settings: Settings | None = None) -> FastAPI:
    """The ASGI app; settings are read when it starts, not when it is built."""
    # FastAPIOffline: /docs and /redoc load Swagger UI and ReDoc from files the package ships,
    # not from a CDN, so the docs work without internet access.
    app = FastAPIOffline(
        title="Sessions service",
        version="0.1.0",
        summary="Sessions (talks, workshops) of conference events.",
        description=DESCRIPTION,
        openapi_tags=[{"name": "sessions", "description": "The sessions of conference events."}],
        generate_unique_id_function=operation_id,
        lifespan=lifespan,
        # The routers' routes themselves, rather than app.include_router(), which serves a
        # router through a wrapper that matches the path a second time per request. So the
        # routers declare what include_router would have added (the operation ids); the
        # sessions' routes come first, as the ones asked for most.
        routes=[*routes.router.routes, *ops.router.routes],
        # /sessions/ is not /sessions: a 404, not Starlette's redirect to an absolute URL built
        # from the client's Host header (the service's own Location and Link are relative).
        redirect_slashes=False,
        # FastAPI's OpenTelemetry, once a provider is set (README, Traces): one server span per
        # request, without a span for each dependency and the endpoint (a quarter of what
        # tracing costs a request, for steps of a few µs), and nothing for probes and scrapes.
        telemetry={"operation_spans": False, "exclude": _quiet},
    )
    # FastAPIOffline's pages (/docs, /redoc) answer HEAD as GET too, as every other resource
    # (RFC 9110 9.3.2).
    docs_pages = {"/docs", "/redoc", app.swagger_ui_oauth2_redirect_url}
    for route in app.routes:
        if isinstance(route, APIRoute) and route.path in docs_pages:
            route.methods = {*(route.methods or ()), "HEAD"}
        elif isinstance(route, Mount):  # the docs pages' files
            route.app = WholeFiles(route.app)
    app.state.settings = settings
    app.state.metrics = Metrics()
    install_error_handlers(app)
    # The last added runs first: CORS headers go on every answer, 413s included, and
    # RequestTelemetry counts and logs those too. UnexpectedErrors, innermost, answers the
    # 500s and the 503s of a shutdown, so those pass through all the others.
    app.add_middleware(UnexpectedErrors)
    app.add_middleware(RequestHead)
    app.add_middleware(BodySizeLimit)
    app.add_middleware(VaryByAuthorization, prefix=routes.router.prefix)
    app.add_middleware(ConfiguredCORS)
    app.add_middleware(RequestTelemetry, metrics=app.state.metrics)
    # Added last, so outermost: the security headers and Date go on every answer.
    app.add_middleware(ResponseHeaders)
    install_openapi(
        app,
        middleware_headers=[
            MiddlewareHeader("Vary", VARY_RESPONSE_HEADER, path_prefix=routes.router.prefix),
            MiddlewareHeader("X-Request-ID", REQUEST_ID_RESPONSE_HEADER),
        ],
    )
    return app


app = create_app()
