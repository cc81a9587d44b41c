"""The reference's own handlers, served by FastAPI instead of Starlette.

Nothing of the service's: no dependencies, no declared parameters, no middleware of its own, the
same statements, pool and JSON bytes as the reference. What it loses against the reference is
FastAPI's per-request machinery alone (its middleware stack, routing, solving an endpoint's
dependencies, wrapping the request and the response): a ceiling on the ratios any FastAPI
service can reach, whatever it does in its handlers.

Run: BENCH_REFERENCE_DSN=postgresql://… uvicorn bench.bare_fastapi:app
"""

from fastapi import FastAPI
from starlette.routing import Route

from bench import reference_app


def create_app(dsn: str | None = None, pool_size: int = 20) -> FastAPI:
    reference = reference_app.create_app(dsn, pool_size)
    app = FastAPI(lifespan=reference_app.lifespan, openapi_url=None, docs_url=None, redoc_url=None)
    app.state.dsn = reference.state.dsn
    app.state.pool_size = reference.state.pool_size
    app.state.signer = reference.state.signer
    for route in reference.routes:
        assert isinstance(route, Route)
        assert route.methods
        app.add_api_route(route.path, route.endpoint, methods=sorted(route.methods - {"HEAD"}))
    return app


app = create_app()
