"""Issue 9: the browser guardrails of the edge, one test per row (docs/HTTP_API.md, "Guardrails").

The session stack's edge runs with the defaults (no allowed origin, same-site refused); a private
edge (`cors`) allows one origin and same-site requests. Every answer of every test passes
credex_edge.check_common: the security headers, a correlation id, JSON bodies, and never
Access-Control-Allow-Credentials.
"""

from __future__ import annotations

import uuid

import pytest

import credex_api as x
import credex_edge as e
from credex_edge import edge  # noqa: F401 (the fixture)

SECRETS = e.SECRETS
UI_ORIGIN = "http://ui.credex.test:3000"


@pytest.fixture(scope="module")
def cors(stack, api):
    inst, port = e.spawn_edge(stack, CREDEX_EDGE_ALLOWED_ORIGINS=f"https://other.example, {UI_ORIGIN}",
                              CREDEX_EDGE_ALLOW_SAME_SITE="true")
    client = e.Edge(api, f"http://127.0.0.1:{port}")
    yield client
    client.close()
    assert inst.stop() == 0, inst.log_text()[-2000:]


def create_body(name: str) -> dict:
    return {"idempotencyKey": str(uuid.uuid4()), "kind": "SECRET_KIND_API_KEY", "displayName": name,
            "value": e.b64(e.canary("guard"))}


def refused_and_not_stored(edge: e.Edge, api, status: int, code: str, headers: dict, *,
                           content_type: str = "application/json", body: bytes | None = None) -> dict:
    """A create with these headers is refused and stores nothing."""
    user, name = x.uid("mallory"), f"guard {uuid.uuid4().hex}"
    import json as _json
    data = body if body is not None else _json.dumps(create_body(name)).encode()
    hdrs = {"Content-Type": content_type} if content_type else {}
    r = edge.call("POST", SECRETS, user=user, data=data, headers=hdrs | headers)
    err = e.error_of(r, status, code)
    assert e.secrets_named(api, name) == []
    return err


# ---- Sec-Fetch-Site ------------------------------------------------------------------------------

def test_cross_site_is_refused(edge, api):
    err = refused_and_not_stored(edge, api, 403, "browser_denied", {"Sec-Fetch-Site": "cross-site"})
    assert "cross-site" in err["message"]
    e.error_of(edge.get(SECRETS, user=x.uid("u"), headers={"Sec-Fetch-Site": "cross-site"}), 403, "browser_denied")


def test_cross_site_is_refused_even_where_same_site_is_allowed(cors):
    r = cors.get(SECRETS, user=x.uid("u"), headers={"Sec-Fetch-Site": "cross-site", "Origin": UI_ORIGIN})
    e.error_of(r, 403, "browser_denied")


def test_same_site_is_refused_by_default(edge, api):
    err = refused_and_not_stored(edge, api, 403, "browser_denied", {"Sec-Fetch-Site": "same-site"})
    assert "same-site" in err["message"]


def test_same_site_is_allowed_when_configured(cors):
    r = cors.get(SECRETS, user=x.uid("u"), headers={"Sec-Fetch-Site": "same-site"})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("value", ["same-origin", "none"])
def test_same_origin_and_user_initiated_pass(edge, value):
    r = edge.get(SECRETS, user=x.uid("u"), headers={"Sec-Fetch-Site": value})
    assert r.status_code == 200, r.text


def test_an_unknown_fetch_site_value_is_refused(edge):
    e.error_of(edge.get(SECRETS, user=x.uid("u"), headers={"Sec-Fetch-Site": "same-planet"}), 403, "browser_denied")


# ---- Origin and CORS ----------------------------------------------------------------------------

def test_a_foreign_origin_is_refused(edge, cors, api):
    # the session edge allows no origin at all; the private one allows others, not this one
    refused_and_not_stored(edge, api, 403, "browser_denied", {"Origin": UI_ORIGIN})
    for origin in ("https://evil.example", "http://ui.credex.test:3001", UI_ORIGIN + "/", "null",
                   UI_ORIGIN.upper()):
        r = cors.get(SECRETS, user=x.uid("u"), headers={"Origin": origin})
        e.error_of(r, 403, "browser_denied")
        assert "Access-Control-Allow-Origin" not in r.headers


def test_an_allowed_origin_gets_cors_headers(cors):
    user = x.uid("u")
    r = cors.get(SECRETS, user=user, headers={"Origin": UI_ORIGIN, "Sec-Fetch-Site": "same-site"})
    assert r.status_code == 200, r.text
    assert r.headers["Access-Control-Allow-Origin"] == UI_ORIGIN
    assert r.headers["Access-Control-Expose-Headers"] == "X-Correlation-Id"
    assert r.headers["Vary"] == "Origin"
    # errors too, so that the page can read the reason
    r = cors.get(f"{SECRETS}/sec_NOPE0000000000000000000000", user=user, headers={"Origin": UI_ORIGIN})
    e.error_of(r, 404, "not_found")
    assert r.headers["Access-Control-Allow-Origin"] == UI_ORIGIN
    # no Origin, no CORS headers
    r = cors.get(SECRETS, user=user)
    assert r.status_code == 200 and "Access-Control-Allow-Origin" not in r.headers


def test_preflight_from_an_allowed_origin(cors):
    r = cors.call("OPTIONS", f"{SECRETS}/sec_1/rotate",
                  headers={"Origin": UI_ORIGIN, "Access-Control-Request-Method": "POST",
                           "Access-Control-Request-Headers": "authorization, content-type"})
    assert r.status_code == 204, r.text
    assert r.content == b""
    assert r.headers["Access-Control-Allow-Origin"] == UI_ORIGIN
    assert set(r.headers["Access-Control-Allow-Methods"].split(", ")) == {"GET", "POST", "PATCH", "DELETE"}
    assert set(r.headers["Access-Control-Allow-Headers"].split(", ")) == {
        "Authorization", "Content-Type", "X-Correlation-Id"}
    assert int(r.headers["Access-Control-Max-Age"]) > 0


@pytest.mark.parametrize("origin", [None, "https://evil.example"], ids=["no-origin", "foreign-origin"])
def test_preflight_is_refused_otherwise(edge, cors, origin):
    headers = {"Access-Control-Request-Method": "POST"} | ({"Origin": origin} if origin else {})
    for client in (cors, edge):
        r = client.call("OPTIONS", SECRETS, headers=headers)
        e.error_of(r, 403, "browser_denied")
        assert not any(k.startswith("Access-Control-Allow") for k in r.headers), dict(r.headers)


def test_never_a_credentials_header(cors, edge):
    """CORS with credentials would let a page send cookies; the edge never allows it, on any
    answer (check_common asserts it on every answer of every test; here the likeliest ones)."""
    user = x.uid("u")
    answers = [
        cors.call("OPTIONS", SECRETS, headers={"Origin": UI_ORIGIN, "Access-Control-Request-Method": "GET"}),
        cors.get(SECRETS, user=user, headers={"Origin": UI_ORIGIN, "Cookie": "session=abc"}),
        cors.get(SECRETS, headers={"Origin": UI_ORIGIN}),
        edge.get(SECRETS, user=user, headers={"Origin": UI_ORIGIN}),
    ]
    assert [r.status_code for r in answers] == [204, 200, 401, 403]
    for r in answers:
        assert "Access-Control-Allow-Credentials" not in r.headers
        assert r.headers.get("Access-Control-Allow-Origin") in (None, UI_ORIGIN)


# ---- media types ---------------------------------------------------------------------------------

@pytest.mark.parametrize("content_type,body", [
    ("application/x-www-form-urlencoded", b"displayName=x&value=eA%3D%3D"),
    ("multipart/form-data; boundary=b", b"--b\r\nContent-Disposition: form-data; name=x\r\n\r\ny\r\n--b--\r\n"),
    ("text/plain", None),
    ("text/plain; charset=utf-8", None),
    ("application/json; charset=latin1", None),
    ("application/jsonx", None),
    ("", None),
], ids=["form", "multipart", "text", "text-utf8", "json-latin1", "jsonx", "missing"])
def test_a_body_that_is_not_json_is_refused(edge, api, content_type, body):
    refused_and_not_stored(edge, api, 415, "invalid_argument", {}, content_type=content_type, body=body)


def test_a_post_without_a_body_still_needs_json(edge):
    r = edge.call("POST", f"{SECRETS}/sec_1/revoke", user=x.uid("u"))
    e.error_of(r, 415, "invalid_argument")


def test_json_with_charset_is_accepted(edge, api):
    import json as _json
    name = f"charset {uuid.uuid4().hex}"
    r = edge.call("POST", SECRETS, user=x.uid("u"), data=_json.dumps(create_body(name)),
                  headers={"Content-Type": "application/json; charset=UTF-8"})
    assert r.status_code == 201, r.text
    assert len(e.secrets_named(api, name)) == 1


# ---- headers on every answer ------------------------------------------------------------------

def test_security_headers_on_every_kind_of_answer(edge, cors):
    user = x.uid("u")
    answers = {
        200: edge.get(SECRETS, user=user),
        201: edge.post(SECRETS, create_body("headers"), user=user),
        204: cors.call("OPTIONS", SECRETS, headers={"Origin": UI_ORIGIN, "Access-Control-Request-Method": "GET"}),
        400: edge.get(SECRETS, user=user, params={"page_size": "many"}),
        401: edge.get(SECRETS),
        403: edge.get(SECRETS, user=user, headers={"Sec-Fetch-Site": "cross-site"}),
        404: edge.get("/api/credentials/nothing-here", user=user),
        405: edge.call("PUT", SECRETS, user=user),
        413: edge.call("POST", SECRETS, user=user, data=b"{" + b" " * 300000 + b"}",
                       headers={"Content-Type": "application/json"}),
        415: edge.call("POST", SECRETS, user=user, data=b"x", headers={"Content-Type": "text/plain"}),
        501: edge.get("/api/credentials/audit", user=user),
    }
    for status, r in answers.items():
        assert r.status_code == status, (status, r.status_code, r.text)
        e.check_common(r)  # again, explicitly
    assert answers[405].headers["Allow"] == "GET, POST"
    for status in (200, 201, 204):
        assert "Connection" not in answers[status].headers or answers[status].headers["Connection"] != "close"


# ---- authentication ------------------------------------------------------------------------------

def test_cookies_are_never_authentication(edge):
    user = x.uid("u")
    token = edge.token(user)
    # a valid token in a cookie is not a credential
    r = edge.get(SECRETS, headers={"Cookie": f"session={token}; access_token={token}"})
    e.error_of(r, 401, "unauthenticated")
    # next to a bearer token a cookie changes nothing
    r = edge.get(SECRETS, user=user, headers={"Cookie": "session=whatever"})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("value", [None, "Basic dXNlcjpwYXNz", "Bearer", "Bearer ", "Token tok-three",
                                   "Bearer tok-one tok-two"],
                         ids=["none", "basic", "bare", "empty", "token", "two-words"])
def test_no_usable_bearer_token_is_401(edge, value):
    headers = {"Authorization": value} if value is not None else {}
    err = e.error_of(edge.get(SECRETS, headers=headers), 401, "unauthenticated")
    for credential in (value or "").split()[1:]:
        assert credential not in err["message"]


def test_two_authorization_headers_are_refused(stack, api):
    user = x.uid("u")
    tok = api.tokens.user(user)
    req = (f"GET {SECRETS} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tok}\r\n"
           f"Authorization: Bearer {tok}\r\n\r\n").encode()
    resp = e.raw_exchange(stack.ports["edge-http"], req)
    assert e.raw_status(resp) == 400, resp[:200]
    assert e.raw_body(resp)["error"]["code"] == "invalid_argument"
