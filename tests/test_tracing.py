"""Traces: FastAPI's own OpenTelemetry instrumentation, once a tracer provider is set in the
process or FASTAPI_OTEL_AUTO_CONFIGURE sets one up for an OTLP collector, and the trace and span
ids on the log lines."""

import asyncio
import json
import logging
import sys
import threading
from collections import defaultdict
from collections.abc import Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

from service.logs import RequestContextFilter
from service.middleware import QUIET_ROUTES
from tests.conftest import ADMIN_HEADERS, asyncpg_dsn, migrated_database, session_body
from tests.processes import ServiceProcess, eventually, free_port

# What an operator's OpenTelemetry setup does before the app starts (opentelemetry-instrument's
# sitecustomize, or a launcher of their own): set the global tracer provider. Spans go to a
# file, one JSON object per line.
TRACED_SERVE = """
import sys

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

spans = open(sys.argv[1], "w", buffering=1)
exporter = ConsoleSpanExporter(out=spans, formatter=lambda span: span.to_json(indent=None) + "\\n")
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)

from service.cli import main

main(["serve"])
"""

CALLER_TRACE = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"


@pytest.fixture(scope="module")
def traced(server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    spans = tmp_path_factory.mktemp("traces") / "spans.jsonl"
    with migrated_database(server_url, prefix="sessions_traced") as url:
        service = ServiceProcess(url, command=[sys.executable, "-c", TRACED_SERVE, str(spans)])
        try:
            yield service.wait_until_ready(), spans
        finally:
            service.stop()


def of_trace(spans: Path, trace_id: str) -> list[dict[str, Any]]:
    """The spans of a trace written so far: not one still being written."""
    written, _, _ = spans.read_text().rpartition("\n")
    return [
        span
        for span in map(json.loads, written.splitlines())
        if span["context"]["trace_id"] == f"0x{trace_id}"
    ]


def server_span(spans: Path, trace_id: str) -> dict[str, Any]:
    """The one span of a request: its server span, without FastAPI's spans of each dependency
    and the endpoint (which would end, and be written, before it)."""
    span = eventually(lambda: of_trace(spans, trace_id))
    assert span["kind"] == "SpanKind.SERVER"
    return span


def test_a_traced_request_continues_the_callers_trace_under_its_route_template(
    traced: Any,
) -> None:
    service, spans = traced
    response = httpx.get(
        f"{service.base_url}/sessions/424242",
        headers={"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"},
    )
    assert response.status_code == 404
    span = server_span(spans, CALLER_TRACE)
    # Named by its template: one name for every session, not one per id.
    assert span["name"] == "GET /sessions/{session_id}"
    assert span["parent_id"] == f"0x{CALLER_SPAN}"
    assert span["attributes"]["http.route"] == "/sessions/{session_id}"
    assert span["attributes"]["http.response.status_code"] == 404
    line = service.access_line(response.headers["x-request-id"])
    assert line["trace_id"] == CALLER_TRACE
    assert f"0x{line['span_id']}" == span["context"]["span_id"]


def test_probes_and_scrapes_are_not_traced(traced: Any) -> None:
    service, spans = traced
    probes = {path: f"{number:032x}" for number, path in enumerate(QUIET_ROUTES, start=1)}
    for path, trace_id in probes.items():
        response = httpx.get(
            f"{service.base_url}{path}", headers={"traceparent": f"00-{trace_id}-{CALLER_SPAN}-01"}
        )
        assert response.status_code == 200
    # Spans are written as their requests end: once a later request's is there, theirs would be.
    later = "f" * 32
    httpx.get(
        f"{service.base_url}/sessions/424242",
        headers={"traceparent": f"00-{later}-{CALLER_SPAN}-01"},
    )
    server_span(spans, later)
    assert all(of_trace(spans, trace_id) == [] for trace_id in probes.values())


def test_a_traced_write_starts_a_trace_without_recording_its_token_or_body(
    traced: Any,
) -> None:
    service, spans = traced
    title = "A title that stays out of the traces"
    response = httpx.post(
        f"{service.base_url}/sessions", json=session_body(title=title), headers=ADMIN_HEADERS
    )
    assert response.status_code == 201
    line = service.access_line(response.headers["x-request-id"])
    span = server_span(spans, line["trace_id"])
    assert span["name"] == "POST /sessions"
    assert span["parent_id"] is None
    assert span["attributes"]["http.response.status_code"] == 201
    recorded = spans.read_text()
    assert ADMIN_HEADERS["Authorization"].removeprefix("Bearer ") not in recorded
    assert title not in recorded


class Collector:
    """An OTLP/HTTP collector on loopback, as an operator's would be: it answers every export
    with success and keeps each request's body by path (/v1/traces, /v1/metrics, /v1/logs), and
    the Authorization header each came with."""

    def __init__(self) -> None:
        self.received: defaultdict[str, list[bytes]] = defaultdict(list)
        self.authorizations: set[str | None] = set()
        received, authorizations = self.received, self.authorizations

        class Export(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                # The exporter sends uncompressed protobuf unless OTEL_EXPORTER_OTLP_COMPRESSION
                # says otherwise, which these tests do not set.
                received[self.path].append(self.rfile.read(int(self.headers["Content-Length"])))
                authorizations.add(self.headers["Authorization"])
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Export)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def spans(self) -> list[tuple[dict[str, Any], Any]]:
        """Every span received, with its resource's attributes."""
        return [
            (attributes(resource_spans.resource.attributes), span)
            for body in self.received["/v1/traces"]
            for resource_spans in ExportTraceServiceRequest.FromString(body).resource_spans
            for scope_spans in resource_spans.scope_spans
            for span in scope_spans.spans
        ]

    def metric_names(self) -> set[str]:
        return {
            metric.name
            for body in self.received["/v1/metrics"]
            for resource_metrics in ExportMetricsServiceRequest.FromString(body).resource_metrics
            for scope_metrics in resource_metrics.scope_metrics
            for metric in scope_metrics.metrics
        }


def attributes(pairs: Iterable[KeyValue]) -> dict[str, Any]:
    """OTLP's attributes as a dict, each value as its kind holds it (a string, an int...)."""
    values = {}
    for pair in pairs:
        kind = pair.value.WhichOneof("value")
        assert kind is not None, f"attribute {pair.key} has no value"
        values[pair.key] = getattr(pair.value, kind)
    return values


@pytest.fixture
def collector() -> Iterator[Collector]:
    collector = Collector()
    yield collector
    collector.close()


@pytest.fixture(scope="module")
def database_url(server_url: str) -> Iterator[str]:
    with migrated_database(server_url, prefix="sessions_exported") as url:
        yield url


def auto_configured(database_url: str, endpoint: str, **environment: str) -> ServiceProcess:
    """The service as an operator sets it up to export: FastAPI's own OTLP setup (its
    [opentelemetry] extra is a dependency, in the image too) and OpenTelemetry's variables."""
    return ServiceProcess(
        database_url,
        FASTAPI_OTEL_AUTO_CONFIGURE="true",
        OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
        OTEL_SERVICE_NAME="sessions-under-test",
        **environment,
    ).wait_until_ready()


def test_auto_configured_export_reaches_the_collector_and_a_stop_sends_what_is_pending(
    database_url: str, collector: Collector
) -> None:
    # Spans and metrics are exported in batches, these only when the service stops: what is
    # pending then must not be lost.
    service = auto_configured(
        database_url,
        collector.url,
        OTEL_BSP_SCHEDULE_DELAY="600000",
        OTEL_METRIC_EXPORT_INTERVAL="600000",
        OTEL_EXPORTER_OTLP_HEADERS="Authorization=Bearer collector-key",
    )
    try:
        response = httpx.get(
            f"{service.base_url}/sessions/424242",
            headers={"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"},
        )
        assert response.status_code == 404
        service.access_line(response.headers["x-request-id"])
        assert collector.spans() == []
        service.terminate()
        assert service.wait() == 0
    finally:
        service.stop()
    [(resource, span)] = [
        (resource, span)
        for resource, span in collector.spans()
        if span.trace_id.hex() == CALLER_TRACE and span.kind == Span.SPAN_KIND_SERVER
    ]
    assert resource["service.name"] == "sessions-under-test"
    assert span.name == "GET /sessions/{session_id}"
    assert span.parent_span_id.hex() == CALLER_SPAN
    assert attributes(span.attributes)["http.response.status_code"] == 404
    assert "http.server.request.duration" in collector.metric_names()
    assert collector.authorizations == {"Bearer collector-key"}


def test_an_unreachable_collector_is_logged_and_neither_fails_requests_nor_stops_the_stop(
    database_url: str,
) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"
    service = auto_configured(
        database_url, nobody, OTEL_BSP_SCHEDULE_DELAY="100", OTEL_EXPORTER_OTLP_TIMEOUT="1"
    )
    try:
        for _ in range(3):
            assert httpx.get(f"{service.base_url}/sessions/424242").status_code == 404
        # Each failed export is a line of the JSON log, as every other line is.
        failure = eventually(
            lambda: [
                line
                for line in service.log_lines()
                if line["logger"].startswith("opentelemetry.exporter") and line["level"] == "ERROR"
            ][:1]
        )
        assert "Failed to export span" in failure["message"]  # "spans", or "span batch"
        assert httpx.get(f"{service.base_url}/sessions/424242").status_code == 404
        service.terminate()
        # What is pending is given up after OTEL_EXPORTER_OTLP_TIMEOUT, per signal (README).
        assert service.wait(timeout=20) == 0
    finally:
        service.stop()


def record_filtered() -> logging.LogRecord:
    record = logging.LogRecord("service.test", logging.INFO, __file__, 1, "line", None, None)
    assert RequestContextFilter().filter(record)
    return record


def test_a_line_names_the_span_current_where_it_is_written() -> None:
    # A provider of the test's own: the process's global one stays unset.
    tracer = TracerProvider().get_tracer("tests")
    with tracer.start_as_current_span("work") as span:
        record = record_filtered()
    context = span.get_span_context()
    assert record.trace_id == f"{context.trace_id:032x}"  # type: ignore[attr-defined]
    assert record.span_id == f"{context.span_id:016x}"  # type: ignore[attr-defined]


def test_a_line_says_whether_its_trace_is_exported() -> None:
    provider = TracerProvider(sampler=ALWAYS_OFF)
    with provider.get_tracer("tests").start_as_current_span("work"):
        record = record_filtered()
    assert record.trace_sampled is False  # type: ignore[attr-defined]
    with TracerProvider().get_tracer("tests").start_as_current_span("work"):
        assert record_filtered().trace_sampled is True  # type: ignore[attr-defined]


def test_a_500_records_its_exception_on_the_requests_span(traced: Any) -> None:
    # Answered by the service's own handlers, the exception never reaches FastAPI's tracing.
    service, spans = traced
    title = "Refused by a trigger"
    asyncio.run(_refuse_inserts_titled(service.database_url, title))
    failing = "e" * 32
    response = httpx.post(
        f"{service.base_url}/sessions",
        json=session_body(title=title, comments="A reviewer's note"),
        headers=ADMIN_HEADERS | {"traceparent": f"00-{failing}-{CALLER_SPAN}-01"},
    )
    assert response.status_code == 500
    span = server_span(spans, failing)
    assert span["status"]["status_code"] == "ERROR"
    [event] = [event for event in span["events"] if event["name"] == "exception"]
    assert "a bug of the test's" in event["attributes"]["exception.message"]
    assert "Traceback" in event["attributes"]["exception.stacktrace"]
    # The error's DETAIL and HINT quote the row, as PostgreSQL's own DETAIL does (a check or a
    # unique violation).
    assert "HINT" in event["attributes"]["exception.stacktrace"]
    assert "reviewer" not in str(event["attributes"])


async def _refuse_inserts_titled(database_url: str, title: str) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        await conn.execute(
            f"""
            CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.title = '{title}' THEN
                    RAISE EXCEPTION 'a bug of the test''s'
                        USING DETAIL = format('Failing row contains (%s).', NEW.comments),
                            HINT = NEW.comments;
                END IF;
                RETURN NEW;
            END $$;
            CREATE TRIGGER refuse BEFORE INSERT ON sessions FOR EACH ROW EXECUTE FUNCTION refuse();
            """
        )
    finally:
        await conn.close()


def test_a_line_names_no_trace_where_nothing_is_traced() -> None:
    record = record_filtered()
    assert not hasattr(record, "trace_id")
    assert not hasattr(record, "span_id")
