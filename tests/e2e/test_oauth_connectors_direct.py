"""oauth's Connectors service called directly, as the gateway calls it (peer `gateway`, the facts
the gateway verified in x-credex-* metadata), on the real stack: the oauth_connectors documents,
uniqueness of live connectors under concurrent creates, client secrets through store (never in a
reply, a log or an audit event), the audit trail, and the start-up bootstrap from the
environment with two replicas at once, a restart, a changed secret and a partial set.
"""

from __future__ import annotations

import datetime
import secrets
import subprocess
import threading
import uuid

import grpc
import pytest

import credex_api as x
import credex_harness as h

C = grpc.StatusCode
ADMIN = "oauth-admin"
USER = "oauth-user"
LOGS = ("oauth", "store", "gateway", "keywrap")


def admin_md(user: str = ADMIN) -> list[tuple[str, str]]:
    return [("x-credex-subject-user-id", user), ("x-credex-platform-admin", "true"),
            ("x-credex-caller-kind", "browser")]


def user_md(user: str = USER) -> list[tuple[str, str]]:
    return [("x-credex-subject-user-id", user), ("x-credex-caller-kind", "browser")]


def oauth(api: x.Api, md, peer: str = "gateway", addr: str | None = None) -> x.Caller:
    return x.Caller(api, peer, list(md), addr or api.stack.addrs["oauth"])


def canary() -> bytes:
    """A client secret that is easy to find anywhere it must not be."""
    return f"oauth-canary-{secrets.token_hex(12)}".encode()


def custom_connector(api: x.Api, key: str | None = None, scopes=("openid", "profile")):
    o = api.pb.oauth
    return o.Connector(
        provider_key=key or f"e2e-{uuid.uuid4().hex[:10]}",
        type=o.CONNECTOR_TYPE_CUSTOM_OAUTH2,
        display_name="e2e custom",
        client_id="e2e-client-id",
        endpoints=o.ConnectorEndpoints(authorization_url="https://idp.e2e.invalid/oauth/authorize",
                                       token_url="https://idp.e2e.invalid/oauth/token",
                                       userinfo_url="https://idp.e2e.invalid/userinfo"),
        redirect_uri="https://app.example.com/oauth/callback",
        scopes=list(scopes),
        account_mapping=o.AccountMapping(account_id_field="sub", account_name_field="name"))


def create(api: x.Api, connector, secret: bytes, md=None, **kw):
    req = api.pb.oauth.CreateConnectorRequest(connector=connector, client_secret=secret)
    return oauth(api, md or admin_md()).call_with("Connectors", "CreateConnector", req, **kw)


def call(api: x.Api, method: str, req, md=None, **kw):
    return oauth(api, md or admin_md()).call("Connectors", method, req, **kw)


def code_of(fn) -> tuple:
    with pytest.raises(grpc.RpcError) as info:
        fn()
    return info.value.code(), x.reason(info.value)


def store_as_oauth(api: x.Api, method: str, req, peer: str = "oauth"):
    """A store call as oauth makes it (peer `oauth`): the only way back to a client secret."""
    s, c = api.pb.store, api.pb.common
    reply = {"Resolve": s.StoreResolveResponse, "GetSecret": c.SecretMetadata}[method]
    fn = api.channel(peer, api.stack.addrs["store"]).unary_unary(
        f"/credex.v1.CredentialStore/{method}", request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=reply.FromString)
    return fn(req, timeout=10)


def caller_ctx(api: x.Api):
    return api.pb.common.CallerContext(caller_kind=api.pb.common.CALLER_KIND_SERVICE, service_id="oauth",
                                       intended_use="e2e_check")


def resolve(api: x.Api, secret_id: str):
    s, c = api.pb.store, api.pb.common
    return store_as_oauth(api, "Resolve", s.StoreResolveRequest(
        caller=caller_ctx(api), secret_id=secret_id, expected_kind=c.SECRET_KIND_OAUTH_CLIENT_SECRET))


def secret_meta(api: x.Api, secret_id: str):
    return store_as_oauth(api, "GetSecret", api.pb.store.StoreGetSecretRequest(caller=caller_ctx(api),
                                                                               secret_id=secret_id))


def connector_events(api: x.Api, connector_id: str, db_name: str | None = None, since=None) -> list[dict]:
    client, db = api.mongo()
    try:
        q = {"resource_type": "oauth_connector", "resource_id": connector_id}
        if since is not None:
            q["created_at"] = {"$gte": since}
        return list(db.credential_audit_events.find(q))
    finally:
        client.close()


def assert_no_leak(api: x.Api, value: bytes, extra_logs=()) -> None:
    forms = x.encodings(value)
    for name in LOGS:
        text = api.stack.log_text(name).encode()
        for f in forms:
            assert f not in text, f"client secret found in {name}'s log"
    for path in extra_logs:
        text = path.read_bytes()
        for f in forms:
            assert f not in text, f"client secret found in {path}"
    client, db = api.mongo()
    try:
        for doc in db.credential_audit_events.find({}):
            flat = repr(doc).encode()
            for f in forms:
                assert f not in flat, "client secret found in an audit event"
        for doc in db.oauth_connectors.find({}):
            assert all(f not in repr(doc).encode() for f in forms), "client secret in a connector document"
    finally:
        client.close()


# ---- lifecycle ------------------------------------------------------------------------------------

def test_lifecycle_as_admin(api):
    o = api.pb.oauth
    secret = canary()
    c, call_info = create(api, custom_connector(api), secret)
    assert secret not in c.SerializeToString()
    assert c.status == o.CONNECTOR_STATUS_DISABLED
    assert c.client_secret_masked and c.client_secret_id.startswith("sec_")
    assert c.scopes_version == 1 and c.created_by == ADMIN
    cid = c.connector_id

    got = call(api, "GetConnector", o.GetConnectorRequest(connector_id=cid))
    assert got.connector_id == cid and got.client_secret_masked
    listed = call(api, "ListConnectors", o.ListConnectorsRequest(include_disabled=True))
    assert cid in [k.connector_id for k in listed.connectors]
    assert cid not in [k.connector_id for k in
                       call(api, "ListConnectors", o.ListConnectorsRequest()).connectors]

    en = call(api, "EnableConnector", o.EnableConnectorRequest(connector_id=cid, team_ids=["team-a", "team-b"]))
    assert en.status == o.CONNECTOR_STATUS_ACTIVE and list(en.enabled_for) == ["team-a", "team-b"]
    dis = call(api, "DisableConnector", o.DisableConnectorRequest(connector_id=cid, team_ids=["team-a"]))
    assert dis.status == o.CONNECTOR_STATUS_ACTIVE and list(dis.enabled_for) == ["team-b"]
    off = call(api, "DisableConnector", o.DisableConnectorRequest(connector_id=cid))
    assert off.status == o.CONNECTOR_STATUS_DISABLED

    up = call(api, "UpdateConnector", o.UpdateConnectorRequest(
        connector_id=cid, connector=o.Connector(display_name="renamed"), update_mask=["display_name"]))
    assert up.connector.display_name == "renamed" and up.reconsent_required_count == 0
    assert up.connector.scopes_version == 1
    # A custom connector authenticates with client_secret_basic unless told otherwise.
    assert c.client_auth_method == "client_secret_basic"
    post = call(api, "UpdateConnector", o.UpdateConnectorRequest(
        connector_id=cid, connector=o.Connector(client_auth_method="client_secret_post"),
        update_mask=["client_auth_method"])).connector
    assert post.client_auth_method == "client_secret_post"
    assert call(api, "GetConnector", o.GetConnectorRequest(connector_id=cid)).client_auth_method == \
        "client_secret_post"

    gone = call(api, "DeleteConnector", o.DeleteConnectorRequest(connector_id=cid))
    assert gone.status == o.CONNECTOR_STATUS_DELETED
    again = call(api, "DeleteConnector", o.DeleteConnectorRequest(connector_id=cid))  # idempotent
    assert again.status == o.CONNECTOR_STATUS_DELETED
    assert cid not in [k.connector_id for k in
                       call(api, "ListConnectors", o.ListConnectorsRequest(include_disabled=True)).connectors]
    # The client secret went with it.
    assert secret_meta(api, c.client_secret_id).status == api.pb.common.SECRET_STATUS_DELETED
    assert code_of(lambda: call(api, "UpdateConnector", o.UpdateConnectorRequest(
        connector_id=cid, connector=o.Connector(display_name="x"), update_mask=["display_name"]))) == \
        (C.FAILED_PRECONDITION, "failed_precondition")

    events = connector_events(api, cid)
    kinds = [(e["event_type"], e["outcome"]) for e in events]
    for t in ("connector.created", "connector.enabled", "connector.disabled", "connector.updated",
              "connector.deleted"):
        assert (t, "success") in kinds, kinds
    assert all(e["actor_id"] == ADMIN for e in events)
    updated = [e["attributes"]["changed_fields"] for e in events
               if (e["event_type"], e["outcome"]) == ("connector.updated", "success")]
    assert updated == ["display_name", "client_auth_method"], updated


def test_refused_without_admin_and_from_other_peers(api):
    o = api.pb.oauth
    c, _ = create(api, custom_connector(api), canary())
    cid = c.connector_id
    # No admin flag: every admin method is permission_denied, and audited as a denial.
    assert code_of(lambda: create(api, custom_connector(api), canary(), md=user_md())) == \
        (C.PERMISSION_DENIED, "permission_denied")
    for method, req in (("EnableConnector", o.EnableConnectorRequest(connector_id=cid)),
                        ("DeleteConnector", o.DeleteConnectorRequest(connector_id=cid)),
                        ("TestConnector", o.TestConnectorRequest(connector_id=cid)),
                        ("ListBuiltinProviders", o.ListBuiltinProvidersRequest())):
        assert code_of(lambda: call(api, method, req, md=user_md())) == (C.PERMISSION_DENIED, "permission_denied")
    # An admin flag without the acting user is not enough.
    assert code_of(lambda: call(api, "EnableConnector", o.EnableConnectorRequest(connector_id=cid),
                                md=[("x-credex-platform-admin", "true")])) == \
        (C.PERMISSION_DENIED, "permission_denied")
    denied = [e for e in connector_events(api, cid) if e["outcome"] == "denied"]
    assert {e["event_type"] for e in denied} >= {"connector.enabled", "connector.deleted", "connector.tested"}
    # Users see active connectors only: a disabled one is not found, and not listed.
    assert code_of(lambda: call(api, "GetConnector", o.GetConnectorRequest(connector_id=cid), md=user_md())) == \
        (C.NOT_FOUND, "not_found")
    assert code_of(lambda: call(api, "ListConnectors", o.ListConnectorsRequest(include_disabled=True),
                                md=user_md())) == (C.PERMISSION_DENIED, "permission_denied")
    call(api, "EnableConnector", o.EnableConnectorRequest(connector_id=cid, team_ids=["team-users"]))
    got = call(api, "GetConnector", o.GetConnectorRequest(connector_id=cid), md=user_md())
    assert got.connector_id == cid and got.client_secret_masked
    assert cid in [k.connector_id for k in call(api, "ListConnectors", o.ListConnectorsRequest(),
                                                md=user_md()).connectors]
    # Only the gateway may call oauth at all, whatever the metadata says.
    for peer in ("edge", h.CLI_IDENTITY, "store", x.AGENT):
        code, _ = code_of(lambda: oauth(api, admin_md(), peer=peer).call(
            "Connectors", "GetConnector", o.GetConnectorRequest(connector_id=cid)))
        assert code == C.PERMISSION_DENIED, peer
    call(api, "DeleteConnector", o.DeleteConnectorRequest(connector_id=cid))


def test_parallel_creates_one_wins(api):
    key = f"e2e-race-{uuid.uuid4().hex[:8]}"
    n = 8
    barrier = threading.Barrier(n)
    results: list = [None] * n

    def worker(i: int) -> None:
        barrier.wait()
        try:
            results[i] = create(api, custom_connector(api, key), canary(), timeout=30)[0].connector_id
        except grpc.RpcError as e:
            results[i] = (e.code(), x.reason(e))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    won = [r for r in results if isinstance(r, str)]
    lost = [r for r in results if not isinstance(r, str)]
    assert len(won) == 1, results
    assert lost == [(C.ABORTED, "conflict")] * (n - 1), results
    client, db = api.mongo()
    try:
        live = list(db.oauth_connectors.find({"provider_key": key, "status": {"$ne": "deleted"}}))
        assert [d["connector_id"] for d in live] == won
        assert live[0]["live_key"] == f"{key}/custom_oauth2"
    finally:
        client.close()
    # The losers stored no secret: exactly one client secret for this provider key.
    o = api.pb.oauth
    gone = call(api, "DeleteConnector", o.DeleteConnectorRequest(connector_id=won[0]))
    client, db = api.mongo()
    try:
        assert db.oauth_connectors.find_one({"_id": won[0]})["live_key"] == f"deleted/{won[0]}"
        assert db.credential_secret_refs.count_documents({"provider": key}) == 1
    finally:
        client.close()
    # Deleted frees the key: the same provider and type can be created again.
    again, _ = create(api, custom_connector(api, key), canary())
    assert again.connector_id != gone.connector_id
    assert code_of(lambda: create(api, custom_connector(api, key), canary())) == (C.ABORTED, "conflict")
    call(api, "DeleteConnector", o.DeleteConnectorRequest(connector_id=again.connector_id))


def test_client_secret_only_through_store(api):
    o = api.pb.oauth
    first, second = canary(), canary()
    c, _ = create(api, custom_connector(api), first)
    cid, sid = c.connector_id, c.client_secret_id
    res = resolve(api, sid)
    assert res.value == first and res.version == 1 and res.connector_id == cid
    meta = secret_meta(api, sid)
    assert meta.owner.owner_type == api.pb.common.OWNER_TYPE_PLATFORM and meta.owner.owner_id == "platform"
    assert meta.kind == api.pb.common.SECRET_KIND_OAUTH_CLIENT_SECRET

    # The gateway (which serves secret values to agents) cannot resolve it: store's kind policy.
    gw_req = api.pb.store.StoreResolveRequest(caller=api.pb.common.CallerContext(
        caller_kind=api.pb.common.CALLER_KIND_SERVICE, service_id=x.AGENT, intended_use="e2e_check",
        resource_context=api.pb.common.ResourceContext(resource_type="mcp_server", resource_id="e2e")),
        secret_id=sid)
    assert code_of(lambda: store_as_oauth(api, "Resolve", gw_req, peer="gateway")) == \
        (C.PERMISSION_DENIED, "permission_denied")

    up = call(api, "UpdateConnector", o.UpdateConnectorRequest(connector_id=cid, update_mask=["client_secret"],
                                                               client_secret=second))
    assert second not in up.SerializeToString() and up.connector.client_secret_id == sid
    res = resolve(api, sid)
    assert res.value == second and res.version == 2
    ev = [e for e in connector_events(api, cid) if e["event_type"] == "connector.updated"]
    assert [e["attributes"]["changed_fields"] for e in ev] == ["client_secret"]
    # "client_secret" named without a value is refused and changes nothing.
    assert code_of(lambda: call(api, "UpdateConnector", o.UpdateConnectorRequest(
        connector_id=cid, update_mask=["client_secret"]))) == (C.INVALID_ARGUMENT, "invalid_argument")
    for reply in (call(api, "GetConnector", o.GetConnectorRequest(connector_id=cid)),
                  call(api, "ListConnectors", o.ListConnectorsRequest(include_disabled=True)),
                  call(api, "TestConnector", o.TestConnectorRequest(connector_id=cid))):
        raw = reply.SerializeToString()
        assert first not in raw and second not in raw
    call(api, "DeleteConnector", o.DeleteConnectorRequest(connector_id=cid))
    assert_no_leak(api, first)
    assert_no_leak(api, second)


def test_scope_change_bumps_scopes_version(api):
    o = api.pb.oauth
    c, _ = create(api, custom_connector(api, scopes=("openid", "profile")), canary())
    cid = c.connector_id

    def set_scopes(scopes):
        return call(api, "UpdateConnector", o.UpdateConnectorRequest(
            connector_id=cid, connector=o.Connector(scopes=scopes), update_mask=["scopes"])).connector

    assert set_scopes(["openid", "profile", "email"]).scopes_version == 2
    assert set_scopes(["email", "openid", "profile"]).scopes_version == 2  # same set: no change
    assert set_scopes(["openid"]).scopes_version == 3
    ev = [e for e in connector_events(api, cid) if e["event_type"] == "connector.updated"]
    assert [e["attributes"]["scopes_version"] for e in ev] == ["2", "2", "3"], ev
    call(api, "DeleteConnector", o.DeleteConnectorRequest(connector_id=cid))


def test_test_connector_checks_without_a_secret(api):
    o = api.pb.oauth
    c, _ = create(api, custom_connector(api), canary())
    r = call(api, "TestConnector", o.TestConnectorRequest(connector_id=c.connector_id))
    checks = {k.name: k for k in r.checks}
    assert [k.name for k in r.checks] == ["https", "ssrf", "token_endpoint"], r
    assert checks["https"].passed
    # A .invalid host never answers (nor does a provider client that is not available).
    assert (checks["token_endpoint"].passed, checks["token_endpoint"].reason) == (False, "unavailable")
    assert not r.ok and r.tested_at_ms > 0
    ev = [e for e in connector_events(api, c.connector_id) if e["event_type"] == "connector.tested"]
    assert len(ev) == 1 and ev[0]["outcome"] == "success"
    assert ev[0]["attributes"]["failed_checks"].endswith("token_endpoint")

    # Stored URLs are screened again: one put right into the database that points at the cloud
    # metadata address fails "ssrf" and is never called.
    client, db = api.mongo()
    try:
        db.oauth_connectors.update_one({"_id": c.connector_id},
                                       {"$set": {"token_url": "https://169.254.169.254/latest/token"}})
    finally:
        client.close()
    r = call(api, "TestConnector", o.TestConnectorRequest(connector_id=c.connector_id))
    checks = {k.name: k for k in r.checks}
    assert checks["https"].passed and not r.ok
    assert (checks["ssrf"].passed, checks["ssrf"].reason) == (False, "ssrf_blocked")
    assert (checks["token_endpoint"].passed, checks["token_endpoint"].reason) == (False, "ssrf_blocked")
    call(api, "DeleteConnector", o.DeleteConnectorRequest(connector_id=c.connector_id))


def test_stored_document_is_read_strictly(api):
    o = api.pb.oauth
    c, _ = create(api, custom_connector(api), canary())
    client, db = api.mongo()
    try:
        db.oauth_connectors.update_one({"_id": c.connector_id}, {"$set": {"scopes_version": "2"}})
    finally:
        client.close()
    assert code_of(lambda: call(api, "GetConnector", o.GetConnectorRequest(connector_id=c.connector_id))) == \
        (C.DATA_LOSS, "integrity_error")
    ev = [e for e in connector_events(api, c.connector_id) if e["event_type"] == "connector.read"]
    assert [(e["outcome"], e["reason"]) for e in ev] == [("failed", "integrity_error")]
    client, db = api.mongo()
    try:
        db.oauth_connectors.update_one({"_id": c.connector_id}, {"$set": {"scopes_version": 1}})
    finally:
        client.close()
    call(api, "DeleteConnector", o.DeleteConnectorRequest(connector_id=c.connector_id))


def test_create_leaves_nothing_when_the_secret_cannot_be_stored(api, stack):
    # An oauth whose store is unreachable: the document it inserted is removed again.
    dead = f"127.0.0.1:{h.free_ports(1)[0]}"
    inst = stack.spawn("oauth", CREDEX_STORE_ADDR=dead)
    stack.wait_healthy(inst)
    key = f"e2e-nostore-{uuid.uuid4().hex[:8]}"
    try:
        req = api.pb.oauth.CreateConnectorRequest(connector=custom_connector(api, key), client_secret=canary())
        assert code_of(lambda: oauth(api, admin_md(), addr=inst.addr).call(
            "Connectors", "CreateConnector", req, timeout=30)) == (C.UNAVAILABLE, "unavailable")
    finally:
        assert inst.stop() == 0
    client, db = api.mongo()
    try:
        assert db.oauth_connectors.count_documents({"provider_key": key}) == 0
    finally:
        client.close()
    # The pair is free: the real oauth creates it.
    c, _ = create(api, custom_connector(api, key), canary())
    call(api, "DeleteConnector", api.pb.oauth.DeleteConnectorRequest(connector_id=c.connector_id))


# ---- bootstrap ------------------------------------------------------------------------------------

def _init_indexes(stack: h.Stack, db_name: str) -> None:
    env = h.clean_base_env() | stack.env | {
        "CREDEX_TLS_CERT": str(stack.pki.cert(h.CLI_IDENTITY)),
        "CREDEX_TLS_KEY": str(stack.pki.key(h.CLI_IDENTITY)),
        "CREDEX_MONGO_DB": db_name,
    }
    res = subprocess.run([str(stack.credexctl), "db", "init-indexes"], env=env, capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr


def _bootstrap_env(db_name: str, github_secret: bytes, webex_secret: bytes,
                   webex_client: str = "e2e-webex-client") -> dict[str, str]:
    return {
        "CREDEX_MONGO_DB": db_name,
        "CREDENTIAL_BOOTSTRAP_OAUTH_CONNECTORS": "true",
        "GITHUB_CLIENT_ID": "e2e-github-client",
        "GITHUB_CLIENT_SECRET": github_secret.decode(),
        "GITHUB_REDIRECT_URI": "https://app.example.com/oauth/github/callback",
        "WEBEX_CLIENT_ID": webex_client,
        "WEBEX_CLIENT_SECRET": webex_secret.decode(),
        "WEBEX_REDIRECT_URI": "https://app.example.com/oauth/webex/callback",
    }


def _start(stack: h.Stack, n: int, env: dict[str, str]) -> list[h.Instance]:
    insts = [stack.spawn("oauth", **env) for _ in range(n)]
    for inst in insts:
        stack.wait_healthy(inst)
    return insts


def test_bootstrap_replicas_restart_and_rotation(api, stack):
    db_name = f"e2e_boot_{uuid.uuid4().hex[:8]}"
    _init_indexes(stack, db_name)
    gh, wx = canary(), canary()
    since = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=2)

    # Two replicas at once, same environment: one connector per provider, ACTIVE, enabled for nobody.
    replicas = _start(stack, 2, _bootstrap_env(db_name, gh, wx))
    logs = [r.log_path for r in replicas]
    for r in replicas:
        assert r.stop() == 0
    client, _ = api.mongo()
    try:
        db = client[db_name]
        docs = list(db.oauth_connectors.find({"status": {"$ne": "deleted"}}))
        assert sorted(d["provider_key"] for d in docs) == ["github", "webex"], docs
        for d in docs:
            assert d["_id"] == f"builtin-{d['provider_key']}" and d["status"] == "active"
            assert d["enabled_for"] == [] and d["type"] == "built_in" and d["client_secret_id"]
        secret_ids = {d["provider_key"]: d["client_secret_id"] for d in docs}
        versions = {d["provider_key"]: d["version"] for d in docs}
    finally:
        client.close()
    assert resolve(api, secret_ids["github"]).value == gh
    assert resolve(api, secret_ids["webex"]).value == wx
    for key in ("github", "webex"):
        ev = connector_events(api, f"builtin-{key}", since=since)
        assert [(e["event_type"], e["attributes"]["action"]) for e in ev] == \
            [("connector.bootstrapped", "created")], ev

    # A restart changes nothing: no write, no audit event, the same secret version.
    replicas = _start(stack, 1, _bootstrap_env(db_name, gh, wx))
    logs += [r.log_path for r in replicas]
    assert replicas[0].stop() == 0
    client, _ = api.mongo()
    try:
        db = client[db_name]
        assert {d["provider_key"]: d["version"] for d in db.oauth_connectors.find({})} == versions
    finally:
        client.close()
    for key in ("github", "webex"):
        assert len(connector_events(api, f"builtin-{key}", since=since)) == 1
        assert secret_meta(api, secret_ids[key]).current_version == 1

    # A changed secret rotates once and a changed client id is written once, even with two
    # replicas starting at once.
    gh2 = canary()
    replicas = _start(stack, 2, _bootstrap_env(db_name, gh2, wx, webex_client="e2e-webex-client-2"))
    logs += [r.log_path for r in replicas]
    for r in replicas:
        assert r.stop() == 0
    assert secret_meta(api, secret_ids["github"]).current_version == 2
    assert resolve(api, secret_ids["github"]).value == gh2
    assert secret_meta(api, secret_ids["webex"]).current_version == 1
    ev = connector_events(api, "builtin-github", since=since)
    assert [(e["attributes"]["action"], e["attributes"]["changed_fields"]) for e in ev] == \
        [("created", ""), ("updated", "client_secret")], ev
    # Both replicas may write the same new client id: FerretDB's conditional updates are not
    # atomic (docs/DATA_MODEL.md), so the version check cannot make one of them lose there; the
    # end state is the same either way and every write is audited.
    ev = connector_events(api, "builtin-webex", since=since)
    actions = [(e["attributes"]["action"], e["attributes"]["changed_fields"]) for e in ev]
    assert actions[0] == ("created", "") and 1 <= len(actions) - 1 <= 2, ev
    assert set(actions[1:]) == {("updated", "client_id")}, ev
    client, _ = api.mongo()
    try:
        assert client[db_name].oauth_connectors.find_one({"_id": "builtin-webex"})["client_id"] == \
            "e2e-webex-client-2"
    finally:
        client.close()

    for value in (gh, wx, gh2):
        assert_no_leak(api, value, extra_logs=logs)


def test_bootstrap_partial_set_fails_start_up(stack):
    env = {"CREDENTIAL_BOOTSTRAP_OAUTH_CONNECTORS": "true", "CREDEX_MONGO_DB": f"e2e_boot_{uuid.uuid4().hex[:8]}",
           "GITHUB_CLIENT_ID": "e2e-github-client",
           "GITHUB_REDIRECT_URI": "https://app.example.com/oauth/github/callback"}
    inst = stack.spawn("oauth", **env)
    code = inst.wait_exit(60)
    assert code != 0
    log = inst.log_text()
    assert "GITHUB_CLIENT_SECRET" in log and "server.start_failed" in log, log


def test_bootstrap_store_outage_fails_start_up(stack):
    dead = f"127.0.0.1:{h.free_ports(1)[0]}"
    env = {"CREDENTIAL_BOOTSTRAP_OAUTH_CONNECTORS": "true", "CREDEX_MONGO_DB": f"e2e_boot_{uuid.uuid4().hex[:8]}",
           "CREDEX_STORE_ADDR": dead, "WEBEX_CLIENT_ID": "e2e-webex-client",
           "WEBEX_CLIENT_SECRET": canary().decode(),
           "WEBEX_REDIRECT_URI": "https://app.example.com/oauth/webex/callback"}
    inst = stack.spawn("oauth", **env)
    code = inst.wait_exit(90)
    assert code != 0
    log = inst.log_text()
    assert "store is unavailable" in log and "webex" in log, log
    assert env["WEBEX_CLIENT_SECRET"] not in log
