"""Issue 12: a user's provider connections as the public sees them, through the gateway (gRPC) and
through the edge (HTTP), against the real oauth, store, OpenFGA and FerretDB of the session stack
and the generic OAuth 2.0 provider test server (tests/e2e/providers).

The tests play the UI of docs/HTTP_API.md: connect with the user's bearer token (302 to the
provider), follow the provider's consent with an HTTP client and stop at its redirect to the UI's
callback page (the connector's redirect_uri), then call the edge's callback with the code, the
state and the same bearer token (303 to CREDEX_EDGE_UI_URL + return_to, or 200 with the JSON).

- The gateway decides before oauth is asked: a connector not enabled for the user is
  permission_denied at connect; a connection the caller does not own is the not_found of one that
  does not exist; another user's list is for platform admins. Each refusal is one audit event
  (resource_type provider_connection).
- Completing a consent makes the caller the connection's owner in OpenFGA
  (`user:<u> owner provider_connection:<id>`); disconnecting removes it.
- No token the provider issued (each one a canary) ever appears in an edge answer (body or
  header), a service log or an audit event.

The flows need oauth's Connections handlers: the `oauth_connections` fixture calls one directly
(as the gateway) and fails loudly if oauth no longer serves them.
"""

from __future__ import annotations

import json
import uuid

import grpc
import pytest

import credex_api as x
import credex_edge as e
from credex_connections import World, assert_no_token_anywhere, consent, one_denial, oauth_saw, owns, refused
from credex_edge import edge  # noqa: F401 - the module's HTTP client fixture

C = grpc.StatusCode
CONNX = "/api/credentials/connections"
UI_URL = "https://ui.credex.test/app"                   # CREDEX_EDGE_UI_URL of the private edge
UI_ORIGIN = "https://ui.credex.test"
BROWSER_UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36"

def connect_path(key: str) -> str:
    return f"/api/credentials/oauth/{key}/connect"


def callback_path(key: str) -> str:
    return f"/api/credentials/oauth/{key}/callback"


# ---- fixtures -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def oauth_connections(stack):
    """oauth answers its Connections directly (as the gateway): a probe that fails loudly if the
    service regressed to UNIMPLEMENTED, before the tests that build on it run."""
    stack.unary("oauth", "/credex.v1.Connections/ListConnections", b"", identity="gateway",
                metadata=[("x-credex-subject-user-id", "probe"), ("x-credex-caller-kind", "browser")])


@pytest.fixture(scope="module")
def world(api, providers) -> World:
    w = World(api, providers)
    yield w
    api.fga_write([(f"user:{w.admin}", "admin", "platform:credex")], delete=True)


@pytest.fixture(scope="module")
def ui_edge(stack, api):
    """A private edge with CREDEX_EDGE_UI_URL (the callback answers 303) and the UI's origin
    allowed (browser-shaped requests)."""
    inst, port = e.spawn_edge(stack, CREDEX_EDGE_UI_URL=UI_URL, CREDEX_EDGE_ALLOWED_ORIGINS=UI_ORIGIN)
    client = e.Edge(api, f"http://127.0.0.1:{port}")
    client.log_path = inst.log_path
    yield client
    client.close()
    assert inst.stop() == 0, inst.log_text()[-3000:]


# ---- helpers ------------------------------------------------------------------------------------

def no_follow(client: e.Edge, method: str, path: str, *, user: str | None = None, params=None,
              json_body=None, headers: dict[str, str] | None = None):
    """One edge request that does not follow a redirect (the UI relays it), checked and kept."""
    hdrs = dict(client.auth(user)) if user else {}
    data = None
    if json_body is not None:
        data = json.dumps(json_body)
        hdrs["Content-Type"] = "application/json"
    hdrs.update(headers or {})
    r = client.http.request(method, client.base + path, headers=hdrs, params=params, data=data,
                            allow_redirects=False, timeout=30, verify=client.verify)
    client.answers.append(r)
    e.check_common(r)
    return r


# ---- decided by the gateway before oauth is asked ----------------------------------------------------

def test_connect_refused_when_not_enabled_before_oauth(world, api, stack, edge):  # noqa: F811 - the fixture
    """No connector enabled for the user: permission_denied, and oauth never hears of it."""
    o = api.pb.oauth
    stranger = api.ui(world.stranger)
    c = x.cid()
    err = refused(stranger, "StartConnect", o.StartConnectRequest(provider_key="github"), c)
    assert (err.code(), x.reason(err)) == (C.PERMISSION_DENIED, "permission_denied"), x.describe(err)
    one_denial(api, c, "connection.started", "permission_denied")
    assert not oauth_saw(stack, c)

    # by id: a connector that exists but is enabled for another team only
    theirs = "con_" + uuid.uuid4().hex
    api.fga_write([(f"team:{x.uid('other')}#member", "enabled_for", f"oauth_connector:{theirs}")])
    c = x.cid()
    err = refused(api.ui(world.alice), "StartConnect", o.StartConnectRequest(connector_id=theirs), c)
    assert (err.code(), x.reason(err)) == (C.PERMISSION_DENIED, "permission_denied"), x.describe(err)
    one_denial(api, c, "connection.started", "permission_denied")
    assert not oauth_saw(stack, c)

    # a service acting for itself has no user to connect
    c = x.cid()
    err = refused(api.agent(None), "StartConnect", o.StartConnectRequest(provider_key="github"), c)
    assert (err.code(), x.reason(err)) == (C.PERMISSION_DENIED, "permission_denied"), x.describe(err)
    assert not oauth_saw(stack, c)

    # through the edge: 403, and no redirect
    h = {"X-Correlation-Id": x.cid()}
    r = no_follow(edge, "GET", connect_path("github"), user=world.stranger, headers=h)
    e.error_of(r, 403, "permission_denied")
    assert "Location" not in r.headers
    one_denial(api, h["X-Correlation-Id"], "connection.started", "permission_denied")
    assert not oauth_saw(stack, h["X-Correlation-Id"])


def test_foreign_or_unknown_connection_is_not_found(world, api, stack, edge):  # noqa: F811 - the fixture
    """Without the owner tuple a connection id is the not_found of one that does not exist, for
    reads, disconnect and reconnect alike, decided before oauth is asked."""
    o = api.pb.oauth
    bob = api.ui(world.bob)
    answers = []
    for method, req, event in (
            ("GetConnection", o.GetConnectionRequest, "connection.read"),
            ("Disconnect", o.DisconnectRequest, "connection.disconnected"),
            ("Reconnect", o.ReconnectRequest, "connection.started")):
        c = x.cid()
        err = refused(bob, method, req(connection_id="pcn_" + uuid.uuid4().hex), c)
        assert (err.code(), x.reason(err)) == (C.NOT_FOUND, "not_found"), (method, x.describe(err))
        answers.append(err.details())
        one_denial(api, c, event, "not_found")
        assert not oauth_saw(stack, c)
    assert len(set(answers)) == 1, answers
    e.error_of(edge.get(f"{CONNX}/pcn_{uuid.uuid4().hex}", user=world.bob), 404, "not_found")
    e.error_of(edge.call("DELETE", f"{CONNX}/pcn_{uuid.uuid4().hex}", user=world.bob), 404, "not_found")
    e.error_of(edge.post(f"{CONNX}/pcn_{uuid.uuid4().hex}/reconnect", {}, user=world.bob), 404, "not_found")


def test_another_users_list_is_for_admins(world, api, stack, edge):  # noqa: F811 - the fixture
    o = api.pb.oauth
    c = x.cid()
    err = refused(api.ui(world.bob), "ListConnections", o.ListConnectionsRequest(subject_user_id=world.alice), c)
    assert (err.code(), x.reason(err)) == (C.PERMISSION_DENIED, "permission_denied"), x.describe(err)
    one_denial(api, c, "connection.listed", "permission_denied")
    assert not oauth_saw(stack, c)
    e.error_of(edge.get(CONNX, user=world.bob, params={"subject_user_id": world.alice}), 403,
               "permission_denied")


# ---- the flows ------------------------------------------------------------------------------------

def test_connect_end_to_end_through_the_edge(oauth_connections, world, api, stack, providers, edge, ui_edge):  # noqa: F811
    connector_id, key, issuer = world.connector()
    alice = world.alice

    # connect: 302 to the provider, the same reply as JSON for clients that do not follow it
    r = no_follow(edge, "GET", connect_path(key), user=alice, params={"return_to": "/settings/connections"})
    assert r.status_code == 302, r.text
    start = r.json()
    assert r.headers["Location"] == start["authorizationUrl"]
    assert start["authorizationUrl"].startswith(f"{issuer}/authorize?"), start
    assert "code_challenge_method=S256" in start["authorizationUrl"]
    connection_id = start["connectionId"]

    # the provider consents and sends the browser to the UI's callback page ...
    back = consent(providers, start["authorizationUrl"])
    assert back["state"] == start["oauthState"]
    # ... which relays it to the edge with the user's bearer token: 200 JSON without a UI URL
    r = no_follow(edge, "GET", callback_path(key), user=alice,
                  params={"code": back["code"], "state": back["state"]})
    assert r.status_code == 200, r.text
    assert "Location" not in r.headers
    done = r.json()
    conn = done["connection"]
    assert conn["connectionId"] == connection_id
    assert conn["state"] == "CONNECTION_STATE_ACTIVE", conn
    assert conn["connectorId"] == connector_id and conn["subjectUserId"] == alice
    assert conn["providerAccountId"] == providers.generic.user.id
    assert done.get("returnTo") == "/settings/connections"
    assert owns(api, alice, connection_id)

    # list and get: the owner's
    listed = edge.get(CONNX, user=alice).json().get("connections", [])
    assert connection_id in {c["connectionId"] for c in listed}
    assert edge.get(f"{CONNX}/{connection_id}", user=alice).json()["connectionId"] == connection_id

    # reconnect through the edge with a UI URL: the callback ends on the UI's page (303)
    r = ui_edge.post(f"{CONNX}/{connection_id}/reconnect", {"returnTo": "/done"}, user=alice)
    assert r.status_code == 200, r.text
    again = r.json()
    back = consent(providers, again["authorizationUrl"])
    r = no_follow(ui_edge, "GET", callback_path(key), user=alice,
                  params={"code": back["code"], "state": back["state"]})
    assert r.status_code == 303, r.text
    assert r.headers["Location"] == f"{UI_URL}/done"
    assert r.json()["connection"]["connectionId"] == connection_id
    assert r.json()["connection"]["state"] == "CONNECTION_STATE_ACTIVE"

    # disconnect: REVOKED, and the owner tuple goes
    r = edge.call("DELETE", f"{CONNX}/{connection_id}", user=alice)
    assert r.status_code == 200 and r.json()["state"] == "CONNECTION_STATE_REVOKED", r.text
    assert not owns(api, alice, connection_id)
    e.error_of(edge.get(f"{CONNX}/{connection_id}", user=alice), 404, "not_found")

    assert_no_token_anywhere(stack, api, world, [edge, ui_edge], [ui_edge.log_path])


def test_connect_end_to_end_over_grpc(oauth_connections, world, api, stack, providers):
    o = api.pb.oauth
    _, key, _ = world.connector()
    bob = api.ui(world.bob)
    start = bob.call("Connections", "StartConnect", o.StartConnectRequest(provider_key=key), timeout=30)
    world.keep(start)
    back = consent(providers, start.authorization_url)
    done = bob.call("Connections", "CompleteConnect", o.CompleteConnectRequest(
        provider_key=key, code=back["code"], oauth_state=back["state"]), timeout=30)
    world.keep(done)
    assert done.connection.state == o.CONNECTION_STATE_ACTIVE
    assert owns(api, world.bob, done.connection.connection_id)
    assert_no_token_anywhere(stack, api, world, [])


def test_another_users_state_is_refused(oauth_connections, world, api, providers, edge):  # noqa: F811 - the fixture
    """Bob relays a callback of Alice's flow: refused before any token request, and Bob owns
    nothing."""
    _, key, _ = world.connector()
    r = no_follow(edge, "GET", connect_path(key), user=world.alice)
    assert r.status_code == 302, r.text
    start = r.json()
    back = consent(providers, start["authorizationUrl"])
    tokens_before = len(providers.generic.token_requests())
    r = no_follow(edge, "GET", callback_path(key), user=world.bob,
                  params={"code": back["code"], "state": back["state"]})
    assert 400 <= r.status_code < 500, r.text
    assert "Location" not in r.headers
    assert len(providers.generic.token_requests()) == tokens_before
    assert not owns(api, world.bob, start["connectionId"])


def test_lists_and_reads_are_the_owners(oauth_connections, world, api, providers, edge):  # noqa: F811 - the fixture
    _, key, _ = world.connector()
    r = no_follow(edge, "GET", connect_path(key), user=world.alice)
    start = r.json()
    back = consent(providers, start["authorizationUrl"])
    r = no_follow(edge, "GET", callback_path(key), user=world.alice, params={"code": back["code"], "state": back["state"]})
    assert r.status_code == 200, r.text
    mine = r.json()["connection"]["connectionId"]

    listed = edge.get(CONNX, user=world.bob).json().get("connections", [])
    assert mine not in {c["connectionId"] for c in listed}
    assert all(c["subjectUserId"] == world.bob for c in listed), listed
    hidden = e.error_of(edge.get(f"{CONNX}/{mine}", user=world.bob), 404, "not_found")
    missing = e.error_of(edge.get(f"{CONNX}/pcn_{uuid.uuid4().hex}", user=world.bob), 404, "not_found")
    assert hidden["message"] == missing["message"]
    e.error_of(edge.call("DELETE", f"{CONNX}/{mine}", user=world.bob), 404, "not_found")
    assert owns(api, world.alice, mine)
    # a platform admin may list it and read it (metadata only)
    theirs = edge.get(CONNX, user=world.admin, params={"subject_user_id": world.alice}).json()
    assert mine in {c["connectionId"] for c in theirs.get("connections", [])}
    read = edge.get(f"{CONNX}/{mine}", user=world.admin)
    assert read.status_code == 200 and read.json()["subjectUserId"] == world.alice, read.text


def test_browser_shaped_requests(oauth_connections, world, api, providers, ui_edge):
    """A browser on the UI's origin may use these routes: they answer metadata only."""
    _, key, _ = world.connector()
    browser = {"Origin": UI_ORIGIN, "Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "cors",
               "User-Agent": BROWSER_UA}
    r = no_follow(ui_edge, "GET", connect_path(key), user=world.alice, headers=browser)
    assert r.status_code == 302, r.text
    assert r.headers.get("Access-Control-Allow-Origin") == UI_ORIGIN
    back = consent(providers, r.json()["authorizationUrl"])
    r = no_follow(ui_edge, "GET", callback_path(key), user=world.alice, headers=browser,
                  params={"code": back["code"], "state": back["state"]})
    assert r.status_code == 303 and r.headers["Location"] == f"{UI_URL}/", r.text
    r = no_follow(ui_edge, "GET", CONNX, user=world.alice, headers=browser)
    assert r.status_code == 200, r.text
    # never with cookies instead of the bearer token
    r = no_follow(ui_edge, "GET", CONNX, headers=browser | {"Cookie": "session=abc"})
    e.error_of(r, 401, "unauthenticated")
