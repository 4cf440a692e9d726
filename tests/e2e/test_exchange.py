"""Issue 13: Retrieval/Exchange and Retrieval/Inject through the gateway, called with the Python
client of agent runtimes (clients/python, installed with pip: credex_pyclient), against the real
stack and the provider test servers.

A gateway of its own runs with CREDENTIAL_EXCHANGE_ENABLED=true (the session stack has it off).
Users connect through the gateway as the UI does (credex_connections), so OpenFGA knows them as
owners. Every refusal is decided before the one call that may refresh or issue a token: the
connection the refusals aim at has a token that always needs a refresh, and the provider sees no
refresh request until an allowed exchange; each refusal is exactly one audit event (the
gateway's, or oauth's for what its pick refuses). Refresh failures reach the client as their
reason (rate_limited passed through, a revoked grant ending the connection). No
provider token ever appears in a service log, an audit event or an edge answer (canary, last).
"""

from __future__ import annotations

import time
import urllib.parse

import grpc
import pytest

import credex_api as x
import credex_edge as e
from credex_connections import World, assert_no_token_anywhere, connect_over_grpc, events_of, oauth_saw
from credex_edge import edge  # noqa: F401 - the module's HTTP client fixture
from credex_pyclient import client_python, runtime  # noqa: F401  (fixtures)

C = grpc.StatusCode
CTX = {"resource_type": "mcp_server", "resource_id": "jira-tools"}
ISSUED = "urn:ietf:params:oauth:token-type:access_token"
SHORT_LIVED_S = 30  # below the exchange's default minimum lifetime (60 s): always refreshed


class XWorld(World):
    """The connections world plus an exchange-enabled gateway and the connections the tests aim at:
    ann's on `key` (a token that needs a refresh at every exchange until one is allowed), bob's on
    the same connector, and ann's on `off_key`, a connector no longer enabled for her team."""

    gw: x.h.Instance
    key: str
    ann_conn: str
    bob_conn: str
    off_key: str

    def refreshes(self, since: int) -> list:
        return [r for r in self.providers.generic.token_requests(since) if r.form.get("grant_type") == "refresh_token"]


@pytest.fixture(scope="module")
def xgw(stack) -> x.h.Instance:
    """A gateway of the stack with CREDENTIAL_EXCHANGE_ENABLED=true."""
    gw = stack.spawn("gateway", CREDENTIAL_EXCHANGE_ENABLED="true")
    stack.wait_healthy(gw)
    yield gw
    assert gw.stop() == 0, x.h.tail(gw.log_path)


@pytest.fixture(scope="module")
def xw(api, providers, xgw) -> XWorld:
    w = XWorld(api, providers)
    w.ann, w.bob = w.alice, w.bob
    api.grant_exchanger(x.AGENT)
    g = providers.generic
    _, w.key, _ = w.connector()
    before = g.access_expires_in
    g.access_expires_in = SHORT_LIVED_S
    try:
        w.ann_conn = connect_over_grpc(w, providers, w.ann, w.key).connection_id
    finally:
        g.access_expires_in = before
    w.bob_conn = connect_over_grpc(w, providers, w.bob, w.key).connection_id
    off_id, w.off_key, _ = w.connector()
    connect_over_grpc(w, providers, w.ann, w.off_key)
    w.api.ui(w.admin).call("Connectors", "DisableConnector", w.api.pb.oauth.DisableConnectorRequest(
        connector_id=off_id, team_ids=[w.team]), timeout=30)
    w.gw = xgw
    yield w
    api.fga_write([(f"user:{w.admin}", "admin", "platform:credex")], delete=True)


def obo(api: x.Api, user: str, service: str = x.AGENT) -> str:
    return api.tokens.on_behalf_of(user, service)


def refused_once(api: x.Api, out: dict, cid: str, event_type: str, reason: str) -> dict:
    """The client raised the reason, and the gateway wrote exactly one DENIED or FAILED event."""
    assert not out["ok"] and out["reason"] == reason and out["correlation_id"] == cid, out
    evs = x.wait_until(lambda: events_of(api, cid), 10, what=f"audit event {event_type}")
    time.sleep(0.2)  # a second event would be a defect: give it the time to show
    evs = events_of(api, cid)
    assert len(evs) == 1, [(ev.get("event_type"), ev.get("outcome"), ev.get("reason")) for ev in evs]
    ev = evs[0]
    assert (ev["event_type"], ev["resource_type"], ev["reason"]) == (event_type, "provider_connection", reason), ev
    assert ev["outcome"] in ("denied", "failed"), ev
    return ev


# ---- refused before any refresh or token issuance ----------------------------------------------------

def test_feature_disabled_on_the_session_gateway(xw, api, runtime):  # noqa: F811 - the fixture
    cid = x.cid()
    out = runtime("exchange", xw.key, [], user_token=obo(api, xw.ann), resource_context=CTX, correlation_id=cid)
    assert (out["type"], out["code"]) == ("FeatureDisabled", "FAILED_PRECONDITION"), out
    refused_once(api, out, cid, "token.exchanged", "feature_disabled")
    assert not oauth_saw(api.stack, cid)


def test_refusals_precede_any_refresh(xw, api, stack, runtime):  # noqa: F811 - the fixture
    """Each refusal, aimed at ann's connection whose token needs a refresh: the reason, one audit
    event by the gateway, no refresh at the provider; those decided before oauth's pick leave no
    trace at oauth at all."""
    mark = xw.providers.generic.mark()
    ann = obo(api, xw.ann)
    other_svc = x.uid("rt")
    api.grant_retriever(other_svc)  # a retriever, but no exchanger grant
    cases = [
        # (what, op, kwargs, reason, reaches oauth's pick)
        ("service acting for itself", "exchange", {"user_token": ""}, "permission_denied", False),
        ("service without exchanger", "exchange", {"peer": other_svc, "user_token": obo(api, xw.ann, other_svc)},
         "permission_denied", False),
        ("another user's connection", "exchange", {"user_token": obo(api, xw.bob), "connection_id": xw.ann_conn},
         "not_found", False),
        ("min_valid_for beyond an hour", "exchange", {"user_token": ann, "min_valid_for_ms_raw": 3600001},
         "invalid_argument", False),
        ("no resource context", "inject",
         {"user_token": ann, "resource_context": {"resource_type": "", "resource_id": ""}}, "invalid_argument", False),
        ("connector not enabled for the user", "exchange", {"user_token": ann, "provider": xw.off_key},
         "permission_denied", True),
        ("scope widening", "exchange", {"user_token": ann, "scopes": ["profile", "admin"]}, "reconsent_required", True),
    ]
    for what, op, kw, reason, picks in cases:
        cid = x.cid()
        kw = dict(kw)
        provider = kw.pop("provider", xw.key)
        scopes = kw.pop("scopes", ["profile"])
        kw.setdefault("resource_context", CTX)
        if "min_valid_for_ms_raw" in kw:  # the client refuses it itself; send it raw
            kw.pop("min_valid_for_ms_raw")
            out = raw_exchange(api, xw, cid, provider, min_valid_for_ms=3600001)
        else:
            out = runtime(op, provider, scopes, addr=xw.gw.addr, correlation_id=cid, **kw)
        refused_once(api, out, cid, "token.injected" if op == "inject" else "token.exchanged", reason)
        if not picks:
            assert not oauth_saw(stack, cid), what
    # browsers: marked by the edge, and the edge's own HTTP route
    cid = x.cid()
    with pytest.raises(grpc.RpcError) as info:
        api.browser(xw.ann, addr=xw.gw.addr).call("Retrieval", "Exchange", exchange_request(api, xw.key), cid=cid)
    assert info.value.code() == C.PERMISSION_DENIED
    refused_once(api, {"ok": False, "reason": "browser_denied", "correlation_id": cid}, cid,
                 "token.exchanged", "browser_denied")
    assert not oauth_saw(stack, cid)
    assert xw.refreshes(mark) == [], "a refused exchange reached the provider"


def test_browser_through_the_edge_is_denied(xw, api, stack, edge):  # noqa: F811 - the fixture
    mark = xw.providers.generic.mark()
    for path, event in (("/api/credentials/exchange", "token.exchanged"),
                        (f"/api/credentials/inject/{xw.key}", "token.injected")):
        cid = x.cid()
        body = {"intendedUse": "mcp_impersonation", "resourceContext": {"resourceType": "mcp_server",
                                                                        "resourceId": "jira-tools"}}
        if "inject" not in path:
            body["providerKey"] = xw.key
        r = edge.post(path, body, user=xw.ann, headers={"X-Correlation-Id": cid})
        e.error_of(r, 403, "browser_denied")
        refused_once(api, {"ok": False, "reason": "browser_denied", "correlation_id": cid}, cid, event,
                     "browser_denied")
        assert not oauth_saw(stack, cid)
    assert xw.refreshes(mark) == []


def exchange_request(api: x.Api, key: str, **kw):
    g, c = api.pb.gateway, api.pb.common
    return g.ExchangeRequest(provider_key=key, intended_use="mcp_impersonation",
                             resource_context=c.ResourceContext(**CTX), **kw)


def raw_exchange(api: x.Api, xw: XWorld, cid: str, key: str, **kw) -> dict:
    """An Exchange the Python client would not send (its own checks), as the client's answer."""
    try:
        api.agent(xw.ann, addr=xw.gw.addr).call("Retrieval", "Exchange", exchange_request(api, key, **kw), cid=cid)
    except grpc.RpcError as err:
        reason = dict(err.trailing_metadata() or ()).get("credex-reason", "")
        return {"ok": False, "reason": reason, "correlation_id": cid, "code": err.code().name}
    return {"ok": True}


# ---- allowed ---------------------------------------------------------------------------------------

def test_exchange_refreshes_once_then_serves_the_token(xw, api, stack, runtime):  # noqa: F811 - the fixture
    """ann's token needs a refresh: the first exchange refreshes exactly once, the next ones are
    served the refreshed token (now valid for an hour). The reply is the access token only."""
    g = xw.providers.generic
    mark = g.mark()
    first = runtime("exchange", xw.key, ["profile"], addr=xw.gw.addr, user_token=obo(api, xw.ann),
                    resource_context=CTX)
    assert first["ok"], first
    assert len(xw.refreshes(mark)) == 1
    token = bytes.fromhex(first["material"])
    assert g.book.check_access(token.decode()) is not None, "not a live token of the provider"
    assert (first["type"], first["token_type"], first["issued_token_type"], first["connection_id"]) == \
        ("ProviderToken", "Bearer", ISSUED, xw.ann_conn), first
    assert first["scopes"] == ["profile"] and first["expires_at_ms"] > time.time() * 1000 + 3000_000
    assert "material=<hidden>" in first["repr"] and token.decode() not in first["repr"] + first["str"]
    for _ in range(2):
        again = runtime("exchange", xw.key, [], addr=xw.gw.addr, user_token=obo(api, xw.ann), resource_context=CTX)
        assert again["ok"] and bytes.fromhex(again["material"]) == token, again
    assert len(xw.refreshes(mark)) == 1, "a valid token was refreshed again"


def test_inject_headers(xw, api, runtime):  # noqa: F811 - the fixture
    out = runtime("inject", "", ["profile"], addr=xw.gw.addr, user_token=obo(api, xw.bob), resource_context=CTX,
                  connection_id=xw.bob_conn)
    assert out["ok"], out
    assert out["type"] == "Injection" and out["connection_id"] == xw.bob_conn
    assert list(out["headers"]) == ["Authorization"]
    scheme, _, tok = out["headers"]["Authorization"].partition(" ")
    assert scheme == "Bearer" and xw.providers.generic.book.check_access(tok) is not None
    assert "headers=<hidden>" in out["repr"] and tok not in out["repr"]


def test_inject_atlassian_api_base_url(api, providers, xgw, runtime):  # noqa: F811 - the fixture
    """The Atlassian connection's injection names the site's API by its cloud id, and the token
    in the header is one the site accepts."""
    from test_oauth_connections_direct import builtin, remove_live

    w = World(api, providers)
    api.grant_exchanger(x.AGENT)
    site = providers.atlassian.sites[0]["id"]
    c = builtin(api, providers.atlassian, "atlassian", scopes=("read:jira-work", "offline_access"))
    try:
        # builtin() enabled it for everyone at oauth directly: the gateway's OpenFGA mirror too
        api.fga_write([("user:*", "enabled_for", f"oauth_connector:{c.connector_id}")])
        conn = connect_over_grpc(w, providers, w.alice, "atlassian")
        out = runtime("inject", "atlassian", ["read:jira-work"], addr=xgw.addr, user_token=obo(api, w.alice),
                      resource_context=CTX | {"provider_resource_id": site})
        assert out["ok"], out
        assert (out["connection_id"], out["provider_resource_id"]) == (conn.connection_id, site), out
        assert out["api_base_url"] == f"https://api.atlassian.com/ex/jira/{site}", out
        tok = out["headers"]["Authorization"].partition(" ")[2]
        status, _, _ = providers.request("https://api.atlassian.com/me", headers={"Authorization": f"Bearer {tok}"})
        assert status == 200
    finally:
        remove_live(api, "atlassian")


def test_refresh_failures_reach_the_client(xw, api, providers, runtime):  # noqa: F811 - the fixture
    """A refresh the provider rate-limits is RateLimited at the client (passed through, not taken
    for an outage), and no new attempt reaches the provider before its Retry-After; a refresh
    token the provider no longer honours ends the connection: FailedPrecondition."""
    from providers.server import Fault

    g = providers.generic
    before = g.access_expires_in
    g.access_expires_in = SHORT_LIVED_S
    try:
        _, key, issuer = xw.connector()
        connect_over_grpc(xw, providers, xw.ann, key)
        _, key2, issuer2 = xw.connector()
        connect_over_grpc(xw, providers, xw.ann, key2)
    finally:
        g.access_expires_in = before
    kw = {"addr": xw.gw.addr, "user_token": obo(api, xw.ann), "resource_context": CTX}

    token_path = urllib.parse.urlsplit(issuer).path + "/token"
    fault = g.add_fault(Fault(kind="status", path_suffix=token_path, status=429,
                              headers=[("Retry-After", "120")], body=b'{"error":"slow_down"}'))
    try:
        mark = g.mark()
        for _ in range(2):
            out = runtime("exchange", key, [], **kw)
            assert (out["ok"], out.get("type"), out.get("reason"), out.get("code")) == \
                (False, "RateLimited", "rate_limited", "RESOURCE_EXHAUSTED"), out
        assert len(xw.refreshes(mark)) == 1, "a refresh was retried before the provider's Retry-After"
    finally:
        g.remove_fault(fault)

    token_path2 = urllib.parse.urlsplit(issuer2).path + "/token"
    fault = g.add_fault(Fault(kind="status", path_suffix=token_path2, status=400,
                              headers=[("Content-Type", "application/json")],
                              body=b'{"error":"invalid_grant","error_description":"revoked"}'))
    try:
        out = runtime("inject", key2, [], **kw)
        assert (out["ok"], out.get("type"), out.get("reason")) == \
            (False, "FailedPrecondition", "failed_precondition"), out
        out = runtime("exchange", key2, [], **kw)  # the connection is over: no provider request
        assert not out["ok"] and out["reason"] in ("failed_precondition", "not_found"), out
    finally:
        g.remove_fault(fault)


def test_no_provider_token_anywhere(xw, api, stack, edge):  # noqa: F811 - the fixture
    """The canary, after every exchange and injection of this module: no token the provider issued
    is in a service log (the exchange gateway's included), an audit event or an edge answer."""
    assert_no_token_anywhere(stack, api, xw, [edge], extra_logs=[xw.gw.log_path])
    client, db = api.mongo()
    with client:
        ok = list(db.credential_audit_events.find({"event_type": {"$in": ["token.exchanged", "token.injected"]},
                                                  "outcome": "success"}))
    assert xw.ann_conn in {ev["resource_id"] for ev in ok}, "no successful exchange was audited"
