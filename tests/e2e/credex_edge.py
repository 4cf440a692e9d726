"""HTTP side of the black-box tests of the edge (docs/HTTP_API.md): a `requests` client of one edge
listener, the UI's bearer tokens, and the checks every answer must pass (the security headers, the
one error body with the correlation id of the X-Correlation-Id header, never a CORS credentials
header).
"""

from __future__ import annotations

import base64
import json
import socket
import time
import uuid

import pytest
import requests

import credex_api as x
import credex_harness as h

SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
}
SECRETS = "/api/credentials/secrets"


def b64(value: bytes) -> str:
    return base64.b64encode(value).decode()


def canary(tag: str) -> bytes:
    """A secret value no response, header or log may ever show."""
    return f"sk-canary-{tag}-{uuid.uuid4().hex}".encode()


class Edge:
    """One edge HTTP listener (the session stack's, or a private instance's)."""

    def __init__(self, api: x.Api, base_url: str, verify=True):
        self.api = api
        self.base = base_url.rstrip("/")
        self.http = requests.Session()
        # per request: a session's verify loses to REQUESTS_CA_BUNDLE from the environment
        self.verify = verify
        self.answers: list[requests.Response] = []  # every answer, for the leak checks

    def close(self) -> None:
        self.http.close()

    def token(self, user: str) -> str:
        return self.api.tokens.user(user)

    def auth(self, user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(user)}"}

    def call(self, method: str, path: str, *, user: str | None = None, json_body=None,
             headers: dict[str, str] | None = None, data: bytes | str | None = None,
             params=None, timeout: float = 20) -> requests.Response:
        """One request; user adds that user's bearer token; json_body is sent as
        application/json."""
        hdrs = dict(self.auth(user)) if user else {}
        if json_body is not None:
            data = json.dumps(json_body)
            hdrs.setdefault("Content-Type", "application/json")
        hdrs.update(headers or {})
        r = self.http.request(method, self.base + path, headers=hdrs, data=data, params=params,
                              timeout=timeout, verify=self.verify)
        self.answers.append(r)
        check_common(r)
        return r

    def get(self, path: str, **kw) -> requests.Response:
        return self.call("GET", path, **kw)

    def post(self, path: str, body=None, **kw) -> requests.Response:
        return self.call("POST", path, json_body={} if body is None else body, **kw)

    def create(self, user: str, value: bytes, *, key: str | None = None, name: str | None = None,
               **fields) -> requests.Response:
        self.api.values.add(value)
        body = {"idempotencyKey": key or str(uuid.uuid4()), "kind": "SECRET_KIND_API_KEY",
                "displayName": name or f"edge {uuid.uuid4().hex[:8]}", "value": b64(value)} | fields
        return self.post(SECRETS, body, user=user)


@pytest.fixture(scope="module")
def edge(stack, api):
    """The session stack's edge (import this fixture into a test module)."""
    client = Edge(api, f"http://127.0.0.1:{stack.ports['edge-http']}")
    yield client
    client.close()


def check_common(r: requests.Response) -> None:
    """What every answer carries: the security headers, a correlation id, never a CORS
    credentials header, and JSON whenever there is a body."""
    for name, value in SECURITY_HEADERS.items():
        assert r.headers.get(name) == value, (name, r.status_code, dict(r.headers))
    assert "Origin" in r.headers.get("Vary", ""), dict(r.headers)
    assert r.headers.get("X-Correlation-Id"), dict(r.headers)
    assert "Access-Control-Allow-Credentials" not in r.headers, dict(r.headers)
    if r.content:
        assert r.headers.get("Content-Type") == "application/json", dict(r.headers)
        json.loads(r.content)


def error_of(r: requests.Response, status: int, code: str) -> dict:
    """The error body of r, checked: the status, the reason code, exactly the three fields, the
    correlation id of the header."""
    assert r.status_code == status, (r.status_code, r.text)
    doc = r.json()
    assert list(doc) == ["error"], doc
    err = doc["error"]
    assert set(err) == {"code", "message", "correlation_id"}, err
    assert err["code"] == code, err
    assert isinstance(err["message"], str) and err["message"], err
    assert err["correlation_id"] == r.headers["X-Correlation-Id"], (err, dict(r.headers))
    return err


def raw_exchange(port: int, request: bytes, *, timeout: float = 10, host: str = "127.0.0.1") -> bytes:
    """Send raw bytes on a fresh connection; return everything read until the server closes
    or timeout passes (for requests that requests/urllib3 would not send as they are)."""
    out = b""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(request)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                break
            if not chunk:
                break
            out += chunk
            if b"\r\n\r\n" in out and _complete(out):
                break
    return out


def _complete(resp: bytes) -> bool:
    head, _, body = resp.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":", 1)[1])
    return True


def raw_status(resp: bytes) -> int:
    return int(resp.split(b" ", 2)[1]) if resp.startswith(b"HTTP/1.1 ") else 0


def raw_body(resp: bytes) -> dict:
    return json.loads(resp.partition(b"\r\n\r\n")[2] or b"{}")


def spawn_edge(stack: h.Stack, **env: str) -> tuple[h.Instance, int]:
    """A private edge on the session stack (its own gRPC and HTTP ports) with extra settings;
    returns (instance, HTTP port) once it is healthy."""
    port = h.free_ports(1)[0]
    inst = stack.spawn("edge", CREDEX_EDGE_HTTP_ADDR=f"127.0.0.1:{port}", **env)
    stack.wait_healthy(inst)
    return inst, port


def secrets_named(api: x.Api, display_name: str) -> list[dict]:
    """The stored secret metadata documents with this display name (nothing stored checks)."""
    client, db = api.mongo()
    with client:
        return list(db.credential_secret_refs.find({"display_name": display_name}))
