"""The provider test servers themselves (tests/e2e/providers), pinned: each speaks its provider's
OAuth protocol, over TLS for the provider's real host name, verified against the session's test
CA, reached the way CREDEX_OAUTH_TEST_CONNECT_TO makes credex reach it. No credex process is
involved: these tests keep the simulators honest so that the black-box tests built on them are.
"""

from __future__ import annotations

import base64
import json
import socket
import ssl
import time
import urllib.parse
import uuid

import jwt
import pytest

from providers import SELF_MANAGED_GITLAB, WRONG_ISSUER_HOST, Fault, pkce_s256

REDIRECT = "https://credex.example.test/api/credentials/oauth/e2e/callback"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def new_client(server, **kw) -> tuple[str, str]:
    cid, secret = f"cid-{uuid.uuid4().hex[:10]}", f"cs-{uuid.uuid4().hex}"
    server.register_client(cid, secret, (REDIRECT,), **kw)
    return cid, secret


def verifier() -> str:
    return base64.urlsafe_b64encode(uuid.uuid4().bytes + uuid.uuid4().bytes).rstrip(b"=").decode() + "-e2e"


def auth_url(base: str, cid: str, v: str | None, scope: str = "", **extra) -> str:
    q = {"response_type": "code", "client_id": cid, "redirect_uri": REDIRECT, "state": uuid.uuid4().hex,
         "scope": scope} | extra
    if v is not None:
        q |= {"code_challenge": pkce_s256(v), "code_challenge_method": "S256"}
    return f"{base}?{urllib.parse.urlencode(q)}"


def consented(sims, server, authorize: str, scope: str, **extra) -> tuple[str, str, str, dict]:
    """A new client of `server` and a consent with PKCE: (client_id, secret, verifier, the
    redirect's query)."""
    cid, secret = new_client(server)
    v = verifier()
    return cid, secret, v, sims.consent(auth_url(authorize, cid, v, scope, **extra))


def post_form(sims, url: str, fields: dict, headers: dict | None = None):
    return sims.request(url, "POST", headers=FORM | (headers or {}), body=urllib.parse.urlencode(fields).encode())


def post_json(sims, url: str, obj: dict, headers: dict | None = None):
    return sims.request(url, "POST", headers={"Content-Type": "application/json"} | (headers or {}),
                        body=json.dumps(obj).encode())


def basic(cid: str, secret: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{cid}:{secret}".encode()).decode()}


def code_fields(cid, secret, code, v) -> dict:
    return {"grant_type": "authorization_code", "client_id": cid, "client_secret": secret, "code": code,
            "redirect_uri": REDIRECT, "code_verifier": v}


def jbody(reply) -> dict:
    status, headers, body = reply
    assert headers["content-type"].startswith("application/json"), (status, headers, body[:200])
    return json.loads(body)


# ---- TLS and the connect-to mapping --------------------------------------------------------------

def test_every_host_is_served_for_its_name_only(providers):
    entries = providers.connect_to().split(",")
    assert len(",".join(entries)) <= 2047  # the variable's documented limit
    hosts = set()
    for e in entries:
        host, port443, loopback, port = e.split(":")
        assert (port443, loopback) == ("443", "127.0.0.1") and int(port) > 0
        hosts.add(host)
        with socket.create_connection(("127.0.0.1", int(port)), timeout=5) as raw, \
                providers.ca.client_context().wrap_socket(raw, server_hostname=host) as tls:
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
    assert {"github.com", "api.github.com", "auth.atlassian.com", "api.atlassian.com", "webexapis.com",
            "identity.pagerduty.com", "api.pagerduty.com", "gitlab.com", SELF_MANAGED_GITLAB,
            "idp.credex.test", WRONG_ISSUER_HOST} <= hosts
    # A server's certificate does not name the other providers, and nothing trusts the test CA
    # without being told to.
    with pytest.raises(ssl.SSLCertVerificationError):
        with socket.create_connection(("127.0.0.1", providers.port_of("github.com")), timeout=5) as raw:
            providers.ca.client_context().wrap_socket(raw, server_hostname="gitlab.com")
    with pytest.raises(ssl.SSLCertVerificationError):
        with socket.create_connection(("127.0.0.1", providers.port_of("github.com")), timeout=5) as raw:
            ssl.create_default_context().wrap_socket(raw, server_hostname="github.com")
    assert f":{providers.canary.port}" not in providers.connect_to()
    assert providers.env()["CREDEX_OAUTH_CA_FILE"] == str(providers.ca_file)


def test_requests_are_recorded_with_host_and_sni(providers):
    mark = providers.webex.mark()
    providers.request("https://webexapis.com/v1/people/me", headers={"Authorization": "Bearer nope"})
    [r] = providers.webex.requests(since=mark)
    assert (r.method, r.host, r.sni, r.path, r.bearer) == ("GET", "webexapis.com", "webexapis.com",
                                                           "/v1/people/me", "nope")
    assert r.contains("nope") and not r.contains("something-else")


# ---- the authorization endpoint, shared by all ---------------------------------------------------

def test_authorization_endpoint_guards(providers):
    gl = providers.gitlab
    cid, _ = new_client(gl)
    base = "https://gitlab.com/oauth/authorize"
    # Unknown client or unregistered redirect_uri: an error page, never a redirect.
    assert providers.request(auth_url(base, "unknown", verifier()))[0] == 400
    bad = auth_url(base, cid, verifier()).replace(urllib.parse.quote(REDIRECT, safe=""),
                                                  urllib.parse.quote("https://evil.example.test/cb", safe=""))
    assert providers.request(bad)[0] == 400
    q = providers.consent(auth_url(base, cid, verifier(), response_type="token"))
    assert q["error"] == "unsupported_response_type"
    gl.require_pkce = True
    try:
        assert providers.consent(auth_url(base, cid, None))["error"] == "invalid_request"
    finally:
        gl.require_pkce = False
    gl.consent = "deny"
    try:
        url = auth_url(base, cid, verifier())
        q = providers.consent(url)
        assert q["error"] == "access_denied"
        assert q["state"] == dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))["state"]
    finally:
        gl.consent = "grant"


# ---- GitHub --------------------------------------------------------------------------------------

def test_github_form_answers_errors_with_200_and_pkce(providers):
    cid, secret, v, q = consented(providers, providers.github, "https://github.com/login/oauth/authorize",
                                  "repo read:user")
    token_url = "https://github.com/login/oauth/access_token"
    # A wrong verifier: HTTP 200 with an error, form-encoded without Accept: application/json;
    # and the code is used up by the attempt.
    status, headers, body = post_form(providers, token_url, code_fields(cid, secret, q["code"], verifier()))
    assert status == 200 and headers["content-type"].startswith("application/x-www-form-urlencoded")
    assert dict(urllib.parse.parse_qsl(body.decode()))["error"] == "bad_verification_code"
    got = jbody(post_form(providers, token_url, code_fields(cid, secret, q["code"], v), {"Accept": "application/json"}))
    assert got["error"] == "bad_verification_code"
    # Right verifier, JSON asked: a non-expiring token, comma-separated scopes, no refresh token.
    q = providers.consent(auth_url("https://github.com/login/oauth/authorize", cid, v, "repo read:user"))
    got = jbody(post_form(providers, token_url, code_fields(cid, secret, q["code"], v), {"Accept": "application/json"}))
    assert (got["token_type"], got["scope"]) == ("bearer", "repo,read:user")
    assert "refresh_token" not in got and "expires_in" not in got
    wrong = jbody(post_form(providers, token_url, code_fields(cid, "wrong", "x", v), {"Accept": "application/json"}))
    assert wrong["error"] == "incorrect_client_credentials"
    # The API wants a User-Agent; revocation of the grant ends the token.
    auth = {"Authorization": f"Bearer {got['access_token']}"}
    assert providers.request("https://api.github.com/user", headers=auth)[0] == 403
    user = jbody(providers.request("https://api.github.com/user", headers=auth | {"User-Agent": "e2e"}))
    assert (user["login"], user["id"]) == ("octo-e2e", 583231)
    status, _, _ = providers.request(f"https://api.github.com/applications/{cid}/grant", "DELETE",
                                     headers=basic(cid, secret) | {"User-Agent": "e2e",
                                                                   "Content-Type": "application/json"},
                                     body=json.dumps({"access_token": got["access_token"]}).encode())
    assert status == 204
    assert providers.request("https://api.github.com/user", headers=auth | {"User-Agent": "e2e"})[0] == 401


def test_github_expiring_tokens_rotate(providers):
    gh = providers.github
    cid, secret = new_client(gh)
    gh.expiring = True
    try:
        got = gh.issue_tokens(cid, "repo")
        assert (got["expires_in"], got["refresh_token_expires_in"]) == (28800, 15811200)
        fields = {"grant_type": "refresh_token", "refresh_token": got["refresh_token"], "client_id": cid,
                  "client_secret": secret}
        url = "https://github.com/login/oauth/access_token"
        again = dict(urllib.parse.parse_qsl(post_form(providers, url, fields)[2].decode()))
        assert again["refresh_token"] != got["refresh_token"]
        reused = dict(urllib.parse.parse_qsl(post_form(providers, url, fields)[2].decode()))
        assert reused["error"] == "bad_refresh_token"
    finally:
        gh.expiring = False


# ---- Atlassian -----------------------------------------------------------------------------------

def test_atlassian_audience_json_body_rotating_refresh_and_sites(providers):
    at = providers.atlassian
    cid, secret = new_client(at)
    v = verifier()
    base = "https://auth.atlassian.com/authorize"
    assert providers.request(auth_url(base, cid, v, "read:jira-work offline_access"))[0] == 400  # no audience
    q = providers.consent(auth_url(base, cid, v, "read:jira-work offline_access", audience="api.atlassian.com",
                                   prompt="consent"))
    got = jbody(post_json(providers, "https://auth.atlassian.com/oauth/token", code_fields(cid, secret, q["code"], v)))
    assert got["expires_in"] == 3600 and got["scope"] == "read:jira-work offline_access" and got["refresh_token"]
    # Client authentication is in the body only.
    fields = {"grant_type": "refresh_token", "client_id": cid, "client_secret": secret,
              "refresh_token": got["refresh_token"]}
    status, _, _ = post_json(providers, "https://auth.atlassian.com/oauth/token",
                             {k: v for k, v in fields.items() if k != "client_secret"}, basic(cid, secret))
    assert status == 401
    new = jbody(post_json(providers, "https://auth.atlassian.com/oauth/token", fields))
    assert new["refresh_token"] != got["refresh_token"]
    status, _, body = post_json(providers, "https://auth.atlassian.com/oauth/token", fields)
    assert (status, json.loads(body)["error"]) == (403, "invalid_grant")
    auth = {"Authorization": f"Bearer {new['access_token']}"}
    me = jbody(providers.request("https://api.atlassian.com/me", headers=auth))
    assert me["account_id"] == at.user.id
    sites = jbody(providers.request("https://api.atlassian.com/oauth/token/accessible-resources", headers=auth))
    assert sites[0]["id"] and sites[0]["url"].startswith("https://")
    assert "refresh_token" not in at.issue_tokens(cid, "read:jira-work")  # no offline_access, no refresh


# ---- Webex ---------------------------------------------------------------------------------------

def test_webex_post_auth_and_non_rotating_refresh(providers):
    wx = providers.webex
    cid, secret, v, q = consented(providers, wx, "https://webexapis.com/v1/authorize", "spark:people_read")
    url = "https://webexapis.com/v1/access_token"
    fields = code_fields(cid, secret, q["code"], v)
    no_secret = {k: x for k, x in fields.items() if k != "client_secret"}
    assert post_form(providers, url, no_secret, basic(cid, secret))[0] == 401
    q = providers.consent(auth_url("https://webexapis.com/v1/authorize", cid, v, "spark:people_read"))
    got = jbody(post_form(providers, url, code_fields(cid, secret, q["code"], v)))
    assert (got["expires_in"], got["refresh_token_expires_in"]) == (1209599, 7776000)
    refresh = {"grant_type": "refresh_token", "client_id": cid, "client_secret": secret,
               "refresh_token": got["refresh_token"]}
    assert jbody(post_form(providers, url, refresh))["refresh_token"] == got["refresh_token"]
    me = jbody(providers.request("https://webexapis.com/v1/people/me",
                                 headers={"Authorization": f"Bearer {got['access_token']}"}))
    assert me["id"] == wx.user.id and me["emails"] == [wx.user.email]


# ---- PagerDuty -----------------------------------------------------------------------------------

def test_pagerduty_flow_users_me_and_revoke(providers):
    pd = providers.pagerduty
    cid, secret, v, q = consented(providers, pd, "https://identity.pagerduty.com/oauth/authorize",
                                  "users.read incidents.read")
    got = jbody(post_form(providers, "https://identity.pagerduty.com/oauth/token",
                          code_fields(cid, secret, q["code"], v)))
    assert got["scope"] == "users.read incidents.read" and got["access_token"].startswith("pdus+")
    auth = {"Authorization": f"Bearer {got['access_token']}",
            "Accept": "application/vnd.pagerduty+json;version=2"}
    assert jbody(providers.request("https://api.pagerduty.com/users/me", headers=auth))["user"]["id"] == pd.user.id
    status, _, _ = post_form(providers, "https://identity.pagerduty.com/oauth/revoke",
                             {"client_id": cid, "client_secret": secret, "token": got["access_token"]})
    assert status == 200
    assert providers.request("https://api.pagerduty.com/users/me", headers=auth)[0] == 401


# ---- GitLab --------------------------------------------------------------------------------------

@pytest.mark.parametrize("host", ["gitlab.com", SELF_MANAGED_GITLAB])
def test_gitlab_flow_created_at_and_rotation(providers, host):
    gl = providers.gitlab if host == "gitlab.com" else providers.gitlab_self
    other = providers.gitlab_self if gl is providers.gitlab else providers.gitlab
    cid, secret, v, q = consented(providers, gl, f"https://{host}/oauth/authorize", "read_user read_api")
    url = f"https://{host}/oauth/token"
    got = jbody(post_form(providers, url, code_fields(cid, secret, q["code"], v)))
    assert got["expires_in"] == 7200 and abs(got["created_at"] - time.time()) < 60
    # The code is single use.
    assert jbody(post_form(providers, url, code_fields(cid, secret, q["code"], v)))["error"] == "invalid_grant"
    refresh = {"grant_type": "refresh_token", "client_id": cid, "client_secret": secret,
               "refresh_token": got["refresh_token"]}
    assert jbody(post_form(providers, url, refresh))["refresh_token"] != got["refresh_token"]
    status, _, body = post_form(providers, url, refresh)
    assert (status, json.loads(body)["error"]) == (400, "invalid_grant")
    auth = {"Authorization": f"Bearer {got['access_token']}"}
    assert jbody(providers.request(f"https://{host}/api/v4/user", headers=auth))["username"] == gl.user.login
    assert providers.request(f"https://{other.hosts[0]}/api/v4/user", headers=auth)[0] == 401


# ---- the generic OAuth 2.0 / OIDC provider -------------------------------------------------------

def test_generic_discovery_id_token_and_client_auth(providers):
    g = providers.generic
    issuer = g.new_tenant()
    oidc = jbody(providers.request(f"{issuer}/.well-known/openid-configuration"))
    path = urllib.parse.urlsplit(issuer).path
    rfc8414 = jbody(providers.request(f"https://idp.credex.test/.well-known/oauth-authorization-server{path}"))
    assert oidc["issuer"] == rfc8414["issuer"] == issuer
    assert oidc["token_endpoint"] == f"{issuer}/token" and oidc["code_challenge_methods_supported"] == ["S256"]
    cid, secret = new_client(g, auth_method="client_secret_basic")
    v, nonce = verifier(), uuid.uuid4().hex
    q = providers.consent(auth_url(oidc["authorization_endpoint"], cid, v, "openid email", nonce=nonce))
    fields = code_fields(cid, secret, q["code"], v)
    assert post_form(providers, oidc["token_endpoint"], fields)[0] == 401  # post, but registered basic
    q = providers.consent(auth_url(oidc["authorization_endpoint"], cid, v, "openid email", nonce=nonce))
    fields = code_fields(cid, secret, q["code"], v)
    fields.pop("client_secret")
    got = jbody(post_form(providers, oidc["token_endpoint"], fields, basic(cid, secret)))
    jwks = jbody(providers.request(oidc["jwks_uri"]))
    key = jwt.PyJWK(jwks["keys"][0]).key
    claims = jwt.decode(got["id_token"], key, algorithms=["RS256"], audience=cid, issuer=issuer)
    assert claims["nonce"] == nonce and claims["sub"] == g.user.id
    info = jbody(providers.request(oidc["userinfo_endpoint"],
                                   headers={"Authorization": f"Bearer {got['access_token']}"}))
    assert info["sub"] == g.user.id


def test_generic_wrong_issuer_and_discovery_patch(providers):
    g = providers.generic
    issuer = g.new_tenant(WRONG_ISSUER_HOST)
    doc = jbody(providers.request(f"{issuer}/.well-known/openid-configuration"))
    assert doc["issuer"] != issuer and doc["issuer"].startswith("https://idp.credex.test/")
    issuer = g.new_tenant()
    g.discovery_patch[issuer] = {"token_endpoint": "https://169.254.169.254/latest/meta-data/"}
    doc = jbody(providers.request(f"{issuer}/.well-known/openid-configuration"))
    assert doc["token_endpoint"] == "https://169.254.169.254/latest/meta-data/" and doc["issuer"] == issuer


# ---- faults --------------------------------------------------------------------------------------

def test_faults_redirect_status_oversized_slow(providers):
    g = providers.generic
    issuer = g.new_tenant()
    token = f"{issuer}/token"
    path = urllib.parse.urlsplit(token).path
    g.add_fault(Fault("redirect", path_suffix=path, times=1, location=providers.canary_url("/steal")))
    status, headers, _ = providers.request(token, "POST", headers=FORM, body=b"grant_type=x")
    assert (status, headers["location"]) == (302, providers.canary_url("/steal"))
    g.add_fault(Fault("status", path_suffix=path, times=1, status=429, headers=[("Retry-After", "7")],
                      body=b'{"error":"rate_limited"}'))
    status, headers, _ = providers.request(token, "POST", headers=FORM, body=b"grant_type=x")
    assert (status, headers["retry-after"]) == (429, "7")
    assert providers.request(token, "POST", headers=FORM, body=b"grant_type=x")[0] == 401  # faults used up
    g.add_fault(Fault("oversized", path_suffix=path, times=1, size=3 << 20))
    status, headers, body = providers.request(token, "POST", headers=FORM, body=b"grant_type=x")
    assert status == 200 and int(headers["content-length"]) == len(body) == 3 << 20
    g.add_fault(Fault("slow", path_suffix=path, times=1, seconds=1.0))
    started = time.monotonic()
    assert providers.request(token, "POST", headers=FORM, body=b"grant_type=x")[0] == 401
    assert time.monotonic() - started >= 1.0
    before = providers.canary.connections
    socket.create_connection(("127.0.0.1", providers.canary.port), timeout=5).close()
    deadline = time.monotonic() + 5
    while providers.canary.connections == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert providers.canary.connections == before + 1
    assert not g.errors, g.errors


# ---- wiring into the session stack ---------------------------------------------------------------

def test_stack_oauth_gets_the_provider_settings(stack, providers):
    """oauth of the session stack runs with the connect-to mapping and the test CA (scripts/run
    passes them through), and processes spawned from the stack would get them too."""
    pid = stack.pid("oauth")
    assert pid, "no oauth pid"
    environ = dict(e.split("=", 1) for e in open(f"/proc/{pid}/environ", "rb").read().decode().split("\0") if "=" in e)
    assert environ.get("CREDEX_OAUTH_TEST_CONNECT_TO") == providers.connect_to()
    assert environ.get("CREDEX_OAUTH_CA_FILE") == str(providers.ca_file)
    assert environ.get("CREDEX_PRODUCTION", "false") != "true"
    assert stack.env["CREDEX_OAUTH_TEST_CONNECT_TO"] == providers.connect_to()
