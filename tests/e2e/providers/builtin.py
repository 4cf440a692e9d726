"""Test servers of the built-in providers, each speaking that provider's OAuth protocol as its
public documentation describes it (written for these tests; the values marked "sim default" are
this server's choices where the documentation leaves them open).
"""

from __future__ import annotations

import hashlib
import time
import urllib.parse

from .oauth import OAuthServer
from .server import Reply, Request, TokenGrant, User


class GitHub(OAuthServer):
    """github.com (authorize, token) and api.github.com (user, revocation), an OAuth app.

    Quirks: the token answer is form-encoded unless the request says Accept: application/json;
    token errors come with HTTP 200 and an `error` field (bad_verification_code,
    incorrect_client_credentials, redirect_uri_mismatch, bad_refresh_token); scopes in the
    answer are comma-separated; OAuth-app tokens do not expire and come without a refresh token
    (set `expiring = True` for the expiring user tokens of GitHub Apps: 8 hours, a rotating
    refresh token valid about six months); the REST API refuses requests without a User-Agent;
    revocation is DELETE /applications/{client_id}/grant or /token with Basic client
    authentication and a JSON body {"access_token": ...}."""

    label = "github"
    authorize_path = "/login/oauth/authorize"
    token_path = "/login/oauth/access_token"
    scope_separator = ","
    token_prefix = "gh"
    access_expires_in = None
    issues_refresh = False

    def __init__(self, ca):
        super().__init__(ca, ["github.com", "api.github.com"],
                         User(id="583231", login="octo-e2e", name="Octo E2E", email="octo@example.test"))
        self.expiring = False

    def wants_refresh(self, scope: str) -> bool:
        return self.expiring

    def _token_payload(self, grant: TokenGrant, refresh: str | None) -> dict:
        saved = self.access_expires_in, self.refresh_expires_in
        if self.expiring:
            self.access_expires_in, self.refresh_expires_in = 28800, 15811200
        try:
            payload = super()._token_payload(grant, refresh)
        finally:
            self.access_expires_in, self.refresh_expires_in = saved
        payload["token_type"] = "bearer"
        return payload

    def _wants_json(self, req: Request) -> bool:
        return "application/json" in req.headers.get("accept", "")

    def token_reply(self, req: Request, payload: dict) -> Reply:
        return Reply.json(200, payload) if self._wants_json(req) else Reply.form(200, payload)

    def token_error(self, req: Request, status: int, error: str, description: str) -> Reply:
        error = {"invalid_client": "incorrect_client_credentials", "invalid_grant": "bad_verification_code"}.get(
            error, error)
        body = {"error": error, "error_description": description,
                "error_uri": "https://docs.github.com/apps/troubleshooting"}
        return Reply.json(200, body) if self._wants_json(req) else Reply.form(200, body)

    def refresh_error(self, req: Request) -> Reply:
        return self.token_error(req, 200, "bad_refresh_token", "The refresh token passed is incorrect or expired.")

    def body_kind(self, req: Request) -> str | None:
        # GitHub takes the parameters as a form body or in the query of the POST.
        return super().body_kind(req) or "form"

    def token(self, req: Request) -> Reply:
        if not req.form and req.query:
            req.form = dict(req.query)
        return super().token(req)

    identity_paths = {"/user": "user_info"}

    def handle(self, req: Request) -> Reply:
        if req.method == "DELETE" and req.path.startswith("/applications/"):
            return self.revoke_app(req)
        return super().handle(req)

    def api_precheck(self, req: Request) -> Reply | None:
        if not req.headers.get("user-agent"):
            return Reply.text(403, "Request forbidden by administrative rules. "
                                   "Please make sure your request has a User-Agent header.")
        return None

    def user_info(self, req: Request, grant: TokenGrant) -> Reply:
        u = grant.user
        scopes = ", ".join(grant.scope.replace(",", " ").split())
        return Reply.json(200, {"login": u.login, "id": int(u.id), "node_id": f"U_{u.id}", "type": "User",
                                "name": u.name, "email": u.email}, [("X-OAuth-Scopes", scopes)])

    def revoke_app(self, req: Request) -> Reply:
        bad = self.api_precheck(req)
        if bad:
            return bad
        parts = req.path.strip("/").split("/")
        if len(parts) != 3 or parts[2] not in ("grant", "token"):
            return Reply.json(404, {"message": "Not Found"})
        basic = req.basic_auth
        client = self.clients.get(parts[1])
        if basic is None or client is None or basic != (client.client_id, client.client_secret):
            return Reply.json(404, {"message": "Not Found"})  # GitHub hides unauthenticated apps
        token = (req.json or {}).get("access_token") if isinstance(req.json, dict) else None
        grant = self.book.check_access(token)
        if grant is None or grant.client_id != client.client_id:
            return Reply.json(422, {"message": "Validation Failed"})
        if parts[2] == "grant":
            self.book.revoke_all(client.client_id, grant.user.id)
        else:
            self.book.revoke(token, client.client_id)
        return Reply(204)


class Atlassian(OAuthServer):
    """auth.atlassian.com (authorize, token) and api.atlassian.com (/me,
    /oauth/token/accessible-resources): OAuth 2.0 (3LO).

    Quirks: the authorization request must carry audience=api.atlassian.com (and usually
    prompt=consent); the token request is a JSON body (a form body is accepted too) with the
    client secret in it; access tokens last an hour; a refresh token is issued only for the
    offline_access scope and rotates: each refresh returns a new one, and a used one is refused
    with 403 invalid_grant; sites (cloud ids) are named by accessible-resources; there is no
    public revocation endpoint."""

    label = "atlassian"
    authorize_path = "/authorize"
    token_path = "/oauth/token"
    token_auth = ("client_secret_post",)
    token_body = ("json", "form")
    access_expires_in = 3600
    rotate_refresh = True
    token_prefix = "atl"

    def __init__(self, ca):
        super().__init__(ca, ["auth.atlassian.com", "api.atlassian.com"],
                         User(id="5b10ac8d82e05b22cc7d4ef5", login="ada-e2e", name="Ada E2E",
                              email="ada@example.test"))
        self.sites = [{"id": "1324a887-45db-1bf4-1e99-ef0ff456d421", "url": "https://credex-e2e.atlassian.net",
                       "name": "credex-e2e", "scopes": ["read:jira-work", "read:confluence-content.all"],
                       "avatarUrl": "https://site-admin-avatar-cdn.prod.public.atl-paas.net/avatars/240/rocket.png"}]

    def authorize_problem(self, req: Request, client) -> str | None:
        if req.query.get("audience") != "api.atlassian.com":
            return "audience must be api.atlassian.com"
        return None

    def wants_refresh(self, scope: str) -> bool:
        return "offline_access" in scope.split()

    def refresh_error(self, req: Request) -> Reply:
        return Reply.json(403, {"error": "invalid_grant", "error_description": "Unknown or invalid refresh token."})

    identity_paths = {"/me": "me", "/oauth/token/accessible-resources": "accessible_resources"}

    def unauthorized(self) -> Reply:
        return Reply.json(401, {"code": 401, "message": "Unauthorized"})

    def me(self, req: Request, grant: TokenGrant) -> Reply:
        u = grant.user
        return Reply.json(200, {"account_id": u.id, "account_type": "atlassian", "email": u.email, "name": u.name,
                                "nickname": u.login, "account_status": "active",
                                "picture": "https://avatar-management.example.test/a.png"})

    def accessible_resources(self, req: Request, grant: TokenGrant) -> Reply:
        return Reply.json(200, self.sites)


class Webex(OAuthServer):
    """webexapis.com: /v1/authorize, /v1/access_token, /v1/people/me (an integration).

    Quirks: client secret in the form body; access tokens last 14 days and refresh tokens 90
    days (refresh_token_expires_in); refreshing returns the same refresh token (no rotation);
    no public revocation endpoint."""

    label = "webex"
    authorize_path = "/v1/authorize"
    token_path = "/v1/access_token"
    token_auth = ("client_secret_post",)
    access_expires_in = 1209599
    refresh_expires_in = 7776000
    rotate_refresh = False
    token_prefix = "wx"

    def __init__(self, ca):
        super().__init__(ca, ["webexapis.com"],
                         User(id="Y2lzY29zcGFyazovL3VzL1BFT1BMRS9lMmU", login="grace-e2e", name="Grace E2E",
                              email="grace@example.test"))

    identity_paths = {"/v1/people/me": "people_me"}

    def unauthorized(self) -> Reply:
        return Reply.json(401, {"message": "The request requires a valid access token set in the "
                                           "Authorization request header.", "trackingId": "E2E"})

    def people_me(self, req: Request, grant: TokenGrant) -> Reply:
        u = grant.user
        return Reply.json(200, {"id": u.id, "emails": [u.email], "displayName": u.name, "nickName": u.login,
                                "orgId": "Y2lzY29zcGFyazovL3VzL09SR0FOSVpBVElPTi9lMmU", "type": "person"})


class PagerDuty(OAuthServer):
    """identity.pagerduty.com (/oauth/authorize, /oauth/token, /oauth/revoke) and
    api.pagerduty.com (/users/me), a scoped OAuth app.

    Quirks: scopes are resource-level ("users.read incidents.read", or "read"/"write" for classic
    apps), configured per app (PAGERDUTY_SCOPES); client secret in the form body; the REST API
    answers /users/me wrapped as {"user": {...}}; refresh tokens keep their value. The one-hour
    access-token expiry is this server's default."""

    label = "pagerduty"
    authorize_path = "/oauth/authorize"
    token_path = "/oauth/token"
    revoke_path = "/oauth/revoke"
    token_auth = ("client_secret_post",)
    access_expires_in = 3600
    rotate_refresh = False
    token_prefix = "pdus+"

    def __init__(self, ca):
        super().__init__(ca, ["identity.pagerduty.com", "api.pagerduty.com"],
                         User(id="PXPGF42", login="linus-e2e", name="Linus E2E", email="linus@example.test"))

    identity_paths = {"/users/me": "users_me"}

    def unauthorized(self) -> Reply:
        return Reply.json(401, {"error": {"message": "Unauthorized", "code": 2006}})

    def users_me(self, req: Request, grant: TokenGrant) -> Reply:
        u = grant.user
        return Reply.json(200, {"user": {"id": u.id, "type": "user", "name": u.name, "email": u.email,
                                         "html_url": f"https://credex-e2e.pagerduty.com/users/{u.id}"}})


class GitLab(OAuthServer):
    """gitlab.com or a self-managed instance: /oauth/authorize, /oauth/token, /oauth/revoke,
    /api/v4/user.

    Quirks: client secret in the body (Basic also accepted); access tokens last 2 hours and
    the answer carries created_at; refresh tokens rotate, a used one is invalid_grant; scopes
    like "read_user read_api api"."""

    label = "gitlab"
    authorize_path = "/oauth/authorize"
    token_path = "/oauth/token"
    revoke_path = "/oauth/revoke"
    token_body = ("form", "json")
    access_expires_in = 7200
    rotate_refresh = True
    token_prefix = "gl"

    def __init__(self, ca, host: str = "gitlab.com"):
        super().__init__(ca, [host], User(id="4242", login="margaret-e2e", name="Margaret E2E",
                                          email="margaret@example.test"))
        self.label = "gitlab" if host == "gitlab.com" else "gitlab-" + hashlib.sha1(host.encode()).hexdigest()[:8]

    def shape_payload(self, payload: dict, grant: TokenGrant) -> dict:
        payload["created_at"] = int(time.time())
        return payload

    identity_paths = {"/api/v4/user": "user_info"}

    def unauthorized(self) -> Reply:
        return Reply.json(401, {"message": "401 Unauthorized"})

    def user_info(self, req: Request, grant: TokenGrant) -> Reply:
        u = grant.user
        return Reply.json(200, {"id": int(u.id), "username": u.login, "name": u.name, "email": u.email,
                                "state": "active", "web_url": f"https://{self.hosts[0]}/{u.login}"})


def authorization_redirect(location: str) -> dict[str, str]:
    """The query of a redirect back to the client (code, state or error)."""
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))


__all__ = ["GitHub", "Atlassian", "Webex", "PagerDuty", "GitLab", "authorization_redirect"]
