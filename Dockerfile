# syntax=docker/dockerfile:1
# The sessions service: `docker build -t sessions-service .`
# Migrations are a separate one-off step: `docker run --rm -e DATABASE_URL=... sessions-service migrate`
ARG PYTHON_IMAGE=python:3.12-slim

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /app
# Dependencies first, from the lock only: this layer is rebuilt when the lock changes, not the code.
# The lock pins every package with the hashes of its files on PyPI: a file that is not one of
# them (a re-uploaded or tampered release, another index's copy) fails the build.
COPY requirements.lock ./
RUN pip install --no-cache-dir --require-hashes --requirement requirements.lock
# The project itself, editable: the console script and metadata go into the venv, the code stays
# in /app (the service finds alembic/ and alembic.ini beside its package). Installed against an
# empty package so that this layer, like the one above, survives code changes.
# Built with the lock's setuptools, not an isolated environment's: pip would fetch the build
# backend for it unpinned and unhashed (--require-hashes does not reach build dependencies).
# `pip check` fails the build if the lock lacks a dependency that pyproject.toml declares.
# Then setuptools and pip leave the venv: the runtime needs neither (nor setuptools' .pth hook,
# run at every interpreter start), and pip's version would be the base image's, not the lock's.
COPY pyproject.toml README.md ./
RUN mkdir service \
    && touch service/__init__.py \
    && pip install --no-cache-dir --no-deps --no-build-isolation --editable . \
    && pip check \
    && pip uninstall --yes setuptools pip

FROM ${PYTHON_IMAGE} AS runtime
# Which build a running container is (OCI annotations): the commit, given at build time with
# `--build-arg REVISION=$(git rev-parse HEAD)`.
ARG REVISION=unknown
LABEL org.opencontainers.image.title="sessions-service" \
      org.opencontainers.image.description="Sessions (talks, workshops) of conference events, with a trustworthy last_modified_at." \
      org.opencontainers.image.revision="${REVISION}"
# The base interpreter's installers go too (the venv's left in the builder): nothing is installed
# at run time. (The standard library's ensurepip stays: it is part of Python.)
RUN python -m pip uninstall --yes --quiet pip setuptools wheel \
    && groupadd --gid 10001 app \
    && useradd --uid 10001 --gid app --no-create-home --home-dir /app --shell /usr/sbin/nologin app
# HOST defaults to all interfaces here (the service itself defaults to 127.0.0.1). JWT_SECRET is
# empty: the image never accepts tokens signed with the public development secret; configure
# the identity provider's JWK Set (JWT_JWKS_URL) or key (JWT_PUBLIC_KEY_FILE), or a secret of
# your own. (DL3064 warns of a secret in ENV: this one is empty on purpose.) OTEL_SERVICE_NAME
# names the service in the traces and metrics that FASTAPI_OTEL_AUTO_CONFIGURE=true exports
# (README, Traces).
# hadolint ignore=DL3064
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOST=0.0.0.0 \
    PORT=8000 \
    LOG_LEVEL=info \
    JWT_SECRET="" \
    OTEL_SERVICE_NAME=sessions-service
COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
COPY alembic.ini ./
COPY alembic ./alembic
COPY service ./service
RUN python -m compileall -q service alembic
USER 10001:10001
EXPOSE 8000
# No curl in the slim image: probe liveness with the standard library, past any proxy that
# HTTP_PROXY names (Docker passes its configured proxies into containers).
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.build_opener(u.ProxyHandler({})).open('http://127.0.0.1:' + os.environ.get('PORT', '8000') + '/healthz', timeout=2)"]
# Exec form: the console script is PID 1 and receives SIGTERM itself; uvicorn stops accepting,
# finishes in-flight requests (up to GRACEFUL_SHUTDOWN_TIMEOUT, 20 s) and exits 0. Give the
# platform's stop timeout more than that (`docker stop -t 30`, terminationGracePeriodSeconds).
STOPSIGNAL SIGTERM
ENTRYPOINT ["sessions-service"]
CMD ["serve"]
