"""Issue 14, deliverable 4: metrics and probes on each service's plain-HTTP operations port, and
W3C traceparent propagation.

Every scrape is parsed by prometheus_client's own text-format parser (a real consumer of the
format, not a regular expression of ours), then checked: counters moved by exactly the calls the
test made, histogram buckets are cumulative with _count equal to the +Inf bucket, and no value
sent to credex appears in any scrape. /readyz is driven through a real database outage: a
private store reaches FerretDB through a TCP relay the test cuts and restores, so the session
stack keeps its database.
"""

from __future__ import annotations

import json
import math
import socket
import threading
import time
import uuid

import grpc
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

import credex_api as x
import credex_harness as h

SERVICES = h.SERVICES


def ops_url(stack: h.Stack, service: str, path: str) -> str:
    return f"http://127.0.0.1:{stack.ports[f'{service}-ops']}{path}"


def scrape(url: str) -> dict:
    """{family name: Metric} of one scrape, parsed by prometheus_client."""
    r = requests.get(url, timeout=5)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4"), r.headers
    return {m.name: m for m in text_string_to_metric_families(r.text)}, r.text


def sample(families: dict, family: str, name: str, **labels) -> float:
    """The value of the sample `name` of `family` whose labels include `labels` (0 if absent)."""
    m = families.get(family)
    if m is None:
        return 0.0
    total = 0.0
    for s in m.samples:
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
            total += s.value
    return total


def check_histograms(families: dict) -> int:
    """Every histogram series: le ascending, buckets cumulative, +Inf == _count, sum >= 0."""
    checked = 0
    for m in families.values():
        if m.type != "histogram":
            continue
        series: dict[tuple, dict] = {}
        for s in m.samples:
            key = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
            d = series.setdefault(key, {"buckets": []})
            if s.name.endswith("_bucket"):
                d["buckets"].append((float(s.labels["le"]), s.value))
            elif s.name.endswith("_count"):
                d["count"] = s.value
            elif s.name.endswith("_sum"):
                d["sum"] = s.value
        for key, d in series.items():
            les = [le for le, _ in d["buckets"]]
            counts = [c for _, c in d["buckets"]]
            assert les == sorted(les) and les[-1] == math.inf, (m.name, key, les)
            assert all(a <= b for a, b in zip(counts, counts[1:])), (m.name, key, counts)
            assert counts[-1] == d["count"], (m.name, key, counts, d)
            assert d["sum"] >= 0, (m.name, key, d)
            checked += 1
    return checked


@pytest.mark.parametrize("service", SERVICES)
def test_probes_and_nothing_else(stack, service):
    r = requests.get(ops_url(stack, service, "/healthz"), timeout=5)
    assert (r.status_code, r.text) == (200, "ok\n")
    r = requests.get(ops_url(stack, service, "/readyz"), timeout=5)
    assert (r.status_code, r.text) == (200, "ready\n")
    for path in ("/", "/metrics/", "/health", "/readyz/x", "/debug/pprof"):
        assert requests.get(ops_url(stack, service, path), timeout=5).status_code == 404, path
    r = requests.post(ops_url(stack, service, "/metrics"), data=b"x" * 100000, timeout=5)
    assert r.status_code == 405
    families, _ = scrape(ops_url(stack, service, "/metrics"))
    # Every process counts the gRPC calls it serves: scripts/run's health checks at least.
    assert sample(families, "credex_rpc_server_calls", "credex_rpc_server_calls_total",
                  service="grpc.health.v1.Health", method="Check", code="ok") >= 1
    assert check_histograms(families) >= 1


def test_calls_move_the_counters(stack, api):
    api.grant_retriever(x.AGENT)
    owner = x.uid("metrics-owner")
    value = f"metrics-value-{uuid.uuid4().hex}".encode()
    sid = api.ui(owner).create(value, name="metrics").secret.secret_id
    urls = {s: ops_url(stack, s, "/metrics") for s in ("gateway", "store", "keywrap")}
    before = {s: scrape(u)[0] for s, u in urls.items()}
    n = 5
    for _ in range(n):
        assert api.agent(owner).retrieve(sid).value == value
    with pytest.raises(grpc.RpcError) as info:
        api.agent(owner).retrieve("sec_" + "0" * 26)
    failed_code = x.reason(info.value)
    after = {s: scrape(u) for s, u in urls.items()}
    texts = {s: t for s, (_, t) in after.items()}
    after = {s: f for s, (f, _) in after.items()}

    def delta(svc, family, name, **labels):
        return sample(after[svc], family, name, **labels) - sample(before[svc], family, name, **labels)

    ret = {"service": "credex.v1.Retrieval", "method": "Retrieve"}
    assert delta("gateway", "credex_rpc_server_calls", "credex_rpc_server_calls_total", code="ok", **ret) == n
    assert delta("gateway", "credex_rpc_server_calls", "credex_rpc_server_calls_total",
                 code=failed_code, **ret) == 1
    assert delta("gateway", "credex_rpc_server_duration_seconds", "credex_rpc_server_duration_seconds_count",
                 **ret) == n + 1
    res = {"service": "credex.v1.CredentialStore", "method": "Resolve"}
    assert delta("store", "credex_rpc_server_calls", "credex_rpc_server_calls_total", code="ok", **res) == n
    # The gateway counts its own calls to the store the same way.
    assert delta("gateway", "credex_rpc_client_calls", "credex_rpc_client_calls_total",
                 target="credex.v1.CredentialStore", op="Resolve", code="ok") == n
    # Caches answered (hits or misses, each lookup once), the database and OpenFGA were called.
    assert delta("store", "credex_cache_lookups", "credex_cache_lookups_total", cache="store_payload") >= n
    assert delta("gateway", "credex_openfga_calls", "credex_openfga_calls_total") >= 1
    assert delta("store", "credex_db_calls", "credex_db_calls_total") >= 1
    assert sample(after["store"], "credex_store_audit_batch_size", "credex_store_audit_batch_size_count") >= 1
    assert sample(after["gateway"], "credex_http_client_requests", "credex_http_client_requests_total",
                  target="openfga") >= 1
    for svc, fam in after.items():
        assert check_histograms(fam) >= 1, svc
        assert value.decode() not in texts[svc]
        assert sid not in texts[svc] and owner not in texts[svc], "a label value came from input"


def test_unrouted_paths_are_counted_as_unknown(stack):
    url = ops_url(stack, "keywrap", "/metrics")
    before, _ = scrape(url)
    path = f"/credex.v1.Nope{uuid.uuid4().hex[:8]}/Nothing"
    with pytest.raises(grpc.RpcError) as info:
        stack.unary("keywrap", path, b"")
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    after, text = scrape(url)
    key = {"service": "unknown", "method": "unknown", "code": "unimplemented"}
    assert (sample(after, "credex_rpc_server_calls", "credex_rpc_server_calls_total", **key)
            - sample(before, "credex_rpc_server_calls", "credex_rpc_server_calls_total", **key)) == 1
    assert "Nope" not in text


class Relay:
    """A TCP relay 127.0.0.1:<port> -> target that the test can cut (every connection closed,
    new ones refused) and restore on the same port."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.port = h.free_ports(1)[0]
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()
        self.listener: socket.socket | None = None
        self.start()

    def start(self) -> None:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(64)
        self.listener = s
        threading.Thread(target=self._accept, args=(s,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        self.listener.close()
        with self.lock:
            for c in self.conns:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                c.close()
            self.conns.clear()


def test_readyz_follows_the_database(stack):
    relay = Relay(("127.0.0.1", stack.ports["ferretdb"]))
    ops_port = h.free_ports(1)[0]
    store = stack.spawn("store", CREDEX_MONGO_URI=f"mongodb://127.0.0.1:{relay.port}",
                        CREDEX_STORE_OPS_ADDR=f"127.0.0.1:{ops_port}")
    try:
        stack.wait_healthy(store)
        url = f"http://127.0.0.1:{ops_port}/readyz"
        assert requests.get(url, timeout=5).status_code == 200
        relay.cut()

        def not_ready():
            r = requests.get(url, timeout=10)
            return r.text if r.status_code == 503 else None  # (a Response is falsy when not ok)
        text = x.wait_until(not_ready, 30, interval=0.2, what="/readyz 503 with the database cut")
        assert text == "credex.v1.CredentialStore: not serving\n", text
        # Liveness is not readiness: the process is alive and says so.
        assert requests.get(f"http://127.0.0.1:{ops_port}/healthz", timeout=5).status_code == 200
        relay.start()
        x.wait_until(lambda: requests.get(url, timeout=10).status_code == 200, 30, interval=0.2,
                     what="/readyz 200 with the database back")
    finally:
        relay.cut()
        assert store.stop() == 0, store.log_text()[-3000:]


def test_ops_port_is_off_when_asked(stack):
    store = stack.spawn("store", CREDEX_STORE_OPS_ADDR="off")
    try:
        stack.wait_healthy(store)
        listening = {p for _, p in h.listening_sockets(store.proc.pid)}
        assert listening == {int(store.addr.rsplit(":", 1)[1])}, listening
    finally:
        assert store.stop() == 0, store.log_text()[-3000:]


def test_a_taken_ops_port_stops_start_up(stack):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        inst = stack.spawn("keywrap", CREDEX_KEYWRAP_OPS_ADDR=f"127.0.0.1:{port}")
        assert inst.wait_exit(30) == 3
    assert "CREDEX_KEYWRAP_OPS_ADDR: cannot listen" in inst.log_text()


def test_ops_connections_are_bounded(stack):
    """At most 32 connections at a time: the next one is not served (left in the kernel's
    backlog, or closed) while they are held, and the port answers again once they are gone."""
    ops_port = h.free_ports(1)[0]
    inst = stack.spawn("keywrap", CREDEX_KEYWRAP_OPS_ADDR=f"127.0.0.1:{ops_port}")
    held: list[socket.socket] = []
    try:
        stack.wait_healthy(inst)
        for _ in range(32):
            held.append(socket.create_connection(("127.0.0.1", ops_port), timeout=5))
        time.sleep(0.3)  # let the listener accept them all
        extra = socket.create_connection(("127.0.0.1", ops_port), timeout=5)
        extra.settimeout(2)
        try:
            extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert extra.recv(100) == b"", "a connection beyond the bound was served"
        except (ConnectionResetError, BrokenPipeError, TimeoutError):
            pass
        finally:
            extra.close()
        for c in held:
            c.close()
        held.clear()
        x.wait_until(lambda: requests.get(f"http://127.0.0.1:{ops_port}/healthz", timeout=5).ok, 10,
                     what="the port answers again")
    finally:
        for c in held:
            c.close()
        assert inst.stop() == 0, inst.log_text()[-3000:]


# ---- traceparent -------------------------------------------------------------------------------

def log_lines(stack: h.Stack, service: str) -> list[dict]:
    out = []
    for line in stack.log_path(service).read_text(errors="replace").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


def test_traceparent_reaches_gateway_and_store_lines(stack, api):
    api.grant_retriever(x.AGENT)
    owner = x.uid("trace-owner")
    sid = api.ui(owner).create(b"trace-value", name="trace").secret.secret_id
    trace = uuid.uuid4().hex
    cid = f"trace-{uuid.uuid4().hex[:12]}"
    tp = f"00-{trace}-{uuid.uuid4().hex[:16]}-01"
    caller = api.agent(owner)
    reply = caller.call("Retrieval", "Retrieve", caller.retrieve_request(sid), cid=cid,
                        metadata=[("traceparent", tp)])
    assert reply.value == b"trace-value"

    def lines_of_call():
        found = {s: [ln for ln in log_lines(stack, s) if ln.get("correlation_id") == cid]
                 for s in ("gateway", "store")}
        return found if all(found.values()) else None
    found = x.wait_until(lines_of_call, 10, what="log lines of the call")
    for service, lines in found.items():
        for ln in lines:
            assert ln.get("trace_id") == trace, (service, ln)


def test_traceparent_reaches_keywrap(stack, api):
    """The data key is unwrapped by keywrap on a store without caches: that line has the trace."""
    gateway, store = stack.spawn_pair(CREDEX_DEK_CACHE_MAX_ENTRIES="0", CREDEX_DEK_CACHE_TTL_MS="0",
                                      CREDEX_PAYLOAD_CACHE_MAX_ENTRIES="0",
                                      CREDEX_STORE_METADATA_CACHE_ENTRIES="0")
    try:
        api.grant_retriever(x.AGENT)
        owner = x.uid("trace-kw")
        sid = api.ui(owner, addr=gateway.addr).create(b"kw-value", name="kw").secret.secret_id
        trace = uuid.uuid4().hex
        cid = f"tracekw-{uuid.uuid4().hex[:12]}"
        tp = f"00-{trace}-{uuid.uuid4().hex[:16]}-00"
        caller = api.agent(owner, addr=gateway.addr)
        assert caller.call("Retrieval", "Retrieve", caller.retrieve_request(sid), cid=cid,
                           metadata=[("traceparent", tp)]).value == b"kw-value"

        def keywrap_lines():
            return [ln for ln in log_lines(stack, "keywrap") if ln.get("correlation_id") == cid] or None
        lines = x.wait_until(keywrap_lines, 10, what="keywrap's line of the call")
        assert all(ln.get("trace_id") == trace for ln in lines), lines
        for inst in (gateway, store):
            mine = [json.loads(ln) for ln in inst.log_text().splitlines()
                    if ln.startswith("{") and cid in ln]
            assert mine and all(ln.get("trace_id") == trace for ln in mine), (inst.name, mine)
    finally:
        codes = stack.stop_pair(gateway, store)
        assert codes == {"gateway": 0, "store": 0}, codes


@pytest.mark.parametrize("bad", [
    "01-{t}-{s}-01",                       # another version
    "00-{T}-{s}-01",                       # upper case
    "00-00000000000000000000000000000000-{s}-01",  # zero trace id
    "00-{t}-0000000000000000-01",          # zero parent id
    "00-{t}-{s}-1",                        # short flags
    "00-{t}{s}-01",                        # a missing dash
])
def test_an_invalid_traceparent_starts_a_new_trace(stack, api, bad):
    api.grant_retriever(x.AGENT)
    owner = x.uid("trace-bad")
    t, s = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    tp = bad.format(t=t, T=t.upper(), s=s)
    cid = f"tracebad-{uuid.uuid4().hex[:12]}"
    with pytest.raises(grpc.RpcError):
        api.agent(owner).retrieve("sec_" + "1" * 26, cid=cid, metadata=[("traceparent", tp)])
    lines = x.wait_until(lambda: [ln for ln in log_lines(stack, "gateway")
                                  if ln.get("correlation_id") == cid] or None, 10, what="the call's line")
    for ln in lines:
        got = ln.get("trace_id")
        assert got and len(got) == 32 and got != t and got != "0" * 32, ln


def test_edge_passes_traceparent_on(stack, api):
    """The edge's HTTP requests accept traceparent too: the gateway's line of the call shows it."""
    trace = uuid.uuid4().hex
    cid = f"edge-trace-{uuid.uuid4().hex[:10]}"
    url = f"http://127.0.0.1:{stack.ports['edge-http']}/api/credentials/secrets"
    r = requests.get(url, headers={"traceparent": f"00-{trace}-{uuid.uuid4().hex[:16]}-01",
                                   "x-correlation-id": cid,
                                   "authorization": f"Bearer {api.tokens.user(x.uid('edge-trace'))}"},
                     timeout=10)
    assert r.status_code == 200, r.text
    edge_lines = x.wait_until(lambda: [ln for ln in log_lines(stack, "edge")
                                       if ln.get("correlation_id") == cid] or None, 10, what="edge line")
    assert all(ln.get("trace_id") == trace for ln in edge_lines), edge_lines
    gw = [ln for ln in log_lines(stack, "gateway") if ln.get("correlation_id") == cid]
    assert gw and all(ln.get("trace_id") == trace for ln in gw), gw
