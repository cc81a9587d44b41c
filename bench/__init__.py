"""The benchmark: the service against a bare Starlette + asyncpg + orjson app, with wrk."""
