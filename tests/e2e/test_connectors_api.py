"""Issue 11: the OAuth connector admin API as the public sees it, through the gateway (gRPC) and
through the edge (HTTP), against the real oauth, store, OpenFGA and FerretDB of the session
stack.

- Platform admins (admin on platform:credex) list the built-in providers and create, get,
  list, update, enable, disable, test and delete connectors; browsers through the edge may do
  so too, since every reply is metadata.
- Anyone else gets permission_denied on the admin methods, and a service acting for itself is
  refused; every refusal is one audit event, every admin action leaves one too (oauth writes
  the successes).
- Users see only ACTIVE connectors enabled for one of their teams or for "*" (T122); a
  connector they may not see is the not_found of one that does not exist, and a disabled one
  disappears from their lists.
- A client secret (a canary) never appears in any reply, log line or audit event.
"""

from __future__ import annotations

import json
import uuid

import grpc
import pytest

import credex_api as x
import credex_edge as e
from credex_edge import edge  # noqa: F401 - the module's HTTP client fixture

C = grpc.StatusCode
CONN = "/api/credentials/oauth-connectors"
ADMIN_EVENTS = {"CreateConnector": "connector.created", "UpdateConnector": "connector.updated",
                "DeleteConnector": "connector.deleted", "EnableConnector": "connector.enabled",
                "DisableConnector": "connector.disabled", "TestConnector": "connector.tested"}


# ---- fixtures and helpers ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def oauth_connectors(stack):
    """oauth answers its Connectors directly (as the gateway): a probe that fails loudly if the
    service regressed to UNIMPLEMENTED, before the tests that build on it run."""
    stack.unary("oauth", "/credex.v1.Connectors/ListConnectors", b"", identity="gateway",
                metadata=[("x-credex-subject-user-id", "probe"), ("x-credex-caller-kind", "browser"),
                          ("x-credex-platform-admin", "true")])


class World:
    """One admin, two users in a team, a stranger; every reply kept for the leak checks."""

    def __init__(self, api: x.Api):
        self.api = api
        self.admin, self.bob, self.carol = x.uid("cadm"), x.uid("bob"), x.uid("carol")
        self.team, self.other_team = x.uid("team"), x.uid("team")
        api.fga_write([(f"user:{self.admin}", "admin", "platform:credex")])
        api.add_team_member(self.team, self.bob)
        self.replies: list[bytes] = []
        self.canaries: list[bytes] = []

    def canary(self, tag: str) -> bytes:
        c = e.canary(tag)
        self.canaries.append(c)
        return c

    def call(self, caller: x.Caller, method: str, request, cid: str | None = None):
        # TestConnector reaches out to the provider: up to CREDEX_OAUTH_HTTP_TIMEOUT_MS per check
        reply = caller.call("Connectors", method, request, cid=cid or x.cid(), timeout=30)
        self.replies.append(reply.SerializeToString() + str(reply).encode())
        return reply

    def refused(self, caller: x.Caller, method: str, request, cid: str | None = None) -> grpc.RpcError:
        with pytest.raises(grpc.RpcError) as info:
            caller.call("Connectors", method, request, cid=cid or x.cid(), timeout=30)
        err = info.value
        self.replies.append((err.details() or "").encode())
        return err

    def create(self, caller: x.Caller | None = None, *, cid: str | None = None, secret: bytes | None = None):
        o = self.api.pb.oauth
        key = f"e2e-{uuid.uuid4().hex[:12]}"
        req = o.CreateConnectorRequest(connector=connector_input(self.api, key),
                                       client_secret=secret or self.canary("create"))
        return self.call(caller or self.api.ui(self.admin), "CreateConnector", req, cid)

    def enable(self, cid_: str, teams: list[str], caller: x.Caller | None = None, cid: str | None = None):
        req = self.api.pb.oauth.EnableConnectorRequest(connector_id=cid_, team_ids=teams)
        return self.call(caller or self.api.ui(self.admin), "EnableConnector", req, cid)

    def disable(self, cid_: str, teams: list[str], caller: x.Caller | None = None, cid: str | None = None):
        req = self.api.pb.oauth.DisableConnectorRequest(connector_id=cid_, team_ids=teams)
        return self.call(caller or self.api.ui(self.admin), "DisableConnector", req, cid)

    def listed(self, user: str, include_disabled: bool = False) -> set[str]:
        req = self.api.pb.oauth.ListConnectorsRequest(include_disabled=include_disabled)
        return {c.connector_id for c in self.call(self.api.ui(user), "ListConnectors", req).connectors}


def connector_input(api: x.Api, key: str):
    """A custom OAuth 2.0 connector with explicit public endpoints (unique provider key, so
    that parallel tests never meet the one-live-connector rule)."""
    o = api.pb.oauth
    return o.Connector(
        provider_key=key, type=o.CONNECTOR_TYPE_CUSTOM_OAUTH2, display_name=f"E2E {key}",
        client_id=f"client-{key}", scopes=["read", "profile"],
        redirect_uri=f"https://credex.example.com/api/credentials/oauth/{key}/callback",
        endpoints=o.ConnectorEndpoints(authorization_url="https://idp.e2e.invalid/oauth/authorize",
                                       token_url="https://idp.e2e.invalid/oauth/token",
                                       userinfo_url="https://idp.e2e.invalid/userinfo"),
        account_mapping=o.AccountMapping(account_id_field="sub", account_name_field="name"))


@pytest.fixture(scope="module")
def world(api) -> World:
    w = World(api)
    yield w
    api.fga_write([(f"user:{w.admin}", "admin", "platform:credex")], delete=True)


def events_of(api: x.Api, correlation_id: str) -> list[dict]:
    client, db = api.mongo()
    with client:
        return list(db.credential_audit_events.find({"correlation_id": correlation_id}))


def one_event(api: x.Api, cid: str, event_type: str, outcome: str) -> dict:
    """The single connector audit event of a call, checked. A refusal is the call's only event;
    an action may also leave store's events about the client secret it wrote."""
    x.wait_until(lambda: [ev for ev in events_of(api, cid) if ev.get("resource_type") == "oauth_connector"],
                 10, what=f"audit event {event_type}")
    every = events_of(api, cid)
    evs = [ev for ev in every if ev.get("resource_type") == "oauth_connector"]
    assert len(evs) == 1, [(ev.get("event_type"), ev.get("outcome")) for ev in every]
    if outcome != "success":
        assert len(every) == 1, [(ev.get("event_type"), ev.get("outcome")) for ev in every]
    ev = evs[0]
    assert (ev["event_type"], ev["outcome"], ev["resource_type"]) == (event_type, outcome, "oauth_connector"), ev
    return ev


def enabled_tuples(api: x.Api, connector_id: str) -> set[str]:
    return {u for u, rel, _ in api.fga_read(f"oauth_connector:{connector_id}") if rel == "enabled_for"}


def assert_no_leak(stack, api: x.Api, blobs: list[bytes], canaries: list[bytes]) -> None:
    """No canary, in any encoding, in any reply kept, any service log, or any audit event."""
    client, db = api.mongo()
    with client:
        audit = repr(list(db.credential_audit_events.find({"resource_type": "oauth_connector"}))).encode()
        docs = repr(list(db.oauth_connectors.find({}))).encode()
    logs = b"".join(stack.log_path(name).read_bytes() for name in x.h.SERVICES
                    if stack.log_path(name).exists())
    for value in canaries:
        for form in x.encodings(value):
            for where, blob in (("an audit event", audit), ("oauth_connectors", docs), ("a log", logs)):
                assert form not in blob, f"a client secret is in {where}"
            for blob in blobs:
                assert form not in blob, "a reply holds a client secret"


# ---- admins -------------------------------------------------------------------------------------

def test_admin_manages_connectors_over_grpc(oauth_connectors, world, api, stack):
    o = api.pb.oauth
    admin = api.ui(world.admin)
    # the built-in provider templates
    builtin = world.call(admin, "ListBuiltinProviders", o.ListBuiltinProvidersRequest())
    assert {"github", "atlassian", "webex", "pagerduty", "gitlab"} <= {p.provider_key for p in builtin.providers}

    c = x.cid()
    created = world.create(cid=c)
    one_event(api, c, "connector.created", "success")
    cid_ = created.connector_id
    assert created.status == o.CONNECTOR_STATUS_DISABLED
    assert created.client_secret_masked and created.client_secret_id
    assert enabled_tuples(api, cid_) == set()

    got = world.call(admin, "GetConnector", o.GetConnectorRequest(connector_id=cid_))
    assert got.connector_id == cid_ and got.client_secret_masked
    assert cid_ in {k.connector_id for k in world.call(admin, "ListConnectors", o.ListConnectorsRequest(
        include_disabled=True)).connectors}
    assert cid_ not in {k.connector_id for k in world.call(admin, "ListConnectors",
                                                           o.ListConnectorsRequest()).connectors}

    # update: a new display name and a rotated client secret
    c = x.cid()
    upd = world.call(admin, "UpdateConnector", o.UpdateConnectorRequest(
        connector_id=cid_, connector=o.Connector(display_name="Renamed"),
        update_mask=["display_name", "client_secret"], client_secret=world.canary("rotated")), c)
    one_event(api, c, "connector.updated", "success")
    assert upd.connector.display_name == "Renamed" and upd.connector.client_secret_masked

    # enable for a team and everyone: one tuple each; disable for the team: its tuple goes
    c = x.cid()
    on = world.enable(cid_, [world.team, "*"], cid=c)
    one_event(api, c, "connector.enabled", "success")
    assert on.status == o.CONNECTOR_STATUS_ACTIVE
    assert enabled_tuples(api, cid_) == {f"team:{world.team}#member", "user:*"}
    world.enable(cid_, [world.team, "*"])  # a replay changes nothing
    assert enabled_tuples(api, cid_) == {f"team:{world.team}#member", "user:*"}
    c = x.cid()
    world.disable(cid_, [world.team], cid=c)
    one_event(api, c, "connector.disabled", "success")
    assert enabled_tuples(api, cid_) == {"user:*"}

    # test: a report of checks, no secret sent anywhere in it
    c = x.cid()
    report = world.call(admin, "TestConnector", o.TestConnectorRequest(connector_id=cid_), c)
    one_event(api, c, "connector.tested", "success")
    assert report.checks and report.tested_at_ms > 0

    # delete: enabled for nobody afterwards
    c = x.cid()
    gone = world.call(admin, "DeleteConnector", o.DeleteConnectorRequest(connector_id=cid_), c)
    one_event(api, c, "connector.deleted", "success")
    assert gone.status == o.CONNECTOR_STATUS_DELETED
    assert enabled_tuples(api, cid_) == set()
    assert cid_ not in {k.connector_id for k in world.call(admin, "ListConnectors", o.ListConnectorsRequest(
        include_disabled=True)).connectors}
    assert_no_leak(stack, api, world.replies, world.canaries)


def test_browser_admin_through_the_gateway(oauth_connectors, world, api):
    """Browsers (peer edge, marked browser) may manage connectors: the replies are metadata."""
    browser = api.browser(world.admin)
    created = world.create(browser)
    assert created.client_secret_masked
    world.enable(created.connector_id, ["*"], caller=browser)
    world.call(browser, "DeleteConnector", api.pb.oauth.DeleteConnectorRequest(connector_id=created.connector_id))
    assert enabled_tuples(api, created.connector_id) == set()


# ---- everyone else ------------------------------------------------------------------------------

def admin_requests(api: x.Api, connector_id: str) -> list[tuple[str, object]]:
    o = api.pb.oauth
    return [
        ("ListBuiltinProviders", o.ListBuiltinProvidersRequest()),
        ("CreateConnector", o.CreateConnectorRequest(connector=connector_input(api, f"e2e-{uuid.uuid4().hex[:12]}"),
                                                     client_secret=b"never-stored")),
        ("UpdateConnector", o.UpdateConnectorRequest(connector_id=connector_id, connector=o.Connector(
            display_name="x"), update_mask=["display_name"])),
        ("DeleteConnector", o.DeleteConnectorRequest(connector_id=connector_id)),
        ("EnableConnector", o.EnableConnectorRequest(connector_id=connector_id, team_ids=["*"])),
        ("DisableConnector", o.DisableConnectorRequest(connector_id=connector_id)),
        ("TestConnector", o.TestConnectorRequest(connector_id=connector_id)),
    ]


@pytest.mark.parametrize("who", ["user", "browser", "service-for-itself", "service-for-user"])
def test_non_admins_are_refused_and_audited(world, api, who):
    """Refused by the gateway before oauth hears of it (services/gateway/connectors.c), each
    refusal one DENIED event naming the connector."""
    target = "con_" + uuid.uuid4().hex
    api.fga_write([(f"team:{world.team}#member", "enabled_for", f"oauth_connector:{target}")])
    callers = {"user": api.ui(world.bob), "browser": api.browser(world.bob),
               "service-for-itself": api.agent(None), "service-for-user": api.agent(world.bob)}
    caller = callers[who]
    for method, req in admin_requests(api, target):
        c = x.cid()
        err = world.refused(caller, method, req, c)
        assert (err.code(), x.reason(err)) == (C.PERMISSION_DENIED, "permission_denied"), (method, x.describe(err))
        ev = one_event(api, c, ADMIN_EVENTS.get(method, "connector.listed"), "denied")
        assert ev["reason"] == "permission_denied", ev
        assert ev.get("resource_id", "") == ("" if method in ("CreateConnector", "ListBuiltinProviders")
                                             else target), ev
    # nothing the refused calls asked for happened
    assert enabled_tuples(api, target) == {f"team:{world.team}#member"}


def test_invisible_connector_is_not_found(world, api):
    """A connector not enabled for the user is the not_found of one that does not exist,
    decided in OpenFGA before oauth is asked (so its ids cannot be probed)."""
    o = api.pb.oauth
    theirs = "con_" + uuid.uuid4().hex
    api.fga_write([(f"team:{world.other_team}#member", "enabled_for", f"oauth_connector:{theirs}")])
    c = x.cid()
    hidden = world.refused(api.ui(world.bob), "GetConnector", o.GetConnectorRequest(connector_id=theirs), c)
    assert (hidden.code(), x.reason(hidden)) == (C.NOT_FOUND, "not_found"), x.describe(hidden)
    ev = one_event(api, c, "connector.read", "denied")
    assert ev.get("resource_id") == theirs, ev
    missing = world.refused(api.ui(world.bob), "GetConnector",
                            o.GetConnectorRequest(connector_id="con_" + uuid.uuid4().hex))
    assert (missing.code(), missing.details()) == (hidden.code(), hidden.details())


def test_contract_of_team_ids(world, api):
    target = "con_" + uuid.uuid4().hex
    for bad in (["a*b"], ["two words"], [""]):
        c = x.cid()
        err = world.refused(api.ui(world.admin), "EnableConnector", api.pb.oauth.EnableConnectorRequest(
            connector_id=target, team_ids=bad), c)
        assert (err.code(), x.reason(err)) == (C.INVALID_ARGUMENT, "invalid_argument"), x.describe(err)
        if bad[0]:
            assert bad[0] not in err.details()
        one_event(api, c, "connector.enabled", "denied")
    assert enabled_tuples(api, target) == set()


def test_edge_refusals(world, api, edge):  # noqa: F811 - the fixture
    bob, target = world.bob, "con_" + uuid.uuid4().hex
    body = {"connector": {"providerKey": "e2e-refused", "type": "CONNECTOR_TYPE_CUSTOM_OAUTH2"},
            "clientSecret": e.b64(b"never-stored")}
    e.error_of(edge.post(CONN, body, user=bob), 403, "permission_denied")
    e.error_of(edge.get(f"{CONN}/builtin-providers", user=bob), 403, "permission_denied")
    e.error_of(edge.post(f"{CONN}/{target}/enable", {"teamIds": ["*"]}, user=bob), 403, "permission_denied")
    e.error_of(edge.post(f"{CONN}/{target}/disable", {}, user=bob), 403, "permission_denied")
    e.error_of(edge.post(f"{CONN}/{target}/test", {}, user=bob), 403, "permission_denied")
    e.error_of(edge.call("DELETE", f"{CONN}/{target}", user=bob), 403, "permission_denied")
    e.error_of(edge.call("PATCH", f"{CONN}/{target}", user=bob, json_body={"updateMask": ["display_name"]}),
               403, "permission_denied")
    e.error_of(edge.get(f"{CONN}/{target}", user=bob), 404, "not_found")
    assert enabled_tuples(api, target) == set()


def test_users_see_active_connectors_enabled_for_them(oauth_connectors, world, api):
    o = api.pb.oauth
    mine = world.create().connector_id        # enabled for bob's team
    everyone = world.create().connector_id    # enabled for "*"
    theirs = world.create().connector_id      # enabled for another team only
    dormant = world.create().connector_id     # never enabled
    world.enable(mine, [world.team])
    world.enable(everyone, ["*"])
    world.enable(theirs, [world.other_team])
    ours = {mine, everyone, theirs, dormant}

    assert world.listed(world.bob) & ours == {mine, everyone}
    assert world.listed(world.bob, include_disabled=True) & ours == {mine, everyone}  # admins only
    assert world.listed(world.carol) & ours == {everyone}
    assert world.listed(world.admin, include_disabled=True) & ours == ours

    # invisible is not_found, exactly like a connector that does not exist
    bob = api.ui(world.bob)
    hidden = world.refused(bob, "GetConnector", o.GetConnectorRequest(connector_id=theirs))
    missing = world.refused(bob, "GetConnector", o.GetConnectorRequest(connector_id="con_" + uuid.uuid4().hex))
    assert (hidden.code(), x.reason(hidden)) == (C.NOT_FOUND, "not_found")
    assert (missing.code(), missing.details()) == (hidden.code(), hidden.details())
    assert world.call(bob, "GetConnector", o.GetConnectorRequest(connector_id=mine)).connector_id == mine
    assert world.call(api.ui(world.carol), "GetConnector",
                      o.GetConnectorRequest(connector_id=everyone)).connector_id == everyone

    # disabled for everyone: gone from the users' lists, and not_found for them
    world.disable(mine, [])
    assert enabled_tuples(api, mine) == set()
    assert mine not in world.listed(world.bob)
    err = world.refused(bob, "GetConnector", o.GetConnectorRequest(connector_id=mine))
    assert (err.code(), err.details()) == (hidden.code(), hidden.details())
    # enabled again: oauth kept the teams, so bob sees it again
    world.enable(mine, [])
    assert mine in world.listed(world.bob)
    # disabled for "*" only: carol loses it, bob (no team grant on it) too
    world.disable(everyone, ["*"])
    assert everyone not in world.listed(world.carol) | world.listed(world.bob)


# ---- the edge -----------------------------------------------------------------------------------

def test_edge_routes(oauth_connectors, world, api, stack, edge):  # noqa: F811 - the fixture
    admin, bob = world.admin, world.bob
    hdr = lambda: {"X-Correlation-Id": x.cid()}  # noqa: E731

    r = edge.get(f"{CONN}/builtin-providers", user=admin)
    assert r.status_code == 200, r.text
    assert "github" in {p["providerKey"] for p in r.json()["providers"]}

    key = f"e2e-{uuid.uuid4().hex[:12]}"
    secret = world.canary("edge")
    from google.protobuf import json_format
    body = {"connector": json_format.MessageToDict(connector_input(api, key)), "clientSecret": e.b64(secret)}
    h = hdr()
    r = edge.call("POST", CONN, user=admin, json_body=body, headers=h)
    assert r.status_code == 200, r.text
    made = r.json()
    one_event(api, h["X-Correlation-Id"], "connector.created", "success")
    cid_ = made["connectorId"]
    assert made["clientSecretMasked"] is True and "clientSecret" not in made

    assert edge.get(f"{CONN}/{cid_}", user=admin).json()["connectorId"] == cid_
    r = edge.call("PATCH", f"{CONN}/{cid_}", user=admin, json_body={
        "connector": {"displayName": "Edge renamed"}, "updateMask": ["display_name", "client_secret"],
        "clientSecret": e.b64(world.canary("edge-rotated"))})
    assert r.status_code == 200 and r.json()["connector"]["displayName"] == "Edge renamed", r.text
    r = edge.post(f"{CONN}/{cid_}/enable", {"teamIds": [world.team]}, user=admin)
    assert r.status_code == 200 and r.json()["status"] == "CONNECTOR_STATUS_ACTIVE", r.text

    # a user: the connector is listed and readable; admin routes are 403
    r = edge.get(CONN, user=bob)
    assert r.status_code == 200 and cid_ in {k["connectorId"] for k in r.json().get("connectors", [])}, r.text
    assert edge.get(f"{CONN}/{cid_}", user=bob).status_code == 200
    e.error_of(edge.post(CONN, body, user=bob), 403, "permission_denied")
    e.error_of(edge.post(f"{CONN}/{cid_}/disable", {}, user=bob), 403, "permission_denied")
    e.error_of(edge.call("DELETE", f"{CONN}/{cid_}", user=bob), 403, "permission_denied")
    e.error_of(edge.get(f"{CONN}/builtin-providers", user=bob), 403, "permission_denied")
    e.error_of(edge.get(f"{CONN}/{cid_}", user=world.carol), 404, "not_found")

    r = edge.post(f"{CONN}/{cid_}/test", {}, user=admin)
    assert r.status_code == 200 and r.json().get("checks"), r.text
    r = edge.post(f"{CONN}/{cid_}/disable", {}, user=admin)
    assert r.status_code == 200 and r.json()["status"] == "CONNECTOR_STATUS_DISABLED", r.text
    assert cid_ not in {k["connectorId"] for k in edge.get(CONN, user=bob).json().get("connectors", [])}
    r = edge.call("DELETE", f"{CONN}/{cid_}", user=admin)
    assert r.status_code == 200 and r.json()["status"] == "CONNECTOR_STATUS_DELETED", r.text
    assert enabled_tuples(api, cid_) == set()

    assert_no_leak(stack, api, [a.content + json.dumps(dict(a.headers)).encode() for a in edge.answers]
                   + world.replies, world.canaries)
