"""The HTTP/1.1 protocol `serve` runs: uvicorn's, on httptools, with two fixes.

RFC 9110 (7.8) lets a server ignore a client's offer to switch protocols (`Upgrade`) and answer
the request as it is; the service switches to none (serve's ws="none"). llhttp, however, stops
parsing a request that makes such an offer at the end of its head, after calling back for the
head and for the request's end but before its body, and raises HttpParserUpgrade. uvicorn then
served it with an empty body (Kludex/uvicorn#2722, open): Java's HttpClient offers HTTP/2
(`Upgrade: h2c`) on its first request to an http:// URL, and such a POST or PATCH got 422, its
body missing.

The 400 that uvicorn writes itself, to a request llhttp cannot parse, carries a Date (RFC 9110
6.6.1), which `serve` has uvicorn leave to the app (service.edge.ResponseHeaders), and the
security headers the app puts on every response (not an X-Request-ID: the app never saw it).
"""

import time

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.conditional import http_date
from service.edge import SECURITY_HEADERS

# The fields that only carry an offer (HTTP2-Settings: h2c's, RFC 7540 3.2.1), left out of a
# request whose offer is declined, and out of its Connection options.
_OFFER_FIELDS = frozenset({b"upgrade", b"http2-settings"})


class UpgradeDecliningProtocol(HttpToolsProtocol):
    """Serve a request that offers another protocol as the HTTP/1.1 request it also is.

    Its callbacks wait; its head is then parsed again without the offer, by a new parser, and
    followed by the bytes that came after it (its body, and any later request). A CONNECT, which
    llhttp also stops at, offers nothing to decline: uvicorn answers it as before.
    """

    def _offers_upgrade(self) -> bool:
        return self.parser.should_upgrade() and any(name == b"upgrade" for name, _ in self.headers)

    def on_headers_complete(self) -> None:
        if not self._offers_upgrade():
            super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        # uvicorn's, with a Date and the app's security headers.
        body = msg.encode("ascii")
        lines = [
            b"HTTP/1.1 400 Bad Request",
            b"date: " + http_date(int(time.time())).encode(),
            *(name + b": " + value for name, value in self.server_state.default_headers),
            *(name + b": " + value for name, value in SECURITY_HEADERS),
            b"content-type: text/plain; charset=utf-8",
            b"content-length: %d" % len(body),
            b"connection: close",
        ]
        self.transport.write(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        self.transport.close()

    def on_message_complete(self) -> None:
        if not self._offers_upgrade():
            super().on_message_complete()

    def data_received(self, data: bytes) -> None:
        # uvicorn's, but for the declined offer.
        self._unset_keepalive_if_required()
        while True:
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserError:
                message = "Invalid HTTP request received."
                self.logger.warning(message)
                self.send_400_response(message)
            except httptools.HttpParserUpgrade as stopped:
                if not self._offers_upgrade():
                    self._unsupported_upgrade_warning()
                    return
                # The new parser's head has no offer: each turn serves one request.
                data = self._head_without_offer() + data[stopped.args[0] :]
                self.parser = httptools.HttpRequestParser(self)
                self.parser.set_dangerous_leniencies(lenient_data_after_close=True)  # as uvicorn's
                continue
            return

    def _head_without_offer(self) -> bytes:
        method = self.parser.get_method()
        version = self.parser.get_http_version().encode()
        lines = [b"%s %s HTTP/%s" % (method, self.url, version)]
        for name, value in self.headers:
            if name == b"connection":
                options = [option.strip() for option in value.split(b",")]
                value = b", ".join(o for o in options if o and o.lower() not in _OFFER_FIELDS)
                if not value:
                    continue
            elif name in _OFFER_FIELDS:
                continue
            lines.append(b"%s: %s" % (name, value))
        return b"\r\n".join(lines) + b"\r\n\r\n"
