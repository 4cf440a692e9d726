"""Keycloak as a real provider behind a custom OIDC connector: a user signs in on Keycloak's own
login page and accepts its consent page (an HTTP client playing the browser), and the connection
becomes ACTIVE with the tokens Keycloak really issued, kept only in the store. Disconnect revokes
them at Keycloak (its RFC 7009 endpoint, found by discovery), which Keycloak then confirms by
refusing the refresh token. A refused consent ends in a clear failed_precondition.

oauth is called as the gateway calls it (the gateway's side is in test_connections_api.py); an
oauth process of its own reaches Keycloak's public name through the test override, as the stack's
reaches the provider test servers.
"""

from __future__ import annotations

import time
import urllib.parse
import uuid

import grpc
import pytest
import requests

import credex_api as x
import keycloak as kc
from test_oauth_connectors_direct import admin_md, caller_ctx, create, oauth, store_as_oauth, user_md

CLIENT = "credex-connector"  # the realm's confidential client for connections (PKCE S256, consent)
REDIRECT = "https://ui.credex.test/oauth/callback"
USER = "kc-conn-user"


@pytest.fixture(scope="module")
def kc_oauth(stack, keycloak):
    """An oauth process whose provider calls for keycloak.credex.test reach the test Keycloak."""
    entries = [e for e in stack.env.get("CREDEX_OAUTH_TEST_CONNECT_TO", "").split(",") if e]
    inst = stack.spawn("oauth", CREDEX_OAUTH_TEST_CONNECT_TO=",".join(entries + [keycloak.connect_to]))
    stack.wait_healthy(inst)
    yield inst
    assert inst.stop() == 0


def call(api: x.Api, inst, service: str, method: str, req, md):
    return oauth(api, md, addr=inst.addr).call(service, method, req, timeout=60)


@pytest.fixture(scope="module")
def connector(api, keycloak, kc_oauth):
    o = api.pb.oauth
    conn = o.Connector(provider_key=f"keycloak-{uuid.uuid4().hex[:8]}", type=o.CONNECTOR_TYPE_CUSTOM_OIDC,
                       display_name="Keycloak", client_id=CLIENT, redirect_uri=REDIRECT,
                       endpoints=o.ConnectorEndpoints(issuer_url=keycloak.issuer()),
                       scopes=["openid", "profile", "email"],
                       account_mapping=o.AccountMapping(account_id_field="sub",
                                                        account_name_field="preferred_username"))
    c, _ = create(api, conn, kc.CLIENT_SECRETS[CLIENT].encode())
    call(api, kc_oauth, "Connectors", "EnableConnector",
         o.EnableConnectorRequest(connector_id=c.connector_id, team_ids=["*"]), admin_md())
    return c


def start(api, inst, c):
    return call(api, inst, "Connections", "StartConnect",
                api.pb.oauth.StartConnectRequest(connector_id=c.connector_id, return_to="/connections"),
                user_md(USER))


def complete(api, inst, c, location: str):
    q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))
    req = api.pb.oauth.CompleteConnectRequest(provider_key=c.provider_key, code=q.get("code", ""),
                                              oauth_state=q.get("state", ""), iss=q.get("iss", ""),
                                              error=q.get("error", ""))
    return call(api, inst, "Connections", "CompleteConnect", req, user_md(USER))


def token_set(api, secret_id: str):
    s, cm = api.pb.store, api.pb.common
    r = store_as_oauth(api, "Resolve", s.StoreResolveRequest(
        caller=caller_ctx(api), secret_id=secret_id, expected_kind=cm.SECRET_KIND_PROVIDER_TOKEN_SET))
    ts = api.pb.oauth.ProviderTokenSet()
    ts.ParseFromString(r.value)
    return ts


def secret_id_of(api, connection_id: str) -> str:
    client, db = api.mongo()
    try:
        doc = db.provider_connections.find_one({"_id": connection_id})
    finally:
        client.close()
    assert doc is not None
    ids = [v for k, v in doc.items() if k.endswith("secret_id") and isinstance(v, str) and v]
    assert len(ids) == 1, sorted(doc)
    return ids[0]


def test_real_login_and_consent_make_an_active_connection(api, keycloak, kc_oauth, connector):
    o = api.pb.oauth
    s = start(api, kc_oauth, connector)
    auth = urllib.parse.urlsplit(s.authorization_url)
    assert f"{auth.scheme}://{auth.netloc}" == keycloak.public_url
    assert dict(urllib.parse.parse_qsl(auth.query))["code_challenge_method"] == "S256"

    location = keycloak.login(s.authorization_url, "alice")  # Keycloak's login and consent pages
    assert location.startswith(REDIRECT + "?"), location
    reply = complete(api, kc_oauth, connector, location)
    conn = reply.connection
    assert conn.state == o.CONNECTION_STATE_ACTIVE
    assert reply.return_to == "/connections"
    alice_sub = kc.claims(keycloak.user_token("alice"))["sub"]
    assert (conn.provider_account_id, conn.provider_account_name) == (alice_sub, "alice")
    assert {"openid", "profile", "email"} <= set(conn.granted_scopes)

    # The token set in the store is what Keycloak issued for this client and this user.
    ts = token_set(api, secret_id_of(api, conn.connection_id))
    access = ts.access_token.decode()
    claims = kc.claims(access)
    assert claims["iss"] == keycloak.issuer() and claims["azp"] == CLIENT and claims["sub"] == alice_sub
    assert ts.refresh_token and ts.expires_at_ms > time.time() * 1000
    me = requests.get(f"{keycloak.base_url}/realms/{kc.REALM}/protocol/openid-connect/userinfo",
                      headers={"Authorization": f"Bearer {access}", "Host": kc.PUBLIC_HOST},
                      verify=str(keycloak.ca_file), timeout=30)
    assert me.status_code == 200 and me.json()["sub"] == alice_sub, me.text[:200]
    # The tokens are nowhere in the reply.
    wire = reply.SerializeToString()
    assert access.encode() not in wire and ts.refresh_token not in wire

    # Disconnect revokes at Keycloak: the refresh token stops working there.
    call(api, kc_oauth, "Connections", "Disconnect", o.DisconnectRequest(connection_id=conn.connection_id),
         user_md(USER))
    refreshed = requests.post(keycloak.token_url(), verify=str(keycloak.ca_file), timeout=30, data={
        "grant_type": "refresh_token", "refresh_token": ts.refresh_token.decode(), "client_id": CLIENT,
        "client_secret": kc.CLIENT_SECRETS[CLIENT]})
    assert refreshed.status_code == 400 and refreshed.json().get("error") == "invalid_grant", refreshed.text[:200]


def test_refused_consent_is_a_clear_failure(api, keycloak, kc_oauth, connector):
    s = start(api, kc_oauth, connector)
    location = keycloak.login(s.authorization_url, "bob", consent=False)
    assert "error=access_denied" in location, location
    with pytest.raises(grpc.RpcError) as info:
        complete(api, kc_oauth, connector, location)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert x.reason(info.value) == "failed_precondition"
    assert "access_denied" in info.value.details()
