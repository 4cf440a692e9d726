"""Issue 9: the UI user's journeys over HTTP through the edge (docs/HTTP_API.md), with a real HTTP
client and the UI's bearer tokens, on the session stack.

A canary value goes in through create and rotate and must never come back: not in any response
body or header of the run, and not in any log of the run folder. Retrieve, exchange and inject are
server-side only: over HTTP they are browser_denied, and the gateway audits the refusal.
"""

from __future__ import annotations

import uuid

import pytest

import credex_api as x
import credex_edge as e
from credex_edge import edge  # noqa: F401 (the fixture)
import credex_harness as h

SECRETS = e.SECRETS


def no_leak(edge: e.Edge, *values: bytes) -> None:
    """None of the values, in any encoding, in any answer so far (bodies and headers)."""
    for r in edge.answers:
        blob = r.content + repr(dict(r.headers)).encode()
        for v in values:
            for form in x.encodings(v):
                assert form not in blob, f"{r.request.method} {r.url} answered a secret value"


def audit_events(api: x.Api, cid: str) -> list[dict]:
    client, db = api.mongo()
    with client:
        return list(db.credential_audit_events.find({"correlation_id": cid}))


def test_ui_journey(edge, api, stack):
    alice, bob, carol, team = x.uid("alice"), x.uid("bob"), x.uid("carol"), x.uid("team")
    api.add_team_member(team, carol)
    v1, v2 = e.canary("v1"), e.canary("v2")
    key = str(uuid.uuid4())

    # create: 201, masked; the same key again: the same secret, 200
    r = edge.create(alice, v1, key=key, name="OpenAI key", description="for the agent",
                    provider="openai", allowedUses=[x.DEFAULT_USE])
    assert r.status_code == 201, r.text
    created = r.json()
    meta = created["secret"]
    sid = meta["secretId"]
    assert created["created"] is True
    assert meta["owner"] == {"ownerType": "OWNER_TYPE_USER", "ownerId": alice}
    assert (meta["displayName"], meta["description"], meta["provider"]) == ("OpenAI key", "for the agent", "openai")
    assert (meta["valueSet"], meta["maskedValue"], meta["currentVersion"]) == (True, "********", 1)
    assert "value" not in meta
    r = edge.create(alice, v1, key=key, name="OpenAI key", description="for the agent",
                    provider="openai", allowedUses=[x.DEFAULT_USE])
    assert r.status_code == 200, r.text
    assert r.json()["secret"]["secretId"] == sid and "created" not in r.json()

    # list (masked only) and get
    r = edge.get(SECRETS, user=alice, params={"scope": "LIST_SECRETS_SCOPE_OWNED", "page_size": "50"})
    assert r.status_code == 200, r.text
    listed = [s for s in r.json()["secrets"] if s["secretId"] == sid]
    assert len(listed) == 1 and listed[0]["maskedValue"] == "********" and "value" not in listed[0]
    r = edge.get(f"{SECRETS}/{sid}", user=alice)
    assert r.status_code == 200 and r.json()["secretId"] == sid, r.text

    # update, rotate (a stale expected version is a conflict), versions
    r = edge.call("PATCH", f"{SECRETS}/{sid}", user=alice,
                  json_body={"displayName": "OpenAI (prod)", "updateMask": ["display_name"]})
    assert r.status_code == 200 and r.json()["displayName"] == "OpenAI (prod)", r.text
    r = edge.post(f"{SECRETS}/{sid}/rotate", {"expectedVersion": 1, "value": e.b64(v2)}, user=alice)
    api.values.add(v2)
    assert r.status_code == 200, r.text
    assert r.json()["secret"]["currentVersion"] == 2 and r.json()["version"]["version"] == 2
    r = edge.post(f"{SECRETS}/{sid}/rotate", {"expectedVersion": 1, "value": e.b64(e.canary("stale"))}, user=alice)
    e.error_of(r, 409, "conflict")
    r = edge.get(f"{SECRETS}/{sid}/versions", user=alice, params={"page_size": "10"})
    assert r.status_code == 200, r.text
    assert [v["version"] for v in r.json()["versions"]] == [2, 1]

    # share with a user and a team; both can read the metadata, nobody else
    e.error_of(edge.get(f"{SECRETS}/{sid}", user=bob), 404, "not_found")
    r = edge.post(f"{SECRETS}/{sid}/shares", {"grantee": {"granteeType": "GRANTEE_TYPE_USER", "granteeId": bob},
                                              "role": "SHARE_ROLE_USER"}, user=alice)
    assert r.status_code == 200 and r.json()["applied"] is True, r.text
    r = edge.post(f"{SECRETS}/{sid}/shares", {"grantee": {"granteeType": "GRANTEE_TYPE_TEAM", "granteeId": team},
                                              "role": "SHARE_ROLE_USER"}, user=alice)
    assert r.status_code == 200 and r.json()["applied"] is True, r.text
    assert edge.get(f"{SECRETS}/{sid}", user=bob).status_code == 200
    assert edge.get(f"{SECRETS}/{sid}", user=carol).status_code == 200
    r = edge.get(f"{SECRETS}/{sid}/shares", user=alice)
    assert r.status_code == 200, r.text
    grants = {(s["grantee"]["granteeType"], s["grantee"]["granteeId"], s["role"]) for s in r.json()["shares"]}
    assert {("GRANTEE_TYPE_USER", bob, "SHARE_ROLE_USER"), ("GRANTEE_TYPE_TEAM", team, "SHARE_ROLE_USER"),
            ("GRANTEE_TYPE_USER", alice, "SHARE_ROLE_OWNER")} <= grants, grants

    # unshare (grantee in the query string)
    r = edge.call("DELETE", f"{SECRETS}/{sid}/shares", user=alice,
                  params={"grantee_type": "GRANTEE_TYPE_USER", "grantee_id": bob})
    assert r.status_code == 200 and r.json()["removedCount"] == 1, r.text
    e.error_of(edge.get(f"{SECRETS}/{sid}", user=bob), 404, "not_found")
    r = edge.call("DELETE", f"{SECRETS}/{sid}/shares", user=alice,
                  params={"grantee_type": "GRANTEE_TYPE_TEAM", "grantee_id": team, "role": "SHARE_ROLE_USER"})
    assert r.status_code == 200 and r.json()["removedCount"] == 1, r.text
    e.error_of(edge.get(f"{SECRETS}/{sid}", user=carol), 404, "not_found")

    # revoke, delete
    r = edge.post(f"{SECRETS}/{sid}/revoke", {"reason": "e2e: done"}, user=alice)
    assert r.status_code == 200 and r.json()["status"] == "SECRET_STATUS_REVOKED", r.text
    r = edge.call("DELETE", f"{SECRETS}/{sid}", user=alice)
    assert r.status_code == 200 and r.json()["status"] == "SECRET_STATUS_DELETED", r.text
    assert r.json().get("valueSet", False) is False and r.json().get("maskedValue", "") == ""

    # the canary never came back, and no log of the run holds it
    no_leak(edge, v1, v2)
    for log in sorted((stack.run_dir / "logs").glob("*.log")):
        text = log.read_bytes()
        for v in (v1, v2):
            for form in x.encodings(v):
                assert form not in text, f"{log.name} holds a secret value"


def test_share_preview_changes_nothing(edge, api):
    alice, bob = x.uid("alice"), x.uid("bob")
    sid = edge.create(alice, e.canary("preview")).json()["secret"]["secretId"]
    r = edge.post(f"{SECRETS}/{sid}/shares", {"grantee": {"granteeType": "GRANTEE_TYPE_USER", "granteeId": bob},
                                              "role": "SHARE_ROLE_MANAGER", "previewOnly": True}, user=alice)
    assert r.status_code == 200, r.text
    assert r.json().get("applied", False) is False
    e.error_of(edge.get(f"{SECRETS}/{sid}", user=bob), 404, "not_found")
    assert not api.fga_check(f"user:{bob}", "manage", f"secret_ref:{sid}")


def test_admin_routes(edge, api):
    alice, admin = x.uid("alice"), x.uid("admin")
    sid = edge.create(alice, e.canary("admin")).json()["secret"]["secretId"]
    e.error_of(edge.get("/api/admin/credentials/secrets", user=alice), 403, "permission_denied")
    api.fga_write([(f"user:{admin}", "admin", "platform:credex")])
    try:
        seen, token = [], ""
        for _ in range(200):
            params = {"page_size": "200"} | ({"page_token": token} if token else {})
            r = edge.get("/api/admin/credentials/secrets", user=admin, params=params)
            assert r.status_code == 200, r.text
            seen += [s["secretId"] for s in r.json().get("secrets", [])]
            token = r.json().get("page", {}).get("nextPageToken", "")
            if not token or sid in seen:
                break
        assert sid in seen
        r = edge.call("PATCH", f"/api/admin/credentials/secrets/{sid}", user=admin,
                      json_body={"description": "checked by an admin", "updateMask": ["description"]})
        assert r.status_code == 200 and r.json()["description"] == "checked by an admin", r.text
        r = edge.call("DELETE", f"/api/admin/credentials/secrets/{sid}", user=admin)
        assert r.status_code == 200 and r.json()["status"] == "SECRET_STATUS_DELETED", r.text
    finally:
        api.fga_write([(f"user:{admin}", "admin", "platform:credex")], delete=True)


MATERIAL = [
    ("retrieve", "/api/credentials/retrieve", "secret.retrieved"),
    ("exchange", "/api/credentials/exchange", "token.exchanged"),
    ("inject", "/api/credentials/inject/github", "token.injected"),
]


@pytest.mark.parametrize("name,path,event_type", MATERIAL, ids=[m[0] for m in MATERIAL])
def test_material_routes_are_browser_denied_and_audited(edge, api, name, path, event_type):
    alice = x.uid("alice")
    value = e.canary(name)
    sid = edge.create(alice, value, allowedUses=[x.DEFAULT_USE]).json()["secret"]["secretId"]
    ctx = {"resourceType": "mcp_server", "resourceId": "mcp-e2e"}
    body = ({"secretRef": sid} if name == "retrieve" else {"providerKey": "github"}) | {
        "intendedUse": x.DEFAULT_USE, "resourceContext": ctx}
    if name == "inject":
        body.pop("providerKey")
    cid = x.cid()
    r = edge.post(path, body, user=alice, headers={"X-Correlation-Id": cid})
    err = e.error_of(r, 403, "browser_denied")
    assert err["correlation_id"] == cid
    no_leak(edge, value)
    x.wait_until(lambda: audit_events(api, cid), 10, what=f"audit event of {name}")
    events = audit_events(api, cid)
    assert len(events) == 1, events
    ev = events[0]
    assert (ev["event_type"], ev["outcome"], ev["reason"]) == (event_type, "denied", "browser_denied"), ev
    assert ev.get("peer") == "edge", ev


def test_gateway_answers_pass_through(edge):
    alice = x.uid("alice")
    e.error_of(edge.get(f"{SECRETS}/sec_NOPE0000000000000000000000", user=alice), 404, "not_found")
    # a route whose RPC a later issue builds answers what the gateway answers today
    err = e.error_of(edge.get("/api/credentials/audit", user=alice), 501, "unimplemented")
    assert "later issue" in err["message"]
    # connect is decided by the gateway first: no connector is enabled for alice
    e.error_of(edge.get("/api/credentials/oauth/github/connect", user=alice), 403, "permission_denied")
    # the gateway's own input contract (here: an empty idempotency key) is a 400
    r = edge.post(SECRETS, {"kind": "SECRET_KIND_API_KEY", "displayName": "x", "value": e.b64(b"v")}, user=alice)
    err = e.error_of(r, 400, "invalid_argument")
    assert "idempotency_key" in err["message"]
    # a token that does not verify is the gateway's 401
    r = edge.get(SECRETS, headers={"Authorization": "Bearer not.a.jwt"})
    e.error_of(r, 401, "unauthenticated")
    r = edge.get("/api/credentials/health", user=alice)
    assert r.status_code == 200 and r.json()["credentialsEnabled"] is True, r.text


def test_correlation_ids(edge, api, stack):
    alice = x.uid("alice")
    cid = x.cid()
    r = edge.get(SECRETS, user=alice, headers={"X-Correlation-Id": cid})
    assert r.status_code == 200 and r.headers["X-Correlation-Id"] == cid
    # the gateway saw the same id (its audit of a denial carries it)
    r = edge.get(f"{SECRETS}/sec_NOPE0000000000000000000001", user=alice, headers={"X-Correlation-Id": cid})
    assert e.error_of(r, 404, "not_found")["correlation_id"] == cid
    # an id that is not one (too long, bad characters) is replaced by a fresh one
    for bad in ("x" * 65, "a b", "\u00e9t\u00e9"):
        r = edge.get(SECRETS, user=alice, headers={"X-Correlation-Id": bad.encode("utf-8")})
        assert r.status_code == 200
        assert r.headers["X-Correlation-Id"] != bad and len(r.headers["X-Correlation-Id"]) == 32
    # the access log names the route template and the correlation id, never the raw path
    def access_lines():
        return [ln for ln in x.log_lines_with(stack.log_path("edge"), cid) if ln.get("event") == "edge.request"]

    # one line per request (written once the answer is sent, hence the wait)
    x.wait_until(lambda: len(access_lines()) >= 2, 10, what="access log lines")
    lines = access_lines()
    assert sorted((ln["route"], ln["status"], ln["method"]) for ln in lines) == [
        (SECRETS, 200, "GET"), (SECRETS + "/{secret_id}", 404, "GET")], lines
    assert all(isinstance(ln["ms"], int) and ln["end"] == "ok" for ln in lines), lines
    assert "sec_NOPE0000000000000000000001" not in h.tail(stack.log_path("edge"), 400)
