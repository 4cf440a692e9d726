"""oauth's Connections service called directly, as the gateway calls it (peer `gateway`, the user
the gateway verified in x-credex-subject-user-id), on the real stack with the provider test
servers: the connect flow (state, PKCE S256, nonce, iss), the code exchange and the account of
every built-in provider and of a custom OIDC provider (id_token verified), token sets in the
store only, disconnect with revocation at the provider, reconnect that rotates the token set, and
the reconsent marking after a connector scope change. The tests play the UI: StartConnect, the
browser's consent at the provider (ProviderSims.consent), then CompleteConnect with what the
provider redirected back with.
"""

from __future__ import annotations

import datetime
import hashlib
import secrets
import threading
import time
import urllib.parse
import uuid

import grpc
import pytest

import credex_api as x
from providers import SELF_MANAGED_GITLAB, pkce_s256
from test_oauth_connectors_direct import (ADMIN, C, LOGS, admin_md, call, code_of, create, oauth,
                                          store_as_oauth, caller_ctx, user_md)

USER = "conn-user"
OTHER = "conn-other"
REDIRECT = "https://app.credex.test/oauth/callback"


# ---- helpers ---------------------------------------------------------------------------------------

def conns(api: x.Api, method: str, req, user: str = USER, admin: bool = False):
    md = admin_md(user) if admin else user_md(user)
    return oauth(api, md).call("Connections", method, req)


def remove_live(api: x.Api, key: str) -> None:
    """A built-in is unique per provider_key: delete one another test left behind."""
    o = api.pb.oauth
    for c in call(api, "ListConnectors", o.ListConnectorsRequest(provider_key=key, include_disabled=True)).connectors:
        if c.type == o.CONNECTOR_TYPE_BUILT_IN:
            call(api, "DeleteConnector", o.DeleteConnectorRequest(connector_id=c.connector_id))


def enable(api: x.Api, connector_id: str) -> None:
    call(api, "EnableConnector", api.pb.oauth.EnableConnectorRequest(connector_id=connector_id, team_ids=["*"]))


def builtin(api: x.Api, sim, key: str, scopes=(), base_url: str = ""):
    o = api.pb.oauth
    cid, secret = f"cid-{key}-{uuid.uuid4().hex[:8]}", f"sec-{secrets.token_hex(12)}"
    sim.register_client(cid, secret, (REDIRECT,))
    remove_live(api, key)
    conn = o.Connector(provider_key=key, type=o.CONNECTOR_TYPE_BUILT_IN, display_name=f"{key} e2e",
                       client_id=cid, redirect_uri=REDIRECT, scopes=list(scopes))
    if base_url:
        conn.endpoints.issuer_url = base_url
    c, _ = create(api, conn, secret.encode())
    enable(api, c.connector_id)
    return c


def custom(api: x.Api, providers, *, oidc: bool = True, scopes=("openid", "profile"), issuer: str | None = None,
           secret: str | None = None, client_auth_method: str = ""):
    o, g = api.pb.oauth, providers.generic
    issuer = issuer or g.new_tenant()
    cid, secret = f"cid-oidc-{uuid.uuid4().hex[:8]}", secret or f"sec-{secrets.token_hex(12)}"
    g.register_client(cid, secret, (REDIRECT,))
    ep = o.ConnectorEndpoints(issuer_url=issuer)
    if not oidc:
        e = g.endpoints(issuer)
        ep = o.ConnectorEndpoints(authorization_url=e["authorization_endpoint"], token_url=e["token_endpoint"],
                                  userinfo_url=e["userinfo_endpoint"], revocation_url=e["revocation_endpoint"])
    conn = o.Connector(provider_key=f"e2e-{uuid.uuid4().hex[:10]}",
                       type=o.CONNECTOR_TYPE_CUSTOM_OIDC if oidc else o.CONNECTOR_TYPE_CUSTOM_OAUTH2,
                       display_name="custom e2e", client_id=cid, endpoints=ep, redirect_uri=REDIRECT,
                       scopes=list(scopes), client_auth_method=client_auth_method,
                       account_mapping=o.AccountMapping(account_id_field="sub", account_name_field="name"))
    c, _ = create(api, conn, secret.encode())
    enable(api, c.connector_id)
    return c, issuer


def start(api: x.Api, key: str, user: str = USER, return_to: str = "/settings/connections"):
    return conns(api, "StartConnect", api.pb.oauth.StartConnectRequest(provider_key=key, return_to=return_to), user)


def complete(api: x.Api, key: str, q: dict, user: str = USER, iss: str | None = None):
    req = api.pb.oauth.CompleteConnectRequest(provider_key=key, code=q.get("code", ""),
                                              oauth_state=q.get("state", ""), error=q.get("error", ""),
                                              error_description=q.get("error_description", ""),
                                              iss=q.get("iss", "") if iss is None else iss)
    return conns(api, "CompleteConnect", req, user)


def connect(api: x.Api, providers, key: str, user: str = USER, **kw):
    s = start(api, key, user)
    return s, complete(api, key, providers.consent(s.authorization_url), user, **kw)


def query_of(url: str) -> dict[str, str]:
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))


def token_set(api: x.Api, secret_id: str):
    s, c = api.pb.store, api.pb.common
    r = store_as_oauth(api, "Resolve", s.StoreResolveRequest(
        caller=caller_ctx(api), secret_id=secret_id, expected_kind=c.SECRET_KIND_PROVIDER_TOKEN_SET))
    ts = api.pb.oauth.ProviderTokenSet()
    ts.ParseFromString(r.value)
    return ts, r.version


def conn_doc(api: x.Api, connection_id: str) -> dict:
    client, db = api.mongo()
    try:
        return db.provider_connections.find_one({"_id": connection_id})
    finally:
        client.close()


def events(api: x.Api, connection_id: str) -> list[tuple[str, str]]:
    client, db = api.mongo()
    try:
        return [(e["event_type"], e["outcome"]) for e in db.credential_audit_events.find(
            {"resource_type": "provider_connection", "resource_id": connection_id})]
    finally:
        client.close()


def refused(fn) -> tuple:
    return code_of(fn)


def assert_tokens_nowhere(api: x.Api, tokens: list[bytes], replies=()) -> None:
    """The canary: provider tokens appear in no reply, process log, audit event or oauth document."""
    forms = [f for t in tokens if t for f in x.encodings(t)]
    assert forms
    for r in replies:
        blob = r.SerializeToString()
        assert all(f not in blob for f in forms), "a provider token in a reply"
    for name in LOGS:
        text = api.stack.log_text(name).encode()
        assert all(f not in text for f in forms), f"a provider token in {name}'s log"
    client, db = api.mongo()
    try:
        for coll in ("credential_audit_events", "provider_connections", "oauth_flows", "oauth_connectors"):
            for doc in db[coll].find({}):
                flat = repr(doc).encode()
                assert all(f not in flat for f in forms), f"a provider token in {coll}"
    finally:
        client.close()


@pytest.fixture(scope="module")
def gh(api, providers):
    c = builtin(api, providers.github, "github")
    yield c
    call(api, "DeleteConnector", api.pb.oauth.DeleteConnectorRequest(connector_id=c.connector_id))


# ---- the state and PKCE matrix ---------------------------------------------------------------------

def test_start_answers_a_fresh_state_and_pkce_s256(api, providers, gh):
    o = api.pb.oauth
    a, b = start(api, "github"), start(api, "github")
    assert a.connection_id != b.connection_id and a.oauth_state != b.oauth_state
    qa, qb = query_of(a.authorization_url), query_of(b.authorization_url)
    assert a.authorization_url.startswith("https://github.com/login/oauth/authorize?")
    assert qa["state"] == a.oauth_state and len(a.oauth_state) >= 43  # 256 random bits
    assert qa["client_id"] == gh.client_id and qa["redirect_uri"] == REDIRECT
    assert qa["response_type"] == "code" and qa["scope"] == " ".join(gh.scopes)
    assert qa["code_challenge_method"] == "S256" and len(qa["code_challenge"]) == 43
    assert qa["code_challenge"] != qb["code_challenge"]
    assert 0 < a.expires_at_ms - time.time() * 1000 <= 10 * 60 * 1000
    got = conns(api, "GetConnection", o.GetConnectionRequest(connection_id=a.connection_id))
    assert got.state == o.CONNECTION_STATE_PENDING and got.subject_user_id == USER
    # The state is stored only as its SHA-256.
    client, db = api.mongo()
    try:
        flow = db.oauth_flows.find_one({"_id": hashlib.sha256(a.oauth_state.encode()).hexdigest()})
        assert flow is not None and flow["user"] == USER
        assert a.oauth_state not in repr(list(db.oauth_flows.find({})))
    finally:
        client.close()
    assert ("connection.started", "success") in events(api, a.connection_id)


def test_verifier_length_and_s256_checked_by_the_provider(api, providers, gh):
    sim = providers.github
    sim.require_pkce = True
    try:
        since = sim.requests()[-1].seq if sim.requests() else 0
        s1, d1 = connect(api, providers, "github")
        s2, d2 = connect(api, providers, "github", user=OTHER)
    finally:
        sim.require_pkce = False
    assert d1.connection.state == api.pb.oauth.CONNECTION_STATE_ACTIVE
    tokens = sim.token_requests(since)
    verifiers = [t.form["code_verifier"] for t in tokens]
    assert len(verifiers) == 2 and verifiers[0] != verifiers[1]
    for v, s in zip(verifiers, (s1, s2)):
        assert 43 <= len(v) <= 128
        assert pkce_s256(v) == query_of(s.authorization_url)["code_challenge"]


def test_state_missing_unknown_replayed_other_user_expired(api, providers, gh):
    bad = (C.INVALID_ARGUMENT, "invalid_argument")
    s = start(api, "github")
    q = providers.consent(s.authorization_url)
    since = providers.github.token_requests()[-1].seq if providers.github.token_requests() else 0
    assert refused(lambda: complete(api, "github", {"code": q["code"]})) == bad            # missing
    assert refused(lambda: complete(api, "github", {"code": q["code"], "state": q["state"] + "x"})) == bad
    assert refused(lambda: complete(api, "github", q, user=OTHER)) == bad                  # another user's
    assert refused(lambda: complete(api, "bitbucket", q)) == bad                           # mismatched provider
    assert providers.github.token_requests(since) == []  # refused before any token request
    done = complete(api, "github", q)                       # the rightful user still can
    assert done.connection.state == api.pb.oauth.CONNECTION_STATE_ACTIVE
    assert done.return_to == "/settings/connections"
    n = len(providers.github.token_requests(since))
    assert refused(lambda: complete(api, "github", q)) == bad                              # replayed
    assert len(providers.github.token_requests(since)) == n

    # expired: the flow document's expiry moved into the past
    s = start(api, "github")
    q = providers.consent(s.authorization_url)
    client, db = api.mongo()
    try:
        db.oauth_flows.update_one({"_id": hashlib.sha256(s.oauth_state.encode()).hexdigest()},
                                  {"$set": {"expires_at": datetime.datetime.now(datetime.timezone.utc)
                                            - datetime.timedelta(minutes=1)}})
    finally:
        client.close()
    assert refused(lambda: complete(api, "github", q)) == bad
    assert len(providers.github.token_requests(since)) == n


def test_concurrent_callbacks_redeem_a_state_once(api, providers, gh):
    s = start(api, "github")
    q = providers.consent(s.authorization_url)
    since = providers.github.token_requests()[-1].seq if providers.github.token_requests() else 0
    results: list = []

    def worker() -> None:
        try:
            results.append(complete(api, "github", q).connection.state)
        except grpc.RpcError as e:
            results.append(e.code())

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(api.pb.oauth.CONNECTION_STATE_ACTIVE) == 1, results
    assert results.count(C.INVALID_ARGUMENT) == 5, results
    assert len(providers.github.token_requests(since)) == 1


def test_authorization_url_carries_every_scope(api, providers):
    # 64 scopes of 200 characters (the contract's most) and a long redirect URI: the URL grows
    # with them instead of being cut (it was cut at 4 KiB of scopes and 8 KiB of query).
    scopes = ["openid"] + [f"s{i:02d}:" + "x" * 196 for i in range(63)]
    c, _ = custom(api, providers, scopes=scopes)
    s = start(api, c.provider_key)
    q = query_of(s.authorization_url)
    assert q["scope"].split(" ") == scopes
    assert q["state"] == s.oauth_state and q["redirect_uri"] == REDIRECT


def test_return_to_must_be_a_local_path(api, gh):
    for bad in ("https://evil.test/", "//evil.test/x", "relative", "/" + "a" * 512, "/a b", "/\\evil"):
        assert refused(lambda: start(api, "github", return_to=bad)) == (C.INVALID_ARGUMENT, "invalid_argument"), bad


def test_provider_error_answer(api, providers, gh):
    providers.github.consent = "deny"
    try:
        s = start(api, "github")
        q = providers.consent(s.authorization_url)
    finally:
        providers.github.consent = "grant"
    assert q["error"] == "access_denied"
    with pytest.raises(grpc.RpcError) as info:
        complete(api, "github", q)
    assert info.value.code() == C.FAILED_PRECONDITION and "access_denied" in info.value.details()
    assert "denied access" not in api.stack.log_text("oauth")  # error_description never logged
    got = conns(api, "GetConnection", api.pb.oauth.GetConnectionRequest(connection_id=s.connection_id))
    assert got.state == api.pb.oauth.CONNECTION_STATE_PENDING


# ---- the built-in providers --------------------------------------------------------------------------

def test_github_json_on_request_and_error_in_200(api, providers, gh):
    o = api.pb.oauth
    since = providers.github.token_requests()[-1].seq if providers.github.token_requests() else 0
    s, done = connect(api, providers, "github")
    c = done.connection
    assert c.provider_account_id == "583231" and c.provider_account_name == "octo-e2e"
    assert set(c.granted_scopes) == set(gh.scopes) and list(c.missing_scopes) == []
    req = providers.github.token_requests(since)[-1]
    assert "application/json" in req.headers.get("accept", "")
    doc = conn_doc(api, c.connection_id)
    ts, _ = token_set(api, doc["token_set_secret_id"])
    assert ts.access_token.startswith(b"gh")
    assert_tokens_nowhere(api, [ts.access_token, ts.refresh_token], [s, done])
    q = query_of(s.authorization_url)
    for name in LOGS:  # neither the state nor the code nor the PKCE challenge is logged
        text = api.stack.log_text(name)
        assert s.oauth_state not in text and q["code_challenge"] not in text, name
        assert req.form["code"] not in text and req.form["code_verifier"] not in text, name
    # A code the provider refuses answers HTTP 200 with an "error" field.
    s = start(api, "github")
    q = providers.consent(s.authorization_url)
    with pytest.raises(grpc.RpcError) as info:
        complete(api, "github", {**q, "code": q["code"] + "-forged"})
    assert info.value.code() == C.FAILED_PRECONDITION and "bad_verification_code" in info.value.details()
    assert conns(api, "GetConnection", o.GetConnectionRequest(connection_id=s.connection_id)).state == \
        o.CONNECTION_STATE_PENDING


def test_atlassian_audience_prompt_and_sites(api, providers):
    c = builtin(api, providers.atlassian, "atlassian")
    try:
        s, done = connect(api, providers, "atlassian")
        q = query_of(s.authorization_url)
        assert q["audience"] == "api.atlassian.com" and q["prompt"] == "consent"
        conn = done.connection
        assert conn.provider_account_id == "5b10ac8d82e05b22cc7d4ef5" and conn.provider_account_name == "Ada E2E"
        assert conn.provider_resource_id == providers.atlassian.sites[0]["id"]
        doc = conn_doc(api, conn.connection_id)
        assert doc["provider_resource_ids"] == [providers.atlassian.sites[0]["id"]]
        ts, _ = token_set(api, doc["token_set_secret_id"])
        assert ts.refresh_token  # offline_access is a default scope
        assert_tokens_nowhere(api, [ts.access_token, ts.refresh_token], [s, done])
    finally:
        call(api, "DeleteConnector", api.pb.oauth.DeleteConnectorRequest(connector_id=c.connector_id))


@pytest.mark.parametrize("key,scopes,account", [
    ("webex", (), ("Y2lzY29zcGFyazovL3VzL1BFT1BMRS9lMmU", "Grace E2E")),
    ("pagerduty", ("users.read", "incidents.read"), ("PXPGF42", "Linus E2E")),
    ("gitlab", ("read_user", "api"), ("4242", "margaret-e2e")),
])
def test_builtin_flow(api, providers, key, scopes, account):
    c = builtin(api, providers.by_provider_key(key), key, scopes)
    try:
        s, done = connect(api, providers, key)
        conn = done.connection
        assert (conn.provider_account_id, conn.provider_account_name) == account
        assert conn.state == api.pb.oauth.CONNECTION_STATE_ACTIVE and conn.token_expires_at_ms > 0
        assert conn.scopes_version == c.scopes_version
        ts, _ = token_set(api, conn_doc(api, conn.connection_id)["token_set_secret_id"])
        assert_tokens_nowhere(api, [ts.access_token, ts.refresh_token], [s, done])
    finally:
        call(api, "DeleteConnector", api.pb.oauth.DeleteConnectorRequest(connector_id=c.connector_id))


def test_gitlab_self_managed_base_url(api, providers):
    sim = providers.gitlab_self
    c = builtin(api, sim, "gitlab", ("read_user",), base_url=f"https://{SELF_MANAGED_GITLAB}")
    try:
        s, done = connect(api, providers, "gitlab")
        assert s.authorization_url.startswith(f"https://{SELF_MANAGED_GITLAB}/oauth/authorize?")
        assert done.connection.provider_account_name == "margaret-e2e"
        assert sim.token_requests()
    finally:
        call(api, "DeleteConnector", api.pb.oauth.DeleteConnectorRequest(connector_id=c.connector_id))


# ---- custom OIDC: id_token and iss -------------------------------------------------------------------

def test_custom_oidc_id_token_verified(api, providers):
    g = providers.generic
    c, issuer = custom(api, providers)
    s, done = connect(api, providers, c.provider_key)
    q = query_of(s.authorization_url)
    assert q["nonce"] and q["code_challenge_method"] == "S256"
    assert done.connection.provider_account_id == "00u1e2e"

    # a nonce the flow did not send (the browser tampered with the request)
    s = start(api, c.provider_key)
    tampered = s.authorization_url.replace(urllib.parse.quote(q_nonce := query_of(s.authorization_url)["nonce"],
                                                              safe=""), "forged-nonce")
    assert tampered != s.authorization_url, q_nonce
    assert refused(lambda: complete(api, c.provider_key, providers.consent(tampered))) == \
        (C.FAILED_PRECONDITION, "failed_precondition")

    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa

    original = g.with_id_token

    def forged(claims_patch: dict, key=None):
        def fn(req, payload, client, code):
            payload = original(req, payload, client, code)
            claims = jwt.decode(payload["id_token"], options={"verify_signature": False}) | claims_patch
            payload["id_token"] = jwt.encode(claims, key or g._key, algorithm="RS256", headers={"kid": g.kid})
            return payload
        return fn

    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    for patch, key in (({"aud": "someone-else"}, None), ({}, other_key), ({"iss": "https://idp2.credex.test/x"}, None),
                       ({"exp": int(time.time()) - 3600}, None)):
        g.with_id_token = forged(patch, key)
        try:
            s = start(api, c.provider_key)
            assert refused(lambda: complete(api, c.provider_key, providers.consent(s.authorization_url))) == \
                (C.FAILED_PRECONDITION, "failed_precondition"), patch
        finally:
            g.with_id_token = original


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
def test_client_secret_with_reserved_characters(api, providers, method):
    # RFC 6749 2.3.1: Basic credentials are form-encoded before they are joined, so a secret with
    # '+', '%', ':' or a space reaches the provider intact either way.
    secret = f"a+b%2F:c d/{secrets.token_hex(4)}"
    c, _ = custom(api, providers, oidc=False, scopes=("profile",), secret=secret, client_auth_method=method)
    _, done = connect(api, providers, c.provider_key)
    assert done.connection.state == api.pb.oauth.CONNECTION_STATE_ACTIVE
    token_request = providers.generic.requests(path_suffix="token", method="POST")[-1]
    assert (token_request.basic_auth is not None) == (method == "client_secret_basic")


def test_iss_parameter(api, providers):
    g = providers.generic
    c, issuer = custom(api, providers)
    # sent by the provider: must name the connector's issuer
    s = start(api, c.provider_key)
    q = providers.consent(s.authorization_url)
    assert refused(lambda: complete(api, c.provider_key, q, iss="https://idp2.credex.test/t/evil")) == \
        (C.INVALID_ARGUMENT, "invalid_argument")
    # advertised by discovery: then required
    g.discovery_patch[issuer] = {"authorization_response_iss_parameter_supported": True}
    try:
        s = start(api, c.provider_key)
        q = providers.consent(s.authorization_url)
        assert refused(lambda: complete(api, c.provider_key, q, iss="")) == (C.INVALID_ARGUMENT, "invalid_argument")
        s = start(api, c.provider_key)
        done = complete(api, c.provider_key, providers.consent(s.authorization_url), iss=issuer)
        assert done.connection.state == api.pb.oauth.CONNECTION_STATE_ACTIVE
    finally:
        g.discovery_patch.pop(issuer, None)


# ---- lifecycle -------------------------------------------------------------------------------------------

def test_disconnect_revokes_and_deletes_the_token_set(api, providers):
    o = api.pb.oauth
    sim = providers.pagerduty
    c = builtin(api, sim, "pagerduty", ("users.read",))
    try:
        _, done = connect(api, providers, "pagerduty")
        cid = done.connection.connection_id
        secret_id = conn_doc(api, cid)["token_set_secret_id"]
        ts, _ = token_set(api, secret_id)
        since = sim.requests()[-1].seq
        assert refused(lambda: conns(api, "Disconnect", o.DisconnectRequest(connection_id=cid), user=OTHER)) == \
            (C.NOT_FOUND, "not_found")
        gone = conns(api, "Disconnect", o.DisconnectRequest(connection_id=cid))
        assert gone.state == o.CONNECTION_STATE_REVOKED
        revokes = sim.requests(since=since, path_suffix="/oauth/revoke")
        assert len(revokes) == 1
        assert revokes[0].form["token"] == ts.refresh_token.decode()
        assert revokes[0].form["token_type_hint"] == "refresh_token"
        meta = store_as_oauth(api, "GetSecret", api.pb.store.StoreGetSecretRequest(caller=caller_ctx(api),
                                                                                   secret_id=secret_id))
        assert meta.status == api.pb.common.SECRET_STATUS_DELETED
        again = conns(api, "Disconnect", o.DisconnectRequest(connection_id=cid))  # idempotent
        assert again.state == o.CONNECTION_STATE_REVOKED
        assert len(sim.requests(since=since, path_suffix="/oauth/revoke")) == 1
        assert ("connection.disconnected", "success") in events(api, cid)
        assert_tokens_nowhere(api, [ts.access_token, ts.refresh_token], [gone, again])
    finally:
        call(api, "DeleteConnector", o.DeleteConnectorRequest(connector_id=c.connector_id))


def test_connector_delete_ends_its_connections(api, providers):
    o = api.pb.oauth
    sim = providers.gitlab
    c = builtin(api, sim, "gitlab", ("read_user",))
    _, done = connect(api, providers, "gitlab")
    cid = done.connection.connection_id
    secret_id = conn_doc(api, cid)["token_set_secret_id"]
    since = sim.requests()[-1].seq
    call(api, "DeleteConnector", o.DeleteConnectorRequest(connector_id=c.connector_id))
    got = conns(api, "GetConnection", o.GetConnectionRequest(connection_id=cid))
    assert got.state == o.CONNECTION_STATE_REVOKED and got.state_reason == "connector_deleted"
    assert len(sim.requests(since=since, path_suffix="/oauth/revoke")) == 1
    meta = store_as_oauth(api, "GetSecret", api.pb.store.StoreGetSecretRequest(caller=caller_ctx(api),
                                                                               secret_id=secret_id))
    assert meta.status == api.pb.common.SECRET_STATUS_DELETED
    assert ("connection.disconnected", "success") in events(api, cid)


def test_reconnect_rotates_the_token_set_of_the_same_account(api, providers):
    o = api.pb.oauth
    c, _ = custom(api, providers, oidc=False, scopes=("profile",))
    _, done = connect(api, providers, c.provider_key)
    cid = done.connection.connection_id
    secret_id = conn_doc(api, cid)["token_set_secret_id"]
    ts1, v1 = token_set(api, secret_id)
    r = conns(api, "Reconnect", o.ReconnectRequest(connection_id=cid, return_to="/back"))
    assert r.connection_id == cid
    again = complete(api, c.provider_key, providers.consent(r.authorization_url))
    assert again.connection.connection_id == cid and again.return_to == "/back"
    assert conn_doc(api, cid)["token_set_secret_id"] == secret_id
    ts2, v2 = token_set(api, secret_id)
    assert v2 == v1 + 1 and ts2.access_token != ts1.access_token
    # A second StartConnect of the same account lands in the same connection too.
    _, third = connect(api, providers, c.provider_key)
    assert third.connection.connection_id == cid
    listed = conns(api, "ListConnections", o.ListConnectionsRequest(provider_key=c.provider_key,
                                                                     state=o.CONNECTION_STATE_ACTIVE))
    assert [k.connection_id for k in listed.connections] == [cid]
    assert refused(lambda: conns(api, "Reconnect", o.ReconnectRequest(connection_id=cid), user=OTHER)) == \
        (C.NOT_FOUND, "not_found")
    assert refused(lambda: conns(api, "GetConnection", o.GetConnectionRequest(connection_id=cid), user=OTHER)) == \
        (C.NOT_FOUND, "not_found")
    assert refused(lambda: conns(api, "ListConnections", o.ListConnectionsRequest(subject_user_id=USER),
                                 user=OTHER)) == (C.PERMISSION_DENIED, "permission_denied")
    by_admin = conns(api, "ListConnections", o.ListConnectionsRequest(subject_user_id=USER,
                                                                       provider_key=c.provider_key),
                     user=ADMIN, admin=True)
    assert cid in [k.connection_id for k in by_admin.connections]
    assert_tokens_nowhere(api, [ts1.access_token, ts2.access_token, ts2.refresh_token])


def test_scope_change_marks_reconsent_required(api, providers):
    o = api.pb.oauth
    c, _ = custom(api, providers, oidc=False, scopes=("profile",))
    _, done = connect(api, providers, c.provider_key)
    cid = done.connection.connection_id
    up = call(api, "UpdateConnector", o.UpdateConnectorRequest(
        connector_id=c.connector_id, connector=o.Connector(scopes=["profile", "email"]), update_mask=["scopes"]))
    assert up.reconsent_required_count == 1
    got = conns(api, "GetConnection", o.GetConnectionRequest(connection_id=cid))
    assert got.state == o.CONNECTION_STATE_RECONSENT_REQUIRED and got.state_reason == "scope_changed"
    assert list(got.missing_scopes) == ["email"]
    assert ("connection.reconsent_required", "success") in events(api, cid)
    # Dropping a scope needs no new consent.
    down = call(api, "UpdateConnector", o.UpdateConnectorRequest(
        connector_id=c.connector_id, connector=o.Connector(scopes=["profile"]), update_mask=["scopes"]))
    assert down.reconsent_required_count == 0
    # Reconnecting grants the new scope set and makes it ACTIVE again.
    call(api, "UpdateConnector", o.UpdateConnectorRequest(
        connector_id=c.connector_id, connector=o.Connector(scopes=["profile", "email"]), update_mask=["scopes"]))
    r = conns(api, "Reconnect", o.ReconnectRequest(connection_id=cid))
    back = complete(api, c.provider_key, providers.consent(r.authorization_url))
    assert back.connection.state == o.CONNECTION_STATE_ACTIVE and list(back.connection.missing_scopes) == []


def test_only_the_gateway_and_a_user(api, gh):
    o = api.pb.oauth
    req = o.StartConnectRequest(provider_key="github")
    with pytest.raises(grpc.RpcError) as info:
        oauth(api, user_md(), peer="store").call("Connections", "StartConnect", req)
    assert info.value.code() in (C.PERMISSION_DENIED, C.UNAUTHENTICATED)
    assert refused(lambda: oauth(api, [("x-credex-caller-kind", "browser")]).call(
        "Connections", "StartConnect", req)) == (C.INVALID_ARGUMENT, "invalid_argument")


def test_list_pages(api, providers, gh):
    o, c = api.pb.oauth, api.pb.common
    user = f"pager-{uuid.uuid4().hex[:8]}"
    ids = {start(api, "github", user=user).connection_id for _ in range(3)}
    seen, token = [], ""
    for _ in range(4):
        page = conns(api, "ListConnections", o.ListConnectionsRequest(
            page=c.PageRequest(page_size=2, page_token=token)), user=user)
        assert len(page.connections) <= 2
        seen += [k.connection_id for k in page.connections]
        token = page.page.next_page_token
        if not token:
            break
    assert sorted(seen) == sorted(ids) and len(seen) == 3
    pending = conns(api, "ListConnections", o.ListConnectionsRequest(state=o.CONNECTION_STATE_ACTIVE), user=user)
    assert list(pending.connections) == []


def test_abandoned_pending_connections_are_swept(api, stack, providers, gh):
    """A connect nobody finished leaves a PENDING connection (no token set, no tuple). Once it is
    older than twice a flow's lifetime no callback can complete it, and a sweep deletes it; a
    recent PENDING one and an ACTIVE one stay. Each oauth process sweeps at most once a minute,
    at a StartConnect: a fresh process sweeps at its first."""
    o = api.pb.oauth
    user = f"sweep-{uuid.uuid4().hex[:8]}"
    abandoned = start(api, "github", user=user).connection_id
    recent = start(api, "github", user=user).connection_id
    _, done = connect(api, providers, "github", user=user)
    active = done.connection.connection_id
    client, db = api.mongo()
    try:
        old = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=21)
        assert db.provider_connections.update_one({"_id": abandoned},
                                                  {"$set": {"created_at": old}}).matched_count == 1
        replica = stack.spawn("oauth")
        stack.wait_healthy(replica)
        try:
            later = oauth(api, user_md(user), addr=replica.addr).call(
                "Connections", "StartConnect",
                o.StartConnectRequest(provider_key="github", return_to="/settings/connections"))
        finally:
            assert replica.stop() == 0
        states = {d["_id"]: d["state"] for d in db.provider_connections.find({"subject_user_id": user})}
    finally:
        client.close()
    assert states == {recent: "pending", active: "active", later.connection_id: "pending"}, states
    listed = conns(api, "ListConnections", o.ListConnectionsRequest(), user=user)
    assert abandoned not in {k.connection_id for k in listed.connections}
