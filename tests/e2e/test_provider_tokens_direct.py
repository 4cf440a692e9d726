"""oauth's ProviderTokens service called directly, as the gateway calls it (peer `gateway`, the
user the gateway verified in x-credex-subject-user-id, a service acting for that user), on the
real stack with the provider test servers: picking the connection, the state and scope checks,
pick_only, the valid-token path without any provider call, and the refresh (docs/TOKEN_REFRESH.md):
exactly once across replicas, rotation, fencing of a stalled lease holder, and every failure
class kept on the connection.
"""

from __future__ import annotations

import time
import uuid

import grpc
import pytest

import credex_api as x
from providers.server import User
from test_oauth_connectors_direct import C, call, oauth, store_as_oauth
from test_oauth_connections_direct import (assert_tokens_nowhere, builtin, conn_doc, conns, connect,
                                           token_set)

SERVICE = "agent-runtime"


# ---- helpers ---------------------------------------------------------------------------------------

def new_user() -> str:
    return f"tok-{uuid.uuid4().hex[:10]}"


def svc_md(user: str) -> list[tuple[str, str]]:
    return [("x-credex-subject-user-id", user), ("x-credex-caller-kind", "service_on_behalf_of_user"),
            ("x-credex-service-id", SERVICE)]


def get_token(api: x.Api, user: str, addr: str | None = None, timeout: float = 20, resource: str = "", **kw):
    c = api.pb.common
    caller = c.CallerContext(caller_kind=c.CALLER_KIND_SERVICE_ON_BEHALF_OF_USER, service_id=SERVICE,
                             subject_user_id=user, intended_use="e2e_exchange",
                             resource_context=c.ResourceContext(resource_type="mcp_server", resource_id="e2e-tools",
                                                                provider_resource_id=resource))
    req = api.pb.oauth.GetProviderTokenRequest(caller=caller, **kw)
    return oauth(api, svc_md(user), addr=addr).call("ProviderTokens", "GetProviderToken", req, timeout=timeout)


def refused(fn) -> tuple:
    with pytest.raises(grpc.RpcError) as info:
        fn()
    return info.value.code(), x.reason(info.value), info.value.details()


def refresh_requests(sim, since: int) -> list:
    return [r for r in sim.token_requests(since) if r.form.get("grant_type") == "refresh_token"]


def token_events(api: x.Api, connection_id: str) -> list[dict]:
    client, db = api.mongo()
    try:
        return list(db.credential_audit_events.find(
            {"resource_type": "provider_connection", "resource_id": connection_id,
             "event_type": {"$regex": "^token\\."}}).sort("created_at", 1))
    finally:
        client.close()


def mark(sim) -> int:
    reqs = sim.requests()
    return reqs[-1].seq if reqs else 0


@pytest.fixture(scope="module")
def wx(api, providers):
    c = builtin(api, providers.webex, "webex")
    yield c
    call(api, "DeleteConnector", api.pb.oauth.DeleteConnectorRequest(connector_id=c.connector_id))


# ---- the valid-token path -----------------------------------------------------------------------------

def test_valid_token_is_returned_without_a_provider_call(api, providers, wx):
    sim, user = providers.webex, new_user()
    _, done = connect(api, providers, "webex", user)
    cid = done.connection.connection_id
    ts, version = token_set(api, conn_doc(api, cid)["token_set_secret_id"])
    since = mark(sim)
    got = get_token(api, user, provider_key="webex")
    assert got.material == ts.access_token and got.token_type == "Bearer"
    assert got.connection_id == cid and got.connector_id == wx.connector_id and got.provider_key == "webex"
    assert got.provider_account_id == sim.user.id and not got.refreshed
    assert got.expires_at_ms == ts.expires_at_ms and set(got.scopes) == set(wx.scopes)
    assert got.api_base_url == "https://webexapis.com/v1"
    assert sim.requests(since=since) == []  # no provider call at all
    assert token_set(api, conn_doc(api, cid)["token_set_secret_id"])[1] == version
    ev = token_events(api, cid)
    assert [(e["event_type"], e["outcome"]) for e in ev] == [("token.exchanged", "success")]
    assert ev[0]["attributes"]["refreshed"] == "false" and ev[0]["subject_user_id"] == user
    assert_tokens_nowhere(api, [ts.access_token, ts.refresh_token])


def test_pick_by_connection_id_connector_id_and_provider_key(api, providers, wx):
    user = new_user()
    _, done = connect(api, providers, "webex", user)
    cid = done.connection.connection_id
    for kw in ({"connection_id": cid}, {"connector_id": wx.connector_id}, {"provider_key": "webex"},
               {"provider_key": "webex", "connector_id": wx.connector_id}):
        assert get_token(api, user, **kw).connection_id == cid, kw


def connect_second_account(api: x.Api, providers, user: str) -> str:
    """A second Webex connection of user, to another Webex account: its id."""
    sim = providers.webex
    saved = sim.user
    sim.user = User(id=f"wx-second-{uuid.uuid4().hex[:6]}", login="second", name="Second", email="s@example.test")
    try:
        return connect(api, providers, "webex", user)[1].connection.connection_id
    finally:
        sim.user = saved


def test_several_matches_are_ambiguous_and_narrowed_by_connection_id(api, providers, wx):
    user = new_user()
    first = connect(api, providers, "webex", user)[1].connection.connection_id
    second = connect_second_account(api, providers, user)
    assert first != second
    code, reason, details = refused(lambda: get_token(api, user, provider_key="webex"))
    assert (code, reason) == (C.INVALID_ARGUMENT, "invalid_argument")
    assert "connection_id" in details and "provider_resource_id" in details
    assert get_token(api, user, connection_id=second).connection_id == second
    assert get_token(api, user, connection_id=first).connection_id == first


def test_not_found_and_another_users_connection(api, providers, wx):
    user, other = new_user(), new_user()
    cid = connect(api, providers, "webex", user)[1].connection.connection_id
    assert refused(lambda: get_token(api, other, provider_key="webex"))[:2] == (C.NOT_FOUND, "not_found")
    assert refused(lambda: get_token(api, other, connection_id=cid))[:2] == (C.NOT_FOUND, "not_found")
    assert refused(lambda: get_token(api, user, provider_key="github"))[:2] == (C.NOT_FOUND, "not_found")
    assert refused(lambda: get_token(api, user, connection_id="pcn_NOSUCHCONNECTION000000000"))[:2] == \
        (C.NOT_FOUND, "not_found")
    code, reason, _ = refused(lambda: get_token(api, user))
    assert (code, reason) == (C.INVALID_ARGUMENT, "invalid_argument")
    # A subject in the request that differs from the verified one is refused.
    c = api.pb.common
    req = api.pb.oauth.GetProviderTokenRequest(
        caller=c.CallerContext(subject_user_id=other, intended_use="e2e",
                               resource_context=c.ResourceContext(resource_type="t", resource_id="r")),
        connection_id=cid)
    with pytest.raises(grpc.RpcError) as info:
        oauth(api, svc_md(user)).call("ProviderTokens", "GetProviderToken", req)
    assert info.value.code() == C.INVALID_ARGUMENT


def test_only_the_gateway_may_call(api, providers, wx):
    user = new_user()
    cid = connect(api, providers, "webex", user)[1].connection.connection_id
    req = api.pb.oauth.GetProviderTokenRequest(connection_id=cid)
    for peer in ("edge", "store"):
        with pytest.raises(grpc.RpcError) as info:
            oauth(api, svc_md(user), peer=peer).call("ProviderTokens", "GetProviderToken", req)
        assert info.value.code() == C.PERMISSION_DENIED, peer


def test_required_scope_missing_is_reconsent_required(api, providers, wx):
    user = new_user()
    cid = connect(api, providers, "webex", user)[1].connection.connection_id
    assert get_token(api, user, connection_id=cid, required_scopes=["spark:people_read"]).material
    code, reason, _ = refused(lambda: get_token(api, user, connection_id=cid,
                                                required_scopes=["spark:people_read", "spark:admin"]))
    assert (code, reason) == (C.FAILED_PRECONDITION, "reconsent_required")


def test_pick_only_returns_no_material_and_audits_nothing(api, providers, wx):
    sim, user = providers.webex, new_user()
    cid = connect(api, providers, "webex", user)[1].connection.connection_id
    client, db = api.mongo()
    try:  # an expiring token: pick_only must not refresh it either
        db.provider_connections.update_one({"_id": cid}, {"$set": {"token_expires_at_ms": 1}})
    finally:
        client.close()
    since = mark(sim)
    got = get_token(api, user, provider_key="webex", pick_only=True, min_valid_for_ms=3600000)
    assert got.connection_id == cid and got.material == b"" and got.token_type == ""
    assert got.provider_account_id == sim.user.id and set(got.scopes) == set(wx.scopes)
    assert not got.refreshed and sim.requests(since=since) == []
    assert token_events(api, cid) == []


# ---- one audit record per exchange (store.proto, exchange_event) -------------------------------------

def secret_events(api: x.Api, secret_id: str, event_type: str) -> list[dict]:
    client, db = api.mongo()
    try:
        return list(db.credential_audit_events.find({"resource_type": "secret_ref", "resource_id": secret_id,
                                                     "event_type": event_type}))
    finally:
        client.close()


def test_a_valid_exchange_is_one_audit_record_written_by_store(api, providers, wx):
    """The token set's Resolve records the exchange itself: token.exchanged (store's, naming the
    token set), and no secret.retrieved beside it."""
    user = new_user()
    cid = connect(api, providers, "webex", user)[1].connection.connection_id
    sid = conn_doc(api, cid)["token_set_secret_id"]
    reads = len(secret_events(api, sid, "secret.retrieved"))
    got = get_token(api, user, connection_id=cid)
    assert got.material and not got.refreshed
    assert len(secret_events(api, sid, "secret.retrieved")) == reads
    ev = token_events(api, cid)
    assert [(e["event_type"], e["outcome"]) for e in ev] == [("token.exchanged", "success")]
    a = ev[0]["attributes"]
    assert (a["secret_id"], a["via"], a["refreshed"], a["provider_key"]) == (sid, "oauth", "false", "webex")
    assert ev[0]["subject_user_id"] == user and ev[0]["peer"] == "gateway"
    assert (ev[0]["owner_type"], ev[0]["owner_id"]) == ("user", user)


def exchange_event(api: x.Api, user: str, cid: str, **kw):
    ev = dict(event_type="token.exchanged", outcome=api.pb.common.AUDIT_OUTCOME_SUCCESS,
              resource_type="provider_connection", resource_id=cid, subject_user_id=user,
              attributes={"refreshed": "false"})
    ev.update(kw)
    return api.pb.common.AuditEvent(**ev)


def resolve_as(api: x.Api, peer: str, user: str, sid: str, event, after_ms: int = 0, **kw):
    c = api.pb.common
    caller = c.CallerContext(caller_kind=c.CALLER_KIND_SERVICE, service_id=peer, subject_user_id=user,
                             intended_use="e2e_check",
                             resource_context=c.ResourceContext(resource_type="mcp_server", resource_id="e2e-tools"))
    req = api.pb.store.StoreResolveRequest(caller=caller, secret_id=sid, exchange_event=event,
                                           exchange_expires_after_ms=after_ms,
                                           **({"expected_kind": c.SECRET_KIND_PROVIDER_TOKEN_SET} | kw))
    return store_as_oauth(api, "Resolve", req, peer=peer)


def test_only_oauth_may_name_the_record_of_a_read(api, providers, wx):
    """Any other peer asking store to record a read as an exchange is refused before any material
    (a secret the gateway may otherwise resolve included); from oauth, only token.exchanged about a
    provider connection of the caller's user, with a success outcome, on a provider token set."""
    user = new_user()
    cid = connect(api, providers, "webex", user)[1].connection.connection_id
    sid = conn_doc(api, cid)["token_set_secret_id"]
    api.grant_retriever(x.AGENT)
    owner = x.uid("xperf")
    own = api.ui(owner).create(b"xperf-" + uuid.uuid4().hex.encode(), allowed_uses=[]).secret.secret_id
    code, _, details = refused(lambda: resolve_as(api, "gateway", owner, own, exchange_event(api, owner, cid),
                                                  expected_kind=api.pb.common.SECRET_KIND_API_KEY))
    assert code == C.PERMISSION_DENIED and "oauth" in details
    assert refused(lambda: resolve_as(api, "gateway", user, sid, exchange_event(api, user, cid)))[0] == \
        C.PERMISSION_DENIED
    c = api.pb.common
    for ev, kw in ((exchange_event(api, user, cid, event_type="token.refreshed"), {}),
                   (exchange_event(api, user, cid, resource_type="oauth_connector"), {}),
                   (exchange_event(api, user, cid, outcome=c.AUDIT_OUTCOME_FAILED), {}),
                   (exchange_event(api, "someone-else", cid), {}),
                   (exchange_event(api, user, cid, attributes={f"k{i}": "v" for i in range(9)}), {}),
                   (exchange_event(api, user, cid), {"expected_kind": c.SECRET_KIND_UNSPECIFIED})):
        assert refused(lambda: resolve_as(api, "oauth", user, sid, ev, **kw))[0] == C.INVALID_ARGUMENT, ev
    assert token_events(api, cid) == []
    # A token set that does not last as long as asked is an ordinary read, recorded as one.
    reads = len(secret_events(api, sid, "secret.retrieved"))
    r = resolve_as(api, "oauth", user, sid, exchange_event(api, user, cid), after_ms=2**62)
    assert r.value and not r.exchange_recorded and token_events(api, cid) == []
    assert len(secret_events(api, sid, "secret.retrieved")) == reads + 1
    r = resolve_as(api, "oauth", user, sid, exchange_event(api, user, cid))
    assert r.value and r.exchange_recorded
    assert len(secret_events(api, sid, "secret.retrieved")) == reads + 1
    ev = token_events(api, cid)
    assert [(e["event_type"], e["outcome"], e["attributes"]["secret_id"]) for e in ev] == [
        ("token.exchanged", "success", sid)]


# ---- kept picks (services/oauth/picks.c) ----------------------------------------------------------------

def test_a_kept_pick_follows_the_users_connections(api, providers, wx):
    """A pick by provider key is kept, but a connection written through this oauth changes the
    answer at once (a second connection makes it ambiguous, a disconnect revokes), and one written
    in the database directly (as another replica would) within the cache bound (300 ms; asserted
    with margin): a revoked connection is never served past the bound, a new one is seen."""
    o = api.pb.oauth
    user = new_user()
    first = connect(api, providers, "webex", user)[1].connection.connection_id
    for _ in range(3):
        assert get_token(api, user, provider_key="webex").connection_id == first
    second = connect_second_account(api, providers, user)
    assert refused(lambda: get_token(api, user, provider_key="webex"))[:2] == (C.INVALID_ARGUMENT, "invalid_argument")
    conns(api, "Disconnect", o.DisconnectRequest(connection_id=second), user)
    for _ in range(3):
        assert get_token(api, user, provider_key="webex").connection_id == first

    def answer() -> str:
        try:
            return get_token(api, user, provider_key="webex").connection_id
        except grpc.RpcError as e:
            return x.reason(e)

    client, db = api.mongo()
    try:
        db.provider_connections.update_one({"_id": first}, {"$set": {"state": "revoked"}})
        t0 = time.monotonic()
        x.wait_until(lambda: answer() == "failed_precondition", 2, 0.02, "revoked elsewhere")
        assert time.monotonic() - t0 < 1.5
        db.provider_connections.update_one({"_id": first}, {"$set": {"state": "active"}})
        x.wait_until(lambda: answer() == first, 2, 0.02, "active again")
        doc = db.provider_connections.find_one({"_id": first})
        doc["_id"] = doc["connection_id"] = first[:-1] + ("0" if first[-1] != "0" else "1")
        doc["provider_account_id"] = "elsewhere"
        doc["live_key"] = f"{user}/{doc['connector_id']}/elsewhere"
        db.provider_connections.insert_one(doc)
        try:
            t0 = time.monotonic()
            x.wait_until(lambda: answer() == "invalid_argument", 2, 0.02, "a connection made elsewhere")
            assert time.monotonic() - t0 < 1.5
        finally:
            db.provider_connections.delete_one({"_id": doc["_id"]})
    finally:
        client.close()
    x.wait_until(lambda: answer() == first, 2, 0.02, "the one connection again")
    conns(api, "Disconnect", o.DisconnectRequest(connection_id=first), user)
    assert answer() == "failed_precondition"  # this replica's revoke: at once


def test_state_and_connector_checks(api, providers, wx):
    o = api.pb.oauth
    user = new_user()
    cid = connect(api, providers, "webex", user)[1].connection.connection_id
    client, db = api.mongo()

    def answers(want) -> bool:
        try:
            get_token(api, user, connection_id=cid)
            return want is None
        except grpc.RpcError as e:
            return (e.code(), x.reason(e)) == want

    try:  # a direct database write reaches oauth's document cache within its bound (300 ms)
        db.provider_connections.update_one({"_id": cid}, {"$set": {"state": "reconsent_required"}})
        x.wait_until(lambda: answers((C.FAILED_PRECONDITION, "reconsent_required")), 2, 0.05, "reconsent")
        db.provider_connections.update_one({"_id": cid}, {"$set": {"state": "expired"}})
        x.wait_until(lambda: answers((C.FAILED_PRECONDITION, "failed_precondition")), 2, 0.05, "expired")
        db.provider_connections.update_one({"_id": cid}, {"$set": {"state": "active"}})
        x.wait_until(lambda: answers(None), 2, 0.05, "active")
    finally:
        client.close()
    call(api, "DisableConnector", o.DisableConnectorRequest(connector_id=wx.connector_id))
    try:
        assert refused(lambda: get_token(api, user, connection_id=cid))[:2] == \
            (C.FAILED_PRECONDITION, "failed_precondition")
    finally:
        call(api, "EnableConnector", o.EnableConnectorRequest(connector_id=wx.connector_id, team_ids=["*"]))
    conns(api, "Disconnect", o.DisconnectRequest(connection_id=cid), user)
    code, reason, details = refused(lambda: get_token(api, user, provider_key="webex"))
    assert (code, reason) == (C.FAILED_PRECONDITION, "failed_precondition") and "reconnect" in details


def test_atlassian_picks_by_provider_resource_and_names_the_site_api(api, providers):
    sim = providers.atlassian
    c = builtin(api, sim, "atlassian")
    try:
        user = new_user()
        cid = connect(api, providers, "atlassian", user)[1].connection.connection_id
        site = sim.sites[0]["id"]
        got = get_token(api, user, provider_key="atlassian", resource=site)
        assert got.connection_id == cid and got.provider_resource_id == site
        assert got.api_base_url == f"https://api.atlassian.com/ex/jira/{site}"
        assert refused(lambda: get_token(api, user, provider_key="atlassian", resource="not-a-site"))[:2] == \
            (C.NOT_FOUND, "not_found")
    finally:
        call(api, "DeleteConnector", api.pb.oauth.DeleteConnectorRequest(connector_id=c.connector_id))


# ---- refresh ------------------------------------------------------------------------------------------

@pytest.fixture
def expiring(providers):
    """Connect with access tokens that expire in 30 s (inside the 60 s default), then let the
    provider issue hour-long ones, so that exactly the first exchange needs a refresh."""
    sims = []

    def connect_expiring(api, key: str, user: str, **kw):
        sim = providers.by_provider_key(key)
        sims.append(sim)
        sim.access_expires_in = 30
        try:
            _, done = connect(api, providers, key, user, **kw)
        finally:
            sim.access_expires_in = 3600
        return done.connection.connection_id

    yield connect_expiring
    for sim in sims:
        sim.__dict__.pop("access_expires_in", None)
        sim.clear_faults()
        sim.book.revoke_family_on_reuse = False


def set_token(api: x.Api, cid: str):
    return token_set(api, conn_doc(api, cid)["token_set_secret_id"])


def test_refresh_near_expiry_once_then_the_new_token_is_reused(api, providers, wx, expiring):
    sim, user = providers.webex, new_user()
    cid = expiring(api, "webex", user)
    old, v0 = set_token(api, cid)
    since = mark(sim)
    got = get_token(api, user, connection_id=cid)
    assert got.refreshed and got.material != old.access_token
    assert len(refresh_requests(sim, since)) == 1
    new, v1 = set_token(api, cid)
    assert v1 == v0 + 1 and new.access_token == got.material
    assert new.refresh_token == old.refresh_token  # Webex answers the same refresh token
    assert got.expires_at_ms == new.expires_at_ms and got.expires_at_ms > old.expires_at_ms + 3000 * 1000
    doc = conn_doc(api, cid)
    assert doc["state"] == "active" and doc["last_refresh_error"] == "" and doc["refresh_retry_after_ms"] == 0
    assert doc["token_expires_at_ms"] == new.expires_at_ms and doc["last_refreshed_at_ms"] > 0
    since = mark(sim)
    again = get_token(api, user, connection_id=cid)
    assert again.material == got.material and not again.refreshed and refresh_requests(sim, since) == []
    assert [(e["event_type"], e["outcome"]) for e in token_events(api, cid)] == [
        ("token.refreshed", "success"), ("token.exchanged", "success"), ("token.exchanged", "success")]
    assert_tokens_nowhere(api, [old.access_token, old.refresh_token, new.access_token])
    assert_tokens_nowhere(api, [new.refresh_token], [got, again])  # never a refresh token in a reply


def test_min_valid_for_decides_when_to_refresh(api, providers, wx):
    sim, user = providers.webex, new_user()
    cid = connect(api, providers, "webex", user)[1].connection.connection_id  # 14 days
    since = mark(sim)
    assert not get_token(api, user, connection_id=cid, min_valid_for_ms=3600000).refreshed
    assert refresh_requests(sim, since) == []
    code, reason, _ = refused(lambda: get_token(api, user, connection_id=cid, min_valid_for_ms=3600001))
    assert (code, reason) == (C.INVALID_ARGUMENT, "invalid_argument")


def test_rotation_stores_the_new_refresh_token_and_reuse_revokes(api, providers, expiring):
    sim = providers.gitlab
    c = builtin(api, sim, "gitlab", ("read_user",))
    try:
        user = new_user()
        cid = expiring(api, "gitlab", user)
        old, _ = set_token(api, cid)
        got = get_token(api, user, connection_id=cid)
        new, _ = set_token(api, cid)
        assert got.refreshed and new.access_token == got.material
        assert new.refresh_token and new.refresh_token != old.refresh_token  # stored before use
        assert got.api_base_url == "https://gitlab.com/api/v4"
        # The old refresh token is spent; presented again (a thief's replay), the provider
        # detects the reuse and revokes the grant family, credex's current token included.
        sim.book.revoke_family_on_reuse = True
        status, _, body = providers.request(
            "https://gitlab.com/oauth/token", "POST",
            headers={"content-type": "application/x-www-form-urlencoded"},
            body=(f"grant_type=refresh_token&refresh_token={old.refresh_token.decode()}"
                  f"&client_id={c.client_id}&client_secret={sim.clients[c.client_id].client_secret}").encode())
        assert status == 400 and b"invalid_grant" in body, body
        # An expired access token must now be refreshed: the provider refuses, the connection ends.
        sim.access_expires_in = 3600
        code, reason, details = refused(lambda: get_token(api, user, connection_id=cid, min_valid_for_ms=3600000))
        assert (code, reason) == (C.FAILED_PRECONDITION, "failed_precondition") and "reconnect" in details
        doc = conn_doc(api, cid)
        assert doc["state"] == "revoked" and doc["state_reason"] == "refresh_token_revoked"
        assert doc["token_set_secret_id"] == "" and doc["live_key"] == f"gone/{cid}"
        assert doc["last_refresh_error"] == "revoked"
        failed = [e for e in token_events(api, cid) if e["event_type"] == "token.refresh_failed"]
        assert len(failed) == 1 and failed[0]["reason"] == "failed_precondition"
        assert failed[0]["attributes"]["refresh_error"] == "revoked"
        assert refused(lambda: get_token(api, user, provider_key="gitlab"))[:2] == \
            (C.FAILED_PRECONDITION, "failed_precondition")
    finally:
        call(api, "DeleteConnector", api.pb.oauth.DeleteConnectorRequest(connector_id=c.connector_id))


# ---- failure classes ------------------------------------------------------------------------------------

def token_fault(sim, **kw):
    from providers.server import Fault
    return sim.add_fault(Fault(kind=kw.pop("kind", "status"), path_suffix=sim.token_path, **kw))


def test_provider_outage_is_unavailable_and_the_connection_stays(api, providers, wx, expiring):
    sim, user = providers.webex, new_user()
    cid = expiring(api, "webex", user)
    old, v0 = set_token(api, cid)
    for fault in ({"status": 500, "body": b"oops"}, {"kind": "drop"}):
        f = token_fault(sim, **fault)
        try:
            code, reason, _ = refused(lambda: get_token(api, user, connection_id=cid))
        finally:
            sim.remove_fault(f)
        assert (code, reason) == (C.UNAVAILABLE, "unavailable"), fault
        doc = conn_doc(api, cid)
        assert doc["state"] == "active" and doc["last_refresh_error"] == "unavailable"
        assert set_token(api, cid) == (old, v0)  # nothing written
    got = get_token(api, user, connection_id=cid)  # the provider is back
    assert got.refreshed and conn_doc(api, cid)["last_refresh_error"] == ""
    failed = [e for e in token_events(api, cid) if e["event_type"] == "token.refresh_failed"]
    assert [e["reason"] for e in failed] == ["unavailable", "unavailable"]
    assert all(e["attributes"]["refresh_error"] == "unavailable" for e in failed)


@pytest.mark.parametrize("status,headers,expect_s", [
    (429, [("Retry-After", "120")], 120),
    (503, [("Retry-After", "90")], 90),
    (429, [], 60),                            # no Retry-After: the default
    (429, [("Retry-After", "999999")], 3600),  # capped at an hour
])
def test_rate_limited_keeps_the_retry_after(api, providers, wx, expiring, status, headers, expect_s):
    import time
    sim, user = providers.webex, new_user()
    cid = expiring(api, "webex", user)
    f = token_fault(sim, status=status, headers=headers, body=b'{"error":"slow_down"}')
    try:
        before = time.time() * 1000
        code, reason, details = refused(lambda: get_token(api, user, connection_id=cid))
        after = time.time() * 1000
    finally:
        sim.remove_fault(f)
    assert (code, reason) == (C.RESOURCE_EXHAUSTED, "rate_limited")
    doc = conn_doc(api, cid)
    assert doc["state"] == "active" and doc["last_refresh_error"] == "rate_limited"
    assert before + expect_s * 1000 - 1000 <= doc["refresh_retry_after_ms"] <= after + expect_s * 1000 + 1000
    assert f"{expect_s} s" in details or f"{expect_s - 1} s" in details
    # Until then, no refresh is attempted: the provider (healthy again) sees no request.
    since = mark(sim)
    code, reason, _ = refused(lambda: get_token(api, user, connection_id=cid))
    assert (code, reason) == (C.RESOURCE_EXHAUSTED, "rate_limited") and refresh_requests(sim, since) == []


def test_invalid_scope_needs_reconsent(api, providers, wx, expiring):
    sim, user = providers.webex, new_user()
    cid = expiring(api, "webex", user)
    f = token_fault(sim, status=400, headers=[("Content-Type", "application/json")],
                    body=b'{"error":"invalid_scope","error_description":"scope canary text"}')
    try:
        code, reason, details = refused(lambda: get_token(api, user, connection_id=cid))
    finally:
        sim.remove_fault(f)
    assert (code, reason) == (C.FAILED_PRECONDITION, "reconsent_required") and "canary" not in details
    doc = conn_doc(api, cid)
    assert (doc["state"], doc["state_reason"], doc["last_refresh_error"]) == \
        ("reconsent_required", "scope_revoked", "reconsent_required")
    assert refused(lambda: get_token(api, user, connection_id=cid))[:2] == \
        (C.FAILED_PRECONDITION, "reconsent_required")


def test_expired_token_without_refresh_token_expires_the_connection(api, providers, wx):
    import time
    sim, user = providers.webex, new_user()
    sim.issues_refresh, sim.access_expires_in = False, 1
    try:
        cid = connect(api, providers, "webex", user)[1].connection.connection_id
    finally:
        del sim.issues_refresh, sim.access_expires_in
    assert not set_token(api, cid)[0].refresh_token
    time.sleep(1.2)
    since = mark(sim)
    code, reason, details = refused(lambda: get_token(api, user, connection_id=cid))
    assert (code, reason) == (C.FAILED_PRECONDITION, "failed_precondition") and "reconnect" in details
    assert conn_doc(api, cid)["state"] == "expired" and sim.requests(since=since) == []


def test_a_refresh_that_answers_no_refresh_token_keeps_the_old_one(api, providers, wx, expiring):
    sim, user = providers.webex, new_user()
    cid = expiring(api, "webex", user)
    old, _ = set_token(api, cid)
    orig = sim._token_payload

    def without_refresh(grant, refresh):
        payload = orig(grant, refresh)
        payload.pop("refresh_token", None)
        return payload

    sim._token_payload = without_refresh
    try:
        got = get_token(api, user, connection_id=cid)
    finally:
        del sim._token_payload
    new, _ = set_token(api, cid)
    assert got.refreshed and new.access_token == got.material and new.refresh_token == old.refresh_token


def test_store_down_fails_closed_without_a_provider_call(api, providers, wx, stack, expiring):
    """oauth reaches store only through CREDEX_STORE_ADDR: a replica pointed at a dead store
    answers unavailable and changes nothing."""
    from credex_harness import free_ports
    sim, user = providers.webex, new_user()
    cid = expiring(api, "webex", user)
    o = stack.spawn("oauth", CREDEX_STORE_ADDR=f"127.0.0.1:{free_ports(1)[0]}")
    try:
        stack.wait_healthy(o)
        since = mark(sim)
        code, reason, _ = refused(lambda: get_token(api, user, addr=o.addr, connection_id=cid))
        assert (code, reason) == (C.UNAVAILABLE, "unavailable") and sim.requests(since=since) == []
        assert conn_doc(api, cid)["last_refresh_error"] == ""
    finally:
        o.stop()


# ---- exactly once across replicas, and the fence --------------------------------------------------------

def spawn_oauth(stack, n: int, **env):
    extra = [stack.spawn("oauth", **env) for _ in range(n)]
    try:
        for inst in extra:
            stack.wait_healthy(inst)
    except BaseException:
        for inst in extra:
            inst.stop()
        raise
    return extra


def test_three_replicas_fifty_callers_one_refresh(api, providers, wx, stack, expiring):
    import threading
    sim, user = providers.webex, new_user()
    cid = expiring(api, "webex", user)
    old, v0 = set_token(api, cid)
    extra = spawn_oauth(stack, 2)
    try:
        addrs = [stack.addrs["oauth"]] + [inst.addr for inst in extra]
        since = mark(sim)
        start = threading.Barrier(50)
        results: list = [None] * 50

        def one(i: int) -> None:
            start.wait()
            try:
                results[i] = get_token(api, user, addr=addrs[i % 3], connection_id=cid, timeout=60)
            except grpc.RpcError as e:
                results[i] = e

        threads = [threading.Thread(target=one, args=(i,)) for i in range(50)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(90)
        errors = [r for r in results if not hasattr(r, "material")]
        assert not errors, [x.describe(e) if isinstance(e, grpc.RpcError) else e for e in errors]
        assert len(refresh_requests(sim, since)) == 1
        new, v1 = set_token(api, cid)
        assert v1 == v0 + 1 and new.access_token != old.access_token
        assert {r.material for r in results} == {new.access_token}
        assert all(r.expires_at_ms == new.expires_at_ms for r in results)
        assert [e["event_type"] for e in token_events(api, cid)].count("token.refreshed") == 1
        tokens = [old.access_token, old.refresh_token, new.access_token]
        for inst in extra:
            text = inst.log_text().encode()
            assert all(f not in text for t in tokens for f in x.encodings(t)), "a provider token in a log"
    finally:
        for inst in extra:
            inst.stop()


def test_a_stalled_lease_holder_cannot_overwrite_a_newer_token_set(api, providers, wx, stack, expiring):
    """Replica A takes the lease, gets new tokens from the (non-rotating) provider, and is
    frozen before it writes them; its lease ends; replica B refreshes and writes; A resumes and
    its write, naming the version it read, is refused: the newer token set stays."""
    import signal
    import threading
    import time
    sim, user = providers.webex, new_user()
    cid = expiring(api, "webex", user)
    old, v0 = set_token(api, cid)
    lease = {"CREDEX_OAUTH_REFRESH_LEASE_MS": "2000", "CREDEX_OAUTH_HTTP_TIMEOUT_MS": "1500"}
    # The pause only has to outlast the test's reaction to its log line, even on a busy machine.
    a = spawn_oauth(stack, 1, CREDEX_OAUTH_TEST_REFRESH_PAUSE_MS="6000", **lease)[0]
    b = spawn_oauth(stack, 1, **lease)[0]
    stopped = False
    try:
        since = mark(sim)
        out: dict = {}

        def via_a() -> None:
            try:
                out["a"] = get_token(api, user, addr=a.addr, connection_id=cid, timeout=60)
            except grpc.RpcError as e:
                out["a"] = e

        t = threading.Thread(target=via_a)
        t.start()
        x.wait_until(lambda: "oauth.test_refresh_pause" in a.log_text(), 20, 0.02, "A holds the lease")
        a.send_signal(signal.SIGSTOP)
        stopped = True
        a_tokens = refresh_requests(sim, since)
        assert len(a_tokens) == 1
        time.sleep(2.5)  # A's lease (2 s) ends while it is frozen
        got_b = get_token(api, user, addr=b.addr, connection_id=cid, timeout=30)
        assert got_b.refreshed and len(refresh_requests(sim, since)) == 2
        new, v1 = set_token(api, cid)
        assert v1 == v0 + 1 and new.access_token == got_b.material
        a.send_signal(signal.SIGCONT)
        stopped = False
        t.join(60)
        got_a = out["a"]
        assert not isinstance(got_a, grpc.RpcError), x.describe(got_a)
        # A answers the newer token set: its own tokens never became current.
        assert got_a.material == got_b.material
        assert set_token(api, cid) == (new, v1)
        assert get_token(api, user, connection_id=cid).material == got_b.material
        assert "oauth.refresh_fenced" in a.log_text()
        fenced = [e for e in token_events(api, cid) if e["event_type"] == "token.refresh_failed"]
        assert len(fenced) == 1 and fenced[0]["reason"] == "conflict"
        assert fenced[0]["attributes"]["refresh_error"] == "fenced"
        assert [e["event_type"] for e in token_events(api, cid)].count("token.refreshed") == 1
        tokens = [old.access_token, old.refresh_token, new.access_token]
        for inst in (a, b):
            text = inst.log_text().encode()
            assert all(f not in text for t in tokens for f in x.encodings(t)), "a provider token in a log"
        assert_tokens_nowhere(api, tokens)
    finally:
        if stopped:
            a.send_signal(signal.SIGCONT)
        a.stop()
        b.stop()


def test_github_bad_refresh_token_in_a_200_revokes(api, providers):
    """GitHub answers a dead refresh token with HTTP 200 and error bad_refresh_token."""
    sim = providers.github
    c = builtin(api, sim, "github")
    sim.expiring = True
    orig = sim._token_payload
    sim._token_payload = lambda grant, refresh: {**orig(grant, refresh), "expires_in": 30}
    try:
        user = new_user()
        cid = connect(api, providers, "github", user)[1].connection.connection_id
        first, _ = set_token(api, cid)
        got = get_token(api, user, connection_id=cid)  # a GitHub App user token: refreshed
        assert got.refreshed and got.api_base_url == "https://api.github.com"
        current, _ = set_token(api, cid)
        assert current.refresh_token != first.refresh_token
        sim.book.revoke(current.refresh_token.decode())
        code, reason, details = refused(lambda: get_token(api, user, connection_id=cid))
        assert (code, reason) == (C.FAILED_PRECONDITION, "failed_precondition") and "reconnect" in details
        doc = conn_doc(api, cid)
        assert (doc["state"], doc["state_reason"], doc["token_set_secret_id"]) == \
            ("revoked", "refresh_token_revoked", "")
    finally:
        sim.expiring = False
        del sim._token_payload
        call(api, "DeleteConnector", api.pb.oauth.DeleteConnectorRequest(connector_id=c.connector_id))
