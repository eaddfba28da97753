#!/usr/bin/env python3
"""reviews: Bookinfo's reviews service, for the mesh-oidc demo (Python standard library only).

Like details, it has no login code: its sidecar (mesh-oidc in validate mode) checks the access
token and sets `x-user`.

    GET /reviews/<id>   two reviews of the book, as JSON, with the caller
    GET /health         200, like Bookinfo's (a skip path of its sidecar); /healthz is the same

Each request is logged with its x-request-id (productpage passes the page request's on) and the
NAMES of the cookies it carried (never their values).

Listens on 127.0.0.1:$PORT (default 9002).
"""

import json
import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

REVIEWS = [
    {
        "reviewer": "Reviewer1",
        "text": "A comedy of errors in the best sense: quick, funny and over far too soon.",
    },
    {
        "reviewer": "Reviewer2",
        "text": "Great fun to read aloud, though the plot is thinner than in the later plays.",
    },
]


class Handler(BaseHTTPRequestHandler):
    server_version = "reviews-demo/1.0"

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
            self.send_json(200, {"status": "ok", "service": "reviews"}, head)
            return
        parts = path.strip("/").split("/")
        if len(parts) == 2 and parts[0] == "reviews":
            self.send_json(200, {
                "id": parts[1],
                "reviews": REVIEWS,
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
        sys.stderr.write("reviews: %s %s\n" % (self.log_date_time_string(), fmt % args))


def main():
    port = int(os.environ.get("PORT", "9002"))
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    sys.stderr.write("reviews: listening on 127.0.0.1:%d\n" % port)
    sys.stderr.flush()
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
