"""Issue 4, deliverable 6: retrieval by reference, the allow/deny matrix, and deny before decrypt
shown from outside.

The agent runtime is a real mTLS peer (spiffe://credex.local/agent-runtime) with a service JWT
(azp = agent-runtime) and, when acting for a user, the user's token; the platform allow-list
grant (service:agent-runtime retriever platform:credex) is an OpenFGA tuple the test writes.

Deny before decrypt, from outside: every service writes one JSON `rpc.done` access-log line per
call with its correlation_id. For each denied call (unique x-correlation-id) no line of keywrap's
log carries that id, and store's log shows no call for it other than the audit append of the
denial itself (AppendAuditEvent: the gateway audits every denial through store), while the
gateway's log does carry it (so the id is logged readably). Positive controls: an allowed
retrieval's id appears in store's log (Resolve) and a create's id in keywrap's (GenerateDataKey);
through the `nocache` gateway + store pair (no data-key cache, so every decrypt must unwrap) an
allowed retrieval's id appears in both store (Resolve) and keywrap (Unwrap), and each kind of
denied call in neither.

Correlation ids are 32 lowercase hex chars: the logger redacts random-looking mixed runs, so a
prefixed id would be logged as "[redacted]" and every absence check would pass vacuously.
"""

from __future__ import annotations

import re
import time
import uuid

import grpc
import pytest

import credex_api as x
import credex_harness as h

C = grpc.StatusCode
RESOLVE = "/credex.v1.CredentialStore/Resolve"
AUDIT_APPEND = "/credex.v1.CredentialStore/AppendAuditEvent"


def rpc_error(fn) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        fn()
    return info.value


def value_of(tag: str) -> bytes:
    return f"ghp_e2e_{tag}_{uuid.uuid4().hex}".encode()


@pytest.fixture
def owned(api):
    """(owner user id, secret id, value): a fresh secret of a fresh user, and the platform
    retriever grant for agent-runtime."""
    api.grant_retriever(x.AGENT)
    owner = x.uid("olive")
    value = value_of("owned")
    sid = api.ui(owner).create(value, allowed_uses=[]).secret.secret_id
    return owner, sid, value


def denied_without_store(stack, fn, expect: set[tuple[grpc.StatusCode, str]]) -> grpc.RpcError:
    """Run fn(cid) with a fresh correlation id; it must fail with one of `expect`, and neither
    store (apart from the audit append of the denial) nor keywrap may have seen that id."""
    corr = x.cid()
    err = rpc_error(lambda: fn(corr))
    assert (err.code(), x.reason(err)) in expect, x.describe(err)
    # The id is logged readably (the gateway's access line), so its absence below means something.
    assert x.log_lines_with(stack.log_path("gateway"), corr), f"gateway log has no line for {corr}"
    store_calls = [line.get("method", line) for line in x.log_lines_with(stack.log_path("store"), corr)
                   if line.get("event", "rpc.done") == "rpc.done" and line.get("method") != AUDIT_APPEND]
    assert not store_calls, f"a denied call ({x.describe(err)}) reached store: {store_calls}"
    keywrap_lines = x.log_lines_with(stack.log_path("keywrap"), corr)
    assert not keywrap_lines, f"a denied call ({x.describe(err)}) reached keywrap: {keywrap_lines}"
    return err


NOT_FOUND = {(C.NOT_FOUND, "not_found")}
BROWSER = {(C.PERMISSION_DENIED, "browser_denied")}
UNAUTHENTICATED = {(C.UNAUTHENTICATED, "unauthenticated")}
INVALID = {(C.INVALID_ARGUMENT, "invalid_argument")}
PERMISSION = {(C.PERMISSION_DENIED, "permission_denied")}


def normalized(err: grpc.RpcError, *ids: str) -> tuple:
    details = err.details() or ""
    for i in ids:
        details = details.replace(i, "<id>")
    return err.code(), x.reason(err), details


# ---- allowed ------------------------------------------------------------------------------------

def test_owner_retrieves_through_the_agent_runtime(api, stack, owned):
    owner, sid, value = owned
    corr = x.cid()
    reply = api.agent(owner).retrieve(sid, cid=corr)
    assert reply.secret_id == sid
    assert reply.value == value
    assert reply.version == 1
    assert reply.kind == api.pb.common.SECRET_KIND_API_KEY
    # Positive control of the deny-before-decrypt checks: an allowed call reaches store.
    methods = [line.get("method") for line in x.log_lines_with(stack.log_path("store"), corr)]
    assert RESOLVE in methods, f"store log has no Resolve for {corr}: {methods}"
    # The gateway logs the retrieval once: its access line says what was served to whom.
    lines = x.log_lines_with(stack.log_path("gateway"), corr)
    assert len(lines) == 1, lines
    assert lines[0]["event"] == "rpc.done" and lines[0]["method"] == "/credex.v1.Retrieval/Retrieve"
    assert (lines[0]["secret_id"], lines[0]["service_id"], lines[0]["user"], lines[0]["version"]) == (
        sid, x.AGENT, owner, 1), lines[0]


def test_correlation_ids_reach_keywrap(api, stack):
    """Positive control for keywrap: a create's id shows up in keywrap's access log (its data key
    comes from GenerateDataKey), so absence of a denied call's id there means something."""
    corr = x.cid()
    api.ui(x.uid("kim")).create(value_of("kw"), cid=corr)
    methods = [line.get("method") for line in x.log_lines_with(stack.log_path("keywrap"), corr)]
    assert "/credex.v1.KeyWrap/GenerateDataKey" in methods, methods


def test_rotation_is_what_retrieval_returns(api, owned):
    owner, sid, _ = owned
    new = value_of("rotated")
    api.ui(owner).rotate(sid, new, expected_version=1)
    reply = api.agent(owner).retrieve(sid)
    assert (reply.version, reply.value) == (2, new)


def test_deny_before_decrypt_when_every_retrieval_unwraps(api, stack, nocache):
    """Through a gateway whose store has no data-key cache, so that every decrypt is visible as a
    KeyWrap/Unwrap: the allowed call shows up in store (Resolve) and keywrap (Unwrap) with its
    correlation id; each denied call shows up in neither."""
    gateway, store = nocache
    api.grant_retriever(x.AGENT)
    owner = x.uid("nina")
    value = value_of("nocache")
    sid = api.ui(owner).create(value).secret.secret_id
    corr = x.cid()
    assert api.agent(owner, addr=gateway.addr).retrieve(sid, cid=corr).value == value
    assert RESOLVE in [line.get("method") for line in x.log_lines_with(store.log_path, corr)]
    assert "/credex.v1.KeyWrap/Unwrap" in [line.get("method") for line in
                                          x.log_lines_with(stack.log_path("keywrap"), corr)]
    denials = [
        (api.agent(x.uid("otto"), addr=gateway.addr), {}, NOT_FOUND),
        (api.browser(owner, addr=gateway.addr), {}, BROWSER),
        (api.raw(x.AGENT, [("x-credex-user-token", api.tokens.user(owner))], addr=gateway.addr), {}, BROWSER),
        (api.agent(owner, addr=gateway.addr, service_token=api.tokens.service(x.AGENT, aud="other")), {},
         UNAUTHENTICATED),
        (api.agent(owner, addr=gateway.addr), {"resource": None}, INVALID),
        (api.agent(owner, service=x.UNLISTED, addr=gateway.addr), {}, PERMISSION),
    ]
    for caller, kwargs, expect in denials:
        c = x.cid()
        err = rpc_error(lambda: caller.retrieve(sid, cid=c, **kwargs))
        assert (err.code(), x.reason(err)) in expect, x.describe(err)
        assert x.log_lines_with(gateway.log_path, c), "the gateway did not log the denied call"
        reached = [line.get("method") for line in x.log_lines_with(store.log_path, c)
                   if line.get("method") != AUDIT_APPEND]
        assert not reached, f"denied call ({x.describe(err)}) reached store: {reached}"
        assert not x.log_lines_with(stack.log_path("keywrap"), c), "denied call reached keywrap"


# ---- who is denied ------------------------------------------------------------------------------

def test_other_user_is_denied_like_a_nonexistent_secret(api, stack, owned):
    _, sid, value = owned
    mallory = x.uid("mallory")
    agent = api.agent(mallory)
    denied = denied_without_store(stack, lambda c: agent.retrieve(sid, cid=c), NOT_FOUND)
    missing_id = "s" + uuid.uuid4().hex
    missing = denied_without_store(stack, lambda c: agent.retrieve(missing_id, cid=c), NOT_FOUND)
    assert normalized(denied, sid) == normalized(missing, missing_id)
    assert value not in (denied.details() or "").encode()
    # The same through the Secrets API: no metadata either.
    ui = api.ui(mallory)
    a = rpc_error(lambda: ui.get(sid))
    b = rpc_error(lambda: ui.get(missing_id))
    assert normalized(a, sid) == normalized(b, missing_id)
    assert (a.code(), x.reason(a)) == (C.NOT_FOUND, "not_found")
    assert sid not in [s.secret_id for s in ui.list().secrets]


def test_other_user_cannot_manage_or_probe_a_secret(api, owned):
    """Every lifecycle call of a stranger on someone else's secret looks like the secret does not
    exist, and changes nothing."""
    owner, sid, value = owned
    g = api.pb.gateway
    ui = api.ui(x.uid("mallory"))
    missing_id = "sec_" + "0" * 26
    calls = {
        "get": lambda i: ui.get(i),
        "versions": lambda i: ui.versions(i),
        "rotate": lambda i: ui.rotate(i, value_of("evil")),
        "revoke": lambda i: ui.revoke(i),
        "delete": lambda i: ui.delete(i),
        "share": lambda i: ui.share(i, g.GRANTEE_TYPE_USER, "mallory-friend", g.SHARE_ROLE_USER),
        "shares": lambda i: ui.call("Secrets", "ListSecretShares", g.ListSecretSharesRequest(secret_id=i)),
    }
    for name, call in calls.items():
        real = rpc_error(lambda: call(sid))
        fake = rpc_error(lambda: call(missing_id))
        assert (real.code(), x.reason(real)) == (C.NOT_FOUND, "not_found"), (name, x.describe(real))
        assert normalized(real, sid) == normalized(fake, missing_id), name
    meta = api.ui(owner).get(sid)
    assert (meta.current_version, meta.status) == (1, api.pb.common.SECRET_STATUS_ACTIVE)
    assert api.agent(owner).retrieve(sid).value == value


def test_share_with_a_user_takes_effect_at_once(api, stack, owned):
    owner, sid, value = owned
    bob = x.uid("bob")
    g = api.pb.gateway
    agent = api.agent(bob)
    denied_without_store(stack, lambda c: agent.retrieve(sid, cid=c), NOT_FOUND)
    shared = api.ui(owner).share(sid, g.GRANTEE_TYPE_USER, bob, g.SHARE_ROLE_USER)
    assert shared.applied is True
    assert agent.retrieve(sid).value == value
    assert sid in [s.secret_id for s in api.ui(bob).list().secrets]
    removed = api.ui(owner).unshare(sid, g.GRANTEE_TYPE_USER, bob)
    assert removed.removed_count >= 1
    denied_without_store(stack, lambda c: agent.retrieve(sid, cid=c), NOT_FOUND)


def test_share_with_a_team_takes_effect_at_once(api, stack, owned):
    owner, sid, value = owned
    team, carol = x.uid("team"), x.uid("carol")
    api.add_team_member(team, carol)
    g = api.pb.gateway
    agent = api.agent(carol)
    denied_without_store(stack, lambda c: agent.retrieve(sid, cid=c), NOT_FOUND)
    api.ui(owner).share(sid, g.GRANTEE_TYPE_TEAM, team, g.SHARE_ROLE_USER)
    assert agent.retrieve(sid).value == value
    api.ui(owner).unshare(sid, g.GRANTEE_TYPE_TEAM, team)
    denied_without_store(stack, lambda c: agent.retrieve(sid, cid=c), NOT_FOUND)


def test_preview_share_changes_nothing(api, stack, owned):
    owner, sid, _ = owned
    dave = x.uid("dave")
    g = api.pb.gateway
    req = g.ShareSecretRequest(secret_id=sid, grantee=g.Grantee(grantee_type=g.GRANTEE_TYPE_USER, grantee_id=dave),
                               role=g.SHARE_ROLE_USER, preview_only=True)
    reply = api.ui(owner).call("Secrets", "ShareSecret", req)
    assert reply.applied is False
    denied_without_store(stack, lambda c: api.agent(dave).retrieve(sid, cid=c), NOT_FOUND)


def test_service_grant_lets_the_service_retrieve_for_itself(api, stack, owned):
    owner, sid, value = owned
    g = api.pb.gateway
    alone = api.agent()  # service JWT only: caller kind SERVICE
    denied_without_store(stack, lambda c: alone.retrieve(sid, cid=c), NOT_FOUND | PERMISSION)
    api.ui(owner).share(sid, g.GRANTEE_TYPE_SERVICE, x.AGENT, g.SHARE_ROLE_USER)
    assert alone.retrieve(sid).value == value


def test_revoked_secret_is_not_retrievable(api, owned):
    owner, sid, _ = owned
    api.ui(owner).revoke(sid)
    err = rpc_error(lambda: api.agent(owner).retrieve(sid))
    assert (err.code(), x.reason(err)) == (C.FAILED_PRECONDITION, "failed_precondition"), x.describe(err)


def test_intended_use_outside_allowed_uses_is_denied(api):
    api.grant_retriever(x.AGENT)
    owner = x.uid("uma")
    value = value_of("uses")
    sid = api.ui(owner).create(value, allowed_uses=["http_authorization_header"]).secret.secret_id
    agent = api.agent(owner)
    assert agent.retrieve(sid, intended_use="http_authorization_header").value == value
    err = rpc_error(lambda: agent.retrieve(sid, intended_use="mcp_server_env"))
    assert (err.code(), x.reason(err)) == (C.PERMISSION_DENIED, "permission_denied"), x.describe(err)
    assert value not in (err.details() or "").encode()


def test_retrievals_and_denials_are_audited_without_material(api, owned):
    owner, sid, value = owned
    ok_cid, deny_cid = x.cid(), x.cid()
    api.agent(owner).retrieve(sid, cid=ok_cid)
    rpc_error(lambda: api.agent(x.uid("eve")).retrieve(sid, cid=deny_cid))
    client, db = api.mongo()
    with client:
        events = db.credential_audit_events

        def retrieved():
            return [e for e in events.find({"correlation_id": ok_cid})
                    if e.get("event_type") == "secret.retrieved" and e.get("outcome") == "success"]

        def denied():
            return [e for e in events.find({"correlation_id": deny_cid})
                    if e.get("outcome") == "denied"]

        ok = x.wait_until(retrieved, 10, what="secret.retrieved audit event")[0]
        assert (ok.get("resource_type"), ok.get("resource_id")) == ("secret_ref", sid), ok
        assert ok.get("subject_user_id") == owner and ok.get("peer") == x.AGENT, ok
        assert ok.get("intended_use") == x.DEFAULT_USE, ok
        no = x.wait_until(denied, 10, what="audit event of the denial")[0]
        assert no.get("reason") in ("not_found", "permission_denied"), no
        assert no.get("resource_id") == sid, no
        for e in [*events.find({"correlation_id": ok_cid}), *events.find({"correlation_id": deny_cid}),
                  *events.find({"resource_id": sid})]:
            flat = repr(e).encode()
            assert not [f for f in x.encodings(value) if f in flat], f"audit event holds the value: {e}"


def test_team_owned_secret(api, stack):
    api.grant_retriever(x.AGENT)
    team, admin, member, outsider = x.uid("squad"), x.uid("adam"), x.uid("mia"), x.uid("otis")
    api.fga_write([(f"user:{admin}", "admin", f"team:{team}"), (f"user:{member}", "member", f"team:{team}")])
    c = api.pb.common
    value = value_of("team")
    created = api.ui(admin).create(value, owner=c.Owner(owner_type=c.OWNER_TYPE_TEAM, owner_id=team))
    sid = created.secret.secret_id
    assert (created.secret.owner.owner_type, created.secret.owner.owner_id) == (c.OWNER_TYPE_TEAM, team)
    assert api.agent(member).retrieve(sid).value == value
    denied_without_store(stack, lambda cid_: api.agent(outsider).retrieve(sid, cid=cid_), NOT_FOUND)
    # Only the team's admins create in its name: neither an outsider nor a plain member.
    for who in (outsider, member):
        err = rpc_error(lambda: api.ui(who).create(value_of("team2"),
                                                   owner=c.Owner(owner_type=c.OWNER_TYPE_TEAM, owner_id=team)))
        assert err.code() == C.PERMISSION_DENIED, x.describe(err)


def test_share_roles(api, owned):
    owner, sid, value = owned
    g = api.pb.gateway
    user_role, manager = x.uid("ulla"), x.uid("manny")
    api.ui(owner).share(sid, g.GRANTEE_TYPE_USER, user_role, g.SHARE_ROLE_USER)
    api.ui(owner).share(sid, g.GRANTEE_TYPE_USER, manager, g.SHARE_ROLE_MANAGER)
    # USER: use and metadata, but no rotation or sharing.
    assert api.ui(user_role).get(sid).secret_id == sid
    err = rpc_error(lambda: api.ui(user_role).rotate(sid, value_of("nope")))
    assert (err.code(), x.reason(err)) == (C.PERMISSION_DENIED, "permission_denied"), x.describe(err)
    err = rpc_error(lambda: api.ui(user_role).share(sid, g.GRANTEE_TYPE_USER, x.uid("z"), g.SHARE_ROLE_USER))
    assert (err.code(), x.reason(err)) == (C.PERMISSION_DENIED, "permission_denied"), x.describe(err)
    # MANAGER: rotates, and what it stored is what the owner's runtime gets.
    new = value_of("by-manager")
    assert api.ui(manager).rotate(sid, new, expected_version=1).secret.current_version == 2
    assert api.agent(owner).retrieve(sid).value == new
    shares = api.ui(owner).call("Secrets", "ListSecretShares", g.ListSecretSharesRequest(secret_id=sid)).shares
    roles = {(s.grantee.grantee_id, s.role) for s in shares}
    assert {(owner, g.SHARE_ROLE_OWNER), (user_role, g.SHARE_ROLE_USER), (manager, g.SHARE_ROLE_MANAGER)} <= roles
    # The owner cannot be removed.
    err = rpc_error(lambda: api.ui(owner).unshare(sid, g.GRANTEE_TYPE_USER, owner, g.SHARE_ROLE_OWNER))
    assert (err.code(), x.reason(err)) == (C.INVALID_ARGUMENT, "invalid_argument"), x.describe(err)


def test_values_round_trip_byte_exact(api):
    """Binary values of any byte, up to the 64 KiB limit, come back exactly."""
    api.grant_retriever(x.AGENT)
    owner = x.uid("bina")
    ui, agent = api.ui(owner), api.agent(owner)
    for value in (bytes(range(256)) * 4, b"\x00", bytes([0xFF]) * 65536, "pässwörd-✓".encode()):
        sid = ui.create(value).secret.secret_id
        assert agent.retrieve(sid).value == value, len(value)


def test_deleted_secret_is_not_retrievable(api, owned):
    owner, sid, value = owned
    api.ui(owner).delete(sid)
    err = rpc_error(lambda: api.agent(owner).retrieve(sid))
    assert (err.code(), x.reason(err)) in NOT_FOUND | {(C.FAILED_PRECONDITION, "failed_precondition")}, \
        x.describe(err)
    assert value not in (err.details() or "").encode()


def test_delete_drops_every_grant_and_nothing_is_decrypted(api, stack, nocache):
    """Delete leaves only the owner and platform links (the gateway keeps them so the owner sees
    the tombstone): a former grantee is denied at the gateway, and the owner's retrieval of the
    tombstone is refused by store before any unwrap (nothing in keywrap's log, through a store
    without DEK cache, where a decrypt would have to unwrap)."""
    gateway, _ = nocache
    api.grant_retriever(x.AGENT)
    owner, friend = x.uid("dina"), x.uid("fred")
    g = api.pb.gateway
    sid = api.ui(owner).create(value_of("tomb")).secret.secret_id
    api.ui(owner).share(sid, g.GRANTEE_TYPE_USER, friend, g.SHARE_ROLE_USER)
    api.ui(owner).share(sid, g.GRANTEE_TYPE_SERVICE, x.AGENT, g.SHARE_ROLE_USER)
    api.ui(owner).delete(sid)
    left = {relation for _, relation, _ in api.fga_read(f"secret_ref:{sid}")}
    assert left <= {"owner", "platform"}, f"grants left on the deleted secret_ref: {left}"
    friend_agent = api.agent(friend)
    denied_without_store(stack, lambda c: friend_agent.retrieve(sid, cid=c), NOT_FOUND)
    c = x.cid()
    err = rpc_error(lambda: api.agent(owner, addr=gateway.addr).retrieve(sid, cid=c))
    assert (err.code(), x.reason(err)) in NOT_FOUND | {(C.FAILED_PRECONDITION, "failed_precondition")}, \
        x.describe(err)
    assert not x.log_lines_with(stack.log_path("keywrap"), c), "a deleted secret reached keywrap"


# ---- who is refused before anything else --------------------------------------------------------

def test_browser_marked_by_the_edge_is_browser_denied(api, stack, owned):
    owner, sid, _ = owned
    browser = api.browser(owner)
    denied_without_store(stack, lambda c: browser.retrieve(sid, cid=c), BROWSER)
    # ... even with a valid service JWT on top: the edge's mark wins.
    marked = api.raw("edge", [("authorization", f"Bearer {api.tokens.service('edge')}"),
                              ("x-credex-user-token", api.tokens.user(owner)), ("x-credex-caller", "browser")])
    denied_without_store(stack, lambda c: marked.retrieve(sid, cid=c), BROWSER)
    # From the edge, no mark at all counts as browser too.
    unmarked = api.raw("edge", [("x-credex-user-token", api.tokens.user(owner))])
    denied_without_store(stack, lambda c: unmarked.retrieve(sid, cid=c), BROWSER)


def test_browser_may_create_and_rotate_but_not_read(api, stack):
    user = x.uid("bea")
    browser = api.browser(user)
    first, second = value_of("b1"), value_of("b2")
    created = browser.create(first)
    sid = created.secret.secret_id
    rotated = browser.rotate(sid, second, expected_version=1)
    assert rotated.secret.current_version == 2
    listed = browser.list()
    for m in (created, rotated, browser.get(sid), listed):
        raw = m.SerializeToString()
        assert first not in raw and second not in raw
    denied_without_store(stack, lambda c: browser.retrieve(sid, cid=c), BROWSER)


def test_session_only_auth_is_browser_denied(api, stack, owned):
    owner, sid, _ = owned
    # A user token and no service JWT is session-only auth, from any peer.
    for peer in ("credexctl", x.AGENT):
        caller = api.raw(peer, [("x-credex-user-token", api.tokens.user(owner))])
        denied_without_store(stack, lambda c: caller.retrieve(sid, cid=c), BROWSER)
        # x-credex-caller is trusted only from the edge: claiming "service" changes nothing.
        spoof = api.raw(peer, [("x-credex-user-token", api.tokens.user(owner)), ("x-credex-caller", "service")])
        denied_without_store(stack, lambda c: spoof.retrieve(sid, cid=c), BROWSER)


def test_no_token_at_all_is_refused(api, stack, owned):
    _, sid, _ = owned
    caller = api.raw(x.AGENT, [])
    denied_without_store(stack, lambda c: caller.retrieve(sid, cid=c), BROWSER | UNAUTHENTICATED)


# The claims of agent-runtime's own token, for tokens built by hand: refused only for what the
# case changes.
SERVICE_CLAIMS = {"sub": "service-account-agent-runtime", "azp": x.AGENT, "client_id": x.AGENT}


@pytest.mark.parametrize("case", ["wrong_audience", "expired", "wrong_issuer", "no_exp", "azp_not_peer",
                                  "unknown_kid", "foreign_key", "alg_none", "garbage"])
def test_bad_service_jwt_is_unauthenticated(api, stack, owned, case):
    owner, sid, _ = owned
    t = api.tokens
    token = {
        "wrong_audience": lambda: t.service(x.AGENT, aud="some-other-api"),
        "expired": lambda: t.service(x.AGENT, ttl=-3600),
        "wrong_issuer": lambda: t.service(x.AGENT, iss="https://evil.example/issuer"),
        "no_exp": lambda: t.service(x.AGENT, drop=("exp",)),
        "azp_not_peer": lambda: t.service("mcp-github"),
        "unknown_kid": lambda: t.mint(SERVICE_CLAIMS, headers={"kid": "not-a-known-kid"}),
        "foreign_key": lambda: t.mint(SERVICE_CLAIMS, key=foreign_key()),
        "alg_none": lambda: unsigned_token(t, SERVICE_CLAIMS),
        "garbage": lambda: "not.a.jwt",
    }[case]()
    caller = api.agent(owner, service_token=token)
    denied_without_store(stack, lambda c: caller.retrieve(sid, cid=c), UNAUTHENTICATED)


@pytest.mark.parametrize("case", ["wrong_audience", "expired", "garbage"])
def test_bad_user_token_is_unauthenticated(api, stack, owned, case):
    owner, sid, _ = owned
    t = api.tokens
    token = {"wrong_audience": lambda: t.user(owner, aud="some-other-api"),
             "expired": lambda: t.user(owner, ttl=-3600),
             "garbage": lambda: "garbage"}[case]()
    caller = api.agent(user_token=token)
    denied_without_store(stack, lambda c: caller.retrieve(sid, cid=c), UNAUTHENTICATED)


@pytest.mark.parametrize("case", ["no_intended_use", "no_resource_context", "empty_resource_id",
                                  "bad_intended_use"])
def test_missing_declarations_are_invalid(api, stack, owned, case):
    owner, sid, _ = owned
    kwargs = {"no_intended_use": {"intended_use": None},
              "no_resource_context": {"resource": None},
              "empty_resource_id": {"resource": ("mcp_server", "")},
              "bad_intended_use": {"intended_use": "NOT A USE!"}}[case]
    agent = api.agent(owner)
    denied_without_store(stack, lambda c: agent.retrieve(sid, cid=c, **kwargs), INVALID)


def test_service_without_the_platform_grant_is_denied(api, stack, owned):
    owner, sid, _ = owned
    outsider = api.agent(owner, service=x.UNLISTED)
    denied_without_store(stack, lambda c: outsider.retrieve(sid, cid=c), PERMISSION)


def test_denial_messages_carry_no_material(api, stack, owned):
    owner, sid, value = owned
    for caller in (api.browser(owner), api.agent(x.uid("nobody")), api.agent(owner, service=x.UNLISTED)):
        err = rpc_error(lambda: caller.retrieve(sid))
        assert value not in (err.details() or "").encode()
        for key, v in err.trailing_metadata() or ():
            assert value not in (v if isinstance(v, bytes) else v.encode())


# ---- service tokens and user tokens are told apart (issue 8, finding 1) ---------------------------

def refused_and_audited(api, stack, call, expect, reason: str) -> grpc.RpcError:
    """denied_without_store, plus the audit trail of that call: its denial with `reason`, and no
    success event under its correlation id."""
    seen = []

    def fn(c):
        seen.append(c)
        return call(c)

    err = denied_without_store(stack, fn, expect)
    client, db = api.mongo()
    with client:
        events = db.credential_audit_events
        denied = x.wait_until(lambda: [e for e in events.find({"correlation_id": seen[0]})
                                       if e.get("outcome") == "denied"], 10, what="audit event of the denial")
        assert denied[0].get("reason") == reason, denied
        assert not [e for e in events.find({"correlation_id": seen[0]}) if e.get("outcome") == "success"]
    return err


def no_retrieval_succeeded(api, sid: str) -> None:
    client, db = api.mongo()
    with client:
        done = list(db.credential_audit_events.find(
            {"resource_id": sid, "event_type": "secret.retrieved", "outcome": "success"}))
    assert not done, f"a refused caller retrieved {sid}: {done}"


def test_on_behalf_of_token_is_not_a_service_token(api, stack, owned):
    """A user's on-behalf-of token (sub = the user, azp = the service, no client_id) in the
    service slot must not let the service act as itself, nor stand in for both tokens at once:
    UNAUTHENTICATED, audited, and store never asked."""
    owner, sid, value = owned
    g = api.pb.gateway
    # The service's own grant on the secret, so that acting as the service would succeed.
    api.ui(owner).share(sid, g.GRANTEE_TYPE_SERVICE, x.AGENT, g.SHARE_ROLE_USER)
    obo = api.tokens.on_behalf_of(owner, x.AGENT)
    for caller in (api.agent(service_token=obo),                    # acting as the service
                   api.agent(service_token=obo, user_token=obo),    # one user token in both slots
                   api.agent(owner, service_token=obo)):            # with a fresh user token
        refused_and_audited(api, stack, lambda c: caller.retrieve(sid, cid=c), UNAUTHENTICATED,
                            "unauthenticated")
    no_retrieval_succeeded(api, sid)
    # Positive control: the same service with its own token, for itself and for the owner.
    assert api.agent().retrieve(sid).value == value
    assert api.agent(user_token=obo).retrieve(sid).value == value


def test_service_token_is_not_a_user_token(api, stack, owned):
    """A service token (client_id = azp) in the user slot would make the service a "user" named
    after its service account: UNAUTHENTICATED, audited, and store never asked."""
    owner, sid, _ = owned
    svc = api.tokens.service(x.AGENT)
    for caller in (api.agent(user_token=svc), api.agent(service_token=svc, user_token=svc)):
        refused_and_audited(api, stack, lambda c: caller.retrieve(sid, cid=c), UNAUTHENTICATED,
                            "unauthenticated")
    no_retrieval_succeeded(api, sid)


def test_credexctl_dev_tokens_have_the_shapes_of_the_rule(api, stack, owned):
    """`credexctl token`: a service token passes the default rule (client_id = azp), an
    on-behalf-of token is a user's token (no client_id) and is refused in the service slot."""
    import jwt

    owner, sid, value = owned

    def mint(*args: str) -> str:
        res = stack.credexctl_run("token", *args)
        assert res.returncode == 0, res.stderr
        return res.stdout.strip()

    svc, obo = mint("--service", x.AGENT), mint("--service", x.AGENT, "--user", owner)
    user = mint("--user", owner)
    claims = {name: jwt.decode(t, options={"verify_signature": False})
              for name, t in (("svc", svc), ("obo", obo), ("user", user))}
    assert claims["svc"]["client_id"] == claims["svc"]["azp"] == x.AGENT
    assert claims["obo"]["azp"] == x.AGENT and "client_id" not in claims["obo"]
    assert "client_id" not in claims["user"] and claims["user"]["sub"] == owner
    assert api.agent(service_token=svc, user_token=obo).retrieve(sid).value == value
    refused = api.agent(service_token=obo, user_token=obo)
    denied_without_store(stack, lambda c: refused.retrieve(sid, cid=c), UNAUTHENTICATED)


# ---- a browser's User-Agent is a browser marker (issue 8, finding 8) ----------------------------

BROWSER_UA = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
              "Chrome/124.0.0.0 Safari/537.36")


def retrieval_stub(api, peer: str, user_agent: str):
    """A Retrieval stub on its own channel whose user-agent starts with `user_agent` (grpcio
    appends its own "grpc-python/... grpc-c/..." tokens after it)."""
    cert, key = api.identity_pair(peer)
    channel = grpc.secure_channel(api.gateway_addr, h.channel_credentials(api.stack.pki.ca, cert, key), options=[
        ("grpc.ssl_target_name_override", "localhost"),
        ("grpc.use_local_subchannel_pool", 1),
        ("grpc.primary_user_agent", user_agent),
    ])
    return channel, api.pb.gateway_grpc.RetrievalStub(channel)


def test_browser_user_agent_is_browser_denied(api, stack, owned):
    """The agent runtime's own certificate and valid tokens, but a browser's User-Agent:
    browser_denied, audited, store never asked. The same caller with its own user agent, or
    grpcio's, retrieves."""
    owner, sid, value = owned
    agent = api.agent(owner)
    channel, stub = retrieval_stub(api, x.AGENT, BROWSER_UA)
    with channel:
        refused_and_audited(
            api, stack,
            lambda c: stub.Retrieve(agent.retrieve_request(sid), timeout=10,
                                    metadata=agent.metadata + [("x-correlation-id", c)]),
            BROWSER, "browser_denied")
    no_retrieval_succeeded(api, sid)
    channel, stub = retrieval_stub(api, x.AGENT, "agent-runtime/2.3")
    with channel:
        assert stub.Retrieve(agent.retrieve_request(sid), timeout=10, metadata=agent.metadata).value == value
    assert agent.retrieve(sid).value == value


# ---- helpers ------------------------------------------------------------------------------------

def foreign_key():
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def unsigned_token(mint: x.TokenMint, claims: dict) -> str:
    import base64
    import json

    def b64(d: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()

    now = int(time.time())
    body = {"iss": mint.issuer, "aud": mint.audience, "iat": now, "exp": now + 300} | claims
    return f"{b64({'alg': 'none', 'typ': 'JWT', 'kid': mint.kid})}.{b64(body)}."


def test_helpers_are_sane(api):
    """The dev tokens verify against the stack's JWKS (so refusals above are about the claims)."""
    import jwt

    jwks = jwt.PyJWKSet.from_dict(__import__("json").loads(api.stack.pki.jwks.read_text()))
    token = api.tokens.service(x.AGENT)
    claims = jwt.decode(token, jwks[jwt.get_unverified_header(token)["kid"]].key, algorithms=["ES256"],
                        audience=api.tokens.audience, issuer=api.tokens.issuer)
    assert claims["azp"] == x.AGENT and claims["sub"] == f"service-account-{x.AGENT}"
    assert claims["client_id"] == x.AGENT
    # user and on-behalf-of tokens never carry the client claim
    for tok in (api.tokens.user("u"), api.tokens.on_behalf_of("u", x.AGENT)):
        assert "client_id" not in jwt.decode(tok, options={"verify_signature": False})
    assert re.fullmatch(r"[A-Za-z0-9._-]+", x.cid())


def test_dek_cache_is_bounded_by_use_count(api, stack):
    """docs/DESIGN.md: a cache of unwrapped data keys is bounded by age and use count. Through a
    gateway + store pair whose store allows 3 uses per cached key, 9 retrievals of one secret
    must unwrap (KeyWrap/Unwrap in keywrap's log, by correlation id) at least twice."""
    store = stack.spawn("store", CREDEX_DEK_CACHE_MAX_USES="3")
    gateway = None
    try:
        stack.wait_healthy(store)
        gateway = stack.spawn("gateway", CREDEX_STORE_ADDR=store.addr)
        stack.wait_healthy(gateway)
        api.grant_retriever(x.AGENT)
        owner = x.uid("cache")
        value = value_of("cache")
        sid = api.ui(owner).create(value).secret.secret_id
        agent = api.agent(owner, addr=gateway.addr)
        ids = [x.cid() for _ in range(9)]
        for c in ids:
            assert agent.retrieve(sid, cid=c).value == value
        unwraps = sum(1 for c in ids for line in x.log_lines_with(stack.log_path("keywrap"), c)
                      if line.get("method") == "/credex.v1.KeyWrap/Unwrap")
        assert 2 <= unwraps <= 9, f"{unwraps} unwraps for 9 retrievals with CREDEX_DEK_CACHE_MAX_USES=3"
    finally:
        codes = [inst.stop() for inst in (gateway, store) if inst is not None]
        assert codes == [0] * len(codes), codes
