"""The machinery every provider test server shares: a threaded HTTPS server on 127.0.0.1 with a
free port, a record of every request it received, faults a test switches on (an error status, a
redirect, an oversized or slow answer), and the book of codes and tokens it has issued.

A test server is real: credex reaches it over TCP and TLS (for the provider's real host name,
through CREDEX_OAUTH_TEST_CONNECT_TO and CREDEX_OAUTH_CA_FILE), never through a mock.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import http.server
import json
import re
import secrets
import socket
import ssl
import threading
import time
import urllib.parse
from dataclasses import dataclass, field

MAX_REQUEST_BODY = 1 << 20
PKCE_VERIFIER = re.compile(r"[A-Za-z0-9\-._~]{43,128}")


# ---- what was received ------------------------------------------------------------------------

@dataclass
class Request:
    """One request as the server received it."""
    seq: int
    at: float
    method: str
    host: str          # Host header without the port (lower case)
    sni: str | None    # the TLS server name the client sent
    path: str          # without the query
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    body: bytes
    form: dict[str, str] = field(default_factory=dict)  # urlencoded body, or a JSON object's strings
    json: object = None

    @property
    def basic_auth(self) -> tuple[str, str] | None:
        """(user, password) of an Authorization: Basic header (percent-decoded as RFC 6749 2.3.1
        asks), else None."""
        value = self.headers.get("authorization", "")
        if not value.lower().startswith("basic "):
            return None
        try:
            user, _, password = base64.b64decode(value[6:].strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return urllib.parse.unquote_plus(user), urllib.parse.unquote_plus(password)

    @property
    def bearer(self) -> str | None:
        value = self.headers.get("authorization", "")
        return value[7:].strip() if value.lower().startswith("bearer ") else None

    def param(self, name: str) -> str | None:
        """A parameter from the body, else from the query."""
        return self.form.get(name, self.query.get(name))

    def contains(self, value: str | bytes) -> bool:
        """Whether `value` appears anywhere in the request: path, query, headers (a Basic
        header decoded too), body, in plain, percent-encoded or base64 form."""
        v = value.encode() if isinstance(value, str) else value
        forms = {v, urllib.parse.quote_plus(v).encode(), urllib.parse.quote(v, safe="").encode(),
                 base64.b64encode(v), base64.urlsafe_b64encode(v).rstrip(b"=")}
        hay = [self.path.encode(), json.dumps(self.query).encode(), self.body,
               json.dumps(self.headers).encode()]
        basic = self.basic_auth
        if basic:
            hay.append(f"{basic[0]}:{basic[1]}".encode())
        return any(f and f in h for f in forms for h in hay)


@dataclass
class Reply:
    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def json(cls, status: int, obj, headers: list[tuple[str, str]] | None = None) -> "Reply":
        return cls(status, json.dumps(obj).encode(),
                   [("Content-Type", "application/json; charset=utf-8"), *(headers or [])])

    @classmethod
    def form(cls, status: int, obj: dict) -> "Reply":
        return cls(status, urllib.parse.urlencode(obj).encode(),
                   [("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")])

    @classmethod
    def redirect(cls, location: str, status: int = 302) -> "Reply":
        return cls(status, b"", [("Location", location)])

    @classmethod
    def text(cls, status: int, text: str) -> "Reply":
        return cls(status, text.encode(), [("Content-Type", "text/plain; charset=utf-8")])


# ---- misbehaviour ----------------------------------------------------------------------------

@dataclass
class Fault:
    """A misbehaviour applied, instead of the normal answer, to requests matching host and path.

    kind:
      "status"    answer `status` with `body`/`headers` (429 with Retry-After, 500, 503 ...)
      "redirect"  answer `status` (302) with Location: `location`
      "oversized" answer 200 with `size` bytes of JSON-looking filler; with a Content-Length
                  header when `declare_length`, else delimited by closing the connection
      "slow"      wait `seconds` before any byte of the answer, then answer normally
      "trickle"   send the headers (Content-Length `size`), then one body byte every `seconds`
      "drop"      close the connection without answering
    """
    kind: str
    host: str | None = None          # None: any host of the server
    path_suffix: str | None = None   # None: any path
    times: int | None = None         # None: until cleared; else that many requests
    status: int = 500
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    location: str = ""
    size: int = 4 << 20
    declare_length: bool = True
    seconds: float = 30.0

    def matches(self, req: Request) -> bool:
        return ((self.host is None or self.host == req.host)
                and (self.path_suffix is None or req.path.endswith(self.path_suffix)))


# ---- issued codes and tokens -----------------------------------------------------------------

@dataclass
class User:
    """The provider account that consents at the authorization endpoint."""
    id: str
    login: str
    name: str
    email: str


@dataclass
class Client:
    client_id: str
    client_secret: str
    redirect_uris: tuple[str, ...] = ()
    auth_method: str | None = None  # None: any the provider accepts


@dataclass
class CodeGrant:
    client_id: str
    redirect_uri: str | None
    scope: str
    user: User
    challenge: str | None
    challenge_method: str | None
    nonce: str | None
    expires_at: float
    used: bool = False


@dataclass
class TokenGrant:
    client_id: str
    user: User
    scope: str
    expires_at: float | None
    revoked: bool = False
    used: bool = False  # a rotated refresh token: spent by its one use


def pkce_s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


class TokenBook:
    """Codes, access and refresh tokens of one provider (thread-safe)."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self._lock = threading.Lock()
        self.codes: dict[str, CodeGrant] = {}
        self.access: dict[str, TokenGrant] = {}
        self.refresh: dict[str, TokenGrant] = {}
        # Reuse detection as rotating providers do it: a used refresh token presented again
        # revokes every token of that client and user (the whole grant family).
        self.revoke_family_on_reuse = False

    def _new(self, kind: str) -> str:
        return f"{self.prefix}{kind}_{secrets.token_urlsafe(24)}"

    def new_code(self, grant: CodeGrant) -> str:
        code = self._new("code")
        with self._lock:
            self.codes[code] = grant
        return code

    def redeem_code(self, code: str, client_id: str, redirect_uri: str | None,
                    verifier: str | None) -> CodeGrant | str:
        """The grant of a code, used up; or the reason it is refused (an OAuth error code).
        A code is single use; its PKCE challenge must be met by `verifier`."""
        with self._lock:
            grant = self.codes.get(code)
            if grant is None or grant.used or grant.expires_at < time.time():
                return "invalid_grant"
            grant.used = True  # even a failed redemption burns the code (RFC 6749 4.1.2)
        if grant.client_id != client_id:
            return "invalid_grant"
        if grant.redirect_uri is not None and redirect_uri != grant.redirect_uri:
            return "invalid_grant"
        if grant.challenge is not None:
            if verifier is None or not PKCE_VERIFIER.fullmatch(verifier):
                return "invalid_grant"
            expect = pkce_s256(verifier) if grant.challenge_method == "S256" else verifier
            if not secrets.compare_digest(expect, grant.challenge):
                return "invalid_grant"
        elif verifier is not None:
            return "invalid_grant"
        return grant

    def issue(self, client_id: str, user: User, scope: str, expires_in: int | None,
              with_refresh: bool) -> tuple[str, str | None]:
        access = self._new("at")
        refresh = self._new("rt") if with_refresh else None
        expires_at = time.time() + expires_in if expires_in else None
        with self._lock:
            self.access[access] = TokenGrant(client_id, user, scope, expires_at)
            if refresh:
                self.refresh[refresh] = TokenGrant(client_id, user, scope, None)
        return access, refresh

    def use_refresh(self, token: str, client_id: str, rotate: bool) -> TokenGrant | str:
        """The grant behind a refresh token; with `rotate` the token is used up (a second use
        is invalid_grant, as providers that rotate refresh tokens answer)."""
        with self._lock:
            grant = self.refresh.get(token)
            if grant is None or grant.client_id != client_id:
                return "invalid_grant"
            if grant.revoked:
                if grant.used and self.revoke_family_on_reuse:
                    for g in [*self.access.values(), *self.refresh.values()]:
                        if g.client_id == client_id and g.user.id == grant.user.id:
                            g.revoked = True
                return "invalid_grant"
            if rotate:
                grant.revoked = grant.used = True
        return grant

    def check_access(self, token: str | None) -> TokenGrant | None:
        with self._lock:
            grant = self.access.get(token or "")
        if grant is None or grant.revoked or (grant.expires_at and grant.expires_at < time.time()):
            return None
        return grant

    def revoke(self, token: str, client_id: str | None = None) -> bool:
        """Revoke an access or refresh token (and, for GitHub-style grant revocation, every
        token of the client and user is revoked by the caller). True when it existed."""
        with self._lock:
            grant = self.access.get(token) or self.refresh.get(token)
            if grant is None or (client_id is not None and grant.client_id != client_id):
                return False
            grant.revoked = True
            return True

    def revoke_all(self, client_id: str, user_id: str) -> int:
        n = 0
        with self._lock:
            for grant in [*self.access.values(), *self.refresh.values()]:
                if grant.client_id == client_id and grant.user.id == user_id and not grant.revoked:
                    grant.revoked = True
                    n += 1
        return n

    def expire_access(self, token: str) -> None:
        """Make an access token expired now (a test of refresh)."""
        with self._lock:
            self.access[token].expires_at = time.time() - 1


# ---- the server ----------------------------------------------------------------------------------

class SimServer:
    """A threaded HTTPS server on 127.0.0.1 answering for `hosts`; subclasses implement
    `handle(req) -> Reply`. Start with start(); stop with stop()."""

    label = "sim"

    def __init__(self, ca, hosts: list[str]):
        self.ca = ca
        self.hosts = list(hosts)
        self._lock = threading.Lock()
        self._requests: list[Request] = []
        self._faults: list[Fault] = []
        self._seq = 0
        self._stopping = threading.Event()
        self._httpd: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.errors: list[str] = []  # TLS or protocol failures of clients, for diagnosis

    # -- life --------------------------------------------------------------------------------
    def start(self) -> "SimServer":
        ctx = self.ca.server_context(self.label, self.hosts)

        def remember_sni(sslsock, server_name, _ctx):
            sslsock.credex_sni = server_name

        ctx.sni_callback = remember_sni
        sim = self

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 64

            def get_request(self):
                sock, addr = self.socket.accept()
                # The TLS handshake happens in the request's thread (Handler.setup), so a client
                # that stalls in it cannot block the accept loop.
                return ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

            def handle_error(self, request, client_address):
                import sys
                sim.errors.append(f"{client_address}: {sys.exc_info()[1]!r}")

        self._httpd = Server(("127.0.0.1", 0), _handler_class(self))
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"sim-{self.label}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._httpd:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread:
            self._thread.join(timeout=10)

    @property
    def port(self) -> int:
        assert self._httpd is not None, "not started"
        return self._httpd.server_address[1]

    def connect_to(self) -> list[str]:
        """CREDEX_OAUTH_TEST_CONNECT_TO entries for this server's hosts."""
        return [f"{h}:443:127.0.0.1:{self.port}" for h in self.hosts]

    # -- recording ---------------------------------------------------------------------------
    def mark(self) -> int:
        """A position in the record: requests(since=mark) are those received after it."""
        with self._lock:
            return self._seq

    def requests(self, *, since: int = 0, host: str | None = None, path_suffix: str | None = None,
                 method: str | None = None) -> list[Request]:
        with self._lock:
            out = list(self._requests)
        return [r for r in out if r.seq > since and (host is None or r.host == host)
                and (path_suffix is None or r.path.endswith(path_suffix))
                and (method is None or r.method == method)]

    def _record(self, req: Request) -> None:
        with self._lock:
            self._requests.append(req)

    def _next_seq(self) -> int:
        with self._lock:
            self._seq += 1
            return self._seq

    # -- faults ------------------------------------------------------------------------------
    def add_fault(self, fault: Fault) -> Fault:
        with self._lock:
            self._faults.append(fault)
        return fault

    def remove_fault(self, fault: Fault) -> None:
        with self._lock:
            if fault in self._faults:
                self._faults.remove(fault)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _take_fault(self, req: Request) -> Fault | None:
        with self._lock:
            for f in self._faults:
                if f.matches(req):
                    if f.times is not None:
                        f.times -= 1
                        if f.times <= 0:
                            self._faults.remove(f)
                    return f
        return None

    def wait(self, seconds: float) -> bool:
        """Sleep, but wake at stop(); True when woken by stop."""
        return self._stopping.wait(seconds)

    # -- answering ---------------------------------------------------------------------------
    def handle(self, req: Request) -> Reply:  # pragma: no cover - overridden
        return Reply.json(404, {"error": "not_found"})


def _parse_body(req: Request) -> None:
    ctype = req.headers.get("content-type", "").split(";")[0].strip().lower()
    if not req.body:
        return
    if ctype == "application/x-www-form-urlencoded":
        try:
            pairs = urllib.parse.parse_qsl(req.body.decode(), keep_blank_values=True, strict_parsing=True)
        except (UnicodeDecodeError, ValueError):
            return
        req.form = dict(pairs)
    elif ctype == "application/json":
        try:
            req.json = json.loads(req.body)
        except ValueError:
            return
        if isinstance(req.json, dict):
            req.form = {k: v for k, v in req.json.items() if isinstance(v, str)}


def _handler_class(sim: SimServer):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = f"credex-sim-{sim.label}"
        timeout = 30

        def version_string(self):
            return self.server_version

        def setup(self):
            self.request.settimeout(10)
            self.request.do_handshake()
            super().setup()

        def log_message(self, format, *args):  # noqa: A002 - quiet: the record is the log
            pass

        def _serve(self):
            length = self.headers.get("Content-Length")
            body = b""
            if self.headers.get("Transfer-Encoding"):
                self._send(Reply.text(411, "length required"))
                self.close_connection = True
                return
            if length:
                n = int(length)
                if n > MAX_REQUEST_BODY:
                    self._send(Reply.text(413, "too large"))
                    self.close_connection = True
                    return
                body = self.rfile.read(n)
            split = urllib.parse.urlsplit(self.path)
            host = (self.headers.get("Host") or "").lower()
            host = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            headers: dict[str, str] = {}
            for k, v in self.headers.items():
                k = k.lower()
                headers[k] = f"{headers[k]}, {v}" if k in headers else v
            req = Request(seq=sim._next_seq(), at=time.time(), method=self.command, host=host,
                          sni=getattr(self.request, "credex_sni", None), path=split.path,
                          query=dict(urllib.parse.parse_qsl(split.query, keep_blank_values=True)),
                          headers=headers, body=body)
            _parse_body(req)
            sim._record(req)
            fault = sim._take_fault(req)
            if fault is not None and self._misbehave(fault, req):
                return
            try:
                reply = sim.handle(req)
            except Exception as e:  # noqa: BLE001 - a sim bug shows as a 500 and in sim.errors
                sim.errors.append(f"{req.method} {req.path}: {e!r}")
                reply = Reply.json(500, {"error": "server_error"})
            self._send(reply)

        def _misbehave(self, f: Fault, req: Request) -> bool:
            """Carry out a fault; True when the answer has been sent (or withheld)."""
            if f.kind == "status":
                self._send(Reply(f.status, f.body, list(f.headers)))
            elif f.kind == "redirect":
                self._send(Reply(f.status if 300 <= f.status < 400 else 302, b"", [("Location", f.location)]))
            elif f.kind == "oversized":
                self._oversized(f)
            elif f.kind == "slow":
                if sim.wait(f.seconds):
                    self.close_connection = True
                    return True
                return False  # then the normal answer
            elif f.kind == "trickle":
                self._trickle(f)
            elif f.kind == "drop":
                self.close_connection = True
            else:
                raise ValueError(f"unknown fault kind {f.kind}")
            return True

        def _oversized(self, f: Fault) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            if f.declare_length:
                self.send_header("Content-Length", str(f.size))
            else:
                self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            chunk = b'{"filler":"' + b"x" * 65500 + b'"}\n'
            sent = 0
            try:
                while sent < f.size and not sim._stopping.is_set():
                    part = chunk[: f.size - sent]
                    self.wfile.write(part)
                    sent += len(part)
            except OSError:
                pass  # the client stopped reading: what a bounded client does

        def _trickle(self, f: Fault) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(f.size))
            self.end_headers()
            self.close_connection = True
            try:
                for _ in range(f.size):
                    self.wfile.write(b" ")
                    self.wfile.flush()
                    if sim.wait(f.seconds):
                        return
            except OSError:
                pass

        def _send(self, reply: Reply) -> None:
            try:
                self.send_response(reply.status)
                names = {k.lower() for k, _ in reply.headers}
                for k, v in reply.headers:
                    self.send_header(k, v)
                if "cache-control" not in names:
                    self.send_header("Cache-Control", "no-store")
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(reply.body)
            except OSError:
                self.close_connection = True

        def do_GET(self):
            self._serve()

        do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    return Handler


class Canary:
    """A plain TCP listener on 127.0.0.1 that records every connection made to it and closes
    it at once. Something that must never be reached (a redirect target on loopback) points
    here; `connections` counts who came anyway."""

    def __init__(self):
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._sock.settimeout(0.2)
        self._lock = threading.Lock()
        self._count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="sim-canary", daemon=True)

    def start(self) -> "Canary":
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except (socket.timeout, OSError):
                continue
            with self._lock:
                self._count += 1
            conn.close()

    @property
    def port(self) -> int:
        return self._sock.getsockname()[1]

    @property
    def connections(self) -> int:
        with self._lock:
            return self._count

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()
