"""Issue 9: the edge as a process: /healthz and /readyz, the feature toggle, TLS, start-up
failures that name the variable, keep-alive, and the limits that keep slow or greedy clients from
holding the server (idle timeout, per-request time, per-IP connections, a worker never waiting on
a socket). Private edges (and one private gateway) run next to the session stack with their own
settings; each must stop with exit code 0.
"""

from __future__ import annotations

import socket
import ssl
import time
import uuid

import pytest
import requests

import credex_api as x
import credex_edge as e
from credex_edge import edge  # noqa: F401 (the fixture)
import credex_harness as h

SECRETS = e.SECRETS


def stopped_cleanly(inst: h.Instance) -> None:
    assert inst.stop() == 0, inst.log_text()[-3000:]


# ---- health --------------------------------------------------------------------------------------

def test_healthz_and_readyz_need_no_authentication(edge):
    for path in ("/healthz", "/readyz"):
        r = edge.get(path)
        assert r.status_code == 200, r.text
        assert r.json() == {"status": "ok"}
    e.error_of(edge.call("POST", "/healthz", json_body={}), 405, "unimplemented")


def test_readyz_is_503_while_the_gateway_is_unreachable(stack, api):
    dead = f"127.0.0.1:{h.free_ports(1)[0]}"
    inst, port = e.spawn_edge(stack, CREDEX_GATEWAY_ADDR=dead)
    client = e.Edge(api, f"http://127.0.0.1:{port}")
    try:
        assert client.get("/healthz").status_code == 200
        t0 = time.monotonic()
        err = e.error_of(client.get("/readyz"), 503, "unavailable")
        assert time.monotonic() - t0 < 3, "readyz must answer within about a second"
        assert dead not in err["message"]
        # a credential route says unavailable too, without naming the address
        err = e.error_of(client.get(SECRETS, user=x.uid("u")), 503, "unavailable")
        assert dead not in err["message"] and "ipv4" not in err["message"]
    finally:
        client.close()
        stopped_cleanly(inst)


# ---- the feature toggle -----------------------------------------------------------------------------

def test_credential_routes_are_404_while_credentials_are_disabled(stack, api):
    gateway = stack.spawn("gateway", CAIPE_CREDENTIALS_ENABLED="false")
    stack.wait_healthy(gateway)
    inst, port = e.spawn_edge(stack, CREDEX_GATEWAY_ADDR=gateway.addr, CAIPE_CREDENTIALS_ENABLED="false")
    client = e.Edge(api, f"http://127.0.0.1:{port}")
    user = x.uid("u")
    try:
        name = f"disabled {uuid.uuid4().hex}"
        calls = [
            ("GET", SECRETS, None),
            ("POST", SECRETS, {"idempotencyKey": str(uuid.uuid4()), "kind": "SECRET_KIND_API_KEY",
                               "displayName": name, "value": e.b64(e.canary("off"))}),
            ("GET", f"{SECRETS}/sec_1", None),
            ("POST", f"{SECRETS}/sec_1/rotate", {"value": e.b64(b"v")}),
            ("DELETE", f"{SECRETS}/sec_1/shares", None),
            ("GET", "/api/admin/credentials/secrets", None),
            ("POST", "/api/credentials/retrieve", {"secretRef": "sec_1"}),
            ("POST", "/api/credentials/exchange", {}),
            ("POST", "/api/credentials/inject/github", {}),
            ("GET", "/api/credentials/oauth-connectors", None),
            ("GET", "/api/credentials/connections", None),
            ("GET", "/api/credentials/audit", None),
            ("GET", "/api/credentials/migrations/preview", None),
        ]
        for method, path, body in calls:
            r = client.call(method, path, user=user, json_body=body)
            e.error_of(r, 404, "feature_disabled")
        assert e.secrets_named(api, name) == []
        r = client.get("/api/credentials/health", user=user)
        assert r.status_code == 200, r.text
        assert r.json().get("credentialsEnabled", False) is False
    finally:
        client.close()
        stopped_cleanly(inst)
        stopped_cleanly(gateway)


# ---- TLS -----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def https_pair(stack, tmp_path_factory):
    d = tmp_path_factory.mktemp("edge-https")
    res = h.run_pki(stack.run_dir, "pki_make_identity_cert", str(d), "edge-https")
    assert res.returncode == 0, res.stderr
    return d / "edge-https.pem", d / "edge-https.key"


def test_tls_serves_https_only(stack, api, https_pair):
    cert, key = https_pair
    inst, port = e.spawn_edge(stack, CREDEX_EDGE_HTTP_TLS_CERT=str(cert), CREDEX_EDGE_HTTP_TLS_KEY=str(key))
    client = e.Edge(api, f"https://127.0.0.1:{port}", verify=str(stack.pki.ca))
    try:
        r = client.get("/healthz")
        assert r.status_code == 200, r.text
        user = x.uid("u")
        r = client.create(user, e.canary("tls"))
        assert r.status_code == 201, r.text
        assert client.get(SECRETS, user=user).status_code == 200
        # plain HTTP on the TLS port gets no HTTP answer
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
        # TLS 1.2 and 1.3 are offered
        for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            ctx = ssl.create_default_context(cafile=str(stack.pki.ca))
            ctx.minimum_version = ctx.maximum_version = version
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                with ctx.wrap_socket(s, server_hostname="127.0.0.1") as tls:
                    assert tls.version() == {ssl.TLSVersion.TLSv1_2: "TLSv1.2",
                                             ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[version]
    finally:
        client.close()
        stopped_cleanly(inst)


@pytest.mark.parametrize("setting,code,variable", [
    ("cert-only", 2, "CREDEX_EDGE_HTTP_TLS_CERT"),
    ("missing-files", 3, "CREDEX_EDGE_HTTP_TLS_CERT"),
    ("mismatched-key", 3, "CREDEX_EDGE_HTTP_TLS_KEY"),
    ("port-taken", 3, "CREDEX_EDGE_HTTP_ADDR"),
])
def test_start_failures_name_the_variable(stack, https_pair, tmp_path, setting, code, variable):
    cert, key = https_pair
    other_key = stack.pki.key("edge")  # a valid key, of another certificate
    env = {
        "cert-only": {"CREDEX_EDGE_HTTP_TLS_CERT": str(cert)},
        "missing-files": {"CREDEX_EDGE_HTTP_TLS_CERT": str(tmp_path / "nope.pem"),
                          "CREDEX_EDGE_HTTP_TLS_KEY": str(tmp_path / "nope.key")},
        "mismatched-key": {"CREDEX_EDGE_HTTP_TLS_CERT": str(cert), "CREDEX_EDGE_HTTP_TLS_KEY": str(other_key)},
        "port-taken": {"CREDEX_EDGE_HTTP_ADDR": f"127.0.0.1:{stack.ports['edge-http']}"},
    }[setting]
    inst = stack.spawn("edge", **env)
    assert inst.wait_exit(60) == code, inst.log_text()[-2000:]
    assert variable in inst.log_text()


# ---- connections and limits ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tight(stack):
    """One HTTP thread, 1 s idle timeout, 300 ms to send a body, 3 connections per address."""
    inst, port = e.spawn_edge(stack, CREDEX_EDGE_HTTP_THREADS="1", CREDEX_EDGE_HTTP_IDLE_TIMEOUT_S="1",
                              CREDEX_EDGE_HTTP_REQUEST_TIMEOUT_MS="300",
                              CREDEX_EDGE_HTTP_MAX_CONNECTIONS_PER_IP="3")
    yield port
    stopped_cleanly(inst)


def read_until_closed(s: socket.socket, timeout: float) -> bytes:
    s.settimeout(timeout)
    out = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return out
            out += chunk
    except (ConnectionResetError, socket.timeout):
        return out


def test_keep_alive(stack):
    with socket.create_connection(("127.0.0.1", stack.ports["edge-http"]), timeout=10) as s:
        for _ in range(3):
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            head = b""
            while b'{"status":"ok"}' not in head:
                chunk = s.recv(4096)
                assert chunk, "the server closed a kept-alive connection"
                head += chunk
            assert head.startswith(b"HTTP/1.1 200 ")
            assert b"Connection: close" not in head


def test_an_idle_connection_is_closed(tight):
    with socket.create_connection(("127.0.0.1", tight), timeout=10) as s:
        t0 = time.monotonic()
        assert read_until_closed(s, 8) == b""
        assert time.monotonic() - t0 < 5  # 1 s idle timeout, with margin


def test_a_body_that_takes_too_long_is_408(tight, api):
    name = f"slow {uuid.uuid4().hex}"
    body = (b'{"idempotencyKey":"%s","kind":"SECRET_KIND_API_KEY","displayName":"%s","value":"c2s="}'
            % (uuid.uuid4().hex.encode(), name.encode()))
    tok = api.tokens.user(x.uid("u"))
    with socket.create_connection(("127.0.0.1", tight), timeout=10) as s:
        s.sendall(f"POST {SECRETS} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tok}\r\n"
                  f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body[:10])
        time.sleep(0.6)
        s.sendall(body[10:])
        resp = read_until_closed(s, 8)
    assert e.raw_status(resp) == 408, resp[:300]
    assert e.raw_body(resp)["error"]["code"] == "deadline_exceeded"
    assert b"Connection: close" in resp
    assert e.secrets_named(api, name) == []


def test_a_slow_client_holds_no_worker(tight):
    """With a single HTTP thread, a client stuck in the middle of its headers does not delay
    anyone else (sockets are read event-driven)."""
    with socket.create_connection(("127.0.0.1", tight), timeout=10) as slow:
        slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        t0 = time.monotonic()
        r = requests.get(f"http://127.0.0.1:{tight}/healthz", timeout=5)
        assert r.status_code == 200
        assert time.monotonic() - t0 < 0.9, "a stalled client delayed another one"


@pytest.fixture(scope="module")
def limited(stack):
    """3 connections per address, and an idle timeout long enough that none of the three held
    connections can expire while the test runs (a 1 s timeout made the test race a slow machine)."""
    inst, port = e.spawn_edge(stack, CREDEX_EDGE_HTTP_THREADS="1", CREDEX_EDGE_HTTP_IDLE_TIMEOUT_S="60",
                              CREDEX_EDGE_HTTP_MAX_CONNECTIONS_PER_IP="3")
    yield port
    stopped_cleanly(inst)


def test_connections_per_address_are_limited(limited):
    socks = [socket.create_connection(("127.0.0.1", limited), timeout=10) for _ in range(3)]
    try:
        # each held connection is served, so all three are open on the server's side
        for s in socks:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            got = b""
            while b'{"status":"ok"}' not in got:
                chunk = s.recv(4096)
                assert chunk, "a held connection was closed"
                got += chunk
        with socket.create_connection(("127.0.0.1", limited), timeout=10) as fourth:
            fourth.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_until_closed(fourth, 5) == b"", "a fourth connection from one address was served"
        # the three are still served after the fourth was turned away
        socks[0].sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert socks[0].recv(4096).startswith(b"HTTP/1.1 200")
    finally:
        for s in socks:
            s.close()
    time.sleep(0.3)
    assert requests.get(f"http://127.0.0.1:{limited}/healthz", timeout=5).status_code == 200
