"""Issue 8, findings 2 and 3: one input contract, and exactly one audit event per failed call.

Every denial and failure path of every implemented public RPC is walked here, each with its own
correlation id; the audit trail (credential_audit_events, read straight from the database) must
then hold exactly one event for that call, with the attempted action's event_type, the outcome the
code implies (DENIED or FAILED), the reason code, and no field that did not pass the input
contract: a request that fails the contract leaves only the verified caller in its event (no
resource id, no intended use, no resource context), and no raw bad value anywhere in it.

Failures are decided either by the gateway (authentication, policy, the contract) or by store
(state: revoked, deleted, version conflicts, allowed uses); whoever decides writes the one event.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Callable

import grpc
import pytest

import credex_api as x

C = grpc.StatusCode
ESC = "\x1b[31m"  # a terminal escape sequence: never stored, never echoed


def rpc_error(fn) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        fn()
    return info.value


@dataclass
class World:
    api: x.Api
    owner: str
    sid: str            # owned by owner, shared with `sharer` as user
    revoked: str        # owned by owner, revoked
    deleted: str        # owned by owner, deleted
    narrow: str         # owned by owner, allowed_uses = [http_authorization_header]
    sharer: str         # holds role user on sid (use + read_metadata, no manage)
    stranger: str       # no relation to anything


@pytest.fixture(scope="module")
def world(api) -> World:
    api.grant_retriever(x.AGENT)
    owner, sharer, stranger = x.uid("olga"), x.uid("sam"), x.uid("stan")
    ui = api.ui(owner)
    g = api.pb.gateway
    sid = ui.create(f"sk-audit-{uuid.uuid4().hex}").secret.secret_id
    ui.share(sid, g.GRANTEE_TYPE_USER, sharer, g.SHARE_ROLE_USER)
    revoked = ui.create(f"sk-audit-{uuid.uuid4().hex}").secret.secret_id
    ui.revoke(revoked)
    deleted = ui.create(f"sk-audit-{uuid.uuid4().hex}").secret.secret_id
    ui.delete(deleted)
    narrow = ui.create(f"sk-audit-{uuid.uuid4().hex}",
                       allowed_uses=["http_authorization_header"]).secret.secret_id
    return World(api, owner, sid, revoked, deleted, narrow, sharer, stranger)


@dataclass
class Case:
    name: str
    call: Callable[[World, str], object]  # (world, correlation id) -> performs the call
    code: grpc.StatusCode
    reason: str
    event_type: str
    outcome: str                  # "denied" | "failed"
    resource_id: Callable[[World], str] | None = None  # None: the event names no resource
    banned: tuple[str, ...] = ()  # substrings that must appear nowhere in the event
    validated: bool = True        # False: the request failed the contract (no request fields)


def gw(w: World):
    return w.api.pb.gateway


def co(w: World):
    return w.api.pb.common


def edge_as_service(w: World) -> x.Caller:
    """The edge's own identity claiming a server-side call: x-credex-caller: service, a service
    token bound to peer edge, and even a retriever grant. Material never goes to the edge."""
    w.api.grant_retriever("edge")
    return w.api.raw("edge", [("authorization", f"Bearer {w.api.tokens.service('edge')}"),
                              ("x-credex-user-token", w.api.tokens.user(w.owner)),
                              ("x-credex-caller", "service")])


def exchange_req(w: World):
    c = co(w)
    return gw(w).ExchangeRequest(provider_key="github", intended_use="mcp_impersonation",
                                 resource_context=c.ResourceContext(resource_type="mcp_server",
                                                                    resource_id="github"))


def raw_call(caller: x.Caller, service: str, method: str, body: bytes, cid: str):
    """A call with hand-made wire bytes (Python's protobuf refuses to encode bad UTF-8)."""
    fn = caller.channel().unary_unary(f"/credex.v1.{service}/{method}")
    return fn(body, timeout=10, metadata=list(caller.metadata) + [("x-correlation-id", cid)])


def ld(field: int, data: bytes) -> bytes:
    """A length-delimited protobuf field."""
    tag, n, out = (field << 3) | 2, len(data), b""
    out += bytes([tag])
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            out += bytes([b])
            return out + data


def create_raw(display_name: bytes) -> bytes:
    """CreateSecretRequest: idempotency_key(1), kind(3)=api_key, display_name(4), value(8)."""
    return (ld(1, uuid.uuid4().hex.encode()) + bytes([0x18, 0x01]) + ld(4, display_name)
            + ld(8, b"sk-raw-value"))


CASES = [
    # ---- Secrets: the caller ----------------------------------------------------------------
    Case("create-no-token", lambda w, c: w.api.raw(x.h.CLI_IDENTITY, []).create("v", cid=c),
         C.UNAUTHENTICATED, "unauthenticated", "secret.created", "denied"),
    Case("create-bad-token", lambda w, c: w.api.raw(x.h.CLI_IDENTITY, [("x-credex-user-token", "e30.e30.e30")])
         .create("v", cid=c), C.UNAUTHENTICATED, "unauthenticated", "secret.created", "denied"),
    Case("create-service-for-itself", lambda w, c: w.api.agent().create("v", cid=c),
         C.PERMISSION_DENIED, "permission_denied", "secret.created", "denied"),
    # ---- Secrets: the contract --------------------------------------------------------------
    Case("create-escape-in-name", lambda w, c: w.api.ui(w.owner).create("v", name="key" + ESC, cid=c),
         C.INVALID_ARGUMENT, "invalid_argument", "secret.created", "denied", banned=(ESC, "key\x1b"),
         validated=False),
    Case("create-duplicate-uses", lambda w, c: w.api.ui(w.owner).create(
        "v", allowed_uses=["mcp_server_env", "mcp_server_env"], cid=c),
         C.INVALID_ARGUMENT, "invalid_argument", "secret.created", "denied", validated=False),
    Case("create-control-in-description", lambda w, c: w.api.ui(w.owner).create(
        "v", description="a\rb", cid=c), C.INVALID_ARGUMENT, "invalid_argument", "secret.created", "denied",
         validated=False),
    Case("create-oauth-kind", lambda w, c: w.api.ui(w.owner).create(
        "v", kind=co(w).SECRET_KIND_PROVIDER_TOKEN_SET, cid=c),
         C.INVALID_ARGUMENT, "invalid_argument", "secret.created", "denied"),
    Case("create-unknown-kind", lambda w, c: w.api.ui(w.owner).create("v", kind=77, cid=c),
         C.INVALID_ARGUMENT, "invalid_argument", "secret.created", "denied", validated=False),
    Case("create-invalid-utf8", lambda w, c: raw_call(w.api.ui(w.owner), "Secrets", "CreateSecret",
                                                       create_raw(b"bad \xc3\x28 name"), c),
         C.INVALID_ARGUMENT, "invalid_argument", "secret.created", "denied", validated=False),
    Case("create-nul-in-name", lambda w, c: raw_call(w.api.ui(w.owner), "Secrets", "CreateSecret",
                                                      create_raw(b"ok\x00" + ESC.encode()), c),
         C.INVALID_ARGUMENT, "invalid_argument", "secret.created", "denied", banned=(ESC,), validated=False),
    Case("create-for-another-user", lambda w, c: w.api.ui(w.owner).create(
        "v", owner=co(w).Owner(owner_type=co(w).OWNER_TYPE_USER, owner_id=w.stranger), cid=c),
         C.PERMISSION_DENIED, "permission_denied", "secret.created", "denied"),
    Case("create-team-not-admin", lambda w, c: w.api.ui(w.owner).create(
        "v", owner=co(w).Owner(owner_type=co(w).OWNER_TYPE_TEAM, owner_id=x.uid("nobodys")), cid=c),
         C.PERMISSION_DENIED, "permission_denied", "secret.created", "denied"),
    # ---- ListSecrets ------------------------------------------------------------------------
    Case("list-all-not-admin", lambda w, c: w.api.ui(w.owner).list(scope=gw(w).LIST_SECRETS_SCOPE_ALL, cid=c),
         C.PERMISSION_DENIED, "permission_denied", "secret.listed", "denied"),
    Case("list-unknown-scope", lambda w, c: w.api.ui(w.owner).list(scope=99, cid=c),
         C.INVALID_ARGUMENT, "invalid_argument", "secret.listed", "denied", validated=False),
    Case("list-owned-other-team", lambda w, c: w.api.ui(w.owner).list(
        scope=gw(w).LIST_SECRETS_SCOPE_OWNED,
        owner=co(w).Owner(owner_type=co(w).OWNER_TYPE_TEAM, owner_id=x.uid("closed")), cid=c),
         C.PERMISSION_DENIED, "permission_denied", "secret.listed", "denied"),
    Case("list-bad-page-token", lambda w, c: w.api.ui(w.owner).list(page=co(w).PageRequest(page_token="x y"), cid=c),
         C.INVALID_ARGUMENT, "invalid_argument", "secret.listed", "denied", validated=False),
    # ---- single-secret reads ----------------------------------------------------------------
    Case("get-hidden", lambda w, c: w.api.ui(w.stranger).get(w.sid, cid=c),
         C.NOT_FOUND, "not_found", "secret.read", "denied", resource_id=lambda w: w.sid),
    Case("get-malformed-id", lambda w, c: w.api.ui(w.owner).get("sec " + ESC, cid=c),
         C.INVALID_ARGUMENT, "invalid_argument", "secret.read", "denied", banned=(ESC, "sec "), validated=False),
    Case("versions-hidden", lambda w, c: w.api.ui(w.stranger).versions(w.sid, cid=c),
         C.NOT_FOUND, "not_found", "secret.read", "denied", resource_id=lambda w: w.sid),
    Case("shares-without-share", lambda w, c: w.api.ui(w.sharer).call(
        "Secrets", "ListSecretShares", gw(w).ListSecretSharesRequest(secret_id=w.sid), cid=c),
         C.PERMISSION_DENIED, "permission_denied", "secret.read", "denied", resource_id=lambda w: w.sid),
    # ---- changes ----------------------------------------------------------------------------
    Case("update-empty-mask", lambda w, c: w.api.ui(w.owner).call(
        "Secrets", "UpdateSecret", gw(w).UpdateSecretRequest(secret_id=w.sid, display_name="n"), cid=c),
         C.INVALID_ARGUMENT, "invalid_argument", "secret.updated", "denied", validated=False),
    Case("update-unknown-mask-field", lambda w, c: w.api.ui(w.owner).call(
        "Secrets", "UpdateSecret", gw(w).UpdateSecretRequest(secret_id=w.sid, update_mask=["value"]), cid=c),
         C.INVALID_ARGUMENT, "invalid_argument", "secret.updated", "denied", resource_id=lambda w: w.sid),
    Case("update-without-manage", lambda w, c: w.api.ui(w.sharer).call(
        "Secrets", "UpdateSecret",
        gw(w).UpdateSecretRequest(secret_id=w.sid, display_name="n", update_mask=["display_name"]), cid=c),
         C.PERMISSION_DENIED, "permission_denied", "secret.updated", "denied", resource_id=lambda w: w.sid),
    Case("update-deleted", lambda w, c: w.api.ui(w.owner).call(
        "Secrets", "UpdateSecret",
        gw(w).UpdateSecretRequest(secret_id=w.deleted, display_name="n", update_mask=["display_name"]), cid=c),
         C.FAILED_PRECONDITION, "failed_precondition", "secret.updated", "denied",
         resource_id=lambda w: w.deleted),
    Case("rotate-without-manage", lambda w, c: w.api.ui(w.sharer).rotate(w.sid, "v2", cid=c),
         C.PERMISSION_DENIED, "permission_denied", "secret.rotated", "denied", resource_id=lambda w: w.sid),
    Case("rotate-stale-version", lambda w, c: w.api.ui(w.owner).rotate(w.sid, "v2", expected_version=99, cid=c),
         C.ABORTED, "conflict", "secret.rotated", "failed", resource_id=lambda w: w.sid),
    Case("rotate-revoked", lambda w, c: w.api.ui(w.owner).rotate(w.revoked, "v2", cid=c),
         C.FAILED_PRECONDITION, "failed_precondition", "secret.rotated", "denied",
         resource_id=lambda w: w.revoked),
    Case("rotate-version-wider-than-uint32", lambda w, c: raw_call(
        w.api.ui(w.owner), "Secrets", "RotateSecret",
        ld(1, w.sid.encode()) + bytes([0x10, 0x81, 0x80, 0x80, 0x80, 0x10]) + ld(3, b"v2"), c),
         C.INVALID_ARGUMENT, "invalid_argument", "secret.rotated", "denied", validated=False),
    Case("rotate-empty-value", lambda w, c: w.api.ui(w.owner).rotate(w.sid, b"", cid=c),
         C.INVALID_ARGUMENT, "invalid_argument", "secret.rotated", "denied", validated=False),
    Case("revoke-escape-in-reason", lambda w, c: w.api.ui(w.owner).revoke(w.sid, "gone" + ESC + "]0;x\x07", cid=c),
         C.INVALID_ARGUMENT, "invalid_argument", "secret.revoked", "denied", banned=(ESC, "gone"), validated=False),
    Case("revoke-hidden", lambda w, c: w.api.ui(w.stranger).revoke(w.sid, cid=c),
         C.NOT_FOUND, "not_found", "secret.revoked", "denied", resource_id=lambda w: w.sid),
    Case("delete-without-manage", lambda w, c: w.api.ui(w.sharer).delete(w.sid, cid=c),
         C.PERMISSION_DENIED, "permission_denied", "secret.deleted", "denied", resource_id=lambda w: w.sid),
    Case("share-owner-role", lambda w, c: w.api.ui(w.owner).share(
        w.sid, gw(w).GRANTEE_TYPE_USER, w.stranger, gw(w).SHARE_ROLE_OWNER, cid=c),
         C.INVALID_ARGUMENT, "invalid_argument", "secret.shared", "denied", resource_id=lambda w: w.sid),
    Case("share-grantee-with-space", lambda w, c: w.api.ui(w.owner).share(
        w.sid, gw(w).GRANTEE_TYPE_USER, "a b", cid=c),
         C.INVALID_ARGUMENT, "invalid_argument", "secret.shared", "denied", validated=False),
    Case("share-without-share", lambda w, c: w.api.ui(w.sharer).share(
        w.sid, gw(w).GRANTEE_TYPE_USER, w.stranger, cid=c),
         C.PERMISSION_DENIED, "permission_denied", "secret.shared", "denied", resource_id=lambda w: w.sid),
    Case("unshare-owner", lambda w, c: w.api.ui(w.owner).unshare(
        w.sid, gw(w).GRANTEE_TYPE_USER, w.owner, gw(w).SHARE_ROLE_OWNER, cid=c),
         C.INVALID_ARGUMENT, "invalid_argument", "secret.unshared", "denied", resource_id=lambda w: w.sid),
    # ---- Retrieve -----------------------------------------------------------------------------
    Case("retrieve-browser", lambda w, c: w.api.browser(w.owner).retrieve(w.sid, cid=c),
         C.PERMISSION_DENIED, "browser_denied", "secret.retrieved", "denied", resource_id=lambda w: w.sid),
    Case("retrieve-from-edge-claiming-service", lambda w, c: edge_as_service(w).retrieve(w.sid, cid=c),
         C.PERMISSION_DENIED, "browser_denied", "secret.retrieved", "denied", resource_id=lambda w: w.sid),
    Case("retrieve-no-service-token", lambda w, c: w.api.raw(x.AGENT, []).retrieve(w.sid, cid=c),
         C.UNAUTHENTICATED, "unauthenticated", "secret.retrieved", "denied", resource_id=lambda w: w.sid),
    Case("retrieve-unlisted-service", lambda w, c: w.api.agent(w.owner, service=x.UNLISTED).retrieve(w.sid, cid=c),
         C.PERMISSION_DENIED, "permission_denied", "secret.retrieved", "denied", resource_id=lambda w: w.sid),
    Case("retrieve-malformed-use", lambda w, c: w.api.agent(w.owner).retrieve(w.sid, intended_use="MCP " + ESC,
                                                                              cid=c),
         C.INVALID_ARGUMENT, "invalid_argument", "secret.retrieved", "denied", banned=(ESC, "MCP "),
         validated=False),
    Case("retrieve-resource-with-space", lambda w, c: w.api.agent(w.owner).retrieve(
        w.sid, resource=("mcp_server", "my server"), cid=c),
         C.INVALID_ARGUMENT, "invalid_argument", "secret.retrieved", "denied", banned=("my server",),
         validated=False),
    Case("retrieve-no-context", lambda w, c: w.api.agent(w.owner).retrieve(w.sid, resource=None, cid=c),
         C.INVALID_ARGUMENT, "invalid_argument", "secret.retrieved", "denied", validated=False),
    Case("retrieve-hidden", lambda w, c: w.api.agent(w.stranger).retrieve(w.sid, cid=c),
         C.NOT_FOUND, "not_found", "secret.retrieved", "denied", resource_id=lambda w: w.sid),
    Case("retrieve-revoked", lambda w, c: w.api.agent(w.owner).retrieve(w.revoked, cid=c),
         C.FAILED_PRECONDITION, "failed_precondition", "secret.retrieved", "denied",
         resource_id=lambda w: w.revoked),
    Case("retrieve-use-not-allowed", lambda w, c: w.api.agent(w.owner).retrieve(w.narrow, cid=c),
         C.PERMISSION_DENIED, "permission_denied", "secret.retrieved", "denied", resource_id=lambda w: w.narrow),
    # ---- Exchange (built by a later issue; the browser refusal holds already) ------------------
    Case("exchange-browser", lambda w, c: w.api.browser(w.owner).call("Retrieval", "Exchange", exchange_req(w), cid=c),
         C.PERMISSION_DENIED, "browser_denied", "token.exchanged", "denied"),
    Case("exchange-from-edge-claiming-service", lambda w, c: edge_as_service(w).call(
        "Retrieval", "Exchange", exchange_req(w), cid=c),
         C.PERMISSION_DENIED, "browser_denied", "token.exchanged", "denied"),
    Case("exchange-disabled", lambda w, c: w.api.agent(w.owner).call("Retrieval", "Exchange", exchange_req(w), cid=c),
         C.FAILED_PRECONDITION, "feature_disabled", "token.exchanged", "denied"),
    # ---- Admin --------------------------------------------------------------------------------
    Case("health-no-token", lambda w, c: w.api.raw(x.h.CLI_IDENTITY, []).call(
        "Admin", "GetHealth", gw(w).GetHealthRequest(), cid=c),
         C.UNAUTHENTICATED, "unauthenticated", "health.read", "denied", resource_id=lambda w: "credentials"),
]


def events_of(api: x.Api, correlation_id: str) -> list[dict]:
    client, db = api.mongo()
    with client:
        return list(db.credential_audit_events.find({"correlation_id": correlation_id}))


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_every_failure_has_exactly_one_event(world, case: Case):
    c = x.cid()
    err = rpc_error(lambda: case.call(world, c))
    assert (err.code(), x.reason(err)) == (case.code, case.reason), x.describe(err)
    for banned in case.banned:
        assert banned not in (err.details() or ""), "the error echoes the offending value"
    # The event is written before the answer; the poll only covers a slow database read.
    x.wait_until(lambda: events_of(world.api, c), 10, what=f"audit event of {case.name}")
    events = events_of(world.api, c)
    assert len(events) == 1, [(e.get("event_type"), e.get("reason")) for e in events]
    ev = events[0]
    assert (ev["event_type"], ev["outcome"], ev["reason"]) == (case.event_type, case.outcome, case.reason), ev
    expected_id = case.resource_id(world) if case.resource_id else ""
    assert ev.get("resource_id", "") == expected_id, ev
    if not case.validated:
        assert ev.get("intended_use", "") == "", ev
        assert not ev.get("resource_context"), ev
    flat = repr(ev)
    for banned in (*case.banned, "\x1b", "\\x1b", "\x00"):
        assert banned not in flat, f"audit event holds an unvalidated value: {ev}"


def test_successes_are_audited_once_too(world):
    """The counterpart: a successful retrieval is one secret.retrieved success event."""
    c = x.cid()
    world.api.agent(world.owner).retrieve(world.sid, cid=c)
    events = x.wait_until(lambda: events_of(world.api, c), 10, what="retrieval event")
    assert [(e["event_type"], e["outcome"]) for e in events] == [("secret.retrieved", "success")]
