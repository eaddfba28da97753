#!/usr/bin/env python3
"""productpage: Bookinfo's browser-facing page, for the mesh-oidc demo (Python standard library only).

The seed application logged users in itself (authlib against Keycloak: /login, /callback, an
access_token cookie, /logout). Here all of that lives in the sidecar (mesh-oidc in login mode);
the page only reads what the sidecar hands it:

    x-user                 the user's name (the `preferred_username` claim), set by the sidecar
    Authorization: Bearer  the user's access token, forwarded to details and reviews as Bookinfo
                           does, so their sidecars can check it

    GET /productpage   "Hello, <user>", the book's details and reviews, and when the access token
                       expires. When details or reviews answer 401 (they refused the token):
                       ON_REFUSAL=200 (the default) does what Istio's real Bookinfo productpage
                       does: the page still answers 200, with "Error fetching product details"
                       (or reviews) and "Sorry, product details are currently unavailable for
                       this book." in place of the section. Only a sidecar that also watches the
                       outbound calls (mesh-oidc's L7+, envoy/demo.yaml's productpage_outbound)
                       notices. ON_REFUSAL=401: this page answers 401 instead, so the sidecar's
                       `on_upstream_401` applies with no outbound listener at all (L7).
    GET /              a landing page (public, like Bookinfo's index: a skip path of the sidecar)
    GET /health        200, like Bookinfo's (a skip path); /healthz is the same
    GET /static/*      the stylesheet (public, like Bookinfo's static assets)
    /logout, /callback are answered by the sidecar and never reach this app.

Like the real one it passes on the caller's `authorization`, `cookie`, `user-agent`, `x-request-id`
and tracing headers to details and reviews: `x-request-id` is what lets the sidecar tie a refused
call to the page request it was made for.

Environment:
    PORT              default 9000
    DETAILS_URL       default http://127.0.0.1:9081/details/0
    REVIEWS_URL       default http://127.0.0.1:9082/reviews/0
    OUTBOUND_PROXY    e.g. http://127.0.0.1:15001: send every call to details and reviews through
                      this HTTP proxy (the sidecar's outbound listener), as Istio's iptables rules
                      do; DETAILS_URL and REVIEWS_URL then name the services as the app knows them
                      (http://details:9080/details/0). Unset: straight to the URLs.
    ON_REFUSAL        200 (default, as Bookinfo) or 401 (see above)
    UPSTREAM_TIMEOUT  seconds, default 5

Each request is logged with its x-request-id and the NAMES of the cookies it carried (never their
values), so that what reaches the app can be checked.
"""

import base64
import datetime
import html
import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DETAILS_URL = os.environ.get("DETAILS_URL", "http://127.0.0.1:9081/details/0")
REVIEWS_URL = os.environ.get("REVIEWS_URL", "http://127.0.0.1:9082/reviews/0")
UPSTREAM_TIMEOUT = float(os.environ.get("UPSTREAM_TIMEOUT", "5"))
OUTBOUND_PROXY = os.environ.get("OUTBOUND_PROXY", "")
ON_REFUSAL = os.environ.get("ON_REFUSAL", "200")
if ON_REFUSAL not in ("200", "401"):
    sys.exit("productpage: ON_REFUSAL must be 200 or 401, not %r" % ON_REFUSAL)
# Only through the outbound proxy when one is given: never through an http_proxy from the
# environment.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler(
    {"http": OUTBOUND_PROXY} if OUTBOUND_PROXY else {}))

# Headers productpage passes on to the services it calls, as Bookinfo's getForwardHeaders does:
# x-request-id (Istio ties the calls of one request together with it), the tracing headers, and
# the caller's user agent, cookies and credentials.
FORWARDED = ["x-request-id", "traceparent", "tracestate",
             "x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid", "x-b3-sampled", "x-b3-flags",
             "user-agent", "cookie", "authorization"]

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 46rem; color: #222; }
h1 { margin-bottom: 0.2rem; }
.muted { color: #666; }
.box { border: 1px solid #ccc; border-radius: 6px; padding: 0.8rem 1rem; margin: 1rem 0; }
.error { border-color: #c33; background: #fff4f4; }
pre { background: #f6f6f6; padding: 0.6rem; overflow-x: auto; }
table td { padding: 0.1rem 0.8rem 0.1rem 0; }
"""


def esc(value):
    return html.escape(str(value), quote=True)


def token_times(authorization):
    """The access token's exp and iat, read WITHOUT verifying it: for display only (the sidecars
    are the ones that check tokens)."""
    if not authorization or not authorization.lower().startswith("bearer "):
        return None
    parts = authorization[7:].strip().split(".")
    if len(parts) != 3:
        return None
    try:
        padded = parts[1] + "=" * (-len(parts[1]) % 4)
        payload = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (ValueError, UnicodeError):
        return None
    if not isinstance(payload, dict):
        return None
    exp, iat = payload.get("exp"), payload.get("iat")
    if not isinstance(exp, (int, float)) or isinstance(exp, bool):
        return None
    return {"exp": int(exp), "iat": int(iat) if isinstance(iat, (int, float)) and not isinstance(iat, bool) else None}


def utc(ts):
    return datetime.datetime.fromtimestamp(ts, tz=datetime.timezone.utc).strftime("%H:%M:%S UTC")


def cookie_names(header):
    """The names in a Cookie header, in order (for the log: never the values)."""
    if not header:
        return []
    return [part.split("=", 1)[0].strip() for part in header.split(";") if part.strip()]


def call(url, headers):
    """GET a service; returns (status or None, parsed JSON or None, error text or None)."""
    req = urllib.request.Request(url, headers={**headers, "accept": "application/json"})
    try:
        with OPENER.open(req, timeout=UPSTREAM_TIMEOUT) as res:
            body = res.read()
            status = res.status
    except urllib.error.HTTPError as err:
        body = err.read()
        status = err.code
    except (urllib.error.URLError, OSError) as err:
        return None, None, "unreachable: %s" % getattr(err, "reason", err)
    try:
        data = json.loads(body.decode("utf-8"))
    except ValueError:
        data = None
    return status, data, None


class Handler(BaseHTTPRequestHandler):
    server_version = "productpage-demo/1.0"

    def send_body(self, status, body, content_type, head, extra=None):
        data = body.encode("utf-8")
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(data)))
        self.send_header("cache-control", "no-store")
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if not head:
            self.wfile.write(data)

    def page(self, status, title, inner, head):
        doc = ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>%s</title>"
               "<link rel=\"stylesheet\" href=\"/static/style.css\"></head>\n<body>\n%s\n</body></html>\n") % (
            esc(title), inner)
        self.send_body(status, doc, "text/html; charset=utf-8", head)

    def answer(self, head):
        path = self.path.split("?", 1)[0]
        if path in ("/health", "/healthz"):
            self.send_body(200, '{"status": "Product page is healthy"}\n', "application/json", head)
        elif path == "/static/style.css":
            self.send_body(200, STYLE, "text/css; charset=utf-8", head)
        elif path in ("/", "/index.html"):
            self.index(head)
        elif path == "/productpage":
            self.productpage(head)
        else:
            self.page(404, "Not found", "<h1>Not found</h1><p><a href=\"/\">Home</a></p>", head)

    def index(self, head):
        self.page(200, "Bookinfo", """<h1>Bookinfo</h1>
<p class="muted">The mesh-oidc demo: this page, /health and /static/* are public (skip paths of the
sidecar, as Bookinfo's index, health check and assets would be); everything else needs a login.</p>
<p><a id="productpage-link" href="/productpage">Go to the product page</a> (you will be asked to log in).</p>""", head)

    def productpage(self, head):
        user = self.headers.get("x-user")
        forward = {name: self.headers[name] for name in FORWARDED if self.headers.get(name)}
        with ThreadPoolExecutor(max_workers=2) as pool:
            details_f = pool.submit(call, DETAILS_URL, forward)
            reviews_f = pool.submit(call, REVIEWS_URL, forward)
            details, reviews = details_f.result(), reviews_f.result()

        refused = [name for name, (status, _, _) in (("details", details), ("reviews", reviews)) if status == 401]
        if refused:
            sys.stderr.write("productpage: %s refused the token (401); x-request-id %s; answering %s\n" % (
                " and ".join(refused), self.headers.get("x-request-id"), ON_REFUSAL))
        if refused and ON_REFUSAL == "401":
            # The seed's "token refused" case: details or reviews said 401 (an expired or revoked
            # token). Answer 401 so that the sidecar acts per its on_upstream_401.
            self.page(401, "Unauthorized", """<h1>Unauthorized</h1>
<p id="refused">%s refused the access token (401).</p>
<p><a href="/productpage">Try again</a> &middot; <a href="/logout">Log out</a></p>""" % esc(" and ".join(refused)), head)
            return

        times = token_times(self.headers.get("authorization"))
        now = int(time.time())
        if times:
            left = times["exp"] - now
            token_html = ('<p id="token">Access token issued at <span id="token-iat">%s</span>, '
                          'expires at <span id="token-exp" data-exp="%d">%s</span> '
                          '(<span id="token-left">%d</span> s from now). '
                          '<span class="muted">Reload after that: the sidecar refreshes it '
                          'and the time moves on.</span></p>') % (
                esc(utc(times["iat"])) if times["iat"] else "?", times["exp"], esc(utc(times["exp"])), left)
        else:
            token_html = '<p id="token" class="muted">No access token reached this page.</p>'

        inner = """<h1 id="hello">Hello, %s</h1>
<p class="muted">Logged in by the sidecar (mesh-oidc, login mode). <a id="logout" href="/logout">Log out</a></p>
%s
%s
%s""" % (esc(user) if user else "stranger", token_html,
         self.section("details", "Book details", details, self.render_details),
         self.section("reviews", "Reviews", reviews, self.render_reviews))
        self.page(200, "Bookinfo: The Comedy of Errors", inner, head)

    @staticmethod
    def section(name, title, result, render):
        status, data, error = result
        if status == 200 and isinstance(data, dict):
            return ('<div class="box" id="%s">\n<h2>%s <small class="muted">(%s answered '
                    '<span id="%s-status">200</span>)</small></h2>\n%s\n</div>') % (
                name, esc(title), name, name, render(data))
        # What Bookinfo's productpage shows for any answer but 200 (401 included): its template's
        # "Error fetching product ..." heading and its getProduct...() "Sorry, ..." text.
        what = "details" if name == "details" else "reviews"
        shown = error if error else ("%s answered %s" % (name, status))
        return ('<div class="box error" id="%s">\n<h2 id="%s-error">Error fetching product %s</h2>\n'
                '<p>Sorry, product %s are currently unavailable for this book.</p>\n'
                '<p class="muted">(<span id="%s-status">%s</span>: %s)</p>\n</div>') % (
            name, name, what, what, name, esc(status if status else "unreachable"), esc(shown))

    @staticmethod
    def render_details(data):
        rows = "".join("<tr><td>%s</td><td>%s</td></tr>" % (esc(k), esc(v))
                       for k, v in data.items() if k not in ("caller",))
        return '<table>%s</table>\n<p class="muted">details saw the caller as <span id="details-caller">%s</span></p>' % (
            rows, esc(data.get("caller")))

    @staticmethod
    def render_reviews(data):
        items = "".join("<li><b>%s</b>: %s</li>" % (esc(r.get("reviewer")), esc(r.get("text")))
                        for r in data.get("reviews", []) if isinstance(r, dict))
        return '<ul>%s</ul>\n<p class="muted">reviews saw the caller as <span id="reviews-caller">%s</span></p>' % (
            items, esc(data.get("caller")))

    def do_GET(self):  # noqa: N802 (http.server's naming)
        self.answer(head=False)

    def do_HEAD(self):  # noqa: N802
        self.answer(head=True)

    def log_request(self, code="-", size="-"):
        # the access line, with the request id and the names (never the values) of the cookies
        self.log_message('"%s" %s x-request-id=%s cookies=[%s]', self.requestline, str(getattr(code, "value", code)),
                         self.headers.get("x-request-id", "-"), ", ".join(cookie_names(self.headers.get("cookie"))))

    def log_message(self, fmt, *args):
        sys.stderr.write("productpage: %s %s\n" % (self.log_date_time_string(), fmt % args))


def main():
    port = int(os.environ.get("PORT", "9000"))
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    sys.stderr.write("productpage: listening on 127.0.0.1:%d (details %s, reviews %s%s; a refusal answers %s)\n" % (
        port, DETAILS_URL, REVIEWS_URL, ", through the proxy " + OUTBOUND_PROXY if OUTBOUND_PROXY else "", ON_REFUSAL))
    sys.stderr.flush()
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
