#!/usr/bin/env python3
"""details: Bookinfo's book-details service, for the mesh-oidc demo (Python standard library only).

It has no login code at all: its sidecar (mesh-oidc in validate mode) lets only requests with a
valid access token through and tells it who the caller is in the `x-user` header.

    GET /details/<id>   the book's details, as JSON, with the caller
    GET /health         200, like Bookinfo's (a skip path of its sidecar); /healthz is the same

Each request is logged with its x-request-id (productpage passes the page request's on) and the
NAMES of the cookies it carried (never their values).

Listens on 127.0.0.1:$PORT (default 9001).
"""

import json
import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BOOK = {
    "author": "William Shakespeare",
    "year": 1595,
    "type": "paperback",
    "pages": 200,
    "publisher": "PublisherA",
    "language": "English",
    "ISBN-10": "1234567890",
    "ISBN-13": "123-1234567890",
}


class Handler(BaseHTTPRequestHandler):
    server_version = "details-demo/1.0"

    def send_json(self, status, obj, head=False):
        body = json.dumps(obj, indent=2).encode("utf-8") + b"\n"
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def answer(self, head):
        path = self.path.split("?", 1)[0]
        if path in ("/health", "/healthz"):
            self.send_json(200, {"status": "ok", "service": "details"}, head)
            return
        parts = path.strip("/").split("/")
        if len(parts) == 2 and parts[0] == "details":
            try:
                book_id = int(parts[1])
            except ValueError:
                self.send_json(400, {"error": "please provide a numeric product id"}, head)
                return
            self.send_json(200, {
                "id": book_id,
                **BOOK,
                # who called: set by the sidecar from the access token, never by the caller
                "caller": self.headers.get("x-user"),
            }, head)
            return
        self.send_json(404, {"error": "not found"}, head)

    def do_GET(self):  # noqa: N802 (http.server's naming)
        self.answer(head=False)

    def do_HEAD(self):  # noqa: N802
        self.answer(head=True)

    def log_request(self, code="-", size="-"):
        # the access line, with the request id and the names (never the values) of the cookies
        cookies = [c.split("=", 1)[0].strip() for c in (self.headers.get("cookie") or "").split(";") if c.strip()]
        self.log_message('"%s" %s x-request-id=%s cookies=[%s]', self.requestline, str(getattr(code, "value", code)),
                         self.headers.get("x-request-id", "-"), ", ".join(cookies))

    def log_message(self, fmt, *args):
        sys.stderr.write("details: %s %s\n" % (self.log_date_time_string(), fmt % args))


def main():
    port = int(os.environ.get("PORT", "9001"))
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    sys.stderr.write("details: listening on 127.0.0.1:%d\n" % port)
    sys.stderr.flush()
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
