"""`star annotate`: a local page to answer the open round's query, one committed label at a time.

Routes (nothing else is served; no route reads a path from the request):

    GET  /            the page (page.html)     GET /page.js   its script
    GET  /api/items   the open round's batch, with the labels committed so far
    POST /api/label   {"id", "answer"[, "annotator"]}: checked, committed, then 200

The server binds to 127.0.0.1 by default, refuses requests whose Host header is not the
address it serves (DNS rebinding) and cross-origin writes, and sends a strict
Content-Security-Policy. The page renders every text with `textContent`, never as HTML.
Bound to any other address it also requires a random access token, as Jupyter does: the
printed URL carries `?token=...`; the first page load turns it into a same-site cookie, so a
page on another site (or a rebound DNS name) never holds it. Idle connections time out.
"""

from __future__ import annotations

import errno
import hmac
import ipaddress
import json
import re
import secrets
import socket
import threading
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from star.annotation.commit import AlreadyLabelled, commit_answer
from star.annotation.queries import open_round
from star.errors import DataError, StarError

#: Largest accepted request body (one answer), in bytes.
MAX_BODY = 1 << 20
#: Seconds a connection may stay silent (e.g. after its headers) before it is closed.
IDLE_TIMEOUT = 30.0
_COOKIE = "star_token"
_NAME = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
_CSP = ("default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'none'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
_STATIC = {"/": ("page.html", "text/html; charset=utf-8"),
           "/index.html": ("page.html", "text/html; charset=utf-8"),
           "/page.js": ("page.js", "text/javascript; charset=utf-8")}


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and 'localhost'."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class AnnotationServer(ThreadingHTTPServer):
    """Serves one run's open round; each answer is committed to the label store before the reply.

    `token`: required on every request when set (the default off loopback; see the module doc).
    """

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, run_dir: str | Path, host: str = "127.0.0.1", port: int = 0, annotator: str = "human:web",
                 token: str | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.annotator = annotator
        self.token = token
        self.lock = threading.Lock()
        self.pages = {name: resources.files("star.annotation").joinpath(name).read_bytes() for name, _ in _STATIC.values()}
        open_round(self.run_dir)  # fail now, with the reason, rather than on the first request
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        super().__init__((host.strip("[]"), port), _Handler)

    @property
    def port(self) -> int:
        """The port actually bound (useful with port 0)."""
        return int(self.server_address[1])

    @property
    def url(self) -> str:
        """The page's address, as printed by `star annotate` (with the token when one is required)."""
        host = self.server_address[0]
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else "[::1]" if host == "::" else f"[{host}]" if ":" in host else host
        return f"http://{shown}:{self.port}/" + (f"?token={self.token}" if self.token else "")

    def host_allowed(self, header: str | None) -> bool:
        """The Host header names this server (any name when bound to all interfaces)."""
        return host_matches(header or "", self.server_address[0], self.port)

    def token_ok(self, given: str | None) -> bool:
        """True when no token is required, or `given` is it (compared in constant time)."""
        return self.token is None or (given is not None and hmac.compare_digest(given.encode(), self.token.encode()))


def host_matches(header: str, bound: str, port: int) -> bool:
    """Whether a Host header addresses a server bound to `bound`:`port`.

    Browsers leave the port out on the scheme's default (80), so an empty port matches there.
    """
    if bound in ("0.0.0.0", "::", ""):
        return True
    name, given = split_host(header)
    port_ok = given == str(port) or (given == "" and port == 80)
    return port_ok and (name == bound or (is_loopback(bound) and is_loopback(name)))


def split_host(header: str) -> tuple[str, str]:
    """'127.0.0.1:8000' -> ('127.0.0.1', '8000'); '[::1]:80' -> ('::1', '80'); no port -> ''."""
    if header.startswith("["):
        name, _, rest = header[1:].partition("]")
        return name, rest[1:] if rest.startswith(":") else ""
    name, sep, port = header.rpartition(":")
    return (name, port) if sep else (header, "")


class _Handler(BaseHTTPRequestHandler):
    server: AnnotationServer
    server_version = "star"
    sys_version = ""
    timeout = IDLE_TIMEOUT  # a stalled client (e.g. one that sends headers and no body) does not hold a thread

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the label store is the record."""

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Content-Security-Policy", _CSP)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, data: dict[str, Any]) -> None:
        self._send(status, json.dumps(data).encode("utf-8"), "application/json; charset=utf-8")

    def _error(self, status: int, message: str, hint: str | None = None) -> None:
        self._json(status, {"error": message, "hint": hint})

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Errors of the http.server machinery (bad request line, method) as JSON too."""
        self.close_connection = True
        try:
            self._error(code, message or "request refused")
        except OSError:
            pass

    def _guard(self) -> bool:
        """Refuse requests addressed to another host name (DNS rebinding), and without the token when one is set."""
        if not self.server.host_allowed(self.headers.get("Host")):
            self._error(421, "this server answers only requests addressed to it")
            return False
        if not self.server.token_ok(self._given_token()):
            self._error(403, "this server needs its access token",
                        "open the URL `star annotate` printed, with its ?token=... part")
            return False
        return True

    def _given_token(self) -> str | None:
        """The token of this request: `?token=` in the URL, else the cookie set by the first page load."""
        query = parse_qs(urlsplit(self.path).query)
        if query.get("token"):
            return query["token"][0]
        cookie = SimpleCookie()
        try:
            cookie.load(self.headers.get("Cookie") or "")
        except CookieError:
            return None
        return cookie[_COOKIE].value if _COOKIE in cookie else None

    def end_headers(self) -> None:
        """Hand the page its token as a same-site, script-proof cookie once the URL has proven it."""
        if self.server.token and parse_qs(urlsplit(self.path).query).get("token"):
            self.send_header("Set-Cookie", f"{_COOKIE}={self.server.token}; HttpOnly; SameSite=Strict; Path=/")
        super().end_headers()

    def do_GET(self) -> None:
        if not self._guard():
            return
        path = urlsplit(self.path).path
        if path in _STATIC:
            name, content_type = _STATIC[path]
            self._send(200, self.server.pages[name], content_type)
        elif path == "/api/items":
            self._items()
        else:
            self._error(404, "not found")

    do_HEAD = do_GET

    def do_POST(self) -> None:
        if not self._guard():
            return
        if urlsplit(self.path).path != "/api/label":
            self._error(404, "not found")
            return
        origin = self.headers.get("Origin")
        if origin is not None and urlsplit(origin).netloc != self.headers.get("Host"):
            self._error(403, "cross-origin writes are refused")
            return
        if (self.headers.get("Content-Type") or "").split(";")[0].strip().lower() != "application/json":
            self._error(415, "send the answer as application/json")
            return
        body = self._body()
        if body is not None:
            self._label(body)

    def _body(self) -> dict[str, Any] | None:
        """The JSON object in the request body, or None after replying with an error."""
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._error(411, "a Content-Length is required")
            return None
        if not 0 <= length <= MAX_BODY:
            self._error(413, f"the request body must be at most {MAX_BODY} bytes")
            return None
        try:
            data = json.loads(self.rfile.read(length).decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            self._error(400, "the request body is not valid JSON")
            return None
        if not isinstance(data, dict):
            self._error(400, 'send a JSON object {"id": ..., "answer": ...}')
            return None
        return data

    def _items(self) -> None:
        try:
            open_ = open_round(self.server.run_dir)
            labels = open_.labels()
        except StarError as e:
            self._error(409, e.message, e.hint)
            return
        items = []
        for row in open_.items:
            lab = labels.get(row["id"])
            items.append({k: row.get(k) for k in ("id", "question", "suggestion", "score", "raw_output")}
                         | {"answer": None if lab is None else lab.answer, "annotator": None if lab is None else lab.annotator})
        task = open_.task
        self._json(200, {"run": open_.run.path.name, "round": open_.index, "rounds": open_.config.al.rounds,
                         "task": task.name, "answer_type": task.answer_type,
                         "choices": list(task.choices) if task.choices else None, "items": items,
                         "labelled": sum(1 for i in items if i["answer"] is not None), "total": len(items),
                         "resume": f"star run --resume {open_.run.path}"})

    def _label(self, data: dict[str, Any]) -> None:
        who = self.server.annotator
        if data.get("annotator") not in (None, ""):
            name = data["annotator"]
            if not isinstance(name, str) or not _NAME.fullmatch(name):
                self._error(400, "annotator must be 1-64 letters, digits or . _ @ -")
                return
            who = f"human:{name}"
        try:
            with self.server.lock:
                open_ = open_round(self.server.run_dir)
                label = commit_answer(open_, data.get("id"), data.get("answer"), who)
        except AlreadyLabelled as e:
            self._error(409, e.message, e.hint)
            return
        except DataError as e:
            self._error(400, e.message, e.hint)
            return
        except StarError as e:
            self._error(409, e.message, e.hint)
            return
        remaining = len(open_.remaining())
        self._json(200, {"ok": True, "id": label.example_id, "answer": label.answer, "annotator": label.annotator,
                         "round": label.round, "remaining": remaining})


def make_server(run_dir: str | Path, host: str = "127.0.0.1", port: int = 0, annotator: str = "human:web",
                token: str | None = None) -> AnnotationServer:
    """A server for `run_dir`'s open round (RunStateError when it has none); call serve_forever().

    Off loopback a token is always required: `token`, or a random one (in `server.url`).
    """
    if not _NAME.fullmatch(annotator.removeprefix("human:")):
        raise DataError(f"annotator {annotator!r} must be 1-64 letters, digits or . _ @ -", hint="pass --annotator NAME")
    if token is not None and not re.fullmatch(r"[A-Za-z0-9_-]{16,128}", token):
        raise DataError("the token must be 16-128 letters, digits, _ or -", hint="pass another --token, or none")
    if token is None and not is_loopback(host):
        token = secrets.token_urlsafe(24)
    try:
        return AnnotationServer(run_dir, host, port, annotator, token)
    except OSError as e:
        raise StarError(f"cannot serve on {host}:{port}: {e.strerror or e}", hint=_bind_hint(e, host)) from None


def _bind_hint(error: OSError, host: str) -> str:
    """What to change after a failed bind: the port when it is taken, else the address."""
    if error.errno in (errno.EADDRINUSE, errno.EACCES):
        return "pick another --port (0: any free one)"
    return (f"check --host {host}: it must be an address of this machine (127.0.0.1, ::1, 0.0.0.0, or an"
            " interface's address)")
