"""Traces: FastAPI's own OpenTelemetry instrumentation, once a tracer provider is set in the
process, and the trace and span ids on the log lines."""

import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider

from service.logs import RequestContextFilter
from tests.conftest import ADMIN_HEADERS, migrated_database, session_body
from tests.processes import ServiceProcess, eventually

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


def server_span(spans: Path, trace_id: str) -> dict[str, Any]:
    def find() -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in spans.read_text().splitlines()]
        return [
            span
            for span in lines
            if span["kind"] == "SpanKind.SERVER" and span["context"]["trace_id"] == f"0x{trace_id}"
        ]

    return eventually(find)


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


def test_a_line_names_no_trace_where_nothing_is_traced() -> None:
    record = record_filtered()
    assert not hasattr(record, "trace_id")
    assert not hasattr(record, "span_id")
