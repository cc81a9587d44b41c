from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import create_async_engine

from service import routes
from service.errors import install_error_handlers
from service.preconditions import DateHeaderMiddleware
from service.repository import make_sessionmaker
from service.settings import Settings, get_settings


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings or get_settings()
    if not settings.database_url:
        raise RuntimeError(
            "DATABASE_URL is not set: set it, or run `sessions-service serve`, "
            "which starts an embedded PostgreSQL"
        )
    engine = create_async_engine(
        settings.database_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
    )
    app.state.db_maker = make_sessionmaker(engine)
    try:
        yield
    finally:
        await engine.dispose()


def create_app(settings: Settings | None = None) -> FastAPI:
    """The ASGI app; settings are read when it starts, not when it is built."""
    app = FastAPI(
        title="Sessions service",
        version="0.1.0",
        summary="Sessions (talks, workshops) of conference events.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    install_error_handlers(app)
    app.add_middleware(DateHeaderMiddleware)
    app.include_router(routes.router)
    return app


app = create_app()
