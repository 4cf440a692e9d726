"""Issue 9: hostile and broken input at the edge. Every case is answered 4xx with the one error
body, its message never repeats the input, and nothing is stored (the database is checked for the
display name the request carried).
"""

from __future__ import annotations

import json
import uuid

import pytest

import credex_api as x
import credex_edge as e
from credex_edge import edge  # noqa: F401 (the fixture)

SECRETS = e.SECRETS
MARK = "zq-marker"  # in every hostile value: must never come back in a message or a log


def valid_create(name: str) -> dict:
    return {"idempotencyKey": str(uuid.uuid4()), "kind": "SECRET_KIND_API_KEY", "displayName": name,
            "value": e.b64(e.canary("input"))}


def no_echo(err: dict) -> None:
    assert MARK not in err["message"], err


def create_raw(edge: e.Edge, api, body: bytes, status: int, code: str, name: str) -> dict:
    r = edge.call("POST", SECRETS, user=x.uid("u"), data=body, headers={"Content-Type": "application/json"})
    err = e.error_of(r, status, code)
    no_echo(err)
    assert e.secrets_named(api, name) == []
    return err


def named(name: str, **override) -> bytes:
    return json.dumps(valid_create(name) | override).encode()


BODIES = {
    "malformed": lambda n: named(n)[:-5],
    "trailing-garbage": lambda n: named(n) + b" {}",
    "not-an-object": lambda n: json.dumps([valid_create(n)]).encode(),
    "unknown-field": lambda n: named(n, **{f"{MARK}Field": 1}),
    "unknown-nested-field": lambda n: named(n, owner={"ownerType": "OWNER_TYPE_USER", f"{MARK}": "x"}),
    "name-is-a-number": lambda n: json.dumps(valid_create(n) | {"description": 12}).encode(),
    "value-not-base64": lambda n: named(n, value=f"{MARK}!!"),
    "unknown-enum-name": lambda n: named(n, kind=f"SECRET_KIND_{MARK}"),
    "list-is-a-string": lambda n: named(n, allowedUses=MARK),
    "duplicate-key": lambda n: named(n)[:-1] + b', "displayName": "' + MARK.encode() + b'"}',
    "both-names": lambda n: named(n, display_name=MARK),
    "nul-in-string": lambda n: named(n, description=f"a\u0000{MARK}"),
    "invalid-utf8": lambda n: named(n, description="PLACEHOLDER").replace(b"PLACEHOLDER", b"\xff\xfe" + MARK.encode()),
    "lone-surrogate": lambda n: named(n)[:-1] + b', "description": "\\ud800' + MARK.encode() + b'"}',
    "deep-nesting": lambda n: named(n)[:-1] + b', "owner": ' + b'{"ownerId":' * 60 + b'1' + b'}' * 60 + b'}',
    "huge-number": lambda n: named(n)[:-1] + b', "kind": 1e999}',
}


@pytest.mark.parametrize("case", list(BODIES), ids=list(BODIES))
def test_bad_bodies_are_400_and_store_nothing(edge, api, case):
    name = f"input {case} {uuid.uuid4().hex}"
    create_raw(edge, api, BODIES[case](name), 400, "invalid_argument", name)


def test_a_huge_body_is_413(edge, api):
    name = f"huge {uuid.uuid4().hex}"
    body = named(name, description=MARK * 30000)  # ~270 KB, over the 256 KiB default
    assert len(body) > 262144
    create_raw(edge, api, body, 413, "resource_exhausted", name)


def test_a_huge_chunked_body_is_413(edge, api):
    name = f"chunked {uuid.uuid4().hex}"
    body = named(name, description=MARK * 30000)

    def chunks():
        for i in range(0, len(body), 8192):
            yield body[i:i + 8192]

    r = edge.call("POST", SECRETS, user=x.uid("u"), data=chunks(), headers={"Content-Type": "application/json"})
    assert r.request.headers.get("Transfer-Encoding") == "chunked"
    no_echo(e.error_of(r, 413, "resource_exhausted"))
    assert e.secrets_named(api, name) == []


def test_a_small_chunked_body_is_fine(edge, api):
    name = f"chunked-ok {uuid.uuid4().hex}"
    body = named(name)
    r = edge.call("POST", SECRETS, user=x.uid("u"), data=iter([body[:10], body[10:]]),
                  headers={"Content-Type": "application/json"})
    assert r.status_code == 201, r.text
    assert len(e.secrets_named(api, name)) == 1


def test_a_body_cannot_retarget_the_path(edge, api):
    owner = x.uid("u")
    sid = edge.create(owner, e.canary("retarget")).json()["secret"]["secretId"]
    other = edge.create(owner, e.canary("other")).json()["secret"]["secretId"]
    r = edge.post(f"{SECRETS}/{sid}/revoke", {"secretId": other}, user=owner)
    err = e.error_of(r, 400, "invalid_argument")
    assert other not in err["message"] and "secret_id" in err["message"]
    assert edge.get(f"{SECRETS}/{other}", user=owner).json()["status"] == "SECRET_STATUS_ACTIVE"
    # the same id in both places is fine
    r = edge.post(f"{SECRETS}/{sid}/revoke", {"secretId": sid}, user=owner)
    assert r.status_code == 200 and r.json()["status"] == "SECRET_STATUS_REVOKED", r.text


# ---- paths -------------------------------------------------------------------------------------

@pytest.mark.parametrize("path,message", [
    (f"{SECRETS}/..%2F..%2F{MARK}", "encoded '/'"),
    (f"{SECRETS}/a%2f{MARK}", "encoded '/'"),
    (f"{SECRETS}/%2e%2e", "'.' and '..'"),
    (f"{SECRETS}/{MARK}%00", "control characters"),
    (f"{SECRETS}/{MARK}%ff", "UTF-8"),
    (f"{SECRETS}/{MARK}%C0%AF", "UTF-8"),
], ids=["dotdot-slash", "slash", "dotdot-encoded", "nul", "bad-utf8", "overlong-slash"])
def test_bad_path_parameters_are_400(edge, path, message):
    err = e.error_of(edge.get(path, user=x.uid("u")), 400, "invalid_argument")
    assert message in err["message"]
    no_echo(err)


@pytest.mark.parametrize("target", [
    f"{SECRETS}/../../healthz",
    "/api/credentials/./secrets",
    f"{SECRETS}/sec_1/../../secrets",
    f"{SECRETS}/{MARK}%zz",
    f"{SECRETS}/{MARK}%4",
], ids=["dotdot", "dot", "dotdot-inner", "bad-escape", "short-escape"])
def test_raw_paths_are_400(stack, api, target):
    """Sent as they are (HTTP clients normalise dot segments and re-escape a stray '%')."""
    tok = api.tokens.user(x.uid("u"))
    resp = e.raw_exchange(stack.ports["edge-http"],
                          f"GET {target} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tok}\r\n\r\n".encode())
    assert e.raw_status(resp) == 400, resp[:300]
    assert e.raw_body(resp)["error"]["code"] == "invalid_argument"
    assert MARK.encode() not in resp


def test_unknown_routes_and_methods(edge):
    user = x.uid("u")
    e.error_of(edge.get(f"/api/credentials/{MARK}", user=user), 404, "not_found")
    e.error_of(edge.get(f"{SECRETS}/", user=user), 404, "not_found")
    e.error_of(edge.get("/", user=user), 404, "not_found")
    r = edge.call("PUT", f"{SECRETS}/sec_1", user=user)
    e.error_of(r, 405, "unimplemented")
    assert r.headers["Allow"] == "GET, PATCH, DELETE"
    r = edge.call("HEAD", "/healthz")
    assert r.status_code == 405 and r.headers["Allow"] == "GET"


# ---- query strings -----------------------------------------------------------------------------

@pytest.mark.parametrize("query,message", [
    (f"{MARK}=1", "not known on this route"),
    ("page_size=1&page_size=2", "more than once"),
    (f"page_size={MARK}", "page_size: expected an integer"),
    ("page_size=4294967296", "page_size: expected an integer"),
    ("page_size=-1", "page_size: expected an integer"),
    (f"scope=LIST_SECRETS_SCOPE_{MARK}", "scope: expected a value name of credex.v1.ListSecretsScope"),
    ("scope=1", "scope: expected a value name"),
    (f"provider={MARK}%00", "control characters"),
    (f"provider={MARK}%ff", "UTF-8"),
], ids=["unknown", "repeated", "not-a-number", "too-big", "negative", "bad-enum", "enum-number", "nul", "bad-utf8"])
def test_bad_query_parameters_are_400(edge, query, message):
    err = e.error_of(edge.get(f"{SECRETS}?{query}", user=x.uid("u")), 400, "invalid_argument")
    assert message in err["message"], err
    no_echo(err)


def test_query_values_are_decoded(edge):
    owner = x.uid("u")
    edge.create(owner, e.canary("query"), provider="open:ai/x")
    r = edge.get(f"{SECRETS}?provider=open%3Aai%2Fx&scope=LIST%5FSECRETS%5FSCOPE%5FOWNED", user=owner)
    assert r.status_code == 200, r.text
    assert [s["provider"] for s in r.json()["secrets"]] == ["open:ai/x"]
    # '+' is a space in a query string (and a space is no label character)
    r = edge.get(f"{SECRETS}?provider=open+ai", user=owner)
    assert "provider: must be" in e.error_of(r, 400, "invalid_argument")["message"]


# ---- headers and framing -------------------------------------------------------------------------

def test_a_long_header_is_431(edge):
    r = edge.get(SECRETS, user=x.uid("u"), headers={"X-Padding": MARK * 2000})  # ~18 KB > 16 KiB
    no_echo(e.error_of(r, 431, "resource_exhausted"))


def test_a_header_beyond_the_server_memory_is_refused(stack):
    resp = e.raw_exchange(stack.ports["edge-http"],
                          f"GET {SECRETS} HTTP/1.1\r\nHost: x\r\nX-Padding: {'a' * 200000}\r\n\r\n".encode())
    assert e.raw_status(resp) in (0, 431), resp[:200]  # libmicrohttpd's own answer, or a close


def test_a_body_on_a_route_without_one_is_400(edge):
    r = edge.call("GET", SECRETS, user=x.uid("u"), data=b"{}", headers={"Content-Type": "application/json"})
    e.error_of(r, 400, "invalid_argument")
    r = edge.call("DELETE", f"{SECRETS}/sec_1", user=x.uid("u"), data=b"{}",
                  headers={"Content-Type": "application/json"})
    e.error_of(r, 400, "invalid_argument")


def test_ambiguous_framing_is_400(stack, api):
    tok = api.tokens.user(x.uid("u"))
    body = b'{"displayName":"x"}'
    req = (f"POST {SECRETS} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tok}\r\n"
           f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
           f"Transfer-Encoding: chunked\r\n\r\n").encode() + b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n"
    resp = e.raw_exchange(stack.ports["edge-http"], req)
    assert e.raw_status(resp) == 400, resp[:300]


def test_no_hostile_value_reached_the_edge_log(edge, stack):
    """Run last in this file: the edge logs routes, reasons and ids, never an input value."""
    text = stack.log_text("edge")
    assert MARK not in text
